"""The flat monitoring tables that reporting tools read straight from the store, and their QuickSight manifests.

Every table is a folder of small CSV files, one file per version (or per registry event), each written
once and never rewritten, partitioned Hive-style so that Athena reads the partition from the key::

    monitoring/tables/metrics/version=<v>/metrics-<v>.csv          one row per (version, metric)
    monitoring/tables/promotions/version=<v>/promotion-<n>.csv     one row per alias move to <v>
    monitoring/quicksight/<table>.manifest.json                     a QuickSight manifest per table

CSV, not JSON Lines: QuickSight's JSON import and Athena's JSON SerDe each read only their own shape of
JSON, while a CSV file with a header row, a comma and double quotes is the default of both (QuickSight's
``globalUploadSettings`` and Athena's ``LazySimpleSerDe``/``OpenCSVSerde``), and every file of a table has
the same columns, as a QuickSight manifest requires.  Timestamps are UTC ``YYYY-MM-DD HH:MM:SS``, the
form Athena's ``timestamp`` type and QuickSight's date detection both read without a format string.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

MONITORING_PREFIX: Final = "monitoring"
TABLES_PREFIX: Final = f"{MONITORING_PREFIX}/tables"
QUICKSIGHT_PREFIX: Final = f"{MONITORING_PREFIX}/quicksight"

METRICS: Final = "metrics"
PROMOTIONS: Final = "promotions"
#: The realized performance per version and chunk, written by each outcome check (`oncology.monitoring.outcomes`).
REALIZED: Final = "realized"

#: The columns of each table, in file order (the partition column ``version`` is in the key as well).
COLUMNS: Final[Mapping[str, tuple[str, ...]]] = {
    METRICS: ("version", "source", "metric", "value", "created_at"),
    PROMOTIONS: ("seq", "alias", "action", "from_version", "to_version", "promoted_at"),
}

#: How every table file is written, in the words of a QuickSight manifest's ``globalUploadSettings``.
UPLOAD_SETTINGS: Final[Mapping[str, str]] = {
    "format": "CSV",
    "delimiter": ",",
    "textqualifier": '"',
    "containsHeader": "true",
}


def table_prefix(table: str) -> str:
    """The key prefix (ending with ``/``) under which every file of ``table`` lives."""
    return f"{TABLES_PREFIX}/{table}/"


def metrics_key(version: str) -> str:
    return f"{table_prefix(METRICS)}version={version}/metrics-{version}.csv"


def promotion_key(seq: int, version: str) -> str:
    return f"{table_prefix(PROMOTIONS)}version={version}/promotion-{seq:06d}.csv"


def manifest_key(table: str) -> str:
    return f"{QUICKSIGHT_PREFIX}/{table}.manifest.json"


def timestamp(iso: str) -> str:
    """An ISO 8601 time as UTC ``YYYY-MM-DD HH:MM:SS`` (a naive time is taken as UTC)."""
    moment = datetime.fromisoformat(iso)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def numeric_leaves(value: Any, path: str = "") -> Iterator[tuple[str, float | int]]:
    """Every finite number in a JSON document with its dotted path (list items by index); bools are not numbers."""
    if isinstance(value, Mapping):
        for key in sorted(value):
            yield from numeric_leaves(value[key], f"{path}.{key}" if path else str(key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from numeric_leaves(item, f"{path}.{index}" if path else str(index))
    elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        yield path, value


def coverage_figures(report: Mapping[str, Any]) -> Iterator[tuple[str, float | int]]:
    """The headline figures of a coverage.py JSON report: its totals, and each file's percentage."""
    totals = report.get("totals", {})
    for name in ("percent_covered", "covered_lines", "num_statements", "missing_lines", "num_branches", "covered_branches"):
        if isinstance(totals.get(name), int | float):
            yield name, totals[name]
    for path, entry in sorted(report.get("files", {}).items()):
        percent = entry.get("summary", {}).get("percent_covered")
        if isinstance(percent, int | float):
            yield f"file.{path}", percent


def metrics_rows(
    version: str, created_at: str, kpis: Mapping[str, Any], coverage: Mapping[str, Mapping[str, Any]]
) -> list[dict[str, str]]:
    """The metrics table's rows of one version: every numeric KPI, then every coverage figure by suite."""
    when = timestamp(created_at)
    rows = [
        {"version": version, "source": "kpis", "metric": path, "value": _number(value), "created_at": when}
        for path, value in numeric_leaves(kpis)
    ]
    for suite in sorted(coverage):
        rows.extend(
            {"version": version, "source": "coverage", "metric": f"coverage.{suite}.{name}", "value": _number(value), "created_at": when}
            for name, value in coverage_figures(coverage[suite])
        )
    return rows


def promotion_rows(history: Sequence[Mapping[str, Any]]) -> Iterator[tuple[int, dict[str, str]]]:
    """One row per alias move of the registry's history, numbered by its place in that (append-only) history."""
    for seq, move in enumerate(history, start=1):
        yield seq, {
            "seq": str(seq),
            "alias": str(move["alias"]),
            "action": str(move["action"]),
            "from_version": "" if move.get("from") is None else str(move["from"]),
            "to_version": "" if move.get("to") is None else str(move["to"]),  # None: a release's candidate removed
            "promoted_at": timestamp(str(move["at"])),
        }


def to_csv(table: str, rows: Iterable[Mapping[str, str]]) -> bytes:
    """A table file: the header, then the rows; UTF-8 without a byte-order mark, ``\\n`` line ends."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS[table], lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def quicksight_manifest(table: str, base_uri: str) -> bytes:
    """The QuickSight manifest of ``table`` for a store whose tables are reachable under ``base_uri``."""
    manifest = {
        "fileLocations": [{"URIPrefixes": [f"{base_uri.rstrip('/')}/{table_prefix(table)}"]}],
        "globalUploadSettings": dict(UPLOAD_SETTINGS),
    }
    return (json.dumps(manifest, indent=2) + "\n").encode("utf-8")


def _number(value: float | int) -> str:
    return repr(value) if isinstance(value, float) else str(value)
