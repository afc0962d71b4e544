"""Drift statistics and label-free performance estimates; knows no CLI and no store.

Three parts:

- `reference_from`: what a model version keeps of its training part (``reference.json`` in the bundle),
  so that drift runs without the raw data: per feature the count of each score 1-10, the class balance,
  n, a histogram of the model's malignant probabilities (with the malignant labels per bin) and, with the
  decision threshold, the predicted mix.
- `compare`: logged inputs and predictions against a `Reference`.  Per feature the population stability
  index (PSI) and a chi-square goodness-of-fit test; the prediction mix against the training part's; and
  the estimated accuracy and malignant recall (CBPE).
- `Thresholds`: the flagging rule.

The flagging rule, and why (measured by ``tests/monitoring/test_drift.py``, 200 resamples of 500 rows):
a feature is flagged when its PSI is at least ``psi`` (0.1, the usual "moderate shift") *and* its
chi-square p-value is below ``alpha / 10`` (Bonferroni over the ten tests of a run: nine features and
the prediction mix).  Both are needed.  The p-value alone raises false alarms: with the pooling below,
the chi-square approximation is loose in the far tail (2.5% false alarms instead of 1% on samples from
the training distribution), and on a large window any difference is significant, even the reference's
own sampling noise.  PSI alone cannot tell noise from shift on small windows.  PSI 0.2 is too coarse for
this data: a +2 shift on a third of the rows moves ``clump_thickness``, whose scores are spread over the
whole scale, by a PSI of only about 0.12 (and ``bland_chromatin`` by about 0.24), so the pair would be
missed in 1 run of 6.

PSI is the symmetric Kullback-Leibler divergence, computed with `scipy.stats.entropy` on the ten scores;
a score with no rows on either side counts as a share of ``PSI_EPSILON`` (1e-4, as Evidently does), so an
empty bin adds a finite amount.

Chi-square: `scipy.stats.chisquare` of the observed counts against the counts the reference's shares
predict for this many rows.  Neighbouring scores are pooled (they are ordinal) from score 1 upwards until
each pooled group expects at least 5 rows; a remainder at the top joins the last group.  With fewer than
two groups (a handful of rows) there is no test: chi2 0, p-value 1.

CBPE (confidence-based performance estimation, as NannyML names it): the probability that each thresholded
answer is right is the calibrated malignant probability ``c`` when the answer is malignant, else ``1 - c``;
their mean is the expected accuracy, and ``sum(c over answers malignant) / sum(c)`` the expected malignant
recall.  ``c`` comes from the reference: isotonic regression (`scipy.optimize.isotonic_regression`) of the
training part's malignant rate per probability bin, as NannyML calibrates on its reference set.  The raw
probabilities of a regularised logistic model are under-confident (the raw estimate was 0.033 below the
true held-out accuracy, the calibrated one 0.009).  Valid only while P(malignant | probability) is what it
was in training: covariate shift is fine, a change in the disease itself (concept drift) is not seen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from scipy import optimize, stats  # type: ignore[import-untyped]  # scipy ships no type stubs

from oncology_model.datamodel import FEATURES, SCORE_MAX, SCORE_MIN
from oncology_model.errors import OncologyError

REFERENCE_FORMAT: Final = "oncology-reference/1"
SCORES: Final = tuple(range(SCORE_MIN, SCORE_MAX + 1))
#: The share an empty score takes in PSI (either side): finite, and small against any real share.
PSI_EPSILON: Final = 1e-4
#: Neighbouring scores are pooled until each group expects at least this many rows.
MIN_EXPECTED: Final = 5.0
#: Fixed bins of the malignant probability: [0, 0.05), [0.05, 0.1), ... [0.95, 1].
PROBABILITY_BINS: Final = 20
CLASSES: Final = ("benign", "malignant")
#: What the estimate assumes; written into every report beside the figures.
CBPE_ASSUMPTION: Final = (
    "expected accuracy and malignant recall from the model's probabilities, calibrated on the training part "
    "(isotonic regression per probability bin); no labels are used.  Valid only if the probabilities are "
    "calibrated on this traffic, i.e. P(malignant | probability) is what it was in training: a shift in the "
    "inputs is allowed, a change in the disease or in how it is scored (concept drift) is not seen."
)


class DriftError(OncologyError):
    """Drift cannot be computed: a missing or malformed reference, or inputs of the wrong shape."""


@dataclass(frozen=True)
class Thresholds:
    """The flagging rule: flagged when PSI >= ``psi`` and the p-value < ``alpha`` / number of tests."""

    psi: float = 0.1
    alpha: float = 0.01

    @property
    def tests(self) -> int:
        return len(FEATURES) + 1  # nine features and the prediction mix

    @property
    def p_value(self) -> float:
        """The Bonferroni-corrected level of each test."""
        return self.alpha / self.tests

    def flags(self, psi: float, p_value: float) -> bool:
        return psi >= self.psi and p_value < self.p_value

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "p_value": self.p_value,
            "tests": self.tests,
            "psi_epsilon": PSI_EPSILON,
            "min_expected": MIN_EXPECTED,
            "rule": f"flagged when psi >= {self.psi} and p_value < alpha / {self.tests} (Bonferroni over "
            "the nine features and the prediction mix); drift when any feature or the prediction mix is flagged",
        }


# ---- the reference --------------------------------------------------------------------------------


class ProbabilityHistogram(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    edges: list[float] = Field(min_length=2)
    counts: list[int]
    malignant: list[int]

    @model_validator(mode="after")
    def _shape(self) -> ProbabilityHistogram:
        bins = len(self.edges) - 1
        if len(self.counts) != bins or len(self.malignant) != bins:
            raise ValueError(f"counts and malignant need one value per bin ({bins})")
        if any(b <= a for a, b in zip(self.edges, self.edges[1:])) or self.edges[0] != 0.0 or self.edges[-1] != 1.0:
            raise ValueError("edges must rise from 0 to 1")
        if any(m < 0 or m > c for m, c in zip(self.malignant, self.counts)):
            raise ValueError("each bin needs 0 <= malignant <= count")
        return self


class Reference(BaseModel):
    """``reference.json``: the training part as drift needs it.  Plain numbers only."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: str
    n: int = Field(gt=0)
    scores: list[int]
    features: dict[str, list[int]]
    classes: dict[str, int]
    probability: ProbabilityHistogram
    threshold: float | None = None
    predictions: dict[str, int] | None = None

    @field_validator("features")
    @classmethod
    def _every_feature(cls, features: dict[str, list[int]]) -> dict[str, list[int]]:
        if set(features) != set(FEATURES):  # a JSON object's keys have no order (dump_json sorts them)
            raise ValueError(f"features must be exactly {list(FEATURES)}")
        return {name: features[name] for name in FEATURES}  # model-column order from here on

    @model_validator(mode="after")
    def _consistent(self) -> Reference:
        if self.format != REFERENCE_FORMAT:
            raise ValueError(f"unknown format {self.format!r}; expected {REFERENCE_FORMAT!r}")
        if self.scores != list(SCORES):
            raise ValueError(f"scores must be {list(SCORES)}")
        for name, counts in self.features.items():
            if len(counts) != len(SCORES) or min(counts) < 0 or sum(counts) != self.n:
                raise ValueError(f"{name}: expected {len(SCORES)} non-negative counts summing to n = {self.n}")
        for name, mix in (("classes", self.classes), ("predictions", self.predictions)):
            if mix is not None and (sorted(mix) != sorted(CLASSES) or min(mix.values()) < 0 or sum(mix.values()) != self.n):
                raise ValueError(f"{name}: expected counts of {' and '.join(CLASSES)} summing to n = {self.n}")
        if sum(self.probability.counts) != self.n:
            raise ValueError(f"probability: the histogram's counts must sum to n = {self.n}")
        if (self.predictions is None) != (self.threshold is None):
            raise ValueError("threshold and predictions go together")
        return self

    @classmethod
    def parse(cls, value: Mapping[str, Any], where: str) -> Reference:
        try:
            return cls.model_validate(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(part) for part in first["loc"])
            raise DriftError(f"{where}: not a valid drift reference ({loc + ': ' if loc else ''}{first['msg']})") from None


