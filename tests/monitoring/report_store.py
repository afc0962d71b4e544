"""Stores for the dashboard's tests and benchmark: hand-made versions, in the old and the new kpis.json
formats, with and without evaluation.json and coverage, promotions, a rollback and a drift report."""

from __future__ import annotations

import json
import math
import random
from typing import Any

from oncology.monitoring.report import evaluation_file
from oncology_model.bundle import CARD_MD, EVALUATION, Bundle, LinearScorer
from oncology_model.datamodel import FEATURES
from oncology_model.registry import ModelRegistry
from oncology_model.storage import Store

KPI_KEYS = ("accuracy", "recall", "specificity", "precision", "f1", "roc_auc", "brier")


def test_predictions(n: int, seed: int) -> tuple[list[int], list[float], list[int]]:
    """Held-out labels, malignant probabilities and sample ids that look like a good classifier's."""
    rng = random.Random(seed)
    y = [1 if rng.random() < 0.35 else 0 for _ in range(n)]
    proba = [1 / (1 + math.exp(-(rng.gauss(3.0, 1.6) if label else rng.gauss(-3.2, 1.6)))) for label in y]
    ids = [1_000_000 + rng.randrange(10**6) for _ in range(n)]
    return y, proba, ids


def kpis(version: str, n: int, step: int, new_format: bool) -> dict[str, Any]:
    """kpis.json of a version: the old format (test + cv mean/std), or the new one (+ test CIs, referral...)."""
    base = {"accuracy": 0.96, "recall": 0.97, "specificity": 0.955, "precision": 0.93, "f1": 0.95,
            "roc_auc": 0.99, "brier": 0.03}
    wobble = ((step * 7) % 5 - 2) / 500
    test = {k: round(v - wobble if k == "brier" else min(v + wobble, 1.0), 4) for k, v in base.items()}
    mean = {k: round(v - 0.002, 4) for k, v in test.items()}
    std = {k: 0.01 + (step % 3) / 500 for k in KPI_KEYS}
    result: dict[str, Any] = {
        "version": version,
        "threshold": 0.3,
        "test": {**test, "n": n, "confusion_matrix": {"tn": 85, "fp": 3, "fn": 1, "tp": 47}},
        "cv": {"folds": 5, "repeats": 1, "mean": mean, "std": std},
    }
    if new_format:
        result["test"]["ci"] = {k: [round(v - 0.03, 4), round(min(v + 0.02, 1.0), 4)] for k, v in test.items()}
        result["cv"].update({"method": "nested", "inner_folds": 5})
        result["referral"] = {"low": 0.1, "high": 0.6}
    return result


def publish(
    store: Store, version: str, step: int, *, new_format: bool, evaluation: bool, n: int = 136, card: str | None = None
) -> None:
    params = {"kind": LinearScorer.kind, "mean": [3.0] * 9, "scale": [2.0] * 9, "coef": [0.8] * 9, "intercept": -1.0}
    metadata = {
        "version": version,
        "features": list(FEATURES),
        "threshold": 0.3,
        "created_at": f"2026-11-{1 + step % 28:02d}T10:00:00+00:00",
        "model": {"family": "logistic_regression" if step % 2 else "lda", "name": "test", "hyperparameters": {}},
    }
    extra = {}
    if evaluation:
        extra[EVALUATION] = evaluation_file(*test_predictions(n, seed=step))
    if card is not None:
        extra[CARD_MD] = card.encode()
    ModelRegistry(store).publish(Bundle.assemble(version, params, metadata, kpis(version, n, step, new_format), extra))


def coverage(store: Store, suite: str, version: str, percent: float) -> None:
    report = {"meta": {"format": 3}, "files": {}, "totals": {"percent_covered": percent, "num_statements": 1000}}
    store.create(f"monitoring/coverage/{suite}/{suite}-coverage-{version}.json", json.dumps(report).encode())


DRIFT = {
    "created_at": "2026-12-01T12:00:00+00:00",
    "model_version": "1.0.2",
    "window": {"since": "2026-11-30T12:00:00+00:00", "until": "2026-12-01T12:00:00+00:00"},
    "n": 5000,
    "features": {
        name: {"psi": 0.31 if name == "bare_nuclei" else 0.02, "chi2": 12.5, "p_value": 0.001 if name == "bare_nuclei" else 0.6,
               "flagged": name == "bare_nuclei"}
        for name in FEATURES
    },
    # the shape `oncology drift` writes: a mix with p = 1.2e-05 that is not flagged, its PSI being small
    "prediction_mix": {"observed": {"benign": 0.6, "malignant": 0.4}, "reference": {"benign": 0.65, "malignant": 0.35},
                       "p_value": 1.2e-05, "flagged": False},
    "thresholds": {"psi": 0.1, "alpha": 0.01, "p_value": 0.001, "tests": 10,
                   "rule": "flagged when psi >= 0.1 and p_value < alpha / 10 (Bonferroni over the nine features and the "
                           "prediction mix); drift when any feature or the prediction mix is flagged"},
    "estimated": {"accuracy": 0.95, "recall": 0.96, "method": "confidence-based performance estimation"},
    "flagged": ["bare_nuclei"],
    "drift": True,
}


#: A card with everything a card must not do on the page: markup, script, an event handler, a javascript: link,
#: an image to fetch, and the trainer's local path.
HOSTILE_CARD = """# Model card: oncology 1.0.2

- File: /home/trainer/work/data/raw/breast-cancer-wisconsin.data (sha256 abc)
- Also file:///srv/private/other.data

| KPI | value |
| --- | --- |
| accuracy | 0.9640 |
| malignant recall | 0.9740 |

<script>window.pwned = "script"</script>
<img src="x" onerror="window.pwned = 'onerror'">
[click](javascript:window.pwned='link') ![chart](http://example.invalid/chart.png)
"""


def drift(store: Store, stamp: str, **changes: Any) -> str:
    key = f"monitoring/drift/drift-{stamp}.json"
    store.create(key, json.dumps({**DRIFT, **changes}).encode())
    return key


def many_versions(store: Store, count: int) -> None:
    """``count`` versions, every third without evaluation.json, coverage for most; a promotion every
    few versions and a rollback; a drift report."""
    registry = ModelRegistry(store)
    for i in range(1, count + 1):
        version = f"1.0.{i}"
        publish(store, version, i, new_format=i > count // 2, evaluation=i % 3 != 1)
        if i % 4:
            coverage(store, "unittest", version, 80 + i % 10)
            coverage(store, "test", version, 88 + i % 7)
        if i % 5 == 0:
            registry.promote(version)
    if count >= 10:
        registry.rollback()
    drift(store, "20261201T120000Z")
