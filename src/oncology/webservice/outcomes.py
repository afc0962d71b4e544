"""POST /outcomes: decode, validate, hand to the store (`oncology.outcomes.OutcomeBook`).  No analytics here:
the join with the prediction log and the realized performance are the monitoring wing's.

`CheckFollower` reads the newest outcome check's verdicts from the store (a JSON object that
``oncology outcomes check`` replaces on each run) and exports them as ``oncology_outcome_alarm``, so that
the alerting rules in deploy/monitoring/ reach a person; the service never imports the monitoring wing.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from oncology.outcomes import OutcomeBook, OutcomeRecord
from oncology.webservice import errors, refusals, schemas
from oncology.webservice.auth import Tokens
from oncology.webservice.core import Core
from oncology.webservice.handlers import Handlers, Route
from oncology.webservice.metrics import Metrics
from oncology.webservice.transport import Reply, Req, json_reply
from oncology_model.errors import NotFoundError, StoreError
from oncology_model.storage import Store, open_store

log = logging.getLogger("oncology.webservice")

#: Written by ``oncology outcomes check`` (oncology.monitoring.outcomes.LATEST_CHECK): the same key, not an import.
LATEST_CHECK = "monitoring/outcome-checks/latest.json"


class Outcomes(Handlers):
    def __init__(self, core: Core, tokens: Tokens) -> None:
        super().__init__(core, tokens)
        uri = self.settings.outcome_store_uri
        self._book = OutcomeBook(open_store(uri)) if self.settings.outcomes and uri else None

    def routes(self) -> list[Route]:
        return [("POST", "/outcomes", self.post)]

    async def post(self, req: Req) -> Reply:
        """Record outcomes (biopsy results) of earlier predictions, once per request id."""
        self.authorize(req)
        if self._book is None:
            raise errors.NotFound("outcome intake is off on this service (ONCOLOGY_OUTCOMES=true turns it on)")
        records = decode_outcomes(await req.json_body(self.settings.max_batch_body_bytes), self.settings.max_batch)
        try:
            intake = await asyncio.to_thread(self._book.record, records)
        except StoreError as exc:
            # the store's message names the object and the cause (a path, a denied access); it holds no record's data
            log.error("outcomes could not be recorded (request %s): %s", req.request_id, exc)
            raise errors.NotReady("the outcome store cannot be written now; nothing was lost: send the same "
                                  "records again later (a retry is safe)") from None
        counter = self.core.metrics.outcomes
        for result, n in (("created", len(intake.created)), ("unchanged", len(intake.unchanged)),
                          ("conflict", len(intake.conflicts))):
            if n:
                counter.labels(result).inc(n)
        if intake.conflicts:
            details = [{"loc": ["body", c.index, "outcome"], "value": c.refused.outcome, "reason": c.message()}
                       for c in intake.conflicts]
            accepted = len(intake.created) + len(intake.unchanged)
            raise errors.Conflict(
                f"{len(intake.conflicts)} outcome(s) differ from the one already recorded for their request id and "
                f"were refused (kept as conflict records; details lists each, with both outcomes); the other "
                f"{accepted} record(s) were accepted", details[:100])
        statuses = intake.statuses
        return json_reply({
            "created": len(intake.created),
            "unchanged": len(intake.unchanged),
            "results": [{"request_id": r.request_id, "status": statuses[i]} for i, r in enumerate(records)],
        })


def decode_outcomes(body: bytes, limit: int) -> Sequence[OutcomeRecord]:
    """A JSON array of outcomes; 400 (not JSON), 422 (every bad field, by index; more than ``limit`` records: the
    document's ``maxItems``, a schema limit like a batch's rows; 413 is for bytes).  Read as ``list[OutcomeIn]``
    reads it, in its words, without pydantic (`refusals.outcomes_errors`), but for the rare values whose verdict is
    left to pydantic (a Unix time, say): then by `OutcomeIn` itself (loaded then)."""
    schemas.check_utf8(body)
    schemas.refuse_duplicate_keys(body)
    records: Sequence[OutcomeRecord]
    doc, found = refusals.parse(body)
    try:
        records, found = ([], found) if found else refusals.outcomes_errors(doc)
    except refusals.Undecided:
        records, found = _by_pydantic(body)
    if found:
        raise errors.from_pydantic(_safe(found)) from None
    if len(records) > limit:
        raise errors.Unprocessable(
            f"POST /outcomes takes at most {limit} records; this request has {len(records)}",
            [{"loc": ["body"], "value": None, "reason": f"more than {limit} records"}],
        )
    return records


def _by_pydantic(body: bytes) -> tuple[Sequence[OutcomeRecord], list[Any]]:
    from pydantic import TypeAdapter, ValidationError

    from oncology.outcomes import OutcomeIn

    try:
        return TypeAdapter(list[OutcomeIn]).validate_json(body), []
    except ValidationError as exc:
        return [], list(exc.errors(include_url=False))


def _safe(found: list[Any]) -> list[Any]:
    """pydantic's errors with the input of a value error made JSON-safe (a datetime is echoed as text)."""
    for e in found:
        if "input" in e and not isinstance(e["input"], str | int | float | bool | list | dict | type(None)):
            e["input"] = str(e["input"])
        e.pop("ctx", None)
    return found


class CheckFollower:
    """The newest outcome check's verdicts, from the store into the metrics."""

    def __init__(self, store: Store, metrics: Metrics) -> None:
        self.store = store
        self.metrics = metrics
        self.seen: str | None = None

    def refresh(self) -> bool:
        """Read the verdicts; True if a new check was exported.  A missing or unreadable object changes nothing."""
        try:
            summary = json.loads(self.store.read(LATEST_CHECK))
            checked_at = datetime.fromisoformat(summary["checked_at"]).timestamp()
            alarms = [(str(a["version"]), str(a["metric"]), bool(a["alarm"])) for a in summary["alarms"]]
        except NotFoundError:
            return False
        except (StoreError, ValueError, KeyError, TypeError) as exc:
            log.warning("the newest outcome check cannot be read (%s: %s): its alarms are not exported",
                        type(exc).__name__, exc)
            return False
        if summary["checked_at"] == self.seen:
            return False
        for version, metric, alarm in alarms:
            self.metrics.outcome_alarm.labels(version, metric).set(int(alarm))
        self.metrics.outcome_check_time.set(checked_at)
        self.seen = summary["checked_at"]
        return True


async def follow_checks(follower: CheckFollower, interval: float) -> None:
    """Refresh ``follower`` now and every ``interval`` seconds, for ever (until cancelled)."""
    while True:
        try:
            await asyncio.to_thread(follower.refresh)
        except Exception:  # keep following: a bug is logged, the last verdicts stay exported
            log.exception("reading the outcome check crashed")
        await asyncio.sleep(interval)
