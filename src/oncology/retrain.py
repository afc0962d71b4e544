"""The retraining trigger (``oncology outcomes retrain``): when the newest outcome check or drift report in the
store alarms, and no retraining started within the cooldown, build a dataset version from the outcomes and
train a candidate on it.  It never promotes: the release path decides.

Two triggers never both train: each retraining first claims the next number of a sequence with the store's
create-once write (``If-None-Match: *`` on S3, an exclusive link locally), as the outcome claims and the
registry's versions do; the trigger that loses the claim stops ("cooling down"), and so does every trigger
that finds a claim younger than the cooldown.  In the store::

    monitoring/retrains/<n>.json           the claim: when, why (the alarms), by whom; created once
    monitoring/retrains/<n>.result.json    what came of it: the dataset version, the model version, or the error

A retraining that fails (the gate, an error) still holds its claim: the next one waits for the cooldown, so
that a failing retraining is not run again on every schedule.

This module sits at the top, beside the CLI: it uses both the monitoring wing (the dataset) and the trainer.
"""

from __future__ import annotations

import json
import os
import re
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from oncology.settings import RetrainSettings, TrainSettings
from oncology_model.errors import ConflictError, NotFoundError, OncologyError
from oncology_model.storage import Store

PREFIX: Final = "monitoring/retrains"
#: Written by ``oncology outcomes check`` (`oncology.monitoring.outcomes.LATEST_CHECK`).
OUTCOME_CHECK: Final = "monitoring/outcome-checks/latest.json"
#: Where ``oncology drift`` writes its reports (`oncology.monitoring.drift_cli.REPORT_PREFIX`), one per run.
DRIFT_REPORTS: Final = "monitoring/drift"
_CLAIM = re.compile(r"^(\d{8})\.json$")

#: Exit codes of ``oncology outcomes retrain``.
PUBLISHED: Final = 0
NOT_PUBLISHED: Final = 1
ERROR: Final = 2
NO_ALARM: Final = 3
COOLING_DOWN: Final = 4


@dataclass(frozen=True)
class Alarm:
    source: Literal["outcome check", "drift"]
    report: str  # its key in the store
    at: str  # when the report was made
    what: list[str]

    def describe(self) -> str:
        return f"{self.source} {self.report} ({self.at}): {', '.join(self.what)}"


def alarms(store: Store) -> tuple[list[Alarm], list[str]]:
    """The alarms of the newest outcome check and the newest drift report, and what was read (for the message
    when nothing alarms)."""
    found: list[Alarm] = []
    seen: list[str] = []
    try:
        latest = json.loads(store.read(OUTCOME_CHECK))
    except NotFoundError:
        seen.append("no outcome check yet")
    except ValueError as exc:
        raise OncologyError(f"{store}/{OUTCOME_CHECK}: not JSON ({exc})") from None
    else:
        seen.append(f"outcome check {latest.get('report')} ({latest.get('checked_at')}): {latest.get('status')}")
        if latest.get("status") == "alarm":
            what = [f"{a['version']} {a['metric']}" for a in latest.get("alarms", []) if a.get("alarm")]
            found.append(Alarm("outcome check", str(latest.get("report")), str(latest.get("checked_at")), what))
    reports = sorted(k for k in store.list(DRIFT_REPORTS + "/") if re.search(r"/drift-\d{8}T\d{6}Z\.json$", k))
    if not reports:
        seen.append("no drift report yet")
    else:
        key = reports[-1]
        try:
            report = json.loads(store.read(key))
        except ValueError as exc:
            raise OncologyError(f"{store}/{key}: not JSON ({exc})") from None
        at = str(report.get("created_at"))
        seen.append(f"drift report {key}: {'drift' if report.get('drift') else 'no drift'}")
        if report.get("drift"):
            flagged = list(report.get("flagged", [])) + (
                ["prediction mix"] if report.get("prediction_mix", {}).get("flagged") else [])
            found.append(Alarm("drift", key, at, [f"{report.get('model_version', '?')} {name}" for name in flagged]))
    return found, seen


