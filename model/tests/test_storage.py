from __future__ import annotations

from pathlib import Path

import pytest

import oncology_model.storage as storage
from oncology_model.errors import NotFoundError, RegistryError, StoreError
from oncology_model.storage import LocalStore, S3Store, open_store, read_uri


def test_uris_choose_the_backend(tmp_path: Path) -> None:
    assert isinstance(open_store(tmp_path), LocalStore)
    assert open_store(f"file://{tmp_path}").uri == str(tmp_path)
    with pytest.raises(StoreError, match="unsupported store URI"):
        open_store("ftp://host/x")
    with pytest.raises(StoreError, match="needs a bucket"):
        open_store("s3:///prefix")


def test_s3_uri_names_bucket_and_prefix() -> None:
    store = S3Store("bucket", "/a/b/", client=object())
    assert (store.bucket, store.prefix, store.uri) == ("bucket", "a/b", "s3://bucket/a/b")


def test_local_write_read_list(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.write("a/b.txt", b"1")
    store.write("a/b.txt", b"2")
    assert store.read("a/b.txt") == b"2"
    assert store.list("a/") == ["a/b.txt"]
    assert store.exists("a/b.txt") and not store.exists("a/c.txt")
    with pytest.raises(NotFoundError):
        store.read("nope")
    with pytest.raises(StoreError, match="escapes"):
        store.read("../outside")


def test_publish_makes_all_files_visible_together_and_is_immutable(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.publish("models/1", {"a": b"1", "MANIFEST.json": b"m"}, commit="MANIFEST.json")
    assert store.read_dir("models/1") == {"a": b"1", "MANIFEST.json": b"m"}
    with pytest.raises(RegistryError, match="already published"):
        store.publish("models/1", {"a": b"2", "MANIFEST.json": b"m"}, commit="MANIFEST.json")
    assert store.read("models/1/a") == b"1"


def test_a_crash_halfway_leaves_no_visible_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalStore(tmp_path)
    real = storage._write_synced
    calls = []

    def dying(path: Path, data: bytes) -> None:
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real(path, data)

    monkeypatch.setattr(storage, "_write_synced", dying)
    with pytest.raises(StoreError, match="No space left"):
        store.publish("models/1", {"a": b"1", "b": b"2", "MANIFEST.json": b"m"}, commit="MANIFEST.json")
    assert store.list("") == []
    assert not (tmp_path / "models" / "1").exists()


def test_read_uri_reports_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no such file"):
        read_uri(tmp_path / "missing.data")


# ---- write-once objects ---------------------------------------------------------------------------

RACER = """
import os, sys, time
from oncology_model.errors import RegistryError
from oncology_model.storage import open_store
store, key, mine, go = open_store(sys.argv[1]), sys.argv[2], sys.argv[3].encode(), sys.argv[4]
deadline = time.monotonic() + 30
while not os.path.exists(go):  # every racer waits at the line, then all write at once
    assert time.monotonic() < deadline, "never started"
    time.sleep(0.001)
try:
    print("created" if store.create(key, mine) else "same")
except RegistryError as exc:
    print("refused", exc)
"""


def race_create(uri: str, key: str, contents: list[str], go: Path) -> list[str]:
    """Real processes calling `create` on one key at the same instant; each one's outcome line."""
    import subprocess
    import sys

    procs = [
        subprocess.Popen([sys.executable, "-c", RACER, uri, key, c, str(go)], stdout=subprocess.PIPE, text=True)
        for c in contents
    ]
    go.touch()
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0] * len(procs), outs
    return outs


def test_create_writes_once_and_refuses_other_content(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    assert store.create("monitoring/a.json", b"1") is True
    assert store.create("monitoring/a.json", b"1") is False  # the same content again: a no-op
    with pytest.raises(RegistryError, match="a.json already exists with other content"):
        store.create("monitoring/a.json", b"2")
    assert store.read("monitoring/a.json") == b"1"
    assert store.list("monitoring/") == ["monitoring/a.json"]  # no temporary file left behind


def test_of_eight_concurrent_creators_exactly_one_wins(tmp_path: Path) -> None:
    contents = [f"writer {i}" for i in range(8)]
    outs = race_create(str(tmp_path / "store"), "k/v.txt", contents, tmp_path / "go")
    winners = [c for c, out in zip(contents, outs) if out == "created"]
    assert len(winners) == 1, outs
    assert all(out.startswith("refused") for out in outs if out != "created"), outs
    assert LocalStore(tmp_path / "store").read("k/v.txt") == winners[0].encode()


def test_swap_replaces_an_object_only_if_it_is_unchanged(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    assert store.swap("r/a.json", b"1", expected=None) is True  # create if absent
    assert store.swap("r/a.json", b"x", expected=None) is False  # ... only if absent
    data, tag = store.read_tagged("r/a.json")
    assert data == b"1"
    assert store.swap("r/a.json", b"2", expected=tag) is True
    assert store.swap("r/a.json", b"3", expected=tag) is False  # changed since it was read
    assert store.read("r/a.json") == b"2"
    assert store.list("r/") == ["r/a.json"]  # the lock and temporary files are hidden
    with pytest.raises(NotFoundError):
        store.read_tagged("r/missing.json")
