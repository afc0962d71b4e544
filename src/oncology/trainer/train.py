"""Training: the held-out split, nested cross-validation of the whole selection procedure (family,
hyper-parameters, threshold, referral band) over model families, the same procedure on the whole
training part, held-out evaluation with confidence intervals, the model card, and export to a
code-free bundle."""

from __future__ import annotations

import logging
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from oncology.model_families import FAMILIES
from oncology.monitoring.drift import reference_from
from oncology.monitoring.report import evaluation_file
from oncology.project import git_commit
from oncology.settings import TrainSettings
from oncology.trainer import card, families, metrics, selection
from oncology.trainer.data import Dataset, describe
from oncology.trainer.families import Candidate
from oncology_model.bundle import EVALUATION, MODEL, REFERENCE, Bundle, LinearScorer, dump_json
from oncology_model.datamodel import FEATURES, SCORE_MAX, SCORE_MIN
from oncology_model.errors import OncologyError

log = logging.getLogger(__name__)

#: (done, total, what) - called as training advances
Progress = Callable[[int, int, str], None]

#: Largest difference allowed between the exported scorer and the estimator it came from.
PARITY_TOLERANCE = 1e-9


class ExportError(OncologyError):
    """The exported model does not reproduce the trained estimator."""


#: What the nested CV is held against (reported with each figure; a miss is reported, never tuned away).
TARGETS = (
    ("cv accuracy", ("cv", "mean", "accuracy"), ">=", 0.97),
    ("cv malignant recall", ("cv", "mean", "recall"), ">=", 0.98),
    ("cv specificity (with that recall)", ("cv", "mean", "specificity"), ">=", 0.95),
    ("cv ROC AUC", ("cv", "mean", "roc_auc"), ">=", 0.995),
    ("cv malignant recall among cases not referred", ("referral", "cv", "mean", "recall_not_referred"), ">=", 0.995),
    ("cv share of cases referred", ("referral", "cv", "mean", "referred"), "<=", 0.10),
)


def candidates(seed: int) -> list[Candidate]:
    """The candidates the trainer can publish: the linear (selectable) ones, simplest first.  The
    others are compared, not published: `families.candidates` lists them all."""
    return [c for c in families.candidates(seed) if c.selectable]


@dataclass
class TrainingResult:
    version: str
    files: dict[str, bytes]
    kpis: dict[str, Any]
    metadata: dict[str, Any]
    estimator: BaseEstimator
    test_index: npt.NDArray[np.int64] = field(repr=False)
    model: dict[str, Any] = field(default_factory=dict, repr=False)
    #: bundle files that carry no version (reference.json, evaluation.json)
    data_files: dict[str, bytes] = field(default_factory=dict, repr=False)

    def files_for(self, version: str) -> dict[str, bytes]:
        """The same bundle as version ``version``: the registry assigns the version when it publishes."""
        if version == self.version:
            return self.files
        metadata = {**self.metadata, "version": version}
        kpis = {**self.kpis, "version": version}
        return Bundle.assemble(version, self.model, metadata, kpis, extra={**card.files(metadata, kpis), **self.data_files})


def held_out_split(dataset: Dataset, settings: TrainSettings) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(training rows, test rows): one fold of a stratified group split by sample id."""
    outer = StratifiedGroupKFold(n_splits=settings.test_splits, shuffle=True, random_state=settings.seed)
    train_idx, test_idx = next(outer.split(dataset.X, dataset.y, dataset.ids))
    return train_idx.astype(np.int64), test_idx.astype(np.int64)


def train(
    dataset: Dataset,
    settings: TrainSettings,
    version: str,
    progress: Progress | None = None,
    trace: selection.Trace | None = None,
) -> TrainingResult:
    """Nested CV, then the same choices on the whole training part, held-out evaluation and export;
    the result's files are a verified bundle.  ``trace`` records every use of rows (for the leak test)."""
    # one thread: the machine is shared, and threaded histogram sums could differ between runs
    with threadpool_limits(limits=1):
        return _train(dataset, settings, version, progress or (lambda done, total, what: None), trace)


