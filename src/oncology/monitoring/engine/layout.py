"""Where the prediction log's objects are in the store, and the compaction manifests that retire them.

JSON Lines (written by the web service)::

    monitoring/predictions/date=YYYY-MM-DD/<writer>-<seq>.jsonl.gz

Parquet (written by `oncology.monitoring.compaction`, once each), and beside each part its manifest, the
commit point: a part counts only once its manifest exists, and the JSON Lines objects a manifest lists
are read from the part, never again from JSON Lines::

    monitoring/predictions-parquet/date=YYYY-MM-DD/part-NNNNN.parquet
    monitoring/predictions-parquet/date=YYYY-MM-DD/part-NNNNN.manifest.json
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Final

from oncology_model.errors import OncologyError
from oncology_model.storage import Store

JSONL_PREFIX: Final = "monitoring/predictions"
PARQUET_PREFIX: Final = "monitoring/predictions-parquet"
MANIFEST_FORMAT: Final = "oncology-predictions-compaction/1"
MANIFEST_SUFFIX: Final = ".manifest.json"


class ManifestError(OncologyError):
    """A compaction manifest that cannot be read: the day's figures would be wrong, so nothing is computed."""


def jsonl_partition(day: date) -> str:
    return f"{JSONL_PREFIX}/date={day:%Y-%m-%d}/"


def parquet_partition(day: date) -> str:
    return f"{PARQUET_PREFIX}/date={day:%Y-%m-%d}/"


@dataclass(frozen=True)
class Manifest:
    """One compacted part: its Parquet key, its rows (``errors`` of them failed scorings, the rest predictions),
    and the JSON Lines objects it replaced (with their malformed lines: neither a record nor blank, so not in
    the part, but still counted).  A manifest written before failed scorings were kept names no ``errors``
    (read as 0: its part holds none, and they were counted in its ``malformed``)."""

    key: str
    parquet: str
    rows: int
    malformed: int
    replaced: tuple[str, ...]
    created_at: str
    errors: int = 0

    def as_json(self) -> dict[str, Any]:
        return {"format": MANIFEST_FORMAT, "parquet": self.parquet, "rows": self.rows, "errors": self.errors,
                "malformed": self.malformed, "replaced": list(self.replaced), "created_at": self.created_at}

    @classmethod
    def read(cls, store: Store, key: str) -> Manifest:
        try:
            value = json.loads(store.read(key))
            if value["format"] != MANIFEST_FORMAT:
                raise ValueError(f"unknown format {value['format']!r}")
            return cls(key, str(value["parquet"]), int(value["rows"]), int(value["malformed"]),
                       tuple(str(k) for k in value["replaced"]), str(value["created_at"]), int(value.get("errors", 0)))
        except (ValueError, KeyError, TypeError) as exc:
            raise ManifestError(f"{store}/{key}: not a compaction manifest ({exc})") from None


@dataclass(frozen=True)
class Plan:
    """What to read for a set of days: Parquet parts, JSON Lines objects no manifest replaced, and the
    manifests (for their malformed counts)."""

    jsonl: tuple[str, ...]
    parquet: tuple[str, ...]
    manifests: tuple[Manifest, ...]


def days(since: datetime, until: datetime) -> list[date]:
    """The ``date=`` partitions a window ``[since, until)`` reads: from the day before ``since`` (a writer may
    file a record under the day it flushed it) to the day of ``until``."""
    first, last = (since - timedelta(days=1)).date(), until.date()
    return [first + timedelta(days=k) for k in range((last - first).days + 1)]


def plan(store: Store, partitions: list[date]) -> Plan:
    """The objects to read for ``partitions``.  Manifests are listed before the JSON Lines: a compaction
    that commits in between is not seen, and its objects are read as JSON Lines, once."""
    manifests: list[Manifest] = []
    jsonl: list[str] = []
    for day in partitions:
        found = [Manifest.read(store, k) for k in store.list(parquet_partition(day)) if k.endswith(MANIFEST_SUFFIX)]
        replaced = {k for m in found for k in m.replaced}
        jsonl += [k for k in store.list(jsonl_partition(day)) if k.endswith(".jsonl.gz") and k not in replaced]
        manifests += found
    return Plan(tuple(jsonl), tuple(m.parquet for m in manifests if m.rows), tuple(manifests))


def partition_days(store: Store, prefix: str) -> list[date]:
    """The days of the ``date=`` partitions under ``prefix`` (`JSONL_PREFIX` or `PARQUET_PREFIX`)."""
    found = set()
    for key in store.list(prefix + "/"):
        part = key[len(prefix) + 1:].split("/", 1)[0]
        if part.startswith("date="):
            try:
                found.add(date.fromisoformat(part[5:]))
            except ValueError:
                continue
    return sorted(found)
