"""Running the queries: partial counts per group of objects (one DuckDB query each), checked and combined.

The unit of work is `partial_counts`: one DuckDB query (`queries.partials`) over a group of objects, which
returns additive counts per object.  The embedded engine runs one group holding every object (DuckDB
parallelises inside it); the Dask engine (`oncology.monitoring.engine.cluster`) runs one group per object on
its workers.  Both then go through the same checks and the same sum (`drift_counts`).

Integrity: DuckDB's gzip reader returns what it could decompress of an object cut short, without an
error (checked with DuckDB 1.4.4).  So every JSON Lines object's decompressed size, as the query counted
it, is compared with the size its gzip trailer records (its last four bytes); an object that fails, or
that DuckDB refuses outright, is decompressed once more in Python to say what is wrong, and then skipped
(named in ``unreadable_files`` and a warning) or refused (`CorruptObjects`), per ``on_corrupt``.
"""

from __future__ import annotations

import gzip
import logging
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from oncology.monitoring.drift import SCORES, Observed
from oncology.monitoring.engine import queries
from oncology.monitoring.engine.connection import EngineError, Location, connect, location
from oncology.monitoring.engine.layout import Plan, days, plan
from oncology.monitoring.engine.settings import EngineSettings
from oncology_model.datamodel import FEATURES, SCORE_MIN
from oncology_model.errors import OncologyError
from oncology_model.storage import LocalStore, S3Store, Store

if TYPE_CHECKING:
    import duckdb

log = logging.getLogger(__name__)
_COLUMNS = ("file", "version", "lines", "bytes", "malformed", "n", "malignant", *FEATURES, "bins", "malignant_bins")


class CorruptObjects(OncologyError):
    """Log objects that cannot be read whole, with ``on_corrupt = refuse``."""


@dataclass
class Partial:
    """What one group of objects gave: the query's rows (tuples in `_COLUMNS` order, ``file`` as the object's
    key) and the objects DuckDB refused, with DuckDB's reason."""

    rows: list[tuple[Any, ...]] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)


def partial_counts(
    where: Location, jsonl: Sequence[str], parquet: Sequence[str], since: datetime, until: datetime,
    edges: Sequence[float], version: str, threads: int | None = None, memory_limit: str | None = None,
) -> Partial:
    """`queries.partials` over the objects ``jsonl`` and ``parquet`` (keys) of the store at ``where``.  If
    DuckDB refuses the group, the group is halved until each refused object is found alone; the others'
    counts are kept."""
    return _halving(where, jsonl, parquet, lambda j, p: queries.partials(j, p, since, until, edges, version),
                    threads, memory_limit)


def line_counts(where: Location, jsonl: Sequence[str], parquet: Sequence[str] = (), threads: int | None = None,
                memory_limit: str | None = None, con: duckdb.DuckDBPyConnection | None = None) -> Partial:
    """`queries.lines` over the objects ``jsonl`` and ``parquet``, as `Partial` rows in `_COLUMNS` order
    (``file, None, lines, bytes, nonblank``: enough for `check`), refused objects found as in `partial_counts`;
    on ``con`` if given (opening a connection costs tens of milliseconds), else on its own."""
    return _halving(where, jsonl, parquet, queries.lines, threads, memory_limit,
                    shape=lambda row: (row[0], None, row[1], row[2], row[3]), con=con)


