"""Choosing a model on training rows only, and nested cross-validation of that choice.

`choose` is the whole selection procedure: inner group-aware CV of every candidate, the family and
hyper-parameters by the one-standard-error rule on the Brier score, the decision threshold for
malignant recall and the referral band, all from the inner out-of-fold probabilities of the rows it
is given.  `nested_cv` runs it inside each outer fold (group-aware, stratified, repeated) and
scores the outer test fold, which no choice has seen: those scores are the honest CV figures.

Every fit and every choice reports the rows it used to a `Trace`, so that a test can prove no
outer test row (nor sample id) ever reaches a choice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.base import BaseEstimator
from sklearn.model_selection import StratifiedGroupKFold

from oncology.model_families import FAMILIES
from oncology.trainer import metrics
from oncology.trainer.families import Candidate

Index = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]

#: The procedure that may be published: its choices range over the selectable (linear) families.
SELECTED = "selected"


@dataclass(frozen=True)
class Targets:
    """What the threshold and the referral band are chosen for (on inner out-of-fold probabilities)."""

    recall: float  # malignant recall on new cases at the decision threshold
    confidence: float  # the probability with which the threshold's miss rate is at most 1 - recall
    referral_budget: float  # the share of cases the referral band may refer


@dataclass(frozen=True)
class Plan:
    """How the data is split: outer folds x repeats for evaluation, inner folds for every choice."""

    outer_folds: int
    outer_repeats: int
    inner_folds: int
    seed: int


@dataclass
class Event:
    """One use of training rows: ``kind`` is fit, select, threshold or referral; ``fold`` the outer fold
    (``final`` for the published model)."""

    kind: str
    fold: str
    what: str
    rows: Index


@dataclass
class Trace:
    """Every use of rows made by a training run, for the leak test."""

    events: list[Event] = field(default_factory=list)
    outer: dict[str, tuple[Index, Index]] = field(default_factory=dict)

    def add(self, kind: str, fold: str, what: str, rows: Index) -> None:
        self.events.append(Event(kind, fold, what, np.array(rows, dtype=np.int64)))


@dataclass
class Data:
    X: Floats
    y: npt.NDArray[np.int64]
    groups: npt.NDArray[np.int64]


@dataclass(frozen=True)
class Scored:
    """A candidate's inner-CV Brier score per fold, and its pooled out-of-fold probabilities."""

    candidate: Candidate
    rows: Index  # the rows of ``proba``, in the same order
    proba: Floats
    brier: tuple[float, ...]

    @property
    def mean(self) -> float:
        return float(np.mean(self.brier))

    @property
    def sem(self) -> float:
        return float(np.std(self.brier, ddof=1) / np.sqrt(len(self.brier))) if len(self.brier) > 1 else 0.0


@dataclass(frozen=True)
class Choice:
    """What `choose` decided for one procedure, from training rows only."""

    candidate: Candidate
    threshold: float
    band: metrics.Band
    scores: tuple[Scored, ...]
    rank: metrics.Threshold  # how the threshold was found: its rank among the malignant probabilities


def one_se(results: Sequence[Scored]) -> Scored:
    """The one-standard-error rule on the CV Brier score.

    The Brier score is a proper scoring rule: it rewards both ranking and calibrated probabilities,
    and the service returns the probability.  Among candidates whose mean is within one standard
    error of the best, the first (the simplest, most regularised) wins: differences smaller than
    that are noise on a few hundred rows.
    """
    best = min(results, key=lambda r: r.mean)
    return next(r for r in results if r.mean <= best.mean + best.sem)


def group_folds(data: Data, rows: Index, n_splits: int, seed: int) -> list[tuple[Index, Index]]:
    """Stratified folds of ``rows`` that keep every sample id on one side; as row numbers of ``data``."""
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return [(rows[a], rows[b]) for a, b in splitter.split(data.X[rows], data.y[rows], data.groups[rows])]


