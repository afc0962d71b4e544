from __future__ import annotations

from pathlib import Path

import pytest

from bundle_factory import bundle_files
from oncology_model.errors import BundleError, NotFoundError, RegistryError
from oncology_model.registry import ModelRegistry
from oncology_model.storage import LocalStore


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(LocalStore(tmp_path))


def test_versions_count_up_and_latest_is_the_highest(registry: ModelRegistry) -> None:
    assert registry.next_version() == "1.0.1"
    for n in (1, 2, 10):
        registry.publish(bundle_files(f"1.0.{n}"))
    assert registry.versions() == ["1.0.1", "1.0.2", "1.0.10"]
    assert registry.next_version() == "1.0.11"
    assert registry.resolve("latest") == "1.0.10"


def test_a_published_version_cannot_be_published_again(registry: ModelRegistry) -> None:
    registry.publish(bundle_files("1.0.1"))
    with pytest.raises(RegistryError, match="already published"):
        registry.publish(bundle_files("1.0.1", threshold=0.5))
    assert registry.load("1.0.1").threshold == 0.3


def test_an_unverifiable_bundle_is_never_published(registry: ModelRegistry) -> None:
    files = bundle_files("1.0.1")
    with pytest.raises(BundleError):
        registry.publish({**files, "model.json": files["model.json"] + b" "})
    assert registry.versions() == []


def test_a_half_written_version_is_invisible(registry: ModelRegistry, tmp_path: Path) -> None:
    files = bundle_files("1.0.1")
    for name, data in files.items():  # what an interrupted S3 upload leaves: every file but the manifest
        if name != "MANIFEST.json":
            registry.store.write(f"models/1.0.1/{name}", data)
    assert registry.versions() == []
    with pytest.raises(NotFoundError):
        registry.load("1.0.1")


def test_tampering_after_publication_is_detected_on_load(registry: ModelRegistry, tmp_path: Path) -> None:
    registry.publish(bundle_files("1.0.1"))
    path = tmp_path / "models" / "1.0.1" / "model.json"
    path.write_text(path.read_text().replace("0.8", "0.9"))
    with pytest.raises(BundleError, match="sha256 does not match"):
        registry.load("1.0.1")


def test_promote_rollback_and_history(registry: ModelRegistry) -> None:
    for n in (1, 2, 3):
        registry.publish(bundle_files(f"1.0.{n}"))
    with pytest.raises(NotFoundError, match="champion"):
        registry.resolve("champion")
    registry.promote("1.0.1")
    registry.promote("1.0.2")
    registry.promote("latest")
    assert registry.resolve("champion") == "1.0.3"
    assert registry.rollback()["to"] == "1.0.2"
    assert registry.rollback()["to"] == "1.0.1"
    with pytest.raises(RegistryError, match="no earlier version"):
        registry.rollback()
    moves = [(m["action"], m["from"], m["to"]) for m in registry.history("champion")]
    assert moves == [
        ("promote", None, "1.0.1"), ("promote", "1.0.1", "1.0.2"), ("promote", "1.0.2", "1.0.3"),
        ("rollback", "1.0.3", "1.0.2"), ("rollback", "1.0.2", "1.0.1"),
    ]
    assert all(m["at"].endswith("+00:00") for m in registry.history())


def test_promoting_an_unknown_version_is_refused(registry: ModelRegistry) -> None:
    with pytest.raises(NotFoundError, match="1.0.7 is not published"):
        registry.promote("1.0.7")
