"""`oncology monitoring upload` as a user runs it: a real process, a local store and a real S3 server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from oncology.monitoring import tables
from oncology.monitoring.upload import coverage_key, kpis_key, upload
from oncology_model.errors import RegistryError
from oncology_model.registry import ModelRegistry
from oncology_model.storage import Store, open_store
from support import S3

ONCOLOGY = str(Path(sys.executable).parent / "oncology")


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ONCOLOGY_", "AWS_"))}
    return subprocess.run([ONCOLOGY, *args], capture_output=True, text=True, env={**base, **(env or {})}, timeout=120)


def write_coverage(folder: Path, percent: float = 81.25) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for suite in ("unittest", "test"):
        report = {
            "meta": {"format": 3},
            "files": {"src/oncology/cli.py": {"summary": {"percent_covered": percent}}},
            "totals": {"percent_covered": percent, "covered_lines": 13, "num_statements": 16},
        }
        (folder / f"{suite}-coverage.json").write_text(json.dumps({**report, "suite": suite}))
    return folder


def copy_store(trained_store: Path, tmp_path: Path) -> Path:
    shutil.copytree(trained_store, tmp_path / "store")
    return tmp_path / "store"


def version_keys(version: str) -> set[str]:
    return {
        coverage_key("unittest", version),
        coverage_key("test", version),
        kpis_key(version),
        tables.metrics_key(version),
    }


def test_upload_writes_the_versions_files_once_and_the_same_upload_again_changes_nothing(
    trained_store: Path, tmp_path: Path
) -> None:
    store_dir, coverage = copy_store(trained_store, tmp_path), write_coverage(tmp_path / "coverage")
    first = run("monitoring", "upload", "--store", str(store_dir), "--version", "champion", "--coverage-dir", str(coverage))
    assert first.returncode == 0, first.stderr
    assert "monitoring data of version 1.0.1 uploaded" in first.stdout  # champion resolved to its version
    store = open_store(store_dir)
    keys = set(store.list("monitoring/"))
    assert version_keys("1.0.1") <= keys
    assert store.read(coverage_key("test", "1.0.1")) == (coverage / "test-coverage.json").read_bytes()
    assert store.read(coverage_key("unittest", "1.0.1")) == (coverage / "unittest-coverage.json").read_bytes()
    assert store.read(kpis_key("1.0.1")) == store.read("models/1.0.1/kpis.json")
    before = {key: store.read(key) for key in keys}

    again = run("monitoring", "upload", "--store", str(store_dir), "--version", "1.0.1", "--coverage-dir", str(coverage))
    assert again.returncode == 0, again.stderr
    assert "wrote" not in again.stdout and "unchanged monitoring/coverage/test/test-coverage-1.0.1.json" in again.stdout
    assert {key: store.read(key) for key in store.list("monitoring/")} == before


def test_other_content_for_an_uploaded_version_is_refused_in_one_line_and_nothing_changes(
    trained_store: Path, tmp_path: Path
) -> None:
    store_dir = copy_store(trained_store, tmp_path)
    ok = run("monitoring", "upload", "--store", str(store_dir), "--coverage-dir", str(write_coverage(tmp_path / "a")))
    assert ok.returncode == 0, ok.stderr
    store = open_store(store_dir)
    before = {key: store.read(key) for key in store.list("monitoring/")}

    other = write_coverage(tmp_path / "b", percent=12.5)
    refused = run("monitoring", "upload", "--store", str(store_dir), "--coverage-dir", str(other))
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "already exists with other content" in refused.stderr
    assert "unittest-coverage-1.0.1.json" in refused.stderr and "Traceback" not in refused.stderr
    assert {key: store.read(key) for key in store.list("monitoring/")} == before  # the tables kept the first figures


def test_a_missing_version_or_coverage_report_is_a_clear_error_and_nothing_is_written(
    trained_store: Path, tmp_path: Path
) -> None:
    store_dir, coverage = copy_store(trained_store, tmp_path), write_coverage(tmp_path / "coverage")
    for args, message in [
        (["--version", "4.5.6", "--coverage-dir", str(coverage)], "4.5.6 is not published"),
        (["--coverage-dir", str(tmp_path / "missing")], "no coverage report (make test writes it)"),
    ]:
        proc = run("monitoring", "upload", "--store", str(store_dir), *args)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    written = [k for k in open_store(store_dir).list("monitoring/") if not k.startswith("monitoring/report/")]
    assert written == []  # (the dashboard page is training's, not the upload's)


@pytest.mark.parametrize(("content", "message"), [(b"{\"totals\": ", "not valid JSON"), (b"[]", "expected a JSON object")])
def test_a_coverage_report_that_is_not_a_json_object_is_named_and_nothing_is_written(
    trained_store: Path, tmp_path: Path, content: bytes, message: str
) -> None:
    store_dir, coverage = copy_store(trained_store, tmp_path), write_coverage(tmp_path / "coverage")
    (coverage / "test-coverage.json").write_bytes(content)
    proc = run("monitoring", "upload", "--store", str(store_dir), "--coverage-dir", str(coverage))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{coverage / 'test-coverage.json'}: {message}" in proc.stderr
    written = [k for k in open_store(store_dir).list("monitoring/") if not k.startswith("monitoring/report/")]
    assert written == []


def test_a_promotion_after_the_upload_gets_its_own_file_and_earlier_files_stay(trained_store: Path, tmp_path: Path) -> None:
    store_dir = copy_store(trained_store, tmp_path)
    store = open_store(store_dir)
    registry = ModelRegistry(store)
    upload(store, "1.0.1", {s: (write_coverage(tmp_path / "c") / f"{s}-coverage.json").read_bytes() for s in ("unittest", "test")})
    first = {key: store.read(key) for key in store.list(tables.table_prefix(tables.PROMOTIONS))}
    assert len(first) == 1

    files = dict(registry.load("1.0.1").files)  # a second version: the same model under another number
    meta = json.loads(files["metadata.json"])
    files = _renumbered(files, meta, "1.0.2")
    registry.publish(files)
    registry.promote("1.0.2")
    proc = run("monitoring", "promotions", "--store", str(store_dir))
    assert proc.returncode == 0, proc.stderr
    assert "1 new alias move(s), 1 already written" in proc.stdout
    now = {key: store.read(key) for key in store.list(tables.table_prefix(tables.PROMOTIONS))}
    assert {k: v for k, v in now.items() if k in first} == first
    (new_key,) = set(now) - set(first)
    assert new_key == tables.promotion_key(2, "1.0.2")
    header, row = now[new_key].decode().splitlines()
    assert header.split(",") == list(tables.COLUMNS[tables.PROMOTIONS])
    assert row.split(",")[1:5] == ["champion", "promote", "1.0.1", "1.0.2"]


def _renumbered(files: dict[str, bytes], meta: dict[str, object], version: str) -> dict[str, bytes]:
    from oncology_model.bundle import MANIFEST, dump_json, make_manifest

    kpis = json.loads(files["kpis.json"])
    kpis["version"] = version
    out = {**files, "metadata.json": dump_json({**meta, "version": version}), "kpis.json": dump_json(kpis)}
    out.pop(MANIFEST)
    out[MANIFEST] = make_manifest(version, out)
    return out


def check_write_once(store: Store, tmp_path: Path) -> None:
    reports = {s: (write_coverage(tmp_path / "a") / f"{s}-coverage.json").read_bytes() for s in ("unittest", "test")}
    done = upload(store, "champion", reports)
    assert done.version == "1.0.1" and version_keys("1.0.1") <= set(done.created)
    assert upload(store, "1.0.1", reports).created == []  # the same content: a no-op
    other = {s: (write_coverage(tmp_path / "b", 3.0) / f"{s}-coverage.json").read_bytes() for s in ("unittest", "test")}
    with pytest.raises(RegistryError, match="already exists with other content"):
        upload(store, "1.0.1", other)
    assert store.read(coverage_key("test", "1.0.1")) == reports["test"]
    assert b"81.25" in store.read(tables.metrics_key("1.0.1"))


def test_write_once_on_a_local_store(trained_store: Path, tmp_path: Path) -> None:
    check_write_once(open_store(copy_store(trained_store, tmp_path)), tmp_path)


@pytest.mark.s3
def test_write_once_on_s3(s3: S3, trained_store: Path, tmp_path: Path) -> None:
    uri = f"s3://{s3.bucket}/monitoring-{uuid.uuid4().hex[:8]}"
    store = open_store(uri)
    ModelRegistry(store).publish(ModelRegistry(open_store(trained_store)).load("1.0.1").files)
    ModelRegistry(store).promote("1.0.1")
    check_write_once(store, tmp_path)
    proc = run("monitoring", "upload", "--store", uri, "--coverage-dir", str(tmp_path / "a"), env=s3.env())
    assert proc.returncode == 0 and "unchanged" in proc.stdout, proc.stderr  # the CLI against S3: a no-op now


#: The objects an upload writes after its first (a coverage report), in the order it writes them.
LATER_OBJECTS = {
    "the second coverage report": coverage_key("test", "1.0.1"),
    "the test KPIs": kpis_key("1.0.1"),
    "the metrics table": tables.metrics_key("1.0.1"),
    "the promotion table (written last)": tables.promotion_key(1, "1.0.1"),
}


def check_a_later_conflict_writes_nothing(store: Store, key: str, tmp_path: Path) -> None:
    """A version's object other than the first one written already holds other bytes: the upload is
    refused naming it, and not one object (nor a manifest) is left behind."""
    store.create(key, b"other bytes\n")
    before = {k: store.read(k) for k in store.list(f"{tables.MONITORING_PREFIX}/")}
    reports = {s: (write_coverage(tmp_path / "c") / f"{s}-coverage.json").read_bytes() for s in ("unittest", "test")}
    with pytest.raises(RegistryError, match=f"{key} already exists with other content"):
        upload(store, "1.0.1", reports)
    assert {k: store.read(k) for k in store.list(f"{tables.MONITORING_PREFIX}/")} == before
    assert before[key] == b"other bytes\n" and not any(k.startswith(f"{tables.MONITORING_PREFIX}/quicksight/") for k in before)


@pytest.mark.parametrize("key", LATER_OBJECTS.values(), ids=LATER_OBJECTS.keys())
def test_a_conflict_on_a_later_object_writes_nothing_on_a_local_store(trained_store: Path, tmp_path: Path, key: str) -> None:
    check_a_later_conflict_writes_nothing(open_store(copy_store(trained_store, tmp_path)), key, tmp_path)


@pytest.mark.s3
@pytest.mark.parametrize("key", LATER_OBJECTS.values(), ids=LATER_OBJECTS.keys())
def test_a_conflict_on_a_later_object_writes_nothing_on_s3(s3: S3, trained_store: Path, tmp_path: Path, key: str) -> None:
    store = open_store(f"s3://{s3.bucket}/monitoring-{uuid.uuid4().hex[:8]}")
    ModelRegistry(store).publish(ModelRegistry(open_store(trained_store)).load("1.0.1").files)
    ModelRegistry(store).promote("1.0.1")
    check_a_later_conflict_writes_nothing(store, key, tmp_path)
