"""Hand-made bundles and example rows for the model package's tests."""

from __future__ import annotations

from typing import Any

from oncology_model.bundle import Bundle, LinearScorer
from oncology_model.datamodel import FEATURES

EXAMPLE = dict(zip(FEATURES, (5, 1, 1, 1, 2, 1, 3, 1, 1)))
MALIGNANT_EXAMPLE = dict(zip(FEATURES, (10, 10, 10, 8, 7, 10, 9, 7, 1)))


def bundle_files(
    version: str = "1.0.1",
    threshold: float = 0.3,
    referral: dict[str, Any] | None = None,
    extra: dict[str, bytes] | None = None,
    **model: Any,
) -> dict[str, bytes]:
    """A small hand-made bundle: a linear model where every feature pushes towards malignant."""
    params = {"kind": LinearScorer.kind, "mean": [3.0] * 9, "scale": [2.0] * 9, "coef": [0.8] * 9, "intercept": -1.0}
    params.update(model)
    metadata = {
        "version": version,
        "features": list(FEATURES),
        "threshold": threshold,
        "created_at": "2026-01-01T00:00:00+00:00",
        "model": {"family": "logistic_regression", "name": "test", "hyperparameters": {}},
    }
    if referral is not None:
        metadata["referral"] = referral
    kpis = {"version": version, "test": {"accuracy": 0.97, "recall": 0.98, "specificity": 0.96, "roc_auc": 0.995}}
    return Bundle.assemble(version, params, metadata, kpis, extra)

