"""The reference design: a Flask app calling scikit-learn's predict/predict_proba per request.

Served by gunicorn with one sync worker, from the reference venv (never the project's):

    REFERENCE_MODEL_DIR=benchmarks/results/reference-model \
        benchmarks/results/reference-venv/bin/gunicorn --workers 1 --worker-class sync \
        --bind 127.0.0.1:8098 --chdir benchmarks/reference app:app

The model is the pickled estimator written by `fit.py` (the served bundle's family and
hyper-parameters, fitted on the same rows).  Same route and answer as the service's /predict.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import joblib
import numpy as np
from flask import Flask, jsonify, request

MODEL_DIR = Path(os.environ["REFERENCE_MODEL_DIR"])
estimator = joblib.load(MODEL_DIR / "model.joblib")
INFO = json.loads((MODEL_DIR / "model-info.json").read_text())
FEATURES = INFO["features"]
VERSION = INFO["version"]

app = Flask(__name__)


@app.post("/predict")
def predict():  # type: ignore[no-untyped-def]
    tumor = request.get_json()
    x = np.array([[tumor[name] for name in FEATURES]], dtype=np.float64)
    label = int(estimator.predict(x)[0])
    probability = float(estimator.predict_proba(x)[0, 1])
    return jsonify(prediction="malignant" if label == 1 else "benign", probability=probability, model_version=VERSION)