def reference_from(
    X: npt.ArrayLike, y: npt.ArrayLike, proba: npt.ArrayLike, threshold: float | None = None
) -> dict[str, Any]:
    """The drift reference of a model version, from its training part: the rows ``X`` (scores 1-10 in
    `FEATURES` order), their labels ``y`` (1 = malignant) and the model's malignant probabilities ``proba``.

    With the decision ``threshold`` it also records the predicted mix, against which the logged mix is
    tested (without it, the class balance is used).  The result is what ``reference.json`` holds.
    """
    rows = np.asarray(X, dtype=np.float64)
    labels = np.asarray(y)
    p = np.asarray(proba, dtype=np.float64)
    n = len(rows)
    if rows.ndim != 2 or rows.shape[1] != len(FEATURES) or labels.shape != (n,) or p.shape != (n,) or n == 0:
        raise DriftError(f"reference_from needs X of shape (n, {len(FEATURES)}) and y, proba of shape (n,), n > 0")
    if not np.all(np.isin(rows, SCORES)):
        raise DriftError(f"reference_from: every value of X must be a whole score {SCORE_MIN}-{SCORE_MAX}")
    if not np.all(np.isin(labels, (0, 1))) or not np.all((p >= 0) & (p <= 1)):
        raise DriftError("reference_from: y must be 0/1 and proba within [0, 1]")
    malignant = labels == 1
    edges = np.round(np.linspace(0.0, 1.0, PROBABILITY_BINS + 1), 12)  # 0.15, not 0.15000000000000002
    bins = _bin(p, edges)
    ref: dict[str, Any] = {
        "format": REFERENCE_FORMAT,
        "n": n,
        "scores": list(SCORES),
        "features": {name: _score_counts(rows[:, j]).tolist() for j, name in enumerate(FEATURES)},
        "classes": {"benign": int(n - malignant.sum()), "malignant": int(malignant.sum())},
        "probability": {
            "edges": [float(e) for e in edges],
            "counts": np.bincount(bins, minlength=PROBABILITY_BINS).tolist(),
            "malignant": np.bincount(bins[malignant], minlength=PROBABILITY_BINS).tolist(),
        },
    }
    if threshold is not None:
        called = p >= threshold
        ref["threshold"] = float(threshold)
        ref["predictions"] = {"benign": int(n - called.sum()), "malignant": int(called.sum())}
    Reference.parse(ref, "reference_from")  # what is written can be read back
    return ref


