"""Confidence intervals and the referral band, on small hand-made cases."""

from __future__ import annotations

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


def test_referral_band_refers_the_fewest_cases_that_meet_the_targets() -> None:
    # malignant at 0.15 would be missed at the threshold 0.4; the band must reach below it
    y = np.array([0] * 10 + [1] * 10)
    p = np.array([0.01, 0.02, 0.03, 0.05, 0.08, 0.1, 0.2, 0.3, 0.5, 0.6] + [0.15, 0.4, 0.45, 0.7, 0.8, 0.9, 0.9, 0.95, 0.97, 0.99])
    band = metrics.referral_band(y, p, 0.4, min_recall=1.0, min_specificity=0.0, max_referred=0.5)
    assert band.met and band.high == 0.4
    assert band.low == pytest.approx(0.125)  # halfway between 0.1 and the lowest referred, 0.15 (0.15, 0.2, 0.3 referred)
    effect = metrics.referral_kpis(y, p, band)
    assert effect["n_referred"] == 3 and effect["recall_not_referred"] == 1.0 and effect["fn_not_referred"] == 0


def test_referral_band_raises_its_upper_end_for_specificity() -> None:
    y = np.array([0] * 10 + [1] * 10)
    p = np.array([0.01] * 8 + [0.5, 0.6] + [0.5, 0.55, 0.7, 0.8, 0.85, 0.9, 0.9, 0.95, 0.97, 0.99])
    band = metrics.referral_band(y, p, 0.5, min_recall=0.0, min_specificity=1.0, max_referred=0.5)
    assert band.met and band.low == 0.5 and 0.6 < band.high <= 0.7
    assert metrics.referral_kpis(y, p, band)["specificity_not_referred"] == 1.0


def test_referral_band_within_the_budget_when_the_targets_cannot_be_met() -> None:
    y = np.array([0] * 10 + [1] * 10)
    p = np.array([0.01, 0.02, 0.03, 0.05, 0.08, 0.1, 0.2, 0.3, 0.5, 0.6] + [0.001, 0.4, 0.45, 0.7, 0.8, 0.9, 0.9, 0.95, 0.97, 0.99])
    band = metrics.referral_band(y, p, 0.4, min_recall=1.0, min_specificity=0.0, max_referred=0.1)
    assert not band.met
    assert metrics.referral_kpis(y, p, band)["referred"] <= 0.1
    assert band.low <= 0.4 <= band.high
