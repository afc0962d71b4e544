"""The KPIs reported for every model: one function, used for CV folds and the held-out test."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from sklearn.metrics import brier_score_loss, roc_auc_score

#: Scalar KPIs, in report order.
KPI_NAMES = ("accuracy", "recall", "specificity", "precision", "f1", "roc_auc", "brier")
CONFUSION = ("tn", "fp", "fn", "tp")


def kpis(y: npt.NDArray[np.int64], proba: npt.NDArray[np.float64], threshold: float) -> dict[str, float]:
    """KPIs of malignant probabilities ``proba`` against labels ``y`` (1 = malignant) at ``threshold``.

    ``recall`` is malignant recall (sensitivity); ``specificity`` is benign recall.
    """
    pred = proba >= threshold
    truth = y == 1
    tp = int(np.sum(pred & truth))
    tn = int(np.sum(~pred & ~truth))
    fp = int(np.sum(pred & ~truth))
    fn = int(np.sum(~pred & truth))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "accuracy": (tp + tn) / len(y),
        "recall": recall,
        "specificity": tn / (tn + fp) if tn + fp else 0.0,
        "precision": precision,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "roc_auc": float(roc_auc_score(y, proba)),
        "brier": float(brier_score_loss(y, proba)),
        "tn": tn,
        "fp": fp,
        "fn": fn,
        "tp": tp,
    }


def summarize(folds: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation of each KPI over CV folds."""
    names = list(folds[0])
    return {
        "mean": {n: float(np.mean([f[n] for f in folds])) for n in names},
        "std": {n: float(np.std([f[n] for f in folds])) for n in names},
    }


def recall_threshold(y: npt.NDArray[np.int64], proba: npt.NDArray[np.float64], min_recall: float) -> float:
    """The highest threshold whose malignant recall is at least ``min_recall``.

    The highest such threshold has the best specificity among them: a missed cancer costs more
    than a false alarm, so recall is the constraint and false alarms are what is minimised.
    """
    malignant = np.sort(proba[y == 1])[::-1]
    needed = int(np.ceil(min_recall * len(malignant)))  # positives that must score >= threshold
    threshold = float(malignant[max(needed, 1) - 1])
    return min(max(threshold, 1e-6), 1 - 1e-6)