# ---- the statistics -------------------------------------------------------------------------------


def _score_counts(values: npt.NDArray[Any]) -> npt.NDArray[np.int64]:
    return np.bincount(np.asarray(values, dtype=np.int64) - SCORE_MIN, minlength=len(SCORES)).astype(np.int64)


def _bin(p: npt.NDArray[np.float64], edges: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    return np.clip(np.searchsorted(edges, p, side="right") - 1, 0, len(edges) - 2).astype(np.int64)


def psi(observed: npt.ArrayLike, reference: npt.ArrayLike) -> Any:
    """Population stability index of count (or share) vectors over the same bins (the last axis; a 2-D
    input gives one index per row): sum((o - r) * ln(o / r)) = KL(o || r) + KL(r || o).  An empty bin
    counts as a share of `PSI_EPSILON` (the shares are then renormalised)."""
    o = _shares(observed)
    r = _shares(reference)
    value = stats.entropy(o, r, axis=-1) + stats.entropy(r, o, axis=-1)
    return float(value) if np.ndim(value) == 0 else np.asarray(value, dtype=np.float64)


def _shares(counts: npt.ArrayLike) -> npt.NDArray[np.float64]:
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum(axis=-1, keepdims=True)
    shares = np.divide(c, total, out=np.full(c.shape, 1.0 / c.shape[-1]), where=total > 0)
    smoothed = np.where(shares > 0, shares, PSI_EPSILON)
    return np.asarray(smoothed / smoothed.sum(axis=-1, keepdims=True), dtype=np.float64)


def pooled_groups(expected: Sequence[float], min_expected: float = MIN_EXPECTED) -> list[list[int]]:
    """Neighbouring categories pooled from the first upwards until each group expects ``min_expected``;
    a remainder at the end joins the last group."""
    groups: list[list[int]] = []
    current: list[int] = []
    total = 0.0
    for k, e in enumerate(expected):
        current.append(k)
        total += e
        if total >= min_expected:
            groups.append(current)
            current, total = [], 0.0
    if current:
        if groups:
            groups[-1] += current
        else:
            groups.append(current)
    return groups


def chi_square(observed: npt.ArrayLike, reference: npt.ArrayLike) -> tuple[float, float]:
    """(chi2, p-value) of a goodness-of-fit test of ``observed`` counts against the ``reference`` shares,
    sparse categories pooled (`pooled_groups`); (0, 1) when fewer than two groups remain."""
    return chi_squares([observed], [reference])[0]


def chi_squares(observed: Sequence[npt.ArrayLike], reference: Sequence[npt.ArrayLike]) -> list[tuple[float, float]]:
    """`chi_square` of each pair, in one call of `scipy.stats.chisquare` (its per-call cost dominates):
    the pooled vectors are padded to one length with cells that add nothing to chi2 (observed = expected),
    and ``ddof`` takes the padding out of the degrees of freedom."""
    results: list[tuple[float, float] | None] = []
    rows: list[tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]] = []
    for obs, ref in zip(observed, reference):
        o = np.asarray(obs, dtype=np.float64)
        r = np.asarray(ref, dtype=np.float64)
        expected = r / r.sum() * o.sum()
        groups = pooled_groups(expected.tolist())
        if len(groups) < 2:
            results.append((0.0, 1.0))
            continue
        o_pooled = np.array([o[g].sum() for g in groups])
        e_pooled = np.array([expected[g].sum() for g in groups])
        e_pooled *= o_pooled.sum() / e_pooled.sum()  # exact totals: chisquare checks them to a tolerance
        rows.append((o_pooled, e_pooled))
        results.append(None)
    if rows:
        width = max(len(o) for o, _ in rows)
        pad = np.array([width - len(o) for o, _ in rows])
        f_obs = np.array([np.concatenate([o, np.ones(width - len(o))]) for o, _ in rows])
        f_exp = np.array([np.concatenate([e, np.ones(width - len(e))]) for _, e in rows])
        test = stats.chisquare(f_obs, f_exp, ddof=pad, axis=1)
        tested = iter(zip(np.atleast_1d(test.statistic).tolist(), np.atleast_1d(test.pvalue).tolist()))
        results = [r if r is not None else next(tested) for r in results]
    return [(float(chi2), float(p)) for chi2, p in (r for r in results if r is not None)]