class Fitter:
    """Fits candidates on row sets, reporting each fit to the trace; caches fits within one outer fold."""

    def __init__(self, data: Data, trace: Trace | None, tick: Callable[[str, str], None]) -> None:
        self.data, self.trace, self.tick = data, trace, tick

    def fit(self, cand: Candidate, rows: Index, fold: str) -> BaseEstimator:
        if self.trace is not None:
            self.trace.add("fit", fold, cand.name, rows)
        est = cand.make().fit(self.data.X[rows], self.data.y[rows])
        self.tick(cand.name, fold)
        return est

    def proba(self, est: BaseEstimator, rows: Index) -> Floats:
        return np.asarray(est.predict_proba(self.data.X[rows])[:, 1], dtype=np.float64)


def inner_scores(
    fitter: Fitter, pool: Sequence[Candidate], rows: Index, plan: Plan, fold: str
) -> dict[str, Scored]:
    """Inner group-aware CV of every candidate on ``rows`` (the only rows it touches)."""
    splits = group_folds(fitter.data, rows, plan.inner_folds, plan.seed)
    y = fitter.data.y
    scored = {}
    for cand in pool:
        probas, briers = [], []
        for fit_rows, val_rows in splits:
            p = fitter.proba(fitter.fit(cand, fit_rows, fold), val_rows)
            probas.append(p)
            briers.append(float(np.mean((p - y[val_rows]) ** 2)))
        scored[cand.name] = Scored(
            cand, np.concatenate([v for _, v in splits]), np.concatenate(probas), tuple(briers)
        )
    return scored


def threshold_and_band(y: npt.NDArray[np.int64], proba: Floats, targets: Targets) -> tuple[metrics.Threshold, metrics.Band]:
    """The decision threshold and the referral band below it, from out-of-fold probabilities."""
    rank = metrics.recall_threshold(y, proba, targets.recall, targets.confidence)
    return rank, metrics.referral_band(y, proba, rank.value, targets.referral_budget)


def decide(
    scores: dict[str, Scored], names: Sequence[str], data: Data, targets: Targets, trace: Trace | None, fold: str
) -> Choice:
    """Candidate (one-SE rule), threshold and referral band among ``names``, from inner scores only."""
    considered = [scores[n] for n in names]
    best = one_se(considered)
    y = data.y[best.rows]
    rank, band = threshold_and_band(y, best.proba, targets)
    if trace is not None:
        for s in considered:
            trace.add("select", fold, s.candidate.name, s.rows)
        trace.add("threshold", fold, best.candidate.name, best.rows)
        trace.add("referral", fold, best.candidate.name, best.rows)
    return Choice(best.candidate, rank.value, band, tuple(considered), rank)


def procedures(pool: Sequence[Candidate]) -> dict[str, list[str]]:
    """The selected procedure (selectable candidates) and one per family (its own candidates)."""
    found = {SELECTED: [c.name for c in pool if c.selectable]}
    for fam in FAMILIES:
        names = [c.name for c in pool if c.family == fam.name]
        if names:
            found[fam.name] = names
    return found


def choose(
    fitter: Fitter, pool: Sequence[Candidate], rows: Index, plan: Plan, targets: Targets, fold: str
) -> dict[str, Choice]:
    """Every procedure's choice from ``rows`` alone (inner CV)."""
    scores = inner_scores(fitter, pool, rows, plan, fold)
    return {
        proc: decide(scores, names, fitter.data, targets, fitter.trace, fold) for proc, names in procedures(pool).items()
    }


@dataclass
class FoldResult:
    """One procedure's figures on one outer test fold."""

    kpis: dict[str, float]
    referral: dict[str, float]
    chosen: str
    threshold: float
    band: metrics.Band


@dataclass
class NestedCV:
    """Per procedure, the outer-fold results; and the pooled outer-fold probabilities of each."""

    folds: dict[str, list[FoldResult]]
    pooled: dict[str, tuple[npt.NDArray[np.int64], Floats]]
    #: the linear candidates' outer-fold probabilities: for the figures "tuned on their own folds"
    own_folds: dict[str, list[Floats]]
    outer: list[tuple[Index, Index]]


def outer_folds(data: Data, rows: Index, plan: Plan) -> list[tuple[Index, Index]]:
    return [
        split
        for repeat in range(plan.outer_repeats)
        for split in group_folds(data, rows, plan.outer_folds, plan.seed + repeat)
    ]


