"""The quality gate, applied to a model's held-out test KPIs before it is published or promoted."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from oncology.settings import GateSettings


def failures(kpis: Mapping[str, Any], gate: GateSettings) -> list[str]:
    """Why a model fails the gate; empty when it passes."""
    test = kpis.get("test", {})
    limits = {
        "accuracy": gate.gate_min_accuracy,
        "recall": gate.gate_min_recall,
        "specificity": gate.gate_min_specificity,
        "roc_auc": gate.gate_min_roc_auc,
    }
    found = []
    for name, minimum in limits.items():
        value = test.get(name)
        if not isinstance(value, int | float) or value < minimum:
            found.append(f"test {name} {value if value is None else round(value, 4)} < {minimum}")
    return found
