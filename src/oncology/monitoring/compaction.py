"""Compaction: a closed day of the prediction log's JSON Lines into one Parquet part, written once.

For a day whose end is at least ``grace`` past, the JSON Lines objects that no manifest replaced yet are
checked whole (`engine.run.check`), their records written, ordered by time, to
``monitoring/predictions-parquet/date=D/part-NNNNN.parquet`` (zstd), and then the part's manifest
(``part-NNNNN.manifest.json``: the part, its rows and how many of them are failed scorings, the objects it
replaced and their malformed lines).  The records are the predictions and the failed scorings (``"prediction":
"error"``, `engine.table.ERROR`: the release judge counts them per arm, also once the JSON Lines are deleted);
a malformed line is one that is neither, nor blank.  The
manifest is the commit point: readers (`engine.layout.plan`) count a part only once its manifest exists, and
from then on never read the objects it lists as JSON Lines, so each prediction is counted once, before,
during and after a compaction.  A writer that files an object into the day after its compaction (a late
flush) is read as JSON Lines until the next compaction of that day takes it into the next part.

Two compactions of one day never both commit: parts are numbered from the manifests there are, and each
part is created once (`Store.create`), so the second one finds its part taken and stops.  A part without a
manifest (a compaction running, or one that died between its two writes) stops the next compaction of that
day with a message that names it: if no compaction is running, remove the part and run again.

Objects that cannot be read whole are left out (they stay JSON Lines, and drift names them) or refused, per
``on_corrupt``.  The JSON Lines stay until ``retain_jsonl_days`` (unset: kept): then the objects that a
manifest replaced, in days older than that, are deleted.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from oncology.monitoring.engine import queries, table
from oncology.monitoring.engine.connection import connect, location
from oncology.monitoring.engine.layout import (
    JSONL_PREFIX,
    MANIFEST_SUFFIX,
    PARQUET_PREFIX,
    Manifest,
    Plan,
    parquet_partition,
    partition_days,
    plan,
)
from oncology.monitoring.engine.run import CorruptObjects, check, line_counts
from oncology.monitoring.engine.settings import EngineSettings
from oncology_model.errors import OncologyError, StoreError
from oncology_model.storage import LocalStore, S3Store, Store

if TYPE_CHECKING:
    import duckdb

log = logging.getLogger(__name__)
_PART = re.compile(r"part-(\d{5})\.(parquet|manifest\.json)$")
#: How a part is written, for the scans that read it: rows ordered by time; zstd; row groups of DuckDB's
#: default size (its unit of parallel scan).
PART_ORDER = "ts"
PART_COMPRESSION = "zstd"
PART_ROW_GROUP = 122_880


class CompactionError(OncologyError):
    """A day that cannot be compacted now: not closed, being compacted, or a part without its manifest."""


@dataclass
class Compacted:
    """What one day's compaction did."""

    day: date
    manifest: Manifest | None = None
    skipped: dict[str, str] = field(default_factory=dict)


def closed(day: date, now: datetime, grace: timedelta) -> bool:
    """Whether ``day`` (UTC) ended at least ``grace`` before ``now``: the writers' last flushes are in."""
    return now >= datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC) + grace


def compact_day(store: Store, day: date, now: datetime, grace: timedelta = timedelta(hours=1),
                settings: EngineSettings | None = None, con: duckdb.DuckDBPyConnection | None = None) -> Compacted:
    """Compact the JSON Lines objects of ``day`` that no manifest replaced yet into one new part (on the
    DuckDB connection ``con`` for the store if given, else on its own)."""
    settings = settings or EngineSettings()
    if con is None:
        con = connect(location(store), settings.duckdb_threads, settings.duckdb_memory_limit)
        try:
            return compact_day(store, day, now, grace, settings, con)
        finally:
            con.close()
    if not closed(day, now, grace):
        raise CompactionError(f"{day}: the day is not closed yet (compaction waits {grace} past its end for late flushes)")
    taken = _parts(store, day)
    todo = plan(store, [day])
    seq = len(todo.manifests)
    orphans = sorted(n for n in taken if n >= seq)
    if orphans:
        raise CompactionError(
            f"{store}/{parquet_partition(day)}part-{orphans[0]:05d}.parquet has no manifest: a compaction of {day} is "
            "running, or one died between its two writes; if none is running, remove that part and run again"
        )
    result = Compacted(day)
    if not todo.jsonl:
        return result
    where = location(store)
    # first the integrity check, which reads the lines without parsing them; then one streaming COPY of the
    # objects that passed, straight from the gzip lines to Parquet (no table of the day in between)
    scan = line_counts(where, todo.jsonl, con=con)
    corrupt = check(store, Plan(todo.jsonl, (), ()), scan)
    if corrupt and settings.on_corrupt == "refuse":
        named = "; ".join(f"{store}/{k}: {why}" for k, why in sorted(corrupt.items()))
        raise CorruptObjects(f"{day}: {len(corrupt)} object(s) cannot be read whole ({named}); nothing was compacted")
    for bad, why in sorted(corrupt.items()):  # the caller reports them (`skipped`): the command warns once
        log.debug("%s/%s: cannot be read whole (%s); left as JSON Lines", store, bad, why)
    result.skipped = corrupt
    objects = [k for k in todo.jsonl if k not in corrupt]
    if not objects:
        return result
    nonblank = sum(row[4] for row in scan.rows if row[0] not in corrupt)
    # the predictions and the failed scorings (the judge counts them per arm); the rest is malformed
    source = f"SELECT * FROM ({queries.jsonl_records([where.url(k) for k in objects])}) WHERE valid OR error"
    result.manifest = write_part(store, day, seq, con, source, now, tuple(objects), nonblank)
    return result