def _train(
    dataset: Dataset, settings: TrainSettings, version: str, report: Progress, trace: selection.Trace | None
) -> TrainingResult:
    train_idx, test_idx = held_out_split(dataset, settings)
    if trace is not None:
        trace.outer["final"] = (train_idx, test_idx)
    data = selection.Data(dataset.X, dataset.y, dataset.ids)
    plan = selection.Plan(settings.cv_folds, settings.cv_repeats, settings.inner_folds, settings.seed)
    targets = selection.Targets(settings.target_recall, settings.target_confidence, settings.referral_budget)
    pool = families.candidates(settings.seed, settings.families)
    n_outer = settings.cv_folds * settings.cv_repeats
    refits = sum(c.selectable for c in pool) + len({c.family for c in pool if not c.selectable})
    total = n_outer * (settings.inner_folds * len(pool) + refits) + settings.inner_folds * len(pool) + 1
    done = [0]

    def tick(what: str, fold: str) -> None:
        done[0] += 1
        outer = fold.removeprefix("outer-")
        where = f"outer fold {int(outer) + 1} of {n_outer}" if outer.isdigit() else "the whole training part"
        report(min(done[0], total - 1), total, f"fitted {what} on {where}")

    fitter = selection.Fitter(data, trace, tick)
    cv = selection.nested_cv(fitter, pool, train_idx, plan, targets)
    for proc, results in cv.folds.items():
        s = metrics.summarize([r.kpis for r in results])
        log.info("nested cv %s: accuracy %.4f, recall %.4f, auc %.4f, brier %.4f", proc,
                 s["mean"]["accuracy"], s["mean"]["recall"], s["mean"]["roc_auc"], s["mean"]["brier"])

    # the published model: the same procedure on the whole training part
    finals = selection.choose(fitter, pool, train_idx, plan, targets, "final")
    final = finals[selection.SELECTED]
    estimator = fitter.fit(final.candidate, train_idx, "final")
    y_test = dataset.y[test_idx]
    test_proba = fitter.proba(estimator, test_idx)
    family_test = {}
    for proc, choice in finals.items():
        if proc != selection.SELECTED:
            est = estimator if choice.candidate == final.candidate else fitter.fit(choice.candidate, train_idx, "final")
            family_test[proc] = metrics.kpis(y_test, fitter.proba(est, test_idx), choice.threshold)
    report(total, total, f"evaluated {final.candidate.name}")

    kpis = _kpis(version, settings, dataset, final, cv, test_proba, test_idx, family_test, finals, pool, data, targets)
    model = export(estimator)
    metadata = _metadata(dataset, settings, version, finals)
    data_files = {
        # what drift checks compare the traffic with, and what the dashboard's curves are drawn from
        REFERENCE: dump_json(reference_from(
            dataset.X[train_idx], dataset.y[train_idx], fitter.proba(estimator, train_idx), final.threshold
        )),
        EVALUATION: evaluation_file(y_test, test_proba, dataset.ids[test_idx]),
    }
    files = Bundle.assemble(version, model, metadata, kpis, extra={**card.files(metadata, kpis), **data_files})
    check_parity(Bundle.from_files(files), estimator, dataset.X)
    return TrainingResult(version, files, kpis, metadata, estimator, test_idx, model, data_files)


