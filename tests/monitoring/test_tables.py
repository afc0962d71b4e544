"""The flat monitoring tables and their QuickSight manifests, read back as a reporting tool reads them."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from oncology.monitoring import tables
from oncology.monitoring.upload import SUITES, upload
from oncology_model.registry import ModelRegistry
from oncology_model.storage import S3Store, Store, open_store
from support import S3

COVERAGE = {
    "meta": {"format": 3, "version": "7.17.5"},
    "files": {
        "src/oncology/cli.py": {"summary": {"percent_covered": 87.5, "covered_lines": 7, "num_statements": 8}},
        "src/oncology/webservice/server.py": {"summary": {"percent_covered": 50.0}},
    },
    "totals": {"percent_covered": 81.25, "covered_lines": 13, "num_statements": 16, "missing_lines": 3},
}


def coverage_reports(**totals: float) -> dict[str, bytes]:
    return {suite: json.dumps({**COVERAGE, "totals": {**COVERAGE["totals"], **totals}}).encode() for suite in SUITES}


# ---- rows ----------------------------------------------------------------------------------------------


def test_every_numeric_leaf_becomes_a_metric_whatever_the_kpis_hold() -> None:
    kpis = {
        "version": "1.0.7",
        "threshold": 0.31,
        "test": {"accuracy": 0.97, "n": 136, "ci": {"accuracy": [0.93, 0.99]}, "confusion_matrix": {"tp": 47}},
        "cv": {"mean": {"recall": 0.98}, "std": {"recall": 0.03}, "nested": {"outer": [{"brier": 0.02}]}},
        "referral": {"low": 0.2, "high": 0.6, "enabled": True, "rule": "band"},
        "broken": math.nan,
    }
    assert dict(tables.numeric_leaves(kpis)) == {
        "threshold": 0.31,
        "test.accuracy": 0.97,
        "test.n": 136,
        "test.ci.accuracy.0": 0.93,
        "test.ci.accuracy.1": 0.99,
        "test.confusion_matrix.tp": 47,
        "cv.mean.recall": 0.98,
        "cv.std.recall": 0.03,
        "cv.nested.outer.0.brier": 0.02,
        "referral.low": 0.2,
        "referral.high": 0.6,
    }  # strings, booleans and NaN are not metrics


def test_a_real_versions_rows_hold_its_test_kpis_cv_figures_coverage_and_creation_time(trained_store: Path) -> None:
    bundle = ModelRegistry(open_store(trained_store)).load("1.0.1")
    reports = {suite: json.loads(data) for suite, data in coverage_reports().items()}
    rows = tables.metrics_rows("1.0.1", bundle.metadata["created_at"], bundle.kpis, reports)
    by_metric = {row["metric"]: row for row in rows}
    for name in ("accuracy", "recall", "specificity", "precision", "f1", "roc_auc", "brier", "n"):
        assert float(by_metric[f"test.{name}"]["value"]) == bundle.kpis["test"][name]
    for name in ("accuracy", "recall", "roc_auc", "brier"):
        assert float(by_metric[f"cv.mean.{name}"]["value"]) == bundle.kpis["cv"]["mean"][name]
        assert float(by_metric[f"cv.std.{name}"]["value"]) == bundle.kpis["cv"]["std"][name]
    assert by_metric["coverage.unittest.percent_covered"]["value"] == "81.25"
    assert by_metric["coverage.test.file.src/oncology/cli.py"]["value"] == "87.5"
    assert {row["version"] for row in rows} == {"1.0.1"}
    assert {row["created_at"] for row in rows} == {tables.timestamp(bundle.metadata["created_at"])}
    assert len(by_metric) == len(rows)  # one row per metric


def test_times_are_utc_in_the_form_athena_and_quicksight_read() -> None:
    assert tables.timestamp("2026-12-01T22:30:05+01:00") == "2026-12-01 21:30:05"
    assert tables.timestamp("2026-12-01T21:30:05") == "2026-12-01 21:30:05"


# ---- manifests against QuickSight's documented format -----------------------------------------------------
#
# "Supported formats for Amazon S3 manifest files", Amazon QuickSight User Guide:
# https://docs.aws.amazon.com/quicksight/latest/user/supported-manifest-file-format.html
# The manifest is a JSON object with `fileLocations` (a list of objects, each with `URIs` or `URIPrefixes`,
# lists of strings) and an optional `globalUploadSettings` with `format` (CSV, TSV, CLF, ELF or JSON),
# `delimiter` (one character), `textqualifier` (' or ") and `containsHeader` ("true" or "false"); for JSON
# files only `format` is given.  A QuickSight manifest must have a .json extension, all files it names must
# have the same format and the same number and type of columns, UTF-8 without a byte-order mark.
# (The same values are the API's UploadSettings: docs.aws.amazon.com/quicksight/latest/APIReference/API_UploadSettings.html)

FORMATS = {"CSV", "TSV", "CLF", "ELF", "JSON"}
LOCATION_KEYS = {"URIs", "URIPrefixes"}
SETTINGS_KEYS = {"format", "delimiter", "textqualifier", "containsHeader"}


def manifest_problems(manifest: Any) -> list[str]:
    """Every way ``manifest`` departs from QuickSight's documented manifest format (empty: valid)."""
    if not isinstance(manifest, dict):
        return ["not a JSON object"]
    problems = [f"unknown field {k}" for k in manifest if k not in {"fileLocations", "globalUploadSettings"}]
    locations = manifest.get("fileLocations")
    if not isinstance(locations, list) or not locations:
        problems.append("fileLocations must be a non-empty list")
    else:
        for entry in locations:
            if not isinstance(entry, dict) or len(entry) != 1 or not set(entry) <= LOCATION_KEYS:
                problems.append(f"a fileLocations entry must hold URIs or URIPrefixes: {entry!r}")
                continue
            uris = next(iter(entry.values()))
            if not isinstance(uris, list) or not uris or not all(isinstance(u, str) and u for u in uris):
                problems.append(f"URIs/URIPrefixes must be a non-empty list of strings: {uris!r}")
    settings = manifest.get("globalUploadSettings", {})
    if not isinstance(settings, dict):
        return [*problems, "globalUploadSettings must be an object"]
    problems += [f"unknown upload setting {k}" for k in settings if k not in SETTINGS_KEYS]
    fmt = settings.get("format", "CSV")
    if fmt not in FORMATS:
        problems.append(f"format {fmt!r} is not one of {sorted(FORMATS)}")
    if fmt == "JSON" and set(settings) - {"format"}:
        problems.append("JSON files take only `format`")
    if "delimiter" in settings and (not isinstance(settings["delimiter"], str) or len(settings["delimiter"]) != 1):
        problems.append("delimiter must be one character")
    if settings.get("textqualifier", '"') not in {"'", '"'}:
        problems.append("textqualifier must be ' or \"")
    if settings.get("containsHeader", "true") not in {"true", "false"}:
        problems.append('containsHeader must be "true" or "false"')
    return problems


