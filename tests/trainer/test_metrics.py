"""Confidence intervals, the threshold rule and the referral band, on small hand-made cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from oncology.trainer import metrics


def test_wilson_intervals_match_published_values() -> None:
    # Newcombe (1998), Table I: 81/263 -> 0.2553-0.3662; 15/148 -> 0.0624-0.1605; 0/20 -> 0-0.1611
    assert metrics.wilson(81, 263) == pytest.approx((0.2553, 0.3662), abs=5e-5)
    assert metrics.wilson(15, 148) == pytest.approx((0.0624, 0.1605), abs=5e-5)
    assert metrics.wilson(0, 20) == pytest.approx((0.0, 0.1611), abs=5e-5)
    lo, hi = metrics.wilson(20, 20)
    assert hi == 1.0 and lo == pytest.approx(1 - 0.1611, abs=5e-5)


def test_auc_equals_scikit_learns_with_ties() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    p = np.round(rng.random(300) * 0.5 + 0.3 * y, 1)  # coarse: many ties
    assert metrics.auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)


def test_bootstrap_intervals_resample_whole_sample_ids_and_are_reproducible() -> None:
    rng = np.random.default_rng(1)
    y = np.repeat(rng.integers(0, 2, 60), 2)  # every id twice, same label
    p = np.clip(y * 0.6 + rng.random(120) * 0.5, 0, 1)
    ids = np.repeat(np.arange(60), 2)
    one = metrics.confidence_intervals(y, p, ids, 0.5, seed=3)
    assert one == metrics.confidence_intervals(y, p, ids, 0.5, seed=3)
    point = metrics.kpis(y, p, 0.5)
    for name, (lo, hi) in one.items():
        assert lo <= point[name] <= hi, name
    # resampling rows instead of ids would treat 120 rows as independent: narrower intervals
    rows = metrics.confidence_intervals(y, p, np.arange(120), 0.5, seed=3)
    width = one["brier"][1] - one["brier"][0]
    assert rows["brier"][1] - rows["brier"][0] < width


def _miss_rate_at_most(m: float, k: int, n: int) -> float:
    """P(U_(k) <= m) for the k-th lowest of n uniforms: at least k of the n fall at or below m (binomial)."""
    return sum(math.comb(n, j) * m**j * (1 - m) ** (n - j) for j in range(k, n + 1))


@pytest.mark.parametrize(("n", "target", "confidence", "k"), [
    (153, 0.98, 0.8, 2),  # the case: the 4th lowest aimed at ~0.974; at 80% confidence, the 2nd
    (191, 0.98, 0.8, 2),
    (300, 0.98, 0.8, 4),
    (300, 0.98, 0.95, 2),
    (1000, 0.98, 0.8, 16),
    (153, 0.95, 0.8, 5),
])
def test_the_threshold_rank_is_the_largest_that_reaches_the_confidence(n: int, target: float, confidence: float, k: int) -> None:
    assert metrics.threshold_rank(n, target, confidence) == k
    assert _miss_rate_at_most(1 - target, k, n) >= confidence > _miss_rate_at_most(1 - target, k + 1, n)
    assert metrics.miss_rate_confidence(k, n, target) == pytest.approx(_miss_rate_at_most(1 - target, k, n), abs=1e-12)


def test_the_confidence_at_which_the_rank_changes() -> None:
    # n = 153, target 0.98: the 3rd lowest holds with probability 0.5925, the 2nd with 0.8126
    p3 = metrics.miss_rate_confidence(3, 153, 0.98)
    assert p3 == pytest.approx(0.5925, abs=1e-4)
    assert metrics.threshold_rank(153, 0.98, p3) == 3  # reaching the confidence exactly is enough
    assert metrics.threshold_rank(153, 0.98, p3 + 1e-9) == 2
    assert metrics.threshold_rank(153, 0.98, 0.8126) == 2
    assert metrics.threshold_rank(153, 0.98, 0.8127) == 1


def test_with_too_few_malignant_cases_the_lowest_sets_the_threshold_and_says_how_sure() -> None:
    assert metrics.threshold_rank(50, 0.98, 0.8) == 1
    y = np.array([1] * 50 + [0] * 50)
    p = np.concatenate([np.linspace(0.3, 0.99, 50), np.linspace(0.01, 0.5, 50)])
    rule = metrics.recall_threshold(y, p, 0.98, 0.8)
    assert (rule.k, rule.n, rule.value) == (1, 50, 0.3)
    assert rule.confidence == pytest.approx(1 - 0.98**50) and rule.confidence < 0.8


def test_the_rule_keeps_its_promise_on_simulated_cases() -> None:
    """Draw 153 malignant scores many times: the k-th lowest lets at most 2% of new cases through in
    about the stated share of the draws (any continuous distribution: the rule uses ranks only)."""
    n, k = 153, metrics.threshold_rank(153, 0.98, 0.8)
    rng = np.random.default_rng(5)
    draws = np.sort(rng.random((40_000, n)), axis=1)[:, k - 1]  # the miss rate is the k-th lowest uniform
    assert np.mean(draws <= 0.02) == pytest.approx(metrics.miss_rate_confidence(k, n, 0.98), abs=0.01)
    assert np.mean(draws) == pytest.approx(k / (n + 1), rel=0.02)


def test_recall_threshold_is_the_kth_lowest_malignant_probability() -> None:
    y = np.array([1] * 153 + [0] * 100)
    p = np.concatenate([np.linspace(0.2, 0.99, 153), np.linspace(0.0, 0.3, 100)])
    rule = metrics.recall_threshold(y, p, 0.98, 0.8)
    assert (rule.k, rule.n) == (2, 153) and rule.value == np.sort(p[:153])[1]
    assert metrics.kpis(y, p, rule.value)["recall"] == 152 / 153
    assert metrics.recall_threshold(y, p, 0.98, 0.5).value == np.sort(p[:153])[2]


_Y = np.array([0] * 10 + [1] * 10)
_P = np.array([0.01, 0.02, 0.03, 0.05, 0.08, 0.1, 0.2, 0.3, 0.5, 0.6] + [0.35, 0.4, 0.45, 0.7, 0.8, 0.9, 0.9, 0.95, 0.97, 0.99])


def test_the_referral_band_refers_what_the_budget_allows_below_the_threshold() -> None:
    band = metrics.referral_band(_Y, _P, 0.4, budget=0.15)  # 3 of 20 cases: 0.35, 0.3 and 0.2
    assert band.met and band.high == 0.4
    assert band.low == pytest.approx(0.15)  # halfway between the lowest referred (0.2) and the next lower (0.1)
    effect = metrics.referral_kpis(_Y, _P, band)
    assert effect["n_referred"] == 3 and effect["referred"] == 0.15 and effect["malignant_referred"] == 1
    # one case less in the budget: one case less referred
    assert metrics.referral_kpis(_Y, _P, metrics.referral_band(_Y, _P, 0.4, budget=0.1499))["n_referred"] == 2


def test_the_referral_band_reaches_the_lowest_malignant_probability_beyond_the_budget() -> None:
    p = _P.copy()
    p[10] = 0.04  # a malignant case far below the threshold
    band = metrics.referral_band(_Y, p, 0.4, budget=0.1)
    assert band.low == pytest.approx(0.035) and band.high == 0.4 and not band.met
    effect = metrics.referral_kpis(_Y, p, band)
    assert effect["fn_not_referred"] == 0 and effect["referred"] > 0.1


def test_the_referral_band_does_not_split_a_tie_and_an_empty_budget_refers_nothing() -> None:
    p = _P.copy()
    p[6] = p[7] = 0.3  # the 2nd and 3rd highest below the threshold tie
    band = metrics.referral_band(_Y, p, 0.4, budget=0.1)  # 2 allowed: only the 0.35 fits
    assert metrics.referral_kpis(_Y, p, band)["n_referred"] == 1 and band.met
    empty = metrics.referral_band(_Y, _P, 0.35, budget=0.0)
    assert (empty.low, empty.high) == (0.35, 0.35) and metrics.referral_kpis(_Y, _P, empty)["n_referred"] == 0
