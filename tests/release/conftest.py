"""Fixtures of the release tests: stores holding a champion and a candidate version."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from oncology_model.bundle import KPIS, METADATA, MODEL, Bundle
from oncology_model.registry import ModelRegistry
from oncology_model.storage import LocalStore, Store


def copy_versions(source: Path, target: Store, candidates: dict[str, float | None]) -> ModelRegistry:
    """``target`` with the champion of ``source`` published and promoted as 1.0.1, and one version per entry of
    ``candidates`` (version: decision threshold, None for the champion's own): the same trained model, so that a
    candidate differs only where its threshold makes it."""
    bundle = ModelRegistry(LocalStore(source)).load("champion")
    registry = ModelRegistry(target)
    model, kpis = json.loads(bundle.files[MODEL]), json.loads(bundle.files[KPIS])
    metadata = json.loads(bundle.files[METADATA])
    registry.publish(Bundle.assemble("1.0.1", model, metadata, kpis))
    registry.promote("1.0.1")
    for version, threshold in candidates.items():
        changed: dict[str, Any] = {**metadata, "version": version}
        if threshold is not None:
            changed = {k: v for k, v in changed.items() if k != "referral"}
            changed["threshold"] = threshold
        registry.publish(Bundle.assemble(version, model, changed, kpis))
    return registry


@pytest.fixture
def two_versions(trained_store: Path, tmp_path: Path) -> Path:
    """A local store: champion 1.0.1 and an identical candidate 1.0.2 (an A/A release)."""
    store = tmp_path / "store"
    copy_versions(trained_store, LocalStore(store), {"1.0.2": None})
    return store
