"""The prediction log as a DuckDB view, for any query over it (the outcome join, the tables, the dashboard); and
the recorded outcomes beside it (`with_outcomes`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING

from oncology.monitoring.engine import queries, table
from oncology.monitoring.engine.connection import Location, connect, location
from oncology.monitoring.engine.layout import JSONL_PREFIX, PARQUET_PREFIX, Plan, days, partition_days, plan
from oncology.monitoring.engine.run import check, line_counts, refuse_corrupt
from oncology.monitoring.engine.settings import EngineSettings
from oncology.outcomes import PREFIX as OUTCOMES_PREFIX
from oncology_model.storage import Store

if TYPE_CHECKING:
    import duckdb


@dataclass
class Predictions:
    """A DuckDB connection holding the view ``predictions`` (see `queries.predictions` for its columns), the
    objects behind it, and those left out because they cannot be read whole (``on_corrupt = skip``)."""

    con: duckdb.DuckDBPyConnection
    where: Location
    plan: Plan
    skipped: dict[str, str]


def predictions(
    store: Store, since: datetime | None = None, until: datetime | None = None, settings: EngineSettings | None = None
) -> Predictions:
    """The valid logged predictions with ``since <= ts < until`` (both unset: the whole log), as the view
    ``predictions``.  Each object is checked whole first (`run.check`): a corrupt one is skipped or refused
    per ``settings.on_corrupt``, never read in part.  Each prediction appears once (Parquet where a day is
    compacted, JSON Lines for the objects no manifest replaced)."""
    settings = settings or EngineSettings()
    where = location(store)
    partitions = days(since, until) if since is not None and until is not None else sorted(
        set(partition_days(store, JSONL_PREFIX)) | set(partition_days(store, PARQUET_PREFIX)))
    kept, corrupt = checked_plan(store, partitions, settings)
    start = since or datetime.fromisoformat("0001-01-01T00:00:00+00:00")
    end = until or datetime.fromisoformat("9999-12-31T00:00:00+00:00")
    con = connect(where, settings.duckdb_threads, settings.duckdb_memory_limit)
    if kept.jsonl or kept.parquet:
        body = queries.predictions([where.url(k) for k in kept.jsonl], [where.url(k) for k in kept.parquet])
        window = f"ts >= TIMESTAMPTZ {queries.literal(start.isoformat())} AND ts < TIMESTAMPTZ {queries.literal(end.isoformat())}"
        con.execute(f"CREATE VIEW predictions AS SELECT * FROM ({body}) WHERE {window}")
    else:  # an empty log: the same columns, no rows
        columns = ", ".join([f"CAST(NULL AS {c.duckdb}) AS {c.name}" for c in (table.PARTITION, *table.COLUMNS)]
                            + ["CAST(NULL AS BOOLEAN) AS malignant", "CAST(NULL AS VARCHAR) AS file"])
        con.execute(f"CREATE VIEW predictions AS SELECT {columns} WHERE false")
    return Predictions(con, where, kept, corrupt)


def checked_plan(store: Store, partitions: list[date], settings: EngineSettings) -> tuple[Plan, dict[str, str]]:
    """What to read of ``partitions`` (`layout.plan`: Parquet where a manifest exists, the JSON Lines no manifest
    replaced), every object checked whole first (`run.check`), without the corrupt ones, which are returned
    with what is wrong with each (``on_corrupt = skip``) or refused, each named (`CorruptObjects`)."""
    where = location(store)
    todo = plan(store, partitions)
    scan = line_counts(where, todo.jsonl, todo.parquet, settings.duckdb_threads, settings.duckdb_memory_limit)
    corrupt = check(store, todo, scan)
    refuse_corrupt(store, corrupt, settings)
    kept = Plan(tuple(k for k in todo.jsonl if k not in corrupt), tuple(k for k in todo.parquet if k not in corrupt),
                todo.manifests)
    return kept, corrupt


def with_outcomes(store: Store, view: Predictions) -> Predictions:
    """``view`` with a table ``outcomes`` (`queries.outcomes`: one record per request id) of the outcome records
    in ``store`` (the JSON Lines objects under ``monitoring/outcomes/date=*/``), read once now: a tenth of the log
    or less, and read by several queries of the join."""
    keys = [k for k in store.list(OUTCOMES_PREFIX + "/") if k.endswith(".jsonl")]
    view.con.execute(f"CREATE TEMP TABLE outcomes AS {queries.outcomes([view.where.url(k) for k in keys])}")
    return view
