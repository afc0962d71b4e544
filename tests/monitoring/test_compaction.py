"""Compaction: closed days of JSON Lines into Parquet, written once with a manifest; every query counts each
prediction once, before, during and after it (a late writer included), on both engines."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from drift_support import write_log
from engine_support import DAY, EDGES, SINCE, UNTIL, VERSION, assert_same, awkward_log, python_figures, rows
from typer.testing import CliRunner

from oncology.cli import app
from oncology.monitoring.compaction import CompactionError, compact, compact_day
from oncology.monitoring.engine.layout import parquet_partition, plan
from oncology.monitoring.engine.relations import predictions
from oncology.monitoring.engine.run import CorruptObjects, drift_counts
from oncology.monitoring.engine.settings import EngineSettings
from oncology.monitoring.prediction_log import partition
from oncology_model.storage import LocalStore

LATER = DAY + timedelta(days=30)  # every day of the log is closed


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def test_compacted_days_give_the_same_figures_on_both_engines(store: LocalStore, dask_scheduler: str) -> None:
    corrupt = awkward_log(store)
    expected = python_figures(store)  # read before compaction: the JSON Lines are kept, so also after
    done = compact(store, LATER)
    manifests = [d.manifest for d in done if d.manifest is not None]
    assert {d.day for d in done} == {(DAY + timedelta(days=k)).date() for k in (-1, 0, 1, 2, 3, 6)}
    assert set().union(*(d.skipped for d in done)) == set(corrupt)  # left as JSON Lines, still named
    assert all(store.exists(m.parquet) and store.exists(m.key) for m in manifests)
    todo = plan(store, [(DAY + timedelta(days=k)).date() for k in range(-1, 7)])
    assert sorted(todo.jsonl) == sorted(corrupt)  # everything else is read from Parquet now
    assert_same(drift_counts(store, SINCE, UNTIL, VERSION, EDGES), expected)
    assert_same(drift_counts(store, SINCE, UNTIL, VERSION, EDGES, EngineSettings(engine="dask", scheduler=dask_scheduler)),
                expected)
    view = predictions(store, SINCE, UNTIL)  # Parquet and the JSON Lines left, as one relation
    by_version = dict(view.con.sql("select model_version, count(*) from predictions group by 1").fetchall())
    assert by_version == {VERSION: expected.observed.n, **expected.other_versions}
    assert sorted(view.skipped) == sorted(corrupt)
    assert all(d.manifest is None for d in compact(store, LATER))  # nothing left to compact: no new part


def test_a_day_compacted_while_a_late_writer_adds_objects_counts_each_prediction_once(store: LocalStore) -> None:
    day = DAY.date()
    rng = np.random.default_rng(3)
    written = len(write_log(store, rows(rng, 500, DAY), writer="early", per_file=100)) * 100
    stop, errors = threading.Event(), []
    late: list[int] = []

    def writer() -> None:  # a writer that still flushes into the day while it is compacted
        try:
            seq = 0
            while not stop.is_set() or seq == 0:
                batch = rows(np.random.default_rng(100 + seq), 20, DAY, start_hour=20)
                store.create(f"{partition(DAY)}late-{seq:06d}.jsonl.gz",
                             gzip.compress("".join(json.dumps(r) + "\n" for r in batch).encode()))
                late.append(len(batch))
                seq += 1
        except Exception as exc:  # recorded, and asserted below
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        first = compact_day(store, day, LATER)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert errors == [] and not thread.is_alive()
    store.create(f"{partition(DAY)}after-000000.jsonl.gz", gzip.compress(
        "".join(json.dumps(r) + "\n" for r in rows(rng, 7, DAY, start_hour=21)).encode()))
    total = written + sum(late) + 7
    assert first.manifest is not None and first.manifest.rows < total  # the late objects were not in it
    counts = drift_counts(store, SINCE, UNTIL, VERSION, EDGES)
    assert counts.n == total
    second = compact_day(store, day, LATER)
    assert second.manifest is not None and second.manifest.parquet.endswith("part-00001.parquet")
    assert set(first.manifest.replaced).isdisjoint(second.manifest.replaced)
    assert first.manifest.rows + second.manifest.rows == total
    assert drift_counts(store, SINCE, UNTIL, VERSION, EDGES).n == total
    assert plan(store, [day]).jsonl == ()


def test_retention_deletes_only_replaced_json_lines_and_the_figures_stay(store: LocalStore) -> None:
    corrupt = awkward_log(store)
    before = drift_counts(store, SINCE, UNTIL, VERSION, EDGES)
    compact(store, LATER, retain_jsonl_days=0)
    left = store.list("monitoring/predictions/")
    assert sorted(left) == sorted(corrupt)  # the objects no manifest replaced are kept
    after = drift_counts(store, SINCE, UNTIL, VERSION, EDGES)
    assert after.n == before.n and after.malformed == before.malformed
    assert np.array_equal(after.observed.scores, before.observed.scores) and after.other_versions == before.other_versions


def test_an_open_day_or_a_part_without_manifest_is_refused_with_what_to_do(store: LocalStore) -> None:
    write_log(store, rows(np.random.default_rng(1), 10, DAY), writer="a")
    with pytest.raises(CompactionError, match="not closed yet"):
        compact_day(store, DAY.date(), DAY + timedelta(hours=24, minutes=30))
    store.create(f"{parquet_partition(DAY.date())}part-00000.parquet", b"half-done")
    with pytest.raises(CompactionError, match="part-00000.parquet has no manifest.*remove that part"):
        compact_day(store, DAY.date(), LATER)


def test_a_corrupt_object_is_refused_by_name_when_so_set(store: LocalStore) -> None:
    corrupt = awkward_log(store)
    day = (DAY + timedelta(days=1)).date()  # the day of the objects cut short
    with pytest.raises(CorruptObjects, match="nothing was compacted") as caught:
        compact_day(store, day, LATER, settings=EngineSettings(on_corrupt="refuse"))
    assert [key in str(caught.value) for key in sorted(corrupt)] == [f"date={day}" in key for key in sorted(corrupt)]
    assert store.list(parquet_partition(day)) == []


def test_the_command_compacts_and_reports_each_day(store: LocalStore) -> None:
    write_log(store, rows(np.random.default_rng(1), 30, DAY), writer="a", per_file=10)
    runner = CliRunner()
    result = runner.invoke(app, ["monitoring", "compact", "--store", str(store.root), "--date", f"{DAY:%Y-%m-%d}"])
    assert result.exit_code == 0, result.output
    assert f"{DAY:%Y-%m-%d}: 30 predictions and 0 failed scoring(s) from 3 object(s) -> " in result.output and "part-00000.parquet" in result.output
    again = runner.invoke(app, ["monitoring", "compact", "--store", str(store.root)])
    assert again.exit_code == 0 and "nothing to compact" in again.output, again.output
    bad = runner.invoke(app, ["monitoring", "compact", "--store", str(store.root), "--date", "yesterday"])
    assert bad.exit_code == 2 and "--date" in bad.output
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    open_day = runner.invoke(app, ["monitoring", "compact", "--store", str(store.root), "--date", today])
    assert open_day.exit_code == 2 and "not closed yet" in open_day.output
    today_start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    write_log(store, rows(np.random.default_rng(2), 10, today_start, start_hour=0.0), writer="b", per_file=10)
    shutil.rmtree(store.root / "monitoring" / "predictions" / f"date={DAY:%Y-%m-%d}")
    only_today = runner.invoke(app, ["monitoring", "compact", "--store", str(store.root)])  # no closed day: says so
    assert only_today.exit_code == 0 and "nothing to compact: no closed day" in only_today.output, only_today.output


def test_the_command_warns_once_per_corrupt_object_and_says_what_retention_deleted(store: LocalStore) -> None:
    """As a user runs it (a process: the library's own log reached stderr too, each object was named twice), and
    a deletion of JSON Lines is never silent."""
    corrupt = awkward_log(store)
    logged = len(store.list("monitoring/predictions/"))
    oncology = str(Path(sys.executable).parent / "oncology")
    done = subprocess.run([oncology, "monitoring", "compact", "--store", str(store.root), "--retain-jsonl-days", "0"],
                          capture_output=True, text=True, timeout=120, env={"PATH": str(Path(sys.executable).parent)})
    assert done.returncode == 0, done.stderr
    assert {key: done.stderr.count(key) for key in corrupt} == dict.fromkeys(corrupt, 1), done.stderr
    assert sorted(store.list("monitoring/predictions/")) == sorted(corrupt)
    said = " ".join(done.stdout.split())
    assert f"--retain-jsonl-days 0: deleted {logged - len(corrupt)} JSON Lines object(s) that a manifest replaced" in said


def test_failed_scorings_are_kept_through_compaction_and_retention_never_as_predictions(store: LocalStore) -> None:
    records = rows(np.random.default_rng(4), 40, DAY)
    failed = [{"ts": r["ts"], "request_id": f"failed-{k}", "model_version": VERSION, "route": "/predict",
               "inputs": None, "probability": None, "prediction": "error", "decision": "error", "arm": "candidate",
               "latency_ms": 2.5} for k, r in enumerate(records[:6])]
    key = f"{partition(DAY)}errors-000000.jsonl.gz"
    store.create(key, gzip.compress(("\n".join(json.dumps(r) for r in failed) + "\nnot a record\n").encode()))
    write_log(store, records, writer="a")
    before = drift_counts(store, SINCE, UNTIL, VERSION, EDGES)
    assert before.n == 40 and before.malformed == 1  # the failed scorings are neither predictions nor malformed
    (done,) = compact(store, LATER, days=[DAY.date()], retain_jsonl_days=0)
    assert done.manifest is not None
    assert (done.manifest.rows, done.manifest.errors, done.manifest.malformed) == (46, 6, 1)
    assert not store.exists(key)  # retention deleted the JSON Lines: the part holds the failed scorings now
    after = drift_counts(store, SINCE, UNTIL, VERSION, EDGES)
    assert (after.n, after.malformed) == (before.n, before.malformed)
    assert np.array_equal(after.observed.scores, before.observed.scores)
    view = predictions(store, SINCE, UNTIL)
    assert view.con.sql("select count(*), count(*) filter (prediction = 'error') from predictions").fetchone() == (40, 0)
    part = str(store.root / done.manifest.parquet)
    kept = view.con.sql(f"select request_id, arm, latency_ms, probability, clump_thickness from read_parquet('{part}') "
                        "where prediction = 'error' order by request_id").fetchall()
    assert kept == [(f"failed-{k}", "candidate", 2.5, None, None) for k in range(6)]
    result = CliRunner().invoke(app, ["monitoring", "compact", "--store", str(store.root)])
    assert result.exit_code == 0, result.output


def test_a_part_compacted_before_failed_scorings_and_latencies_were_kept_still_reads(store: LocalStore) -> None:
    import duckdb

    records = rows(np.random.default_rng(6), 25, DAY)
    write_log(store, records, writer="a")
    before = drift_counts(store, SINCE, UNTIL, VERSION, EDGES)
    (done,) = compact(store, LATER, days=[DAY.date()])
    assert done.manifest is not None
    # rewrite the part and its manifest as an older compaction wrote them: no arm, no latency_ms, no errors
    part = store.root / done.manifest.parquet
    old = part.with_suffix(".old")
    duckdb.sql(f"copy (select * exclude (arm, latency_ms) from read_parquet('{part}')) to '{old}' (format parquet)")
    old.replace(part)
    manifest = store.root / done.manifest.key
    value = json.loads(manifest.read_text())
    del value["errors"]
    manifest.write_text(json.dumps(value))
    assert plan(store, [DAY.date()]).manifests[0].errors == 0
    after = drift_counts(store, SINCE, UNTIL, VERSION, EDGES)
    assert (after.n, after.malformed) == (before.n, before.malformed) == (25, 0)
    view = predictions(store, SINCE, UNTIL)
    assert view.con.sql("select count(*), min(arm), max(arm), count(latency_ms) from predictions").fetchone() == (
        25, "champion", "champion", 0)
    from oncology.release import evidence

    requests, files, malformed, unreadable = evidence.read_requests(store, SINCE, UNTIL, {VERSION})
    assert (len(requests), files, malformed, unreadable) == (25, 1, 0, [])
    assert {(arm, r.latency_ms, r.error) for (_, arm), r in requests.items()} == {("champion", 0.0, False)}
