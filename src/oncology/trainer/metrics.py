"""The KPIs reported for every model: one function, used for CV folds and the held-out test."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.stats import beta  # type: ignore[import-untyped]  # scipy ships no type stubs
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


@dataclass(frozen=True)
class Threshold:
    """A decision threshold at the ``k``-th lowest of ``n`` malignant probabilities, and ``confidence``:
    the probability that its miss rate on new malignant cases is at most ``1 - target``."""

    value: float
    k: int
    n: int
    target: float
    confidence: float


def miss_rate_confidence(k: int, n: int, target: float) -> float:
    """P(miss rate <= 1 - ``target``) for a threshold at the ``k``-th lowest of ``n`` malignant probabilities.

    A new malignant case falls below the k-th lowest of n exchangeable ones with probability
    ``U_(k)``, the k-th order statistic of n uniforms: the miss rate is Beta(k, n + 1 - k) (its mean,
    k / (n + 1), is what the threshold aims at).
    """
    return float(beta.cdf(1 - target, k, n + 1 - k))


def threshold_rank(n: int, target: float, confidence: float) -> int:
    """The largest ``k`` for which P(miss rate <= 1 - ``target``) >= ``confidence`` at the k-th lowest of
    ``n`` malignant probabilities; 1 (the lowest) when no k reaches the confidence (too few cases)."""
    # P(miss rate <= m) falls as k grows: count the ranks that reach the confidence
    ks = np.arange(1, n + 1)
    reached = beta.cdf(1 - target, ks, n + 1 - ks) >= confidence
    return max(int(np.sum(reached)), 1)


def recall_threshold(
    y: npt.NDArray[np.int64], proba: npt.NDArray[np.float64], target: float, confidence: float
) -> Threshold:
    """The threshold at the k-th lowest malignant probability, k from `threshold_rank`.

    The highest such threshold has the best specificity: a missed cancer costs more than a false
    alarm, so recall on new cases, with the stated confidence, is the constraint.
    """
    malignant = np.sort(proba[y == 1])
    n = len(malignant)
    k = threshold_rank(n, target, confidence)
    value = min(max(float(malignant[k - 1]), 1e-6), 1 - 1e-6)
    return Threshold(value, k, n, target, miss_rate_confidence(k, n, target))


#: Referral figures, in report order: the share of cases referred, and the KPIs of the others.
REFERRAL_NAMES = ("referred", "recall_not_referred", "specificity_not_referred", "accuracy_not_referred")
REFERRAL_COUNTS = ("n_referred", "malignant_referred", "fn_not_referred", "fp_not_referred")

#: 95% two-sided normal quantile
Z95 = 1.959963984540054


@dataclass(frozen=True)
class Band:
    """Malignant probabilities in [low, high) are referred; ``met``: the targets held where it was chosen."""

    low: float
    high: float
    met: bool = True


def referral_kpis(y: npt.NDArray[np.int64], proba: npt.NDArray[np.float64], band: Band) -> dict[str, float]:
    """The band's effect: the share referred, and malignant recall, specificity and accuracy among the rest."""
    referred = (proba >= band.low) & (proba < band.high)
    kept = ~referred
    pred = proba >= band.high
    truth = y == 1
    tp = int(np.sum(kept & pred & truth))
    fn = int(np.sum(kept & ~pred & truth))
    tn = int(np.sum(kept & ~pred & ~truth))
    fp = int(np.sum(kept & pred & ~truth))
    kept_n = tp + fn + tn + fp
    return {
        "referred": float(np.mean(referred)),
        "recall_not_referred": tp / (tp + fn) if tp + fn else 1.0,
        "specificity_not_referred": tn / (tn + fp) if tn + fp else 1.0,
        "accuracy_not_referred": (tp + tn) / kept_n if kept_n else 1.0,
        "n_referred": int(np.sum(referred)),
        "malignant_referred": int(np.sum(referred & truth)),
        "fn_not_referred": fn,
        "fp_not_referred": fp,
    }


def referral_band(
    y: npt.NDArray[np.int64], proba: npt.NDArray[np.float64], threshold: float, budget: float
) -> Band:
    """The band [low, threshold) below the decision threshold: the cases it holds would be called
    benign, and are referred instead; a malignant answer is never changed.

    ``low`` is the lowest edge whose share of the cases referred is at most ``budget``, and never
    above the lowest malignant probability: every malignant case of these cases is at least referred,
    and the budget is the margin below it for the malignant cases not seen.  ``met``: the band keeps
    within the budget (False when reaching the lowest malignant probability took more).  The edge
    sits halfway between the lowest referred probability and the next lower one.
    """
    n = len(y)
    below = np.sort(proba[proba < threshold])[::-1]  # the candidates for referral, highest first
    allowed = int(np.floor(budget * n + 1e-9))
    # a tie cannot be split: the edge may not fall between two equal probabilities
    while 0 < allowed < len(below) and below[allowed] == below[allowed - 1]:
        allowed -= 1
    allowed = min(allowed, len(below))
    low = threshold if allowed == 0 else float(below[allowed - 1])
    malignant = proba[(y == 1) & (proba < threshold)]
    if len(malignant) and malignant.min() < low:
        low = float(malignant.min())
    rest = proba[proba < low]
    if low < threshold and len(rest):
        low = (low + float(rest.max())) / 2
    referred = float(np.mean((proba >= low) & (proba < threshold))) if n else 0.0
    return Band(low, threshold, referred <= budget + 1e-12)


