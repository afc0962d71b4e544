from __future__ import annotations

from pathlib import Path

import pytest
from racing import race_promoters_then_rollbacks, race_publishers

import oncology_model.registry as registry_module
from bundle_factory import bundle_files
from oncology_model.errors import BundleError, ConflictError, NotFoundError, RegistryError
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
    with pytest.raises(NotFoundError, match=r"1\.0\.7 is not published \(none is published yet\)$"):
        registry.promote("1.0.7")


def test_an_unknown_version_is_refused_naming_the_newest_published_ones(registry: ModelRegistry) -> None:
    """A mistyped version: the message says which exist, the newest first, without listing a long history."""
    for n in range(1, 8):
        registry.publish(bundle_files(f"1.0.{n}"))
    with pytest.raises(NotFoundError, match=r"1\.0\.9 is not published \(published: 1\.0\.7, 1\.0\.6, 1\.0\.5, "
                                            r"1\.0\.4, 1\.0\.3 and 2 older\)$"):
        registry.resolve("1.0.9")


def test_promote_verifies_the_bundle_first_and_names_the_tampered_file(registry: ModelRegistry, tmp_path: Path) -> None:
    registry.publish(bundle_files("1.0.1"))
    registry.publish(bundle_files("1.0.2"))
    registry.promote("1.0.1")
    path = tmp_path / "models" / "1.0.2" / "kpis.json"
    path.write_bytes(path.read_bytes().replace(b"0.97", b"0.99"))
    with pytest.raises(BundleError, match=r"1\.0\.2/kpis\.json: sha256 does not match"):
        registry.promote("1.0.2")
    assert registry.resolve("champion") == "1.0.1"
    assert len(registry.history()) == 1


def test_rollback_verifies_the_version_it_goes_back_to(registry: ModelRegistry, tmp_path: Path) -> None:
    for n in (1, 2):
        registry.publish(bundle_files(f"1.0.{n}"))
        registry.promote(f"1.0.{n}")
    (tmp_path / "models" / "1.0.1" / "model.json").unlink()
    with pytest.raises(BundleError, match="model.json"):
        registry.rollback()
    assert registry.resolve("champion") == "1.0.2"


def test_a_move_decides_again_on_the_state_another_writer_left(registry: ModelRegistry) -> None:
    for n in (1, 2, 3):
        registry.publish(bundle_files(f"1.0.{n}"))
    registry.promote("1.0.1")
    store = registry.store
    real_swap = store.swap
    other = ModelRegistry(LocalStore(Path(store.uri)))

    def another_promotion_first(key: str, data: bytes, expected: str | None) -> bool:
        store.swap = real_swap  # type: ignore[method-assign]  # once
        other.promote("1.0.2")  # lands between our read and our write
        return real_swap(key, data, expected)

    store.swap = another_promotion_first  # type: ignore[method-assign]
    move = registry.promote("1.0.3")
    assert (move["from"], move["to"]) == ("1.0.2", "1.0.3")  # decided again on the new state
    assert [(m["from"], m["to"]) for m in registry.history()] == [(None, "1.0.1"), ("1.0.1", "1.0.2"), ("1.0.2", "1.0.3")]


def test_a_write_whose_answer_was_lost_is_not_recorded_twice(registry: ModelRegistry) -> None:
    for n in (1, 2):
        registry.publish(bundle_files(f"1.0.{n}"))
    store = registry.store
    real_swap = store.swap

    def written_but_answer_lost(key: str, data: bytes, expected: str | None) -> bool:
        assert real_swap(key, data, expected)
        return False  # what a retried conditional write reports when its first try went through

    store.swap = written_but_answer_lost  # type: ignore[method-assign]
    registry.promote("1.0.1")
    registry.promote("1.0.2")
    store.swap = real_swap  # type: ignore[method-assign]
    assert registry.rollback()["to"] == "1.0.1"
    assert [m["action"] for m in registry.history()] == ["promote", "promote", "rollback"]


def test_a_move_that_keeps_losing_gives_up_with_a_clear_error(
    registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry.publish(bundle_files("1.0.1"))
    monkeypatch.setattr(registry_module, "ATTEMPTS", 3)
    monkeypatch.setattr(registry_module.time, "sleep", lambda seconds: None)
    monkeypatch.setattr(registry.store, "swap", lambda key, data, expected: False)
    with pytest.raises(ConflictError, match="kept changing under 3 attempts to promote champion"):
        registry.promote("1.0.1")
    assert registry.history() == []


def test_publish_next_takes_the_next_free_version_when_another_writer_took_it(registry: ModelRegistry) -> None:
    registry.publish(bundle_files("1.0.1"))
    asked: list[str] = []

    def build(version: str) -> dict[str, bytes]:
        asked.append(version)
        if version == "1.0.2":  # another trainer publishes 1.0.2 while we assemble ours
            ModelRegistry(registry.store).publish(bundle_files("1.0.2", threshold=0.5))
        return bundle_files(version, threshold=0.4)

    bundle = registry.publish_next(build)
    assert (bundle.version, asked) == ("1.0.3", ["1.0.2", "1.0.3"])
    assert registry.load("1.0.2").threshold == 0.5  # the other's version, untouched
    assert registry.load("1.0.3").threshold == 0.4
    assert registry.versions() == ["1.0.1", "1.0.2", "1.0.3"]


def test_publish_next_refuses_a_bundle_of_another_version(registry: ModelRegistry) -> None:
    with pytest.raises(RegistryError, match=r"build\('1.0.1'\) returned a bundle of version 1.0.9"):
        registry.publish_next(lambda version: bundle_files("1.0.9"))
    assert registry.versions() == []


def test_eight_concurrent_promoters_and_four_rollbacks_lose_no_move(registry: ModelRegistry, tmp_path: Path) -> None:
    race_promoters_then_rollbacks(registry, registry.store.uri, tmp_path)


def test_four_concurrent_publishers_get_distinct_complete_versions(registry: ModelRegistry, tmp_path: Path) -> None:
    race_publishers(registry, registry.store.uri, tmp_path)
    assert registry.versions() == [f"1.0.{n}" for n in range(1, 13)]  # locally no version is skipped


@pytest.mark.parametrize("ref", ["1.0.1\n", "1.0.1 ", "1.0.1x"])
def test_a_version_must_match_whole(tmp_path: Path, ref: str) -> None:
    registry = ModelRegistry(LocalStore(tmp_path))
    registry.publish(bundle_files("1.0.1"))
    assert registry.resolve("1.0.1") == "1.0.1"
    with pytest.raises(NotFoundError, match="alias"):  # not a version: read as an alias name, which is not set
        registry.resolve(ref)
    with pytest.raises(RegistryError, match="not of the form N.N.N"):
        registry.publish(bundle_files(ref))