def write_part(store: Store, day: date, seq: int, con: duckdb.DuckDBPyConnection, source: str, now: datetime,
               replaced: tuple[str, ...] = (), nonblank: int | None = None) -> Manifest:
    """Write the rows of the relation ``source`` (DuckDB SQL with the part's columns, `table.COLUMNS`, by name;
    one it lacks is NULL) as part ``seq`` of ``day``, then its manifest, which commits it; each created once.

    The one way a part is written: each column cast to its type, rows ordered by time, zstd, row groups of
    `PART_ROW_GROUP`.  ``replaced``: the JSON Lines objects the part replaces; ``nonblank``: their lines that
    are not blank (those that are not rows of the part are counted malformed; unset: none).  The benchmarks
    write closed days of synthetic logs through this too, so their parts are what compaction writes.
    """
    key = f"{parquet_partition(day)}part-{seq:05d}.parquet"
    with tempfile.TemporaryDirectory(prefix="oncology-compact-") as tmp:
        out = Path(tmp) / "part.parquet"
        nulls = ", ".join(f"CAST(NULL AS {c.duckdb}) AS {c.name}" for c in table.COLUMNS)
        (rows,) = con.execute(
            f"COPY (SELECT {table.select_list()} FROM ((SELECT * FROM ({source})) UNION ALL BY NAME (SELECT {nulls} WHERE false)) "
            f"ORDER BY {PART_ORDER}) "
            f"TO {queries.literal(str(out))} (FORMAT parquet, COMPRESSION {PART_COMPRESSION}, "
            f"ROW_GROUP_SIZE {PART_ROW_GROUP})"
        ).fetchone() or (0,)
        malformed = 0 if nonblank is None else nonblank - int(rows)  # a line neither blank nor a record
        (errors,) = con.execute(f"SELECT count(*) FROM read_parquet({queries.literal(str(out))}) "
                                f"WHERE prediction = {queries.literal(table.ERROR)}").fetchone() or (0,)
        if not store.create(key, out.read_bytes()):
            raise CompactionError(f"{store}/{key}: another compaction of {day} wrote this part first")
    manifest = Manifest(f"{parquet_partition(day)}part-{seq:05d}{MANIFEST_SUFFIX}", key, int(rows), int(malformed),
                        replaced, now.isoformat(timespec="seconds"), int(errors))
    if not store.create(manifest.key, _manifest_bytes(manifest)):
        raise CompactionError(f"{store}/{manifest.key}: another compaction of {day} committed this part first")
    return manifest


def _manifest_bytes(manifest: Manifest) -> bytes:
    return (json.dumps(manifest.as_json(), indent=1) + "\n").encode()


def _parts(store: Store, day: date) -> set[int]:
    return {int(m.group(1)) for k in store.list(parquet_partition(day)) if (m := _PART.search(k))}


def compact(store: Store, now: datetime, days: list[date] | None = None, grace: timedelta = timedelta(hours=1),
            retain_jsonl_days: int | None = None, settings: EngineSettings | None = None) -> list[Compacted]:
    """Compact ``days`` (default: every closed day of the log), then apply the retention of the JSON Lines."""
    settings = settings or EngineSettings()
    chosen = days if days is not None else [d for d in partition_days(store, JSONL_PREFIX) if closed(d, now, grace)]
    con = connect(location(store), settings.duckdb_threads, settings.duckdb_memory_limit) if chosen else None
    try:
        done = [compact_day(store, day, now, grace, settings, con) for day in chosen]
    finally:
        if con is not None:
            con.close()
    if retain_jsonl_days is not None:
        expire(store, now.date() - timedelta(days=retain_jsonl_days))
    return done


def expire(store: Store, before: date) -> list[str]:
    """Delete the JSON Lines objects that a manifest replaced, in days before ``before``."""
    deleted = []
    for day in (d for d in partition_days(store, PARQUET_PREFIX) if d < before):
        for key in store.list(parquet_partition(day)):
            if key.endswith(MANIFEST_SUFFIX):
                for old in Manifest.read(store, key).replaced:
                    if store.exists(old):
                        _delete(store, old)
                        deleted.append(old)
    return deleted


def _delete(store: Store, key: str) -> None:
    if isinstance(store, LocalStore):
        (store.root / key).unlink(missing_ok=True)
    elif isinstance(store, S3Store):
        try:
            store._client.delete_object(Bucket=store.bucket, Key=store._key(key))  # noqa: SLF001
        except Exception as exc:  # botocore's errors are built at run time
            raise StoreError(f"{store}/{key}: cannot delete ({type(exc).__name__}: {exc})") from exc
    else:
        raise StoreError(f"{store}: retention can delete from local folders and S3 stores only")
