"""The compacted prediction log as Athena and QuickSight read it: the DDL and the QuickSight data set, generated
from the one schema, against the Parquet parts compaction actually writes and against QuickSight's API model."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import botocore.session
import duckdb
import numpy as np
import pytest
from botocore.validate import ParamValidator
from drift_support import write_log
from engine_support import DAY, rows
from typer.testing import CliRunner

from oncology.cli import app
from oncology.monitoring.compaction import compact
from oncology.monitoring.engine.table import COLUMNS, PARTITION, athena_ddl, quicksight_dataset
from oncology_model.storage import LocalStore

#: How DuckDB describes the Parquet type that Athena reads as each DDL type.
ATHENA_AS_DUCKDB = {"timestamp": "TIMESTAMP WITH TIME ZONE", "string": "VARCHAR", "tinyint": "TINYINT", "double": "DOUBLE"}
ARN = "arn:aws:quicksight:eu-west-1:123456789012:datasource/athena"


def parse_ddl(ddl: str) -> tuple[list[tuple[str, str]], tuple[str, str], str]:
    """The columns, the partition column and the location of a ``CREATE EXTERNAL TABLE`` statement."""
    match = re.fullmatch(r"CREATE EXTERNAL TABLE IF NOT EXISTS (\w+) \((.*)\)\nPARTITIONED BY \(`(\w+)` (\w+)\)\n"
                         r"STORED AS PARQUET\nLOCATION '([^']+)'\nTBLPROPERTIES \((.*)\);\nMSCK REPAIR TABLE \1;\n",
                         ddl, re.DOTALL)
    assert match, ddl
    columns = [re.fullmatch(r"\s*`(\w+)` (\w+)", c) for c in match.group(2).split(",\n")]
    assert all(columns), match.group(2)
    return [(c.group(1), c.group(2)) for c in columns if c], (match.group(3), match.group(4)), match.group(5)


def quicksight_problems(document: dict[str, Any]) -> list[str]:
    """What QuickSight's CreateDataSet would refuse in ``document``, per the API model botocore ships."""
    model = botocore.session.get_session().get_service_model("quicksight").operation_model("CreateDataSet")
    report = ParamValidator().validate({"AwsAccountId": "123456789012", **document}, model.input_shape)
    problems = [report.generate_report()] if report.has_errors() else []
    column = model.input_shape.members["PhysicalTableMap"].value.members["RelationalTable"].members["InputColumns"].member
    allowed = set(column.members["Type"].enum)
    mode = set(model.input_shape.members["ImportMode"].enum)
    if document.get("ImportMode") not in mode:
        problems.append(f"ImportMode {document.get('ImportMode')!r} not in {sorted(mode)}")
    for table in document.get("PhysicalTableMap", {}).values():
        for c in table.get("RelationalTable", {}).get("InputColumns", []):
            if c.get("Type") not in allowed:
                problems.append(f"column {c.get('Name')}: type {c.get('Type')!r} not in {sorted(allowed)}")
    return problems


@pytest.fixture
def compacted(tmp_path: Path) -> LocalStore:
    store = LocalStore(tmp_path / "store")
    rng = np.random.default_rng(11)
    for k in range(2):
        write_log(store, rows(rng, 300, DAY + timedelta(days=k)), writer="w", per_file=100)
    assert all(d.manifest is not None for d in compact(store, DAY + timedelta(days=10)))
    return store


def test_the_ddl_declares_the_columns_and_types_of_the_parts_compaction_writes(compacted: LocalStore) -> None:
    base = compacted.root.resolve().as_uri()
    result = CliRunner().invoke(app, ["monitoring", "predictions-ddl", "--store", str(compacted.root)])
    assert result.exit_code == 0, result.output
    columns, partition, location = parse_ddl(result.output)
    assert location == f"{base}/monitoring/predictions-parquet/"
    parts = sorted(Path(urlparse(location).path).glob("date=*/part-*.parquet"))
    assert len(parts) == 2
    assert {p.parent.name.split("=")[0] for p in parts} == {partition[0]} and partition == ("date", "string")
    for part in parts:
        described = duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet('{part}', hive_partitioning = false)").fetchall()
        assert [(name, kind) for name, kind, *_ in described] == [(n, ATHENA_AS_DUCKDB[t]) for n, t in columns], part


def test_the_ddl_can_name_the_s3_copy_of_a_local_store(compacted: LocalStore) -> None:
    result = CliRunner().invoke(app, ["monitoring", "predictions-ddl", "--store", str(compacted.root),
                                      "--location-base", "s3://reports/oncology/", "--table", "preds"])
    assert result.exit_code == 0, result.output
    assert parse_ddl(result.output)[2] == "s3://reports/oncology/monitoring/predictions-parquet/"
    assert result.output.startswith("CREATE EXTERNAL TABLE IF NOT EXISTS preds (")


def test_the_quicksight_data_set_is_valid_and_names_the_ddl_columns() -> None:
    result = CliRunner().invoke(app, ["monitoring", "predictions-dataset", ARN, "--database", "mon"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert quicksight_problems(document) == []
    (table,) = document["PhysicalTableMap"].values()
    relational = table["RelationalTable"]
    assert (relational["DataSourceArn"], relational["Schema"], relational["Name"]) == (ARN, "mon", "oncology_predictions")
    columns, partition, _ = parse_ddl(athena_ddl("s3://b/p/"))
    assert [c["Name"] for c in relational["InputColumns"]] == [n for n, _ in columns] + [partition[0]]
    assert [c.name for c in (*COLUMNS, PARTITION)] == [c["Name"] for c in relational["InputColumns"]]


def test_the_validator_refuses_what_quicksight_refuses() -> None:
    good = quicksight_dataset(ARN)
    assert quicksight_problems(good) == []
    assert quicksight_problems({k: v for k, v in good.items() if k != "ImportMode"})
    assert quicksight_problems({**good, "ImportMode": "LATER"})
    bad_type = json.loads(json.dumps(good))
    bad_type["PhysicalTableMap"]["predictions"]["RelationalTable"]["InputColumns"][0]["Type"] = "TIMESTAMP"
    assert quicksight_problems(bad_type)
    no_source = json.loads(json.dumps(good))
    del no_source["PhysicalTableMap"]["predictions"]["RelationalTable"]["DataSourceArn"]
    assert quicksight_problems(no_source)


def test_a_data_source_that_is_not_an_arn_is_refused_in_one_line() -> None:
    result = CliRunner().invoke(app, ["monitoring", "predictions-dataset", "athena"])
    assert result.exit_code == 2
    assert "DATA_SOURCE_ARN" in result.output and "not an ARN" in result.output
    assert "Traceback" not in result.output
