"""The candidates of each model family (`oncology.model_families` names them) compared by nested
cross-validation.

Only linear families can be exported to the code-free bundle the service scores, so only they are
selectable; the others (gradient-boosted trees, an RBF-kernel SVM) go through the same nested
cross-validation and are reported side by side, so that the choice of a linear model is earned
rather than assumed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sklearn.base import BaseEstimator
from sklearn.calibration import CalibratedClassifierCV
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from oncology.model_families import FAMILY


@dataclass(frozen=True)
class Candidate:
    """One family with one set of hyper-parameters."""

    name: str
    family: str
    hyperparameters: dict[str, Any]
    make: Callable[[], BaseEstimator]

    @property
    def selectable(self) -> bool:
        return FAMILY[self.family].selectable


def _logistic(c: float, seed: int) -> Callable[[], BaseEstimator]:
    return lambda: Pipeline([("scale", StandardScaler()), ("model", LogisticRegression(C=c, random_state=seed))])


def _lda(shrinkage: float) -> Callable[[], BaseEstimator]:
    return lambda: Pipeline(
        [("scale", StandardScaler()), ("model", LinearDiscriminantAnalysis(solver="lsqr", shrinkage=shrinkage))]
    )


def _gbt(depth: int, seed: int) -> Callable[[], BaseEstimator]:
    # early stopping off: it would carve a validation split of its own, not group-aware
    return lambda: HistGradientBoostingClassifier(
        max_iter=100, learning_rate=0.1, max_depth=depth, early_stopping=False, random_state=seed
    )


def _svm(c: float, seed: int) -> Callable[[], BaseEstimator]:
    # Platt scaling fitted on 3 folds of the training data it is given (never on the data it scores)
    return lambda: CalibratedClassifierCV(
        Pipeline([("scale", StandardScaler()), ("model", SVC(C=c, gamma="scale"))]),
        method="sigmoid",
        cv=StratifiedKFold(n_splits=3, shuffle=True, random_state=seed),
        ensemble=False,
    )


def candidates(seed: int, families: tuple[str, ...] | None = None) -> list[Candidate]:
    """Every candidate, each family's simplest (most regularised) first."""
    pool = [
        *(
            Candidate(f"logistic_regression(C={c})", "logistic_regression", {"C": c, "penalty": "l2", "solver": "lbfgs"},
                      _logistic(c, seed))
            for c in (0.01, 0.1, 1.0)
        ),
        *(
            Candidate(f"linear_discriminant(shrinkage={s})", "linear_discriminant_analysis",
                      {"solver": "lsqr", "shrinkage": s}, _lda(s))
            for s in (0.2, 0.0)
        ),
        *(
            Candidate(f"gradient_boosted_trees(max_depth={d})", "gradient_boosted_trees",
                      {"max_iter": 100, "learning_rate": 0.1, "max_depth": d}, _gbt(d, seed))
            for d in (2, 3)
        ),
        *(
            Candidate(f"svm_rbf(C={c})", "svm_rbf", {"C": c, "gamma": "scale", "calibration": "sigmoid, 3 folds"},
                      _svm(c, seed))
            for c in (0.3, 3.0)
        ),
    ]
    return [c for c in pool if families is None or c.family in families]
