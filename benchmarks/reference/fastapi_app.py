"""The FastAPI reference: FastAPI on uvicorn, a pydantic model of the nine features, scikit-learn per request.

Served by uvicorn with one worker and the service's uvicorn options where they apply (uvloop, httptools,
lifespan on, no uvicorn access log, no server header, 5 s keep-alive), from its own venv (never the
project's), on the same pickled estimator as the Flask reference (`fit.py`):

    REFERENCE_MODEL_DIR=benchmarks/results/reference-model \
        benchmarks/results/fastapi-venv/bin/uvicorn --app-dir benchmarks/reference fastapi_app:app \
        --host 127.0.0.1 --port 8097 --workers 1 --loop uvloop --http httptools --lifespan on \
        --no-access-log --no-server-header --timeout-keep-alive 5

The route is ``async def``: scikit-learn runs on the event loop, as a plain ``def`` route would run it in
a thread pool at the cost of a thread hop per request.  Same route and answer as the service's /predict.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Literal

import joblib
import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

MODEL_DIR = Path(os.environ["REFERENCE_MODEL_DIR"])
estimator = joblib.load(MODEL_DIR / "model.joblib")
INFO = json.loads((MODEL_DIR / "model-info.json").read_text())
FEATURES = INFO["features"]
VERSION = INFO["version"]

Score = Annotated[int, Field(strict=True, ge=1, le=10)]


class Tumor(BaseModel):
    """The nine cytology features, each scored 1-10."""

    model_config = ConfigDict(extra="forbid")

    clump_thickness: Score
    uniformity_of_cell_size: Score
    uniformity_of_cell_shape: Score
    marginal_adhesion: Score
    single_epithelial_cell_size: Score
    bare_nuclei: Score
    bland_chromatin: Score
    normal_nucleoli: Score
    mitoses: Score


class Prediction(BaseModel):
    prediction: Literal["benign", "malignant"]
    probability: float
    model_version: str


if list(Tumor.model_fields) != FEATURES:
    raise SystemExit(f"the request model's fields {list(Tumor.model_fields)} are not the model's features {FEATURES}")

app = FastAPI()


@app.post("/predict")
async def predict(tumor: Tumor) -> Prediction:
    """The probability of malignancy of one tumor."""
    x = np.array([[getattr(tumor, name) for name in FEATURES]], dtype=np.float64)
    probabilities = estimator.predict_proba(x)[0]
    label = int(estimator.classes_[int(np.argmax(probabilities))])
    return Prediction(prediction="malignant" if label == 1 else "benign", probability=float(probabilities[1]),
                      model_version=VERSION)
