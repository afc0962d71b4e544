"""The data-plane benchmark's ``--parquet-only`` store (benchmarks/dataplane.py): the closed days written straight as
compacted parts are what compaction writes from the same rows logged as JSON Lines, column for column, and drift
reads the same report from them."""

from __future__ import annotations

import sys
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest
from drift_support import Trained, train_model

from oncology.monitoring.compaction import compact
from oncology.monitoring.drift import Thresholds
from oncology.monitoring.drift_cli import check
from oncology.monitoring.engine.layout import (
    MANIFEST_SUFFIX,
    PARQUET_PREFIX,
    Manifest,
    parquet_partition,
    partition_days,
)
from oncology.monitoring.engine.run import drift_counts
from oncology_model.storage import LocalStore

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import dataplane  # noqa: E402  (benchmarks/dataplane.py)

ROWS = 3_001  # about 100 a day over 30 days, one day a row more than the others
SINCE, UNTIL = dataplane.START, dataplane.START + timedelta(days=dataplane.DAYS)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return train_model(str(tmp_path_factory.mktemp("training")))


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory, trained: Trained) -> tuple[LocalStore, LocalStore]:
    """The same rows: logged as JSON Lines and compacted; written directly as parts.  A model in each (1.0.2 the champion)."""
    root = tmp_path_factory.mktemp("dataplane")
    compacted, direct = LocalStore(root / "compacted"), LocalStore(root / "direct")
    objects = dataplane.generate(compacted.root, ROWS, per_object=40)
    done = compact(compacted, dataplane.COMPACTED_AT)
    assert sum(d.manifest.rows for d in done if d.manifest is not None) == ROWS
    assert sum(len(d.manifest.replaced) for d in done if d.manifest is not None) == objects
    assert dataplane.generate_parts(direct.root, ROWS) == dataplane.DAYS
    for store in (compacted, direct):
        trained.publish(store)
    return compacted, direct


def _part(store: LocalStore, day: date) -> str:
    return str(store.root / f"{parquet_partition(day)}part-00000.parquet")


def test_each_day_is_one_part_with_the_rows_columns_types_and_layout_compaction_writes(
    stores: tuple[LocalStore, LocalStore],
) -> None:
    compacted, direct = stores
    days = partition_days(compacted, PARQUET_PREFIX)
    assert len(days) == dataplane.DAYS
    assert partition_days(direct, PARQUET_PREFIX) == days
    assert not direct.list("monitoring/predictions/")  # no JSON Lines at all
    con = duckdb.connect()
    for day in days:
        a, b = _part(compacted, day), _part(direct, day)
        schema = "SELECT name, type, converted_type, logical_type FROM parquet_schema(?) ORDER BY name"
        assert con.execute(schema, [b]).fetchall() == con.execute(schema, [a]).fetchall(), day
        layout = ("SELECT row_group_id, row_group_num_rows, path_in_schema, compression FROM parquet_metadata(?) "
                  "ORDER BY row_group_id, path_in_schema")
        assert con.execute(layout, [b]).fetchall() == con.execute(layout, [a]).fetchall(), day
        # every value of every row (ts as text: the same instant, to the microsecond), and the order: by time
        rows = "SELECT * REPLACE (CAST(ts AS VARCHAR) AS ts) FROM read_parquet(?)"
        assert sorted(con.execute(rows, [b]).fetchall()) == sorted(con.execute(rows, [a]).fetchall()), day
        times = "SELECT CAST(ts AS VARCHAR) FROM read_parquet(?)"
        assert con.execute(times, [b]).fetchall() == con.execute(times, [a]).fetchall(), day
        assert con.execute("SELECT DISTINCT arm FROM read_parquet(?)", [b]).fetchall() == [("champion",)]
        manifests = [Manifest.read(s, f"{parquet_partition(day)}part-00000{MANIFEST_SUFFIX}") for s in stores]
        assert manifests[1].replaced == () and manifests[0].replaced  # the only difference: no JSON Lines replaced
        assert manifests[1].__dict__ | {"replaced": manifests[0].replaced} == manifests[0].__dict__, day


def test_drift_reads_the_same_counts_and_the_same_report_from_both(stores: tuple[LocalStore, LocalStore]) -> None:
    compacted, direct = stores
    for version in dataplane.VERSIONS:
        a, b = (drift_counts(s, SINCE, UNTIL, version, dataplane.EDGES) for s in stores)
        assert a.n > 0 and b.n == a.n and b.other_versions == a.other_versions and b.malformed == a.malformed == 0
        for name in ("scores", "by_bin", "malignant_by_bin"):
            assert getattr(b.observed, name).tolist() == getattr(a.observed, name).tolist(), (version, name)
    reports = [check(s, "champion", SINCE, UNTIL, Thresholds(), dataplane.COMPACTED_AT)[0] for s in stores]
    assert reports[0]["model_version"] == "1.0.2" and reports[0]["n"] > 900
    assert reports[1] == reports[0]
