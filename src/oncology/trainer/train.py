"""Training: group-aware split, repeated stratified group CV over model families, threshold
tuning for malignant recall, held-out evaluation, and export to a code-free bundle."""

from __future__ import annotations

import logging
import platform
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.base import ClassifierMixin
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from oncology.settings import TrainSettings
from oncology.trainer import metrics
from oncology.trainer.data import REPO_ROOT, Dataset
from oncology_model.bundle import Bundle, LinearScorer
from oncology_model.datamodel import FEATURES, SCORE_MAX, SCORE_MIN
from oncology_model.errors import OncologyError

log = logging.getLogger(__name__)

#: (done, total, what) - called as training advances
Progress = Callable[[int, int, str], None]

#: Largest difference allowed between the exported scorer and the estimator it came from.
PARITY_TOLERANCE = 1e-9


class ExportError(OncologyError):
    """The exported model does not reproduce the trained estimator."""


@dataclass(frozen=True)
class Candidate:
    name: str
    family: str
    hyperparameters: dict[str, Any]
    make: Callable[[], Pipeline]


def _logistic(c: float, seed: int) -> Callable[[], Pipeline]:
    return lambda: Pipeline([("scale", StandardScaler()), ("model", LogisticRegression(C=c, random_state=seed))])


def _lda(shrinkage: float) -> Callable[[], Pipeline]:
    return lambda: Pipeline(
        [("scale", StandardScaler()), ("model", LinearDiscriminantAnalysis(solver="lsqr", shrinkage=shrinkage))]
    )


def candidates(seed: int) -> list[Candidate]:
    """The model families compared by cross-validation, simplest (most regularised) first."""
    return [
        *(
            Candidate(f"logistic_regression(C={c})", "logistic_regression", {"C": c, "penalty": "l2", "solver": "lbfgs"}, _logistic(c, seed))
            for c in (0.01, 0.1, 1.0)
        ),
        *(
            Candidate(f"linear_discriminant(shrinkage={s})", "linear_discriminant_analysis", {"solver": "lsqr", "shrinkage": s}, _lda(s))
            for s in (0.2, 0.0)
        ),
    ]


@dataclass
class Scored:
    """A candidate's out-of-fold probabilities and Brier score per CV fold."""

    candidate: Candidate
    fold_proba: list[npt.NDArray[np.float64]] = field(default_factory=list)
    brier: list[float] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return float(np.mean(self.brier))

    @property
    def sem(self) -> float:
        return float(np.std(self.brier, ddof=1) / np.sqrt(len(self.brier))) if len(self.brier) > 1 else 0.0


def select(results: list[Scored]) -> Scored:
    """The one-standard-error rule on the CV Brier score.

    The Brier score is a proper scoring rule: it rewards both ranking and calibrated probabilities,
    and the service returns the probability.  Among candidates whose mean is within one standard
    error of the best, the first (the simplest, most regularised) wins: differences smaller than
    that are noise on 683 rows.
    """
    best = min(results, key=lambda r: r.mean)
    return next(r for r in results if r.mean <= best.mean + best.sem)


@dataclass
class TrainingResult:
    version: str
    files: dict[str, bytes]
    kpis: dict[str, Any]
    metadata: dict[str, Any]
    estimator: Pipeline
    test_index: npt.NDArray[np.int64] = field(repr=False)