@dataclass(frozen=True)
class Claim:
    number: int
    key: str
    record: dict[str, Any]

    @property
    def started_at(self) -> datetime:
        return datetime.fromisoformat(self.record["started_at"])


def claims(store: Store) -> list[int]:
    return sorted(int(m.group(1)) for k in store.list(PREFIX + "/") if (m := _CLAIM.match(k[len(PREFIX) + 1:])))


def read_claim(store: Store, number: int) -> Claim:
    key = f"{PREFIX}/{number:08d}.json"
    try:
        return Claim(number, key, json.loads(store.read(key)))
    except (ValueError, KeyError) as exc:
        raise OncologyError(f"{store}/{key}: not a retraining claim ({exc})") from None


@dataclass
class Decision:
    """What the trigger found: a claim it now holds (go), or why not."""

    status: Literal["go", "no_alarm", "cooling_down"]
    alarms: list[Alarm] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)
    claim: Claim | None = None  # ours (go) or the one that holds the cooldown
    until: datetime | None = None  # the end of the cooldown


def decide(store: Store, cooldown: timedelta, now: datetime | None = None) -> Decision:
    """Read the alarms; if one is up and the newest claim is older than ``cooldown``, claim the next number."""
    now = now or datetime.now(UTC)
    found, seen = alarms(store)
    if not found:
        return Decision("no_alarm", seen=seen)
    numbers = claims(store)
    if numbers:
        last = read_claim(store, numbers[-1])
        if now - last.started_at < cooldown:
            return Decision("cooling_down", found, seen, last, last.started_at + cooldown)
    number = (numbers[-1] if numbers else 0) + 1
    record = {"started_at": now.isoformat(timespec="seconds"), "alarms": [a.__dict__ for a in found],
              "by": f"{socket.gethostname()}:{os.getpid()}", "cooldown_hours": cooldown.total_seconds() / 3600}
    key = f"{PREFIX}/{number:08d}.json"
    try:
        won = store.create(key, json.dumps(record, sort_keys=True).encode())
    except ConflictError:  # another trigger claimed this number first (other content)
        won = False
    if not won:
        theirs = read_claim(store, number)
        return Decision("cooling_down", found, seen, theirs, theirs.started_at + cooldown)
    return Decision("go", found, seen, Claim(number, key, record))


@dataclass
class Result:
    status: Literal["published", "unchanged", "gate_failed", "failed"]
    dataset_version: str | None = None
    outcome_cases: int | None = None
    model_version: str | None = None
    reason: str | None = None


def retrain(store: Store, claim: Claim, settings: RetrainSettings, interactive: bool = False) -> Result:
    """Build the dataset version and train a candidate on it (never promoted); record what came of it beside the
    claim, whatever it was."""
    from oncology.monitoring.outcomes import build_dataset
    from oncology.trainer.data import BUNDLED_DATA, DATA_FILE, parse
    from oncology.trainer.pipeline import GateFailed, run_training
    from oncology_model.storage import read_uri

    result = Result("failed")
    try:
        raw_uri = settings.data or str(BUNDLED_DATA)
        raw = read_uri(raw_uri)
        parse(raw, raw_uri)  # a raw file the trainer reads
        built = build_dataset(store, raw, raw_uri, DATA_FILE)
        result.dataset_version, result.outcome_cases = built.version, built.outcome_cases
        train = TrainSettings(store=settings.store, data=None, dataset=built.version, promote=False)
        outcome = run_training(train, interactive=interactive)
        result.model_version = outcome.version
        result.status = "published" if outcome.published else "unchanged"
    except GateFailed as exc:
        result.status, result.model_version, result.reason = "gate_failed", exc.version, "; ".join(exc.reasons)
    except OncologyError as exc:
        result.reason = str(exc)
    finally:
        record = {**result.__dict__, "finished_at": datetime.now(UTC).isoformat(timespec="seconds")}
        store.create(f"{PREFIX}/{claim.number:08d}.result.json", json.dumps(record, sort_keys=True).encode())
    return result
