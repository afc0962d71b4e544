"""The CUSUM alarms against the targets, in seeded simulations: a fall of malignant recall from 0.98 to
0.90 found within 200 labelled malignant cases on average; with no change, at most 1% of runs alarm
within 1,000 labelled cases (for recall, and for specificity at its own settings)."""

from __future__ import annotations

import numpy as np
import pytest

from oncology.monitoring.sequential import DEFAULT_H, bernoulli_cusum
from oncology.settings import OutcomeSettings

SETTINGS = OutcomeSettings()
RECALL = (1 - SETTINGS.outcomes_recall_in_control, 1 - SETTINGS.outcomes_recall_alarm)
SPECIFICITY = (1 - SETTINGS.outcomes_specificity_in_control, 1 - SETTINGS.outcomes_specificity_alarm)


def test_the_fast_path_is_the_textbook_recursion() -> None:
    rng = np.random.default_rng(1)
    events = rng.random(3000) < 0.05
    up, down = np.log(0.1 / 0.02), np.log(0.9 / 0.98)
    s, path = 0.0, []
    for e in events:
        s = max(0.0, s + (up if e else down))
        path.append(s)
    result = bernoulli_cusum(events, 0.02, 0.1, h=5.0)
    assert result.statistic == pytest.approx(path[-1]) and result.peak == pytest.approx(max(path))
    assert result.alarm_at == next(i + 1 for i, v in enumerate(path) if v >= 5.0)


def test_a_fall_of_recall_from_098_to_090_is_found_within_200_malignant_cases_on_average() -> None:
    rng = np.random.default_rng(2026)
    delays, early = [], 0
    for _ in range(500):
        misses = np.r_[rng.random(300) < RECALL[0], rng.random(1000) < 0.10]  # the change after 300 cases
        result = bernoulli_cusum(misses, *RECALL, h=SETTINGS.outcomes_cusum_h)
        assert result.alarm, "never detected in 1,000 cases after the change"
        if result.alarm_at is not None and result.alarm_at <= 300:
            early += 1
            continue
        delays.append(result.alarm_at - 300)  # type: ignore[operator]
    assert np.mean(delays) <= 200, np.mean(delays)
    assert early / 500 <= 0.01


@pytest.mark.parametrize(("name", "rates"), [("recall", RECALL), ("specificity", SPECIFICITY)])
def test_with_no_change_at_most_1_percent_of_runs_alarm_within_1000_cases(name: str, rates: tuple[float, float]) -> None:
    rng = np.random.default_rng(99)
    runs = 3000
    alarms = sum(bernoulli_cusum(rng.random(1000) < rates[0], *rates, h=SETTINGS.outcomes_cusum_h).alarm
                 for _ in range(runs))
    assert alarms / runs <= 0.01, (name, alarms / runs)


def test_the_default_threshold_is_the_settings_default() -> None:
    assert SETTINGS.outcomes_cusum_h == DEFAULT_H


def test_a_cusum_needs_a_rise() -> None:
    with pytest.raises(ValueError, match="0 < p0 < p1 < 1"):
        bernoulli_cusum([True], 0.1, 0.05)
