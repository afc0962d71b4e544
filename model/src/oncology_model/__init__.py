"""oncology-model: the typed data model and the classifier of the oncology pipeline."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from oncology_model.classifier import Classifier, Explanation
from oncology_model.datamodel import FEATURES, Decision, Prediction
from oncology_model.errors import BundleError, NotFoundError, OncologyError, RegistryError, StoreError

if TYPE_CHECKING:
    from oncology_model.tumor import Tumor as Tumor


def __getattr__(name: str) -> Any:
    if name == "Tumor":  # a pydantic model, loaded on first use (`oncology_model.datamodel`)
        from oncology_model.tumor import Tumor

        return Tumor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