def calibration(reference: Reference) -> npt.NDArray[np.float64]:
    """The calibrated malignant probability of each probability bin: isotonic regression of the training
    part's malignant rate per bin, weighted by its rows; empty bins are interpolated between neighbours."""
    hist = reference.probability
    counts = np.asarray(hist.counts, dtype=np.float64)
    rates = np.asarray(hist.malignant, dtype=np.float64) / np.where(counts > 0, counts, 1.0)
    edges = np.asarray(hist.edges)
    centers = (edges[:-1] + edges[1:]) / 2
    filled = counts > 0
    fitted = optimize.isotonic_regression(rates[filled], weights=counts[filled], increasing=True).x
    return np.asarray(np.interp(centers, centers[filled], fitted), dtype=np.float64)


def estimate_performance(
    proba: npt.ArrayLike, called_malignant: npt.ArrayLike, reference: Reference
) -> dict[str, Any]:
    """CBPE: expected accuracy and malignant recall of the answers given, from calibrated probabilities."""
    edges = np.asarray(reference.probability.edges)
    p = np.asarray(proba, dtype=np.float64)
    called = np.asarray(called_malignant, dtype=bool)
    bins = _bin(p, edges)
    return _estimate(np.bincount(bins, minlength=len(edges) - 1), np.bincount(bins[called], minlength=len(edges) - 1),
                     reference)


def _estimate(by_bin: npt.ArrayLike, malignant_by_bin: npt.ArrayLike, reference: Reference) -> dict[str, Any]:
    """CBPE from the answers per probability bin of the reference (all, and those that were malignant): every
    answer in a bin has that bin's calibrated probability ``c``, so the sums over answers are sums over bins."""
    c = calibration(reference)
    total = np.asarray(by_bin, dtype=np.float64)
    called = np.asarray(malignant_by_bin, dtype=np.float64)
    n = float(total.sum())
    expected_malignant = float((total * c).sum())
    right = float((called * c).sum() + ((total - called) * (1.0 - c)).sum())
    return {
        "accuracy": right / n if n else None,
        "recall": float((called * c).sum() / expected_malignant) if expected_malignant > 0 else None,
        "method": "CBPE",
        "assumption": CBPE_ASSUMPTION,
    }