def files_under(prefix_uri: str) -> dict[str, bytes]:
    """The objects a reporting tool finds under a manifest's URI prefix (s3:// or file://)."""
    parsed = urlparse(prefix_uri)
    if parsed.scheme == "s3":
        store: Store = S3Store(parsed.netloc)
        return {key: store.read(key) for key in store.list(parsed.path.lstrip("/"))}
    assert parsed.scheme == "file", prefix_uri
    root = Path(parsed.path)
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def parse(data: bytes, settings: dict[str, str]) -> list[list[str]]:
    """A file read as the manifest declares it (CSV/TSV with its delimiter and qualifier; JSON lines)."""
    assert not data.startswith(b"\xef\xbb\xbf"), "QuickSight reads UTF-8 without a byte-order mark"
    text = data.decode("utf-8")
    fmt = settings.get("format", "CSV")
    if fmt == "JSON":
        return [[json.dumps(json.loads(line))] for line in text.splitlines() if line.strip()]
    assert fmt in {"CSV", "TSV"}, f"no parser for {fmt}"
    delimiter = settings.get("delimiter", "," if fmt == "CSV" else "\t")
    return list(csv.reader(io.StringIO(text), delimiter=delimiter, quotechar=settings.get("textqualifier", '"'), strict=True))


def check_store(store: Store) -> dict[str, list[list[str]]]:
    """Validate every manifest of the store and parse every file it names; the rows of each table."""
    keys = store.list(f"{tables.QUICKSIGHT_PREFIX}/")
    assert sorted(keys) == sorted(tables.manifest_key(t) for t in tables.COLUMNS)
    found: dict[str, list[list[str]]] = {}
    for key in keys:
        assert key.endswith(".json"), "a QuickSight manifest must have a .json extension"
        manifest = json.loads(store.read(key))
        assert manifest_problems(manifest) == [], key
        settings = manifest.get("globalUploadSettings", {})
        table = key.rsplit("/", 1)[1].removesuffix(".manifest.json")
        rows: list[list[str]] = []
        for location in manifest["fileLocations"]:
            for prefix in location.get("URIPrefixes", []):
                files = files_under(prefix)
                assert files, f"{key}: nothing under {prefix}"
                for name, data in files.items():
                    parsed = parse(data, settings)
                    if settings.get("containsHeader", "true") == "true":
                        assert tuple(parsed[0]) == tables.COLUMNS[table], name  # same columns in every file
                        parsed = parsed[1:]
                    assert parsed and all(len(row) == len(tables.COLUMNS[table]) for row in parsed), name
                    rows.extend(parsed)
        found[table] = rows
    return found


