"""oncology-model: the typed data model and the classifier of the oncology pipeline."""

from __future__ import annotations

from oncology_model.classifier import Classifier, Explanation
from oncology_model.datamodel import FEATURES, Decision, Prediction, Tumor
from oncology_model.errors import BundleError, NotFoundError, OncologyError, RegistryError, StoreError

__all__ = [
    "FEATURES",
    "BundleError",
    "Classifier",
    "Decision",
    "Explanation",
    "NotFoundError",
    "OncologyError",
    "Prediction",
    "RegistryError",
    "StoreError",
    "Tumor",
]
