"""Compaction: a closed day of the prediction log's JSON Lines into one Parquet part, written once.

For a day whose end is at least ``grace`` past, the JSON Lines objects that no manifest replaced yet are
checked whole (`engine.run.check`), their valid records written, ordered by time, to
``monitoring/predictions-parquet/date=D/part-NNNNN.parquet`` (zstd), and then the part's manifest
(``part-NNNNN.manifest.json``: the part, its rows, the objects it replaced and their malformed lines).  The
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
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from oncology.monitoring.engine import queries
from oncology.monitoring.engine.connection import Location, connect, location
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
from oncology.monitoring.engine.run import CorruptObjects, Partial, check, partial_counts
from oncology.monitoring.engine.settings import EngineSettings
from oncology_model.errors import OncologyError, StoreError
from oncology_model.storage import LocalStore, S3Store, Store

if TYPE_CHECKING:
    import duckdb

log = logging.getLogger(__name__)
_PART = re.compile(r"part-(\d{5})\.(parquet|manifest\.json)$")


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
                settings: EngineSettings | None = None) -> Compacted:
    """Compact the JSON Lines objects of ``day`` that no manifest replaced yet into one new part."""
    settings = settings or EngineSettings()
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
    key = f"{parquet_partition(day)}part-{seq:05d}.parquet"
    with tempfile.TemporaryDirectory(prefix="oncology-compact-") as tmp:
        out = Path(tmp) / "part.parquet"
        con = connect(where, settings.duckdb_threads, settings.duckdb_memory_limit)
        try:
            scan = _load(con, where, todo.jsonl, settings)  # the day's lines, parsed once (DuckDB spills past its limit)
            corrupt = check(store, Plan(todo.jsonl, (), ()), scan)
            if corrupt and settings.on_corrupt == "refuse":
                named = "; ".join(f"{store}/{k}: {why}" for k, why in sorted(corrupt.items()))
                raise CorruptObjects(f"{day}: {len(corrupt)} object(s) cannot be read whole ({named}); nothing was compacted")
            for bad, why in sorted(corrupt.items()):
                log.warning("%s/%s: cannot be read whole (%s); left as JSON Lines", store, bad, why)
            result.skipped = corrupt
            objects = [k for k in todo.jsonl if k not in corrupt]
            if not objects:
                return result
            malformed = sum(row[4] for row in scan.rows if row[0] in set(objects))
            left_out = ", ".join(queries.literal(where.url(k)) for k in corrupt) or "''"
            (rows,) = con.execute(
                f"COPY (SELECT {', '.join(queries.PARQUET_COLUMNS)} FROM day WHERE valid AND file NOT IN ({left_out}) "
                f"ORDER BY ts) TO {queries.literal(str(out))} (FORMAT parquet, COMPRESSION zstd)"
            ).fetchone() or (0,)
        finally:
            con.close()
        if not store.create(key, out.read_bytes()):
            raise CompactionError(f"{store}/{key}: another compaction of {day} wrote this part first")
    manifest = Manifest(f"{parquet_partition(day)}part-{seq:05d}{MANIFEST_SUFFIX}", key, int(rows), int(malformed),
                        tuple(objects), now.isoformat(timespec="seconds"))
    if not store.create(manifest.key, _manifest_bytes(manifest)):
        raise CompactionError(f"{store}/{manifest.key}: another compaction of {day} committed this part first")
    result.manifest = manifest
    return result


def _load(con: duckdb.DuckDBPyConnection, where: Location, objects: Sequence[str], settings: EngineSettings) -> Partial:
    """The records of ``objects`` into the temporary table ``day``, and per object its lines, bytes and malformed
    lines (as `run.partial_counts` rows, for `run.check`).  Objects DuckDB refuses are found by
    `run.partial_counts` (halving) and left out of the table."""
    import duckdb

    urls = [where.url(k) for k in objects]
    refused: dict[str, str] = {}
    try:
        con.execute(f"CREATE TEMP TABLE day AS SELECT * FROM ({queries.jsonl_records(urls)})")
    except duckdb.Error:
        probe = partial_counts(where, objects, (), datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC),
                               (0.0, 1.0), settings.duckdb_threads, settings.duckdb_memory_limit)
        refused = probe.refused
        urls = [where.url(k) for k in objects if k not in refused]
        if not urls:
            return Partial([], refused)
        con.execute(f"CREATE TEMP TABLE day AS SELECT * FROM ({queries.jsonl_records(urls)})")
    key_of = {where.url(k): k for k in objects}
    stats = con.execute("SELECT file, NULL, count(*), sum(line_bytes), count(*) FILTER (NOT valid AND NOT blank) "
                        "FROM day GROUP BY file").fetchall()
    return Partial([(key_of.get(row[0], row[0]), *row[1:]) for row in stats], refused)


def _manifest_bytes(manifest: Manifest) -> bytes:
    return (json.dumps(manifest.as_json(), indent=1) + "\n").encode()


def _parts(store: Store, day: date) -> set[int]:
    return {int(m.group(1)) for k in store.list(parquet_partition(day)) if (m := _PART.search(k))}


def compact(store: Store, now: datetime, days: list[date] | None = None, grace: timedelta = timedelta(hours=1),
            retain_jsonl_days: int | None = None, settings: EngineSettings | None = None) -> list[Compacted]:
    """Compact ``days`` (default: every closed day of the log), then apply the retention of the JSON Lines."""
    chosen = days if days is not None else [d for d in partition_days(store, JSONL_PREFIX) if closed(d, now, grace)]
    done = [compact_day(store, day, now, grace, settings) for day in chosen]
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
