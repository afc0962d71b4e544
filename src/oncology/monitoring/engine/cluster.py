"""The Dask engine: the embedded engine's per-group query (`run.partial_counts`), one task per object, on
the workers of a Dask cluster; the partial counts come back to the caller, which checks and adds them up
exactly as for DuckDB (`run.drift_counts`).

Why this split: every figure drift needs is a count, and counts are additive, so the work divides by object
with no shuffle, each task reads one object through DuckDB (the same SQL text, the same S3 settings as
`connection.Location`), and the combine step is a sum of a few thousand small rows.  A worker lost mid-run
loses only its tasks, which the scheduler runs again elsewhere (``retries`` covers tasks that raised).

``scheduler=None`` starts a `distributed.LocalCluster` on 127.0.0.1 (two single-threaded worker processes)
for the call; otherwise the client connects to ``tcp://host:port``.  The workers need this package
installed (the trainer image) and reach the store themselves: the task carries its `Location`, including
the S3 credentials, over the cluster's connections.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from oncology.monitoring.engine.connection import EngineError, Location
from oncology.monitoring.engine.layout import Plan
from oncology.monitoring.engine.run import Partial
from oncology.monitoring.engine.run import partial_counts as _one_group

#: Attempts of a task that raised (a task lost with its worker is rescheduled by Dask without counting).
RETRIES = 2


def _task(where: Location, jsonl: Sequence[str], parquet: Sequence[str], since: datetime, until: datetime,
          edges: Sequence[float], version: str) -> Partial:
    return _one_group(where, jsonl, parquet, since, until, edges, version, threads=1)


def partial_counts(
    scheduler: str | None, where: Location, todo: Plan, since: datetime, until: datetime, edges: Sequence[float],
    version: str, workers: int = 2, timeout: float = 10.0,
) -> Partial:
    """`run.partial_counts` of every object of ``todo``, one Dask task each, on the cluster at ``scheduler``
    (which must answer within ``timeout`` seconds; else `EngineError`, naming it)."""
    try:
        import distributed
    except ImportError as exc:
        raise EngineError("the dask engine needs Dask: pip install 'oncology[dask]'") from exc
    groups: list[tuple[list[str], list[str]]] = [([k], []) for k in todo.jsonl] + [([], [k]) for k in todo.parquet]
    result = Partial()
    if not groups:
        return result
    dist: Any = distributed  # distributed ships no type hints
    cluster: Any = None
    client: Any
    try:
        if scheduler is None:
            # the dashboard on a free port: None means the fixed :8787, which another cluster may hold
            cluster = dist.LocalCluster(n_workers=workers, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0",
                                   processes=True)
            client = dist.Client(cluster)
        else:
            client = dist.Client(scheduler, timeout=timeout)
    except (OSError, ValueError, TypeError) as exc:  # refused, timed out, or not an address Dask can read
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise EngineError(f"cannot reach the Dask scheduler {scheduler or '(local cluster)'} within {timeout:g} s "
                          f"(ONCOLOGY_SCHEDULER_TIMEOUT): {why}") from None
    try:
        futures = client.map(_task, [where] * len(groups), [g[0] for g in groups], [g[1] for g in groups],
                             since=since, until=until, edges=list(edges), version=version, retries=RETRIES, pure=False)
        for partial in client.gather(futures):
            result.rows += partial.rows
            result.refused.update(partial.refused)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return result
