"""The quality gate: registry policy, applied to a model's honest figures before training publishes it
and before `oncology models promote` moves an alias to it: the held-out test KPIs and the nested
cross-validation means must each reach the gate's minimums."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from oncology.settings import GateSettings


def failures(kpis: Mapping[str, Any], gate: GateSettings) -> list[str]:
    """Why a model fails the gate; empty when it passes."""
    limits = {
        "accuracy": gate.gate_min_accuracy,
        "recall": gate.gate_min_recall,
        "specificity": gate.gate_min_specificity,
        "roc_auc": gate.gate_min_roc_auc,
    }
    cv = kpis.get("cv", {})
    figures = {"test": kpis.get("test", {})}
    found = []
    if cv.get("method") == "nested":
        figures["nested CV mean"] = cv.get("mean", {})
    else:
        found.append("no nested cross-validation figures (a version trained before nested CV): retrain it")
    for where, values in figures.items():
        for name, minimum in limits.items():
            value = values.get(name)
            if not isinstance(value, int | float) or value < minimum:
                found.append(f"{where} {name} {value if value is None else round(value, 4)} < {minimum}")
    return found