def test_the_validator_refuses_what_quicksight_refuses() -> None:
    good = json.loads(tables.quicksight_manifest(tables.METRICS, "s3://bucket/prefix"))
    assert manifest_problems(good) == []
    assert manifest_problems({"fileLocations": []})
    assert manifest_problems({"fileLocations": [{"URIPrefixes": "s3://b/p/"}]})
    assert manifest_problems({"fileLocations": [{"Prefixes": ["s3://b/p/"]}]})
    assert manifest_problems({**good, "globalUploadSettings": {"format": "PARQUET"}})
    assert manifest_problems({**good, "globalUploadSettings": {"format": "CSV", "containsHeader": True}})
    assert manifest_problems({**good, "globalUploadSettings": {"format": "CSV", "delimiter": ",,"}})
    assert manifest_problems({**good, "globalUploadSettings": {"format": "JSON", "delimiter": ","}})


def check_uploaded(store: Store, expected_base: str) -> None:
    registry = ModelRegistry(store)
    upload(store, "1.0.1", coverage_reports())
    found = check_store(store)
    metrics = found[tables.METRICS]
    assert {row[0] for row in metrics} == {"1.0.1"}
    values = {row[2]: float(row[3]) for row in metrics}  # every value parses as a number
    assert values["test.accuracy"] == registry.load("1.0.1").kpis["test"]["accuracy"]
    assert values["coverage.test.percent_covered"] == 81.25
    promotions = found[tables.PROMOTIONS]
    assert [(row[1], row[2], row[4]) for row in promotions] == [("champion", "promote", "1.0.1")]
    manifest = json.loads(store.read(tables.manifest_key(tables.METRICS)))
    assert manifest["fileLocations"] == [{"URIPrefixes": [f"{expected_base}/monitoring/tables/metrics/"]}]


def test_local_manifests_name_file_uris_that_hold_parsable_files(trained_store: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(trained_store, tmp_path / "store")
    check_uploaded(open_store(tmp_path / "store"), (tmp_path / "store").resolve().as_uri())


@pytest.mark.s3
def test_s3_manifests_name_s3_prefixes_that_hold_parsable_files(s3: S3, trained_store: Path) -> None:
    import uuid

    uri = f"s3://{s3.bucket}/tables-{uuid.uuid4().hex[:8]}"
    store = open_store(uri)
    ModelRegistry(store).publish(ModelRegistry(open_store(trained_store)).load("1.0.1").files)
    ModelRegistry(store).promote("1.0.1")
    check_uploaded(store, uri)


def test_the_manifests_can_name_the_s3_copy_of_a_local_store(trained_store: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(trained_store, tmp_path / "store")
    store = open_store(tmp_path / "store")
    upload(store, "champion", coverage_reports(), manifest_base="s3://reports/oncology")
    manifest = json.loads(store.read(tables.manifest_key(tables.PROMOTIONS)))
    assert manifest_problems(manifest) == []
    assert manifest["fileLocations"][0]["URIPrefixes"] == ["s3://reports/oncology/monitoring/tables/promotions/"]
