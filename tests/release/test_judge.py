"""The judge's statistics on seeded simulations: the targets of a release judged on live traffic."""

from __future__ import annotations

import numpy as np
import pytest

from oncology.release.judge import HOLD, PROMOTE, ROLLBACK, Arm, Paired, judge, simulate_arm
from oncology.settings import ReleaseSettings

SETTINGS = ReleaseSettings(store="unused")  # the defaults: alpha 0.01, 600 requests per arm, 10 ms margin
N = SETTINGS.release_min_requests


def release(rng: np.random.Generator, steps: int, **candidate: float) -> str:
    """A simulated canary release: each step judged once its thinner arm has the minimum of requests."""
    for _ in range(steps):
        verdict = judge(simulate_arm(rng, "1.0.1", N), simulate_arm(rng, "1.0.2", N, **candidate), SETTINGS, steps)
        if verdict.action != PROMOTE:
            return verdict.action
    return PROMOTE


def test_identical_versions_are_rolled_back_in_at_most_1_percent_of_200_releases() -> None:
    outcomes = [release(np.random.default_rng(seed), steps=3) for seed in range(200)]
    assert outcomes.count(ROLLBACK) <= 2, outcomes.count(ROLLBACK)
    assert outcomes.count(HOLD) == 0


def test_a_malignant_share_10_points_higher_is_detected_within_about_600_requests_per_arm() -> None:
    # one step at alpha = 0.01, half of it for the prediction mix: power ~0.77 at 600 requests per arm (35% against
    # 45% malignant), ~0.9 at 800, ~0.97 at 1000
    detected = {n: [judge(simulate_arm(rng, "1.0.1", n, malignant=0.35), simulate_arm(rng, "1.0.2", n, malignant=0.45),
                          SETTINGS, steps=1) for rng in map(np.random.default_rng, range(100, 300))]
                for n in (600, 1000)}
    rate = {n: sum(v.action == ROLLBACK and "prediction mix" in v.reasons[0] for v in vs) / len(vs)
            for n, vs in detected.items()}
    assert rate[600] >= 0.72, rate
    assert rate[1000] >= 0.93, rate


@pytest.mark.parametrize(("candidate", "reason"), [
    ({"error_rate": 0.05}, "more errors"),
    ({"extra_ms": 100.0}, "slower"),
])
def test_errors_or_100ms_slower_are_rolled_back(candidate: dict[str, float], reason: str) -> None:
    for seed in range(50):
        rng = np.random.default_rng(seed)
        verdict = judge(simulate_arm(rng, "1.0.1", N), simulate_arm(rng, "1.0.2", N, **candidate), SETTINGS, steps=3)
        assert verdict.action == ROLLBACK and any(reason in r for r in verdict.reasons), (seed, verdict.reasons)


def test_slightly_slower_within_the_margin_is_not_a_reason() -> None:
    rng = np.random.default_rng(7)
    verdict = judge(simulate_arm(rng, "1.0.1", 5000), simulate_arm(rng, "1.0.2", 5000, extra_ms=1.0), SETTINGS, steps=1)
    assert verdict.tests["latency"]["p"] < 1e-6  # significant ...
    assert verdict.action == PROMOTE  # ... but 1 ms under the 10 ms margin


def test_no_traffic_is_never_promoted() -> None:
    empty = judge(Arm("1.0.1"), Arm("1.0.2"), SETTINGS, steps=3)
    assert empty.action == HOLD
    assert judge(Arm("1.0.1"), Arm("1.0.2"), SETTINGS, steps=3, past_deadline=True).action == ROLLBACK
    rng = np.random.default_rng(1)
    thin = judge(simulate_arm(rng, "1.0.1", 5000), simulate_arm(rng, "1.0.2", N - 1), SETTINGS, steps=3)
    assert thin.action == HOLD and "fewer than the 600" in thin.reasons[0]
    late = judge(simulate_arm(rng, "1.0.1", 5000), simulate_arm(rng, "1.0.2", N - 1), SETTINGS, steps=3,
                 past_deadline=True)
    assert late.action == ROLLBACK and "inconclusive past the step's deadline" in late.reasons[0]


def test_shadow_costly_disagreement_is_bounded_by_its_setting() -> None:
    rng = np.random.default_rng(3)
    champion, candidate = simulate_arm(rng, "1.0.1", N), simulate_arm(rng, "1.0.2", N)
    within = Paired(rows=N, disagree=10, costly=6, costly_ids=[f"r{i}" for i in range(6)])  # 1.0% = the bound
    assert judge(champion, candidate, SETTINGS, 1, within).action == PROMOTE
    over = Paired(rows=N, disagree=10, costly=7, costly_ids=[f"r{i}" for i in range(7)])
    verdict = judge(champion, candidate, SETTINGS, 1, over)
    assert verdict.action == ROLLBACK and "benign where the champion called malignant" in verdict.reasons[0]
    assert verdict.paired is not None and verdict.paired["costly_request_ids"] == [f"r{i}" for i in range(7)]
