"""The quality gate: registry policy, applied to a model's honest figures before training publishes it
and before `oncology models promote` moves an alias to it: the held-out test KPIs and the nested
cross-validation means must each reach the gate's minimums."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from oncology.settings import GateSettings


def minimums(gate: GateSettings) -> dict[str, float]:
    """The gate's minimum of each KPI (kpis.json's key)."""
    return {
        "accuracy": gate.gate_min_accuracy,
        "recall": gate.gate_min_recall,
        "specificity": gate.gate_min_specificity,
        "roc_auc": gate.gate_min_roc_auc,
    }


def describe(gate: GateSettings) -> str:
    """The gate in one line, for people."""
    names = {"accuracy": "accuracy", "recall": "malignant recall", "specificity": "specificity", "roc_auc": "ROC AUC"}
    bars = ", ".join(f"{names[key]} >= {minimum}" for key, minimum in minimums(gate).items())
    return f"held-out test and nested-CV mean each with {bars}"


def failures(kpis: Mapping[str, Any], gate: GateSettings) -> list[str]:
    """Why a model fails the gate; empty when it passes."""
    limits = minimums(gate)
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
