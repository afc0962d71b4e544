"""`Classifier`: loads a verified, versioned model bundle; predicts, decides (with referral) and explains."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oncology_model.bundle import Bundle, Referral
from oncology_model.datamodel import FEATURES, Decision, Prediction
from oncology_model.errors import BundleError
from oncology_model.registry import CHAMPION, ModelRegistry
from oncology_model.storage import open_store

if TYPE_CHECKING:
    from oncology_model.tumor import Tumor

#: Where a built wheel carries its model (filled by ``make wheel``; empty in a source checkout).
PACKAGED_BUNDLE = "_bundle"


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why the model gave its probability: the log-odds split into a baseline and one share per feature.

    ``baseline + sum(contributions.values()) == log_odds`` (up to floating-point rounding, ~1e-15):
    for a linear model the split is exact.  ``baseline`` is the log-odds of the training-mean tumor
    (every feature at its mean over the training data; the model's intercept); a feature's
    contribution is ``coef * (value - mean) / scale``, how far that feature moves the log-odds from
    the baseline (positive: towards malignant).  ``probability`` is the logistic function of
    ``log_odds``, the value `Classifier.predict_proba` returns.
    """

    baseline: float
    #: Feature name -> contribution to the malignant log-odds, in `FEATURES` order.
    contributions: dict[str, float]
    log_odds: float
    probability: float


class Classifier:
    """A trained model of one version.

    ``Classifier()`` loads the model shipped inside the installed ``oncology-model`` wheel;
    ``Classifier.from_uri(store, "champion" | "latest" | version)`` loads one from a store.
    """

    def __init__(self, bundle: Bundle | None = None) -> None:
        self.bundle = bundle if bundle is not None else _packaged_bundle()
        self._scorer = self.bundle.scorer
        self._threshold = self.bundle.threshold
        referral = self.bundle.referral
        # an empty or absent band refers nothing: [threshold, threshold) is empty
        self._low, self._high = (referral.low, referral.high) if referral else (self._threshold, self._threshold)

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

    @property
    def referral(self) -> Referral | None:
        """The referral band: malignant probabilities ``p`` with ``low <= p < high`` are referred for review.

        ``low <= threshold <= high``, so a decision that is not ``refer`` is the thresholded
        prediction.  None for versions trained before referral existed: they never refer.
        """
        return self.bundle.referral

    @property
    def card(self) -> dict[str, Any] | None:
        """The model card's machine-readable form (``card.json``), or None for versions without a card."""
        return self.bundle.card

    @property
    def card_markdown(self) -> str | None:
        """The model card for people (``card.md``, Markdown), or None for versions without a card."""
        return self.bundle.card_markdown

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

    def decide(self, probability: float) -> Decision:
        """The decision for a malignant probability: below the band benign, at or above its top
        malignant, within it (``low <= p < high``) refer for review.  Without a band: the label."""
        # low <= threshold <= high (checked when the bundle is loaded), and without a band
        # low == high == threshold: outside the band this is exactly `label`
        if probability < self._low:
            return Decision.BENIGN
        if probability < self._high:
            return Decision.REFER
        return Decision.MALIGNANT

    def decide_many(self, probabilities: Iterable[float]) -> list[Decision]:
        """`decide` for each probability, in order (one pass, no call per row: the service's batch path)."""
        low, high = self._low, self._high
        benign, refer, malignant = Decision.BENIGN, Decision.REFER, Decision.MALIGNANT
        return [benign if p < low else refer if p < high else malignant for p in probabilities]

    def predict_decision(self, tumor: Tumor) -> Decision:
        """The decision for one tumor: benign, malignant, or refer for review."""
        return self.decide(self.predict_proba(tumor))

    def predict_decision_batch(self, tumors: Iterable[Tumor]) -> list[Decision]:
        return self.decide_many(self.predict_proba_batch(tumors))

    def explain(self, tumor: Tumor) -> Explanation:
        """Each feature's contribution to the malignant log-odds of one tumor (see `Explanation`)."""
        return self.explain_row(tumor.as_row())

    def explain_batch(self, tumors: Iterable[Tumor]) -> list[Explanation]:
        return [self.explain_row(t.as_row()) for t in tumors]

    def explain_row(self, row: Sequence[float]) -> Explanation:
        """`explain` for a row of feature values in `FEATURES` order (already validated)."""
        scorer = self._scorer
        log_odds = scorer.log_odds(row)
        return Explanation(
            baseline=scorer.baseline,
            contributions=dict(zip(FEATURES, scorer.contributions(row))),
            log_odds=log_odds,
            probability=scorer.probability(log_odds),
        )

    def explain_rows(self, rows: Iterable[Sequence[float]]) -> list[Explanation]:
        return [self.explain_row(row) for row in rows]

    def __repr__(self) -> str:
        band = f", referral=[{self._low:.4f}, {self._high:.4f})" if self.referral else ""
        return f"Classifier(version={self.version!r}, features={len(FEATURES)}, threshold={self._threshold:.4f}{band})"


def carries_a_model() -> bool:
    """Whether this installation carries a model: a wheel built by ``make wheel`` does, a source checkout does not."""
    root = resources.files(__package__).joinpath(PACKAGED_BUNDLE)
    return root.is_dir() and any(entry.is_file() for entry in root.iterdir())


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
