"""The query engines against the Python reader they replace, and against each other: same figures on the same
logs (empty partitions, one line, null and unknown versions, malformed lines, objects cut short, two writers
of one day), locally and on S3; a corrupt object named, and skipped or refused."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from engine_support import EDGES, SINCE, UNTIL, VERSION, assert_same, awkward_log, python_figures

from oncology.monitoring.engine.connection import EngineError, location
from oncology.monitoring.engine.relations import predictions
from oncology.monitoring.engine.run import CorruptObjects, drift_counts
from oncology.monitoring.engine.settings import EngineSettings
from oncology_model.storage import LocalStore, Store, open_store
from support import S3


@pytest.fixture
def local(tmp_path: Path) -> tuple[Store, dict[str, str]]:
    store = LocalStore(tmp_path / "store")
    return store, awkward_log(store)


def test_duckdb_gives_the_python_readers_figures_and_names_the_objects_cut_short(local: tuple[Store, dict[str, str]]) -> None:
    store, corrupt = local
    expected = python_figures(store)
    assert expected.unreadable == sorted(corrupt) and expected.other_versions == {"9.9.9": 120, "1.0.1": 30}
    counts = drift_counts(store, SINCE, UNTIL, VERSION, EDGES)
    assert_same(counts, expected)
    # null and missing version, a string probability, a score of 11, three non-records, a failed scoring without a
    # time; the failed scoring with one is no prediction and not malformed
    assert counts.malformed == 8


def test_an_object_cut_short_is_refused_by_name_when_so_set(local: tuple[Store, dict[str, str]]) -> None:
    store, corrupt = local
    with pytest.raises(CorruptObjects) as caught:
        drift_counts(store, SINCE, UNTIL, VERSION, EDGES, EngineSettings(on_corrupt="refuse"))
    message = str(caught.value)
    assert all(key in message for key in corrupt) and "3 prediction-log object(s)" in message
    assert "Compressed file ended before the end-of-stream marker was reached" in message
    assert "Not a gzipped file" in message


def test_the_predictions_view_holds_each_valid_record_once(local: tuple[Store, dict[str, str]]) -> None:
    store, corrupt = local
    view = predictions(store, SINCE, UNTIL)
    assert sorted(view.skipped) == sorted(corrupt)
    by_version = dict(view.con.sql("select model_version, count(*) from predictions group by 1").fetchall())
    expected = python_figures(store)
    assert by_version == {VERSION: expected.observed.n, **expected.other_versions}
    (distinct,) = view.con.sql("select count(distinct request_id) = count(*) from predictions").fetchone() or (None,)
    assert distinct is True


def test_dask_gives_the_same_figures_as_duckdb_locally(local: tuple[Store, dict[str, str]], dask_scheduler: str) -> None:
    store, _ = local
    counts = drift_counts(store, SINCE, UNTIL, VERSION, EDGES, EngineSettings(engine="dask", scheduler=dask_scheduler))
    assert_same(counts, python_figures(store))


def test_both_engines_give_the_same_figures_on_s3(s3: S3, dask_scheduler: str) -> None:
    store = open_store(f"s3://{s3.bucket}/engine-{secrets.token_hex(4)}")
    corrupt = awkward_log(store)
    expected = python_figures(store)
    assert expected.unreadable == sorted(corrupt)
    assert location(store).root.startswith("s3://")
    for settings in (EngineSettings(), EngineSettings(engine="dask", scheduler=dask_scheduler)):
        assert_same(drift_counts(store, SINCE, UNTIL, VERSION, EDGES, settings), expected)


def test_an_unreachable_scheduler_is_a_clear_error(local: tuple[Store, dict[str, str]]) -> None:
    from localproc import free_port

    store, _ = local
    settings = EngineSettings(engine="dask", scheduler=f"tcp://127.0.0.1:{free_port()}")
    with pytest.raises(EngineError, match="cannot reach the Dask scheduler"):
        drift_counts(store, SINCE, UNTIL, VERSION, EDGES, settings)


def test_a_store_path_duckdb_would_read_as_a_pattern_is_refused(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="glob character"):
        location(LocalStore(tmp_path / "a[1]"))
