"""Fixtures of the release tests: stores holding a champion and a candidate version."""

from __future__ import annotations

from pathlib import Path

import pytest

from oncology_model.storage import LocalStore
from support import copy_versions


@pytest.fixture
def two_versions(trained_store: Path, tmp_path: Path) -> Path:
    """A local store: champion 1.0.1 and an identical candidate 1.0.2 (an A/A release)."""
    store = tmp_path / "store"
    copy_versions(trained_store, LocalStore(store), {"1.0.2": None})
    return store