def _kpis(
    version: str,
    settings: TrainSettings,
    dataset: Dataset,
    final: selection.Choice,
    cv: selection.NestedCV,
    test_proba: npt.NDArray[np.float64],
    test_idx: npt.NDArray[np.int64],
    family_test: dict[str, dict[str, float]],
    finals: dict[str, selection.Choice],
    pool: list[Candidate],
    data: selection.Data,
    targets: selection.Targets,
) -> dict[str, Any]:
    y_test, groups_test = dataset.y[test_idx], dataset.ids[test_idx]
    threshold, band = final.threshold, final.band
    test = metrics.kpis(y_test, test_proba, threshold)
    test_referral = metrics.referral_kpis(y_test, test_proba, band)
    selected = selection.summary(cv.folds[selection.SELECTED], settings.cv_folds)
    own_name, own_threshold, own_band, own_results = selection.tuned_on_own_folds(data, pool, cv, targets)
    own = selection.summary(own_results, settings.cv_folds)
    cv_settings = {
        "method": "nested",
        "folds": settings.cv_folds,
        "repeats": settings.cv_repeats,
        "inner_folds": settings.inner_folds,
        "n": int(sum(len(t) for _, t in cv.outer) // settings.cv_repeats),
        "n_malignant": int(sum(int(np.sum(dataset.y[t] == 1)) for _, t in cv.outer) // settings.cv_repeats),
    }
    kpis: dict[str, Any] = {
        "version": version,
        "threshold": threshold,
        "test": {
            **{k: test[k] for k in metrics.KPI_NAMES},
            "n": int(len(test_idx)),
            "confusion_matrix": {k: int(test[k]) for k in metrics.CONFUSION},
            "ci": metrics.confidence_intervals(y_test, test_proba, groups_test, threshold, settings.seed),
            "ci_method": {
                "level": 0.95,
                **metrics.CI_METHOD,
                "bootstrap": f"percentile, {metrics.BOOTSTRAP_RESAMPLES} resamples of sample ids (seed {settings.seed})",
            },
        },
        "cv": {**cv_settings, "mean": selected["mean"], "std": selected["std"], "chosen": selected["chosen"],
               "threshold": selected["threshold"], "by_repeat": selected["by_repeat"]},
        "referral": {
            "low": band.low,
            "high": band.high,
            "within_budget_on_training": band.met,
            "cv": selected["referral"],
            "test": {
                **{k: test_referral[k] for k in metrics.REFERRAL_NAMES},
                **{k: int(test_referral[k]) for k in metrics.REFERRAL_COUNTS},
                "n": int(len(test_idx)),
                "ci": metrics.referral_intervals(test_referral, y_test),
            },
        },
        "families": [
            {
                "family": fam.name,
                "label": fam.label,
                "selectable": fam.selectable,
                "note": fam.note,
                "cv": {k: s for k, s in selection.summary(cv.folds[fam.name], settings.cv_folds).items()},
                "final_choice": finals[fam.name].candidate.name,
                "test": {k: family_test[fam.name][k] for k in metrics.KPI_NAMES},
            }
            for fam in FAMILIES
            if fam.name in cv.folds
        ],
        "cv_tuned_on_own_folds": {
            "method": "not nested: candidate, threshold and band chosen on the same outer-fold predictions "
            "they are scored on (the procedure before nested CV); optimistic, for comparison only",
            "folds": settings.cv_folds,
            "repeats": settings.cv_repeats,
            "chosen": own_name,
            "threshold": own_threshold,
            "referral": {"low": own_band.low, "high": own_band.high, **own["referral"]},
            "mean": own["mean"],
            "std": own["std"],
        },
        "threshold_table": metrics.threshold_table(
            threshold, {"cv": cv.pooled[selection.SELECTED], "test": (y_test, test_proba)}
        ),
    }
    kpis["targets"] = [
        {"name": name, "key": ".".join(path), "op": op, "target": target,
         "value": (value := _get(kpis, path)), "met": value >= target if op == ">=" else value <= target}
        for name, path, op, target in TARGETS
    ]
    return kpis


def _get(obj: Any, path: tuple[str, ...]) -> float:
    for key in path:
        obj = obj[key]
    return float(obj)


def export(estimator: BaseEstimator) -> dict[str, Any]:
    """The fitted parameters as plain numbers for `LinearScorer` (a scaler and a linear model only)."""
    if not isinstance(estimator, Pipeline) or list(estimator.named_steps) != ["scale", "model"]:
        raise ExportError(f"{type(estimator).__name__} is not a scaled linear model: it cannot be exported to {MODEL}")
    scaler: StandardScaler = estimator.named_steps["scale"]
    model: ClassifierMixin = estimator.named_steps["model"]
    coef = np.asarray(model.coef_, dtype=np.float64).ravel()
    intercept = float(np.asarray(model.intercept_).ravel()[0])
    return {
        "kind": LinearScorer.kind,
        "mean": scaler.mean_.tolist(),
        "scale": scaler.scale_.tolist(),
        "coef": coef.tolist(),
        "intercept": intercept,
    }


def check_parity(bundle: Bundle, estimator: BaseEstimator, X: npt.NDArray[np.float64]) -> None:
    """Refuse a bundle whose probabilities or labels differ from the estimator's on any row."""
    expected = estimator.predict_proba(X)[:, 1]
    got = np.array(bundle.scorer.proba_many(X.tolist()))
    worst = float(np.max(np.abs(expected - got)))
    same_labels = np.array_equal(expected >= bundle.threshold, got >= bundle.threshold)
    if worst > PARITY_TOLERANCE or not same_labels:
        raise ExportError(f"the exported model differs from the estimator (max |dp| = {worst:.3g}); not published")


def _metadata(
    dataset: Dataset, settings: TrainSettings, version: str, finals: dict[str, selection.Choice]
) -> dict[str, Any]:
    final = finals[selection.SELECTED]
    best = final.candidate
    return {
        "version": version,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": describe(dataset),
        "code": {"git_commit": git_commit()},
        "model": {"family": best.family, "name": best.name, "hyperparameters": best.hyperparameters},
        "features": list(FEATURES),
        "feature_schema": {name: {"type": "integer", "minimum": SCORE_MIN, "maximum": SCORE_MAX} for name in FEATURES},
        "target": {"positive_class": "malignant", "labels": {"2": "benign", "4": "malignant"}},
        "threshold": final.threshold,
        "threshold_rule": threshold_rule(final.rank, settings.target_confidence, settings.inner_folds),
        "threshold_rank": {"k": final.rank.k, "n": final.rank.n, "target_recall": final.rank.target,
                           "confidence": final.rank.confidence, "confidence_asked": settings.target_confidence},
        "referral": {
            "low": final.band.low,
            "high": final.band.high,
            "rule": f"the band below the threshold that refers at most {settings.referral_budget:.0%} of the training "
            f"part's cases on its inner {settings.inner_folds}-fold out-of-fold probabilities, reaching at least down to "
            "the lowest malignant one" + ("" if final.band.met else " (which took more than that share)"),
        },
        "training": {
            "seed": settings.seed,
            "method": "nested cross-validation",
            "cv_folds": settings.cv_folds,
            "cv_repeats": settings.cv_repeats,
            "inner_folds": settings.inner_folds,
            "test_split": f"1 of {settings.test_splits} stratified group folds (by sample id)",
            "selection": "among the selectable (linear) candidates, lowest inner-CV Brier score by the "
            "one-standard-error rule, simplest first",
            "families": list(settings.families),
            "candidates": [
                {"name": s.candidate.name, "family": s.candidate.family, "selectable": s.candidate.selectable,
                 "cv_brier_mean": s.mean, "cv_brier_sem": s.sem}
                for s in _all_scores(finals)
            ],
        },
        "libraries": {
            "python": platform.python_version(),
            **{name: importlib_metadata.version(name) for name in ("numpy", "scipy", "scikit-learn", "pydantic")},
        },
    }


def threshold_rule(rank: metrics.Threshold, confidence: float, inner_folds: int) -> str:
    """The threshold rule as the card states it, with its figures."""
    reached = (
        f"with probability {rank.confidence:.1%}" if rank.confidence >= confidence
        else f"with probability {rank.confidence:.1%} only, short of the {confidence:.0%} asked: too few malignant cases"
    )
    return (
        f"the {_ordinal(rank.k)} lowest of the {rank.n} malignant probabilities of the training part's inner "
        f"{inner_folds}-fold out-of-fold predictions: the largest rank k at which at most {1 - rank.target:.1%} of new "
        f"malignant cases fall below it with probability >= {confidence:.0%} (the miss rate is Beta(k, n + 1 - k)); "
        f"here {reached}, expected miss rate k / (n + 1) = {rank.k / (rank.n + 1):.2%}"
    )


def _ordinal(k: int) -> str:
    return f"{k}{'th' if 10 <= k % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(k % 10, 'th')}"


def _all_scores(finals: dict[str, selection.Choice]) -> list[selection.Scored]:
    """Every candidate's inner-CV scores on the whole training part, each once, in pool order."""
    seen: dict[str, selection.Scored] = {}
    for choice in finals.values():
        for s in choice.scores:
            seen.setdefault(s.candidate.name, s)
    return list(seen.values())
