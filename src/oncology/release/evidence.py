"""The evidence of a release: the two arms' requests in one window, read from the prediction log.

The service logs every request it scored (``monitoring/predictions/date=YYYY-MM-DD/*.jsonl.gz``, see
`oncology.webservice.predlog`), each line with its model version, its arm and the model's scoring
time; a request the model failed is one ``"prediction": "error"`` line.  Compaction keeps both kinds, with the
arm and the scoring time, in its Parquet parts (`oncology.monitoring.compaction`), and the log is read through
the monitoring query layer, so the evidence is the same before and after compaction and retention.  For a
window ``[since, until)``:

- canary: the champion arm is the champion version's ``champion`` lines, the candidate arm the
  candidate version's ``candidate`` lines;
- shadow: the champion arm is the champion's answers, the candidate arm the candidate's ``shadow``
  scores; both of one request (same request id; a batch's rows paired by their inputs, which the shadow's
  lines copy) make the pairs whose disagreements are counted, the costly direction (candidate benign,
  champion malignant) apart;
- ``pinned`` lines (a client that named its version) belong to no arm.

A line that is not a record is skipped and counted; an object that cannot be read whole is skipped and named,
or refused, per ``ONCOLOGY_ON_CORRUPT`` (never read in part).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from oncology.monitoring.engine.settings import EngineSettings
from oncology.release.judge import Arm, Paired
from oncology.release.metrics import Reading
from oncology_model.storage import Store

PREFIX: Final = "monitoring/predictions"
log = logging.getLogger(__name__)


@dataclass
class Window:
    """The two arms of a window, and what was skipped."""

    champion: Arm
    candidate: Arm
    paired: Paired | None
    files: int = 0
    malformed: int = 0
    unreadable: list[str] = field(default_factory=list)


@dataclass
class LoggedRequest:
    version: str
    arm: str
    latency_ms: float
    error: bool = False
    predictions: list[str] = field(default_factory=list)
    decisions: list[str] = field(default_factory=list)


def read_requests(store: Store, since: datetime, until: datetime, versions: set[str],
                  settings: EngineSettings | None = None) -> tuple[dict[tuple[str, str], LoggedRequest], int, int, list[str]]:
    """The requests of ``versions`` logged in ``[since, until)``, by (request id, arm); the objects read, the
    malformed lines and the objects left out because they cannot be read whole.

    Read through the monitoring query layer (`oncology.monitoring.engine`): the Parquet parts of the compacted
    days and the JSON Lines objects no manifest replaced, each record once, so a window whose JSON Lines were
    deleted by retention reads the same evidence from Parquet.  Every object is checked whole first: a corrupt
    one is skipped and named, or refused (`CorruptObjects`, naming it), per ``settings.on_corrupt``
    (``ONCOLOGY_ON_CORRUPT``).  The records are grouped in the engine; only one row per request reaches Python.
    """
    from oncology.monitoring.engine import queries
    from oncology.monitoring.engine.connection import connect, location
    from oncology.monitoring.engine.layout import days
    from oncology.monitoring.engine.relations import checked_plan

    settings = settings or EngineSettings()
    todo, corrupt = checked_plan(store, days(since, until), settings)
    for key, why in sorted(corrupt.items()):
        log.warning("prediction log %s/%s cannot be read whole (%s): skipped", store, key, why)
    malformed = sum(m.malformed for m in todo.manifests)
    requests: dict[tuple[str, str], LoggedRequest] = {}
    if not todo.jsonl and not todo.parquet or not versions:
        return requests, len(todo.jsonl) + len(todo.parquet), malformed, sorted(corrupt)
    where = location(store)
    con = connect(where, settings.duckdb_threads, settings.duckdb_memory_limit)
    try:
        result = con.execute(queries.requests([where.url(k) for k in todo.jsonl], [where.url(k) for k in todo.parquet],
                                              since, until, sorted(versions)))
        while chunk := result.fetchmany(10_000):
            for request_id, arm, version, error, latency, predictions, decisions, bad in chunk:
                if arm is None:  # the row of the malformed lines
                    malformed += int(bad)
                    continue
                requests[(request_id, arm)] = LoggedRequest(version, arm, float(latency), bool(error),
                                                            list(predictions), list(decisions))
    finally:
        con.close()
    return requests, len(todo.jsonl) + len(todo.parquet), malformed, sorted(corrupt)


def arm_of(version: str, requests: list[LoggedRequest]) -> Arm:
    """The arm's figures from its requests."""
    arm = Arm(version)
    for r in requests:
        arm.requests += 1
        if r.error:
            arm.errors += 1
            continue
        arm.latencies_ms.append(r.latency_ms)
        malignant = r.predictions.count("malignant")
        arm.malignant += malignant
        arm.benign += len(r.predictions) - malignant
        arm.referred += r.decisions.count("refer")
    return arm


def collect(store: Store, champion: str, candidate: str, mode: str, since: datetime, until: datetime,
            settings: EngineSettings | None = None) -> Window:
    """The window's evidence for a release of ``candidate`` against ``champion`` in ``mode`` (canary or shadow)."""
    requests, files, malformed, unreadable = read_requests(store, since, until, {champion, candidate}, settings)
    by_arm: dict[str, list[LoggedRequest]] = defaultdict(list)
    for r in requests.values():
        by_arm[r.arm].append(r)
    champion_requests = [r for r in by_arm["champion"] if r.version == champion]
    paired = None
    if mode == "shadow":
        shadows = [r for r in by_arm["shadow"] if r.version == candidate]
        paired = Paired()
        for (request_id, arm), r in requests.items():
            if arm != "shadow" or r.version != candidate or r.error:
                continue
            answer = requests.get((request_id, "champion"))
            if answer is None or answer.error or answer.version != champion:
                continue
            costly_here = False
            for mine, theirs in zip(r.predictions, answer.predictions):
                paired.rows += 1
                if mine != theirs:
                    paired.disagree += 1
                    if mine == "benign" and theirs == "malignant":
                        paired.costly += 1
                        costly_here = True
            if costly_here:
                paired.costly_ids.append(request_id)
        paired.costly_ids.sort()
        candidate_arm = arm_of(candidate, shadows)
    else:
        candidate_arm = arm_of(candidate, [r for r in by_arm["candidate"] if r.version == candidate])
    return Window(arm_of(champion, champion_requests), candidate_arm, paired, files, malformed, unreadable)


def apply_metrics(window: Window, reading: Reading, champion: str, candidate: str, mode: str) -> None:
    """Each arm's requests, errors and scoring times from the replicas' metrics instead of the log (which keeps
    the prediction mix, the referral share and the shadow's pairs); the log's request count is kept beside."""
    for arm, version, name in ((window.champion, champion, "champion"),
                               (window.candidate, candidate, "shadow" if mode == "shadow" else "candidate")):
        counted = reading.arm(version, name)
        arm.logged_requests = arm.requests
        arm.requests, arm.errors = round(counted.requests), round(counted.errors)
        arm.latencies_ms = []
        arm.latency_buckets = [(bound * 1000, count) for bound, count in counted.cumulative()]


def describe(window: Window, since: datetime, until: datetime) -> dict[str, Any]:
    """The window as the evidence records it."""
    return {"from": since.isoformat(timespec="seconds"), "to": until.isoformat(timespec="seconds"),
            "log_files": window.files, "malformed_lines": window.malformed, "unreadable_files": len(window.unreadable)}
