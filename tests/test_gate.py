from __future__ import annotations

from typing import Any

import pytest

from oncology import gate
from oncology.settings import GateSettings

GOOD = {"accuracy": 0.97, "recall": 0.98, "specificity": 0.96, "roc_auc": 0.995}


def kpis(test: dict[str, float], cv: dict[str, float] | None, method: str = "nested") -> dict[str, Any]:
    return {"test": test, **({"cv": {"method": method, "mean": cv}} if cv is not None else {})}


def test_the_gate_passes_on_good_test_and_nested_cv_figures() -> None:
    assert gate.failures(kpis(GOOD, GOOD), GateSettings()) == []


def test_the_gate_checks_the_nested_cv_means_too() -> None:
    reasons = gate.failures(kpis(GOOD, {**GOOD, "recall": 0.90}), GateSettings())
    assert reasons == ["nested CV mean recall 0.9 < 0.95"]


def test_figures_that_are_not_nested_do_not_pass() -> None:
    for bad in (kpis(GOOD, GOOD, method="repeated"), kpis(GOOD, None)):
        reasons = gate.failures(bad, GateSettings())
        assert len(reasons) == 1 and "no nested cross-validation" in reasons[0]


def test_the_gate_checks_the_test_figures() -> None:
    reasons = gate.failures(kpis({**GOOD, "roc_auc": 0.97}, GOOD), GateSettings(gate_min_accuracy=0.98))
    assert reasons == ["test accuracy 0.97 < 0.98", "test roc_auc 0.97 < 0.98", "nested CV mean accuracy 0.97 < 0.98"]


LIMITS = {"accuracy": "gate_min_accuracy", "recall": "gate_min_recall", "specificity": "gate_min_specificity",
          "roc_auc": "gate_min_roc_auc"}


def test_every_figure_exactly_at_its_minimum_passes() -> None:
    """"Must reach": a figure equal to its minimum passes, on the test set and the nested-CV means alike."""
    settings = GateSettings()
    at_minimum = {name: getattr(settings, field) for name, field in LIMITS.items()}
    assert gate.failures(kpis(at_minimum, at_minimum), settings) == []


@pytest.mark.parametrize("name", list(LIMITS))
@pytest.mark.parametrize("where", ["test", "nested CV mean"])
def test_a_model_short_on_one_figure_alone_is_refused_naming_it(name: str, where: str) -> None:
    """Every figure is checked on its own: a model short on one of them (specificity too) and good on
    all the others is refused, and the reason names that figure only."""
    minimum = getattr(GateSettings(), LIMITS[name])
    short = {**GOOD, name: minimum - 0.001}
    test, cv = (short, GOOD) if where == "test" else (GOOD, short)
    assert gate.failures(kpis(test, cv), GateSettings()) == [f"{where} {name} {round(minimum - 0.001, 4)} < {minimum}"]