def wilson(k: int, n: int) -> tuple[float, float]:
    """The Wilson score interval (95%) of a proportion k/n."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    denom = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denom
    half = Z95 * np.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denom
    # at k = 0 or k = n the bound is exactly 0 or 1 (the formula can miss it by a rounding error)
    return (0.0 if k == 0 else max(0.0, float(centre - half)), 1.0 if k == n else min(1.0, float(centre + half)))


def auc(y: npt.NDArray[np.int64], proba: npt.NDArray[np.float64]) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count half), as `roc_auc_score` computes it."""
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(proba, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2)[inverse]  # 1-based, ties averaged
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


#: How each test KPI's 95% interval is computed.
CI_METHOD = {
    "accuracy": "wilson",
    "recall": "wilson",
    "specificity": "wilson",
    "precision": "wilson",
    "f1": "bootstrap",
    "roc_auc": "bootstrap",
    "brier": "bootstrap",
}
BOOTSTRAP_RESAMPLES = 2000


def confidence_intervals(
    y: npt.NDArray[np.int64],
    proba: npt.NDArray[np.float64],
    groups: npt.NDArray[np.int64],
    threshold: float,
    seed: int,
) -> dict[str, list[float]]:
    """95% intervals of every KPI: Wilson for proportions; for F1, ROC AUC and Brier a percentile
    bootstrap that resamples sample ids (a sample's rows stay together)."""
    k = kpis(y, proba, threshold)
    tp, tn, fp, fn = int(k["tp"]), int(k["tn"]), int(k["fp"]), int(k["fn"])
    found = {
        "accuracy": wilson(tp + tn, len(y)),
        "recall": wilson(tp, tp + fn),
        "specificity": wilson(tn, tn + fp),
        "precision": wilson(tp, tp + fp),
    }
    ids = np.unique(groups)
    members = [np.flatnonzero(groups == g) for g in ids]
    rng = np.random.default_rng(seed)
    stats: dict[str, list[float]] = {"f1": [], "roc_auc": [], "brier": []}
    for _ in range(BOOTSTRAP_RESAMPLES):
        rows = np.concatenate([members[i] for i in rng.integers(0, len(ids), len(ids))])
        yb, pb = y[rows], proba[rows]
        if yb.min() == yb.max():
            continue
        pred, truth = pb >= threshold, yb == 1
        tpb = np.sum(pred & truth)
        denom = np.sum(pred) + np.sum(truth)
        stats["f1"].append(float(2 * tpb / denom) if denom else 0.0)
        stats["roc_auc"].append(auc(yb, pb))
        stats["brier"].append(float(np.mean((pb - yb) ** 2)))
    for name, values in stats.items():
        found[name] = (float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5)))
    return {name: [found[name][0], found[name][1]] for name in KPI_NAMES}


def referral_intervals(counts: dict[str, float], y: npt.NDArray[np.int64]) -> dict[str, list[float]]:
    """Wilson intervals of the referral figures of one set of cases (``counts`` from `referral_kpis`)."""
    n = len(y)
    n_ref = int(counts["n_referred"])
    mal = int(np.sum(y == 1)) - int(counts["malignant_referred"])
    ben = n - n_ref - mal
    fn, fp = int(counts["fn_not_referred"]), int(counts["fp_not_referred"])
    return {
        "referred": list(wilson(n_ref, n)),
        "recall_not_referred": list(wilson(mal - fn, mal)),
        "specificity_not_referred": list(wilson(ben - fp, ben)),
        "accuracy_not_referred": list(wilson(n - n_ref - fn - fp, n - n_ref)),
    }


#: Thresholds of the trade-off table (the chosen one is added).
TABLE_THRESHOLDS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def threshold_table(
    threshold: float, sets: dict[str, tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]]
) -> list[dict[str, object]]:
    """Malignant recall and specificity at each of `TABLE_THRESHOLDS` and ``threshold``, per set of
    (labels, probabilities)."""
    rows: list[dict[str, object]] = []
    for t in sorted({*TABLE_THRESHOLDS, threshold}):
        row: dict[str, object] = {"threshold": t, "chosen": t == threshold}
        for name, (y, p) in sets.items():
            k = kpis(y, p, t)
            row[name] = {"recall": k["recall"], "specificity": k["specificity"]}
        rows.append(row)
    return rows