def nested_cv(
    fitter: Fitter, pool: Sequence[Candidate], rows: Index, plan: Plan, targets: Targets
) -> NestedCV:
    """Every procedure chosen inside each outer fold's training rows, scored on its test rows."""
    data = fitter.data
    outer = outer_folds(data, rows, plan)
    folds: dict[str, list[FoldResult]] = {p: [] for p in procedures(pool)}
    pooled_y: dict[str, list[npt.NDArray[np.int64]]] = {p: [] for p in folds}
    pooled_p: dict[str, list[Floats]] = {p: [] for p in folds}
    own: dict[str, list[Floats]] = {c.name: [] for c in pool if c.selectable}
    for k, (train_rows, test_rows) in enumerate(outer):
        fold = f"outer-{k}"
        if fitter.trace is not None:
            fitter.trace.outer[fold] = (train_rows, test_rows)
        choices = choose(fitter, pool, train_rows, plan, targets, fold)
        fitted: dict[str, Floats] = {}
        for cand in [c.candidate for c in choices.values()] + [c for c in pool if c.selectable]:
            if cand.name not in fitted:
                fitted[cand.name] = fitter.proba(fitter.fit(cand, train_rows, fold), test_rows)
        y = data.y[test_rows]
        for proc, choice in choices.items():
            p = fitted[choice.candidate.name]
            folds[proc].append(
                FoldResult(
                    metrics.kpis(y, p, choice.threshold),
                    metrics.referral_kpis(y, p, choice.band),
                    choice.candidate.name,
                    choice.threshold,
                    choice.band,
                )
            )
            pooled_y[proc].append(y)
            pooled_p[proc].append(p)
        for name in own:
            own[name].append(fitted[name])
    pooled = {p: (np.concatenate(pooled_y[p]), np.concatenate(pooled_p[p])) for p in folds}
    return NestedCV(folds, pooled, own, outer)


def tuned_on_own_folds(
    data: Data, pool: Sequence[Candidate], cv: NestedCV, targets: Targets
) -> tuple[str, float, metrics.Band, list[FoldResult]]:
    """The old, optimistic procedure on the same outer folds: candidate, threshold and band chosen on
    the very out-of-fold probabilities they are then scored on.  Reported only, for comparison."""
    scored = []
    for cand in pool:
        if cand.selectable:
            probas = cv.own_folds[cand.name]
            briers = tuple(float(np.mean((p - data.y[t]) ** 2)) for p, (_, t) in zip(probas, cv.outer))
            scored.append(Scored(cand, np.concatenate([t for _, t in cv.outer]), np.concatenate(probas), briers))
    best = one_se(scored)
    y = data.y[best.rows]
    rank, band = threshold_and_band(y, best.proba, targets)
    threshold = rank.value
    results = [
        FoldResult(
            metrics.kpis(data.y[t], p, threshold),
            metrics.referral_kpis(data.y[t], p, band),
            best.candidate.name,
            threshold,
            band,
        )
        for p, (_, t) in zip(cv.own_folds[best.candidate.name], cv.outer)
    ]
    return best.candidate.name, threshold, band, results


def summary(results: Sequence[FoldResult], folds: int) -> dict[str, Any]:
    """Mean and std over outer folds of the KPIs and the referral figures, how often each candidate
    was chosen, and each repeat's means (``results`` hold ``folds`` outer folds per repeat, in order):
    the spread between repeats is how much the figures move with nothing but the shuffle."""
    chosen: dict[str, int] = {}
    for r in results:
        chosen[r.chosen] = chosen.get(r.chosen, 0) + 1
    repeats = [results[i : i + folds] for i in range(0, len(results), folds)]
    return {
        **metrics.summarize([r.kpis for r in results]),
        "referral": metrics.summarize([r.referral for r in results]),
        "chosen": dict(sorted(chosen.items())),
        "threshold": metrics.summarize([{"threshold": r.threshold, "low": r.band.low, "high": r.band.high} for r in results]),
        "by_repeat": {
            name: [float(np.mean([r.kpis[name] for r in rep])) for rep in repeats] for name in metrics.KPI_NAMES
        } | {
            name: [float(np.mean([r.referral[name] for r in rep])) for rep in repeats] for name in metrics.REFERRAL_NAMES
        },
    }