def _halving(
    where: Location, jsonl: Sequence[str], parquet: Sequence[str], query: Callable[[list[str], list[str]], str],
    threads: int | None, memory_limit: str | None, shape: Callable[[tuple[Any, ...]], tuple[Any, ...]] = tuple,
    con: duckdb.DuckDBPyConnection | None = None,
) -> Partial:
    own = con is None
    con = con or connect(where, threads, memory_limit)
    key_of = {where.url(k): k for k in (*jsonl, *parquet)}
    result = Partial()

    def run(j: Sequence[str], p: Sequence[str]) -> None:
        try:
            rows = con.execute(query([where.url(k) for k in j], [where.url(k) for k in p])).fetchall()
        except Exception as exc:  # duckdb.Error and its IO errors: which object, found by halving
            import duckdb

            if not isinstance(exc, duckdb.Error):
                raise
            both = [(k, False) for k in j] + [(k, True) for k in p]
            if len(both) == 1:
                result.refused[both[0][0]] = str(exc).splitlines()[0]
                return
            for half in (both[: len(both) // 2], both[len(both) // 2:]):
                run([k for k, parquet in half if not parquet], [k for k, parquet in half if parquet])
            return
        result.rows += [(key_of.get(row[0], row[0]), *shape(row)[1:]) for row in rows]

    try:
        if jsonl or parquet:
            run(list(jsonl), list(parquet))
    finally:
        if own:
            con.close()
    return result


@dataclass
class LoggedCounts:
    """The logged traffic of one model version in a window, as counts; and what else was seen."""

    version: str
    observed: Observed
    files: int = 0
    #: records in the window of other versions, by version
    other_versions: Counter[str] = field(default_factory=Counter)
    malformed: int = 0
    unreadable_files: list[str] = field(default_factory=list)
    #: what is wrong with each of ``unreadable_files``
    unreadable_why: dict[str, str] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return self.observed.n


def drift_counts(
    store: Store, since: datetime, until: datetime, version: str, edges: Sequence[float],
    settings: EngineSettings | None = None,
) -> LoggedCounts:
    """Drift's counts of ``version``'s logged predictions with ``since <= ts < until``, on the engine that
    ``settings`` names; the probabilities binned by ``edges`` (the reference's histogram)."""
    settings = settings or EngineSettings()
    where = location(store)
    todo = plan(store, days(since, until))
    if settings.engine == "dask":
        from oncology.monitoring.engine import cluster

        partial = cluster.partial_counts(settings.scheduler, where, todo, since, until, edges, version,
                                         timeout=settings.scheduler_timeout)
    else:
        partial = partial_counts(where, todo.jsonl, todo.parquet, since, until, edges, version,
                                 settings.duckdb_threads, settings.duckdb_memory_limit)
    corrupt = check(store, todo, partial)
    refuse_corrupt(store, corrupt, settings)
    for key, why in sorted(corrupt.items()):  # the caller reports them (`unreadable_why`): drift warns once
        log.debug("%s/%s: cannot be read whole (%s); skipped", store, key, why)
    return combine(partial.rows, corrupt, todo, version, len(edges) - 1)


def combine(rows: Sequence[tuple[Any, ...]], corrupt: dict[str, str], todo: Plan, version: str, bins: int) -> LoggedCounts:
    """The sum of the partial counts, without those of ``corrupt`` objects."""
    scores = np.zeros((len(FEATURES), len(SCORES)), np.int64)
    by_bin, malignant_by_bin = np.zeros(bins, np.int64), np.zeros(bins, np.int64)
    malignant = 0
    others: Counter[str] = Counter()
    malformed = sum(m.malformed for m in todo.manifests)
    files: set[str] = set()
    for row in rows:
        r = dict(zip(_COLUMNS, row))
        if r["file"] in corrupt:
            continue
        files.add(r["file"])
        malformed += r["malformed"]
        if r["version"] is None or not r["n"]:
            continue
        if r["version"] != version:
            others[r["version"]] += r["n"]
            continue
        malignant += r["malignant"]
        for j, name in enumerate(FEATURES):
            for score, count in (r[name] or {}).items():
                scores[j, score - SCORE_MIN] += count
        for target, name in ((by_bin, "bins"), (malignant_by_bin, "malignant_bins")):
            for b, count in (r[name] or {}).items():
                target[b] += count
    observed = Observed(scores=scores, malignant=malignant, by_bin=by_bin, malignant_by_bin=malignant_by_bin)
    return LoggedCounts(version, observed, len(files), others, malformed, sorted(corrupt), dict(corrupt))


# ---- integrity -------------------------------------------------------------------------------------

def refuse_corrupt(store: Store, corrupt: dict[str, str], settings: EngineSettings) -> None:
    """With ``on_corrupt = refuse``, refuse a computation over objects of which ``corrupt`` (`check`'s) cannot be read
    whole: `CorruptObjects`, naming each and what is wrong with it."""
    if corrupt and settings.on_corrupt == "refuse":
        named = "; ".join(f"{store}/{k}: {why}" for k, why in sorted(corrupt.items()))
        raise CorruptObjects(f"{len(corrupt)} prediction-log object(s) cannot be read whole ({named}); "
                             "nothing was computed (on_corrupt = refuse)")



def check(store: Store, todo: Plan, partial: Partial) -> dict[str, str]:
    """The JSON Lines objects that were not read whole, with what is wrong with each: refused by DuckDB, or
    decompressed to fewer (or more) bytes than their gzip trailer records."""
    counted: Counter[str] = Counter()
    for row in partial.rows:
        if row[3] is not None:
            counted[row[0]] += row[3]
    suspects = dict(partial.refused)
    jsonl = [k for k in todo.jsonl if k not in suspects]
    for key, size in zip(jsonl, _trailer_sizes(store, jsonl)):
        if size is None or size not in {counted[key] % 2**32, (counted[key] - 1) % 2**32}:
            suspects[key] = f"DuckDB read {counted[key]} bytes, the gzip trailer records {size}"
    return {key: _why(store, key, reason) for key, reason in suspects.items()}


def _why(store: Store, key: str, reason: str) -> str:
    """What is wrong with a suspect object, as Python's gzip says it (the usual case: cut short)."""
    if not key.endswith(".gz"):
        return reason
    try:
        gzip.decompress(store.read(key))
    except (OSError, EOFError, zlib.error) as exc:
        return f"{type(exc).__name__}: {exc}"
    except OncologyError as exc:
        return str(exc)
    return reason


def _trailer_sizes(store: Store, keys: Sequence[str]) -> list[int | None]:
    """The uncompressed size (mod 2**32) each gzip object's trailer records; None if it is too short to have one."""
    if isinstance(store, LocalStore):
        return [_local_trailer(store, k) for k in keys]
    if isinstance(store, S3Store):
        with ThreadPoolExecutor(16) as pool:
            return list(pool.map(lambda k: _s3_trailer(store, k), keys))
    raise EngineError(f"{store}: the query engine reads local folders and S3 stores only")


def _local_trailer(store: LocalStore, key: str) -> int | None:
    with open(store.root / key, "rb") as f:
        size = f.seek(0, 2)
        if size < 18:  # a gzip member's header and trailer alone take 18 bytes
            return None
        f.seek(size - 4)
        return int.from_bytes(f.read(4), "little")


def _s3_trailer(store: S3Store, key: str) -> int | None:
    client: Any = store._client  # noqa: SLF001 - the store's own client and settings
    try:
        answer = client.get_object(Bucket=store.bucket, Key=store._key(key), Range="bytes=-4")  # noqa: SLF001
        body = answer["Body"].read()
    except Exception as exc:  # botocore's errors are built at run time
        raise EngineError(f"{store}/{key}: cannot read its gzip trailer ({type(exc).__name__}: {exc})") from exc
    total = int(str(answer.get("ContentRange", "/0")).rpartition("/")[2] or 0)
    return int.from_bytes(body, "little") if total >= 18 and len(body) == 4 else None
