"""Fit the reference design's model: the served bundle's estimator, as a pickled scikit-learn object.

Reads the champion bundle of a store, takes the candidate of the same family and
hyper-parameters from the trainer's own factory (`oncology.trainer.train.candidates`), fits it on
the same rows (the bundled data, the trainer's held-out split by the bundle's seed) and saves it
with joblib, next to ``model-info.json``.  The fitted estimator's probabilities are compared with
the bundle's on every row of the data: the reference then serves the very same model.

Runs in the project's venv (it needs the trainer); the reference venv pins the same
scikit-learn, numpy and joblib so that it can load the pickle.

    .venv/bin/python benchmarks/reference/fit.py --store STORE --out benchmarks/results/reference-model
"""

from __future__ import annotations

import argparse
import json
import re
from importlib import metadata
from pathlib import Path

import joblib
import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from oncology.trainer.data import load
from oncology.trainer.train import candidates
from oncology_model import FEATURES, Classifier

#: Largest |p_reference - p_bundle| accepted on any row (the trainer's own parity bound).
PARITY_TOLERANCE = 1e-9


def fit(store: str, out: Path) -> dict[str, object]:
    classifier = Classifier.from_uri(store)
    meta = classifier.metadata
    model = meta["model"]
    seed = int(meta["training"]["seed"])
    candidate = next((c for c in candidates(seed) if c.name == model["name"]), None)
    if candidate is None or candidate.family != model["family"] or candidate.hyperparameters != model["hyperparameters"]:
        raise SystemExit(f"the trainer has no candidate {model['name']} with {model['hyperparameters']}")

    dataset = load()
    if dataset.sha256 != meta["data"]["sha256"]:
        raise SystemExit(f"the bundle was trained on other data ({meta['data']['uri']}), not the bundled file")
    found = re.match(r"1 of (\d+)", str(meta["training"]["test_split"]))
    n_splits = int(found.group(1)) if found else 5
    outer = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    train_idx, _ = next(outer.split(dataset.X, dataset.y, dataset.ids))
    estimator = candidate.make().fit(dataset.X[train_idx], dataset.y[train_idx])

    expected = np.array(classifier.score_rows(dataset.X.tolist()))
    got = estimator.predict_proba(dataset.X)[:, 1]
    worst = float(np.max(np.abs(expected - got)))
    if worst > PARITY_TOLERANCE:
        raise SystemExit(f"the refitted estimator differs from the bundle (max |dp| = {worst:.3g})")

    out.mkdir(parents=True, exist_ok=True)
    joblib.dump(estimator, out / "model.joblib")
    info: dict[str, object] = {
        "version": classifier.version,
        "family": model["family"],
        "name": model["name"],
        "hyperparameters": model["hyperparameters"],
        "features": list(FEATURES),
        "fitted_rows": int(len(train_idx)),
        "max_abs_proba_diff_vs_bundle": worst,
        "libraries": {name: metadata.version(name) for name in ("scikit-learn", "numpy", "joblib", "scipy")},
    }
    (out / "model-info.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    print(json.dumps(fit(args.store, args.out)))


if __name__ == "__main__":
    main()