@dataclass(frozen=True)
class Observed:
    """What drift needs of logged traffic, as counts (additive: the counts of two sets of rows are the sums of
    theirs, so a query engine computes them per object or partition and adds them up).

    ``scores``: per feature (`FEATURES` order) the rows with each score 1-10, shape (9, 10); ``malignant``:
    answers that were malignant; ``by_bin`` / ``malignant_by_bin``: answers (all / malignant) per bin of the
    reference's probability histogram (its ``edges``; a probability on an edge belongs to the bin above it,
    below 0 to the first and at or above 1 to the last).
    """

    scores: npt.NDArray[np.int64]
    malignant: int
    by_bin: npt.NDArray[np.int64]
    malignant_by_bin: npt.NDArray[np.int64]

    @property
    def n(self) -> int:
        return int(self.by_bin.sum())

    @classmethod
    def of(cls, X: npt.ArrayLike, proba: npt.ArrayLike, called_malignant: npt.ArrayLike, edges: Sequence[float]) -> Observed:
        """The counts of rows ``X`` (n, 9), their probabilities and answers."""
        rows = np.asarray(X)
        called = np.asarray(called_malignant, dtype=bool)
        n = len(rows)
        if rows.ndim != 2 or rows.shape[1] != len(FEATURES) or called.shape != (n,) or np.shape(proba) != (n,):
            raise DriftError(f"compare needs X of shape (n, {len(FEATURES)}) and proba, called_malignant of shape (n,)")
        bins = _bin(np.asarray(proba, dtype=np.float64), np.asarray(edges, dtype=np.float64))
        k = len(edges) - 1
        return cls(
            scores=np.stack([_score_counts(rows[:, j]) for j in range(len(FEATURES))]).reshape(len(FEATURES), len(SCORES)),
            malignant=int(called.sum()),
            by_bin=np.bincount(bins, minlength=k).astype(np.int64),
            malignant_by_bin=np.bincount(bins[called], minlength=k).astype(np.int64),
        )


def compare(
    X: npt.ArrayLike,
    proba: npt.ArrayLike,
    called_malignant: npt.ArrayLike,
    reference: Reference,
    thresholds: Thresholds | None = None,
    threshold: float | None = None,
) -> dict[str, Any]:
    """Logged rows against the reference: the report's ``n``, ``features``, ``prediction_mix``,
    ``estimated``, ``thresholds``, ``flagged`` and ``drift``.

    ``X``: the logged inputs (n, 9) in `FEATURES` order; ``proba``: the logged malignant probabilities;
    ``called_malignant``: whether each answer was malignant; ``threshold``: the model's decision threshold
    (the prediction mix is tested against the training part's predicted mix when the reference recorded it
    at this threshold, else against the training class balance).
    """
    return compare_observed(Observed.of(X, proba, called_malignant, reference.probability.edges), reference,
                            thresholds, threshold)


def compare_observed(
    observed_counts: Observed, reference: Reference, thresholds: Thresholds | None = None, threshold: float | None = None
) -> dict[str, Any]:
    """`compare` from counts (`Observed`, what the query engine computes): the same report, figure for figure."""
    rule = thresholds or Thresholds()
    n = observed_counts.n
    observed = observed_counts.scores
    if observed.shape != (len(FEATURES), len(SCORES)) or len(observed_counts.by_bin) != len(reference.probability.counts):
        raise DriftError(f"observed counts need shape ({len(FEATURES)}, {len(SCORES)}) and one count per probability bin")
    expected = np.array([reference.features[name] for name in FEATURES])
    same_threshold = reference.predictions is not None and threshold is not None and reference.threshold == threshold
    mix_reference = reference.predictions if same_threshold and reference.predictions else reference.classes
    ref_mix = [mix_reference[c] for c in CLASSES]
    observed_mix = [int(n - observed_counts.malignant), int(observed_counts.malignant)]
    psis = psi(observed, expected)
    *tests, (_, mix_p) = chi_squares([*observed, observed_mix], [*expected, ref_mix])
    features = {
        name: {"psi": float(value), "chi2": chi2, "p_value": p_value, "flagged": rule.flags(float(value), p_value)}
        for name, value, (chi2, p_value) in zip(FEATURES, psis, tests)
    }
    prediction_mix = {
        "observed": {c: (k / n if n else 0.0) for c, k in zip(CLASSES, observed_mix)},
        "reference": {c: k / reference.n for c, k in zip(CLASSES, ref_mix)},
        "p_value": mix_p,
        "flagged": rule.flags(psi(observed_mix, ref_mix), mix_p),
    }
    flagged = [name for name, f in features.items() if f["flagged"]]
    return {
        "n": n,
        "features": features,
        "prediction_mix": prediction_mix,
        "estimated": _estimate(observed_counts.by_bin, observed_counts.malignant_by_bin, reference),
        "thresholds": {
            **rule.as_dict(),
            "prediction_mix_reference": "predicted mix of the training part at the model's threshold"
            if same_threshold
            else "class balance of the training part",
        },
        "flagged": flagged,
        "drift": bool(flagged) or bool(prediction_mix["flagged"]),
    }