def train(dataset: Dataset, settings: TrainSettings, version: str, progress: Progress | None = None) -> TrainingResult:
    """Train, select, tune, evaluate and export; the result's files are a verified bundle."""
    report = progress or (lambda done, total, what: None)
    X, y, groups = dataset.X, dataset.y, dataset.ids

    # held-out test split: whole sample ids on one side, classes stratified
    outer = StratifiedGroupKFold(n_splits=settings.test_splits, shuffle=True, random_state=settings.seed)
    train_idx, test_idx = next(outer.split(X, y, groups))
    Xtr, ytr, gtr = X[train_idx], y[train_idx], groups[train_idx]

    folds = [
        split
        for repeat in range(settings.cv_repeats)
        for split in StratifiedGroupKFold(
            n_splits=settings.cv_folds, shuffle=True, random_state=settings.seed + repeat
        ).split(Xtr, ytr, gtr)
    ]
    pool = candidates(settings.seed)
    total = len(pool) * len(folds) + 1
    done = 0
    results: list[Scored] = []
    for cand in pool:
        scored = Scored(cand)
        for fit_idx, val_idx in folds:
            est = cand.make().fit(Xtr[fit_idx], ytr[fit_idx])
            proba = est.predict_proba(Xtr[val_idx])[:, 1]
            scored.fold_proba.append(proba)
            scored.brier.append(float(np.mean((proba - ytr[val_idx]) ** 2)))
            done += 1
            report(done, total, f"cross-validating {cand.name}")
        results.append(scored)
        log.info("cv %s: brier %.4f +- %.4f", cand.name, np.mean(scored.brier), np.std(scored.brier))

    best = select(results)
    best_proba = best.fold_proba
    pooled_y = np.concatenate([ytr[val] for _, val in folds])
    threshold = metrics.recall_threshold(pooled_y, np.concatenate(best_proba), settings.target_recall)
    cv_folds = [metrics.kpis(ytr[val], proba, threshold) for (_, val), proba in zip(folds, best_proba)]

    estimator = best.candidate.make().fit(Xtr, ytr)
    test_proba = estimator.predict_proba(X[test_idx])[:, 1]
    test = metrics.kpis(y[test_idx], test_proba, threshold)
    report(total, total, f"evaluated {best.candidate.name}")

    kpis = {
        "version": version,
        "threshold": threshold,
        "test": {**{k: test[k] for k in metrics.KPI_NAMES}, "n": int(len(test_idx)),
                 "confusion_matrix": {k: test[k] for k in metrics.CONFUSION}},
        "cv": {"folds": settings.cv_folds, "repeats": settings.cv_repeats, **metrics.summarize(cv_folds)},
    }
    model = export(estimator)
    metadata = _metadata(dataset, settings, version, best.candidate, threshold, results)
    files = Bundle.assemble(version, model, metadata, kpis)
    check_parity(Bundle.from_files(files), estimator, X)
    return TrainingResult(version, files, kpis, metadata, estimator, test_idx)


def export(estimator: Pipeline) -> dict[str, Any]:
    """The fitted parameters as plain numbers for `LinearScorer`."""
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


def check_parity(bundle: Bundle, estimator: Pipeline, X: npt.NDArray[np.float64]) -> None:
    """Refuse a bundle whose probabilities or labels differ from the estimator's on any row."""
    expected = estimator.predict_proba(X)[:, 1]
    got = np.array(bundle.scorer.proba_many(X.tolist()))
    worst = float(np.max(np.abs(expected - got)))
    same_labels = np.array_equal(expected >= bundle.threshold, got >= bundle.threshold)
    if worst > PARITY_TOLERANCE or not same_labels:
        raise ExportError(f"the exported model differs from the estimator (max |dp| = {worst:.3g}); not published")


def _metadata(
    dataset: Dataset,
    settings: TrainSettings,
    version: str,
    best: Candidate,
    threshold: float,
    results: list[Scored],
) -> dict[str, Any]:
    return {
        "version": version,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": {
            "uri": dataset.source,
            "sha256": dataset.sha256,
            "rows_read": dataset.rows_read,
            "rows_used": len(dataset),
            "rows_with_missing_values_excluded": dataset.rows_missing,
        },
        "code": {"git_commit": git_commit()},
        "model": {"family": best.family, "name": best.name, "hyperparameters": best.hyperparameters},
        "features": list(FEATURES),
        "feature_schema": {name: {"type": "integer", "minimum": SCORE_MIN, "maximum": SCORE_MAX} for name in FEATURES},
        "target": {"positive_class": "malignant", "labels": {"2": "benign", "4": "malignant"}},
        "threshold": threshold,
        "threshold_rule": f"highest threshold with cross-validated malignant recall >= {settings.target_recall}",
        "training": {
            "seed": settings.seed,
            "cv_folds": settings.cv_folds,
            "cv_repeats": settings.cv_repeats,
            "test_split": f"1 of {settings.test_splits} stratified group folds (by sample id)",
            "selection": "lowest CV Brier score, one-standard-error rule, simplest first",
            "candidates": [
                {"name": r.candidate.name, "cv_brier_mean": r.mean, "cv_brier_sem": r.sem} for r in results
            ],
        },
        "libraries": {
            "python": platform.python_version(),
            **{name: importlib_metadata.version(name) for name in ("numpy", "scikit-learn", "pydantic")},
        },
    }


def git_commit() -> str:
    """The code's commit, with ``-dirty`` when the work tree has changes; ``unknown`` outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        import os

        return os.environ.get("ONCOLOGY_GIT_COMMIT", "unknown")
    return commit + ("-dirty" if dirty else "")
