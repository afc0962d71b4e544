"""`Classifier`: loads a verified, versioned model bundle and predicts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from oncology_model.bundle import Bundle
from oncology_model.datamodel import FEATURES, Prediction, Tumor
from oncology_model.errors import BundleError
from oncology_model.registry import CHAMPION, ModelRegistry
from oncology_model.storage import open_store

#: Where a built wheel carries its model (filled by ``make wheel``; empty in a source checkout).
PACKAGED_BUNDLE = "_bundle"


class Classifier:
    """A trained model of one version.

    ``Classifier()`` loads the model shipped inside the installed ``oncology-model`` wheel;
    ``Classifier.from_uri(store, "champion" | "latest" | version)`` loads one from a store.
    """

    def __init__(self, bundle: Bundle | None = None) -> None:
        self.bundle = bundle if bundle is not None else _packaged_bundle()
        self._scorer = self.bundle.scorer
        self._threshold = self.bundle.threshold

    @classmethod
    def from_uri(cls, uri: str | Path, model: str = CHAMPION) -> Classifier:
        """Load ``model`` (a version, ``champion`` or ``latest``) from the store at ``uri``."""
        return cls(ModelRegistry(open_store(uri)).load(model))

    @classmethod
    def from_dir(cls, path: str | Path) -> Classifier:
        """Load a bundle folder directly."""
        return cls(Bundle.from_dir(Path(path)))

    @property
    def version(self) -> str:
        return self.bundle.version

    @property
    def metadata(self) -> Mapping[str, Any]:
        return self.bundle.metadata

    @property
    def kpis(self) -> Mapping[str, Any]:
        return self.bundle.kpis

    @property
    def threshold(self) -> float:
        """Malignant probability at or above which a tumor is called malignant."""
        return self._threshold

    def predict_proba(self, tumor: Tumor) -> float:
        """The malignant probability of one tumor."""
        return self._scorer.proba(tumor.as_row())

    def predict(self, tumor: Tumor) -> Prediction:
        return self.label(self.predict_proba(tumor))

    def predict_proba_batch(self, tumors: Iterable[Tumor]) -> list[float]:
        return self._scorer.proba_many(t.as_row() for t in tumors)

    def predict_batch(self, tumors: Iterable[Tumor]) -> list[Prediction]:
        return [self.label(p) for p in self.predict_proba_batch(tumors)]

    def score_rows(self, rows: Iterable[Sequence[float]]) -> list[float]:
        """Malignant probabilities of rows of feature values in `FEATURES` order (already validated)."""
        return self._scorer.proba_many(rows)

    def label(self, probability: float) -> Prediction:
        return Prediction.MALIGNANT if probability >= self._threshold else Prediction.BENIGN

    def __repr__(self) -> str:
        return f"Classifier(version={self.version!r}, features={len(FEATURES)}, threshold={self._threshold:.4f})"


def _packaged_bundle() -> Bundle:
    root = resources.files(__package__).joinpath(PACKAGED_BUNDLE)
    files = {}
    if root.is_dir():
        files = {entry.name: entry.read_bytes() for entry in root.iterdir() if entry.is_file()}
    if not files:
        raise BundleError(
            "this oncology-model installation carries no model (a source checkout): "
            "install a wheel built by `make wheel`, or use Classifier.from_uri(store)"
        )
    return Bundle.from_files(files, where=f"oncology_model/{PACKAGED_BUNDLE}")
