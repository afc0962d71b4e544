"""Outcomes: the truth about a prediction (the biopsy's histology), recorded once per request id.

An outcome names the request id of the prediction it is about, the outcome (``benign`` or
``malignant``; the UCI codes 2 and 4 are accepted too), when it was observed (ISO 8601 with a time
zone, not in the future) and its source (a lab, an export).  Nothing else is kept: no patient value
beyond what the join with the prediction log needs.

Both ways in, ``POST /outcomes`` on the service and ``oncology outcomes import FILE``, validate as
`OutcomeIn` (the pydantic model, `oncology.outcomes_in`, loaded on first use; the service checks the same
without pydantic) and hand the records to `OutcomeBook.record`.  This module sits one floor below the web
service and the monitoring wing, so that neither imports the other.

In the store::

    monitoring/outcome-ids/<request id>.json                       the claim: one per request id, created once
    monitoring/outcomes/date=YYYY-MM-DD/<content hash>.jsonl       the records, JSON Lines, Hive-partitioned by
                                                                   the UTC date of ``observed_at``, written once
    monitoring/outcome-conflicts/date=YYYY-MM-DD/<request id>-<hash>.json
                                                                   a refused, different outcome, kept

The claim decides: it is created with the store's create-once write (``If-None-Match: *`` on S3, an
exclusive create locally), so that of two replicas (or two imports, or a retry after a restart)
recording an outcome for one request id, exactly one succeeds.  The same outcome again is a no-op; a
different one is refused (`OutcomeConflict`) and kept as a conflict record, and the claim is never
overwritten.  The data file of a batch is written after its claims and holds every record of the
batch that the claims hold, so a batch whose writer died between the two is completed by its retry
(the join keeps one record per request id).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Protocol

from oncology_model.errors import ConflictError, OncologyError
from oncology_model.storage import Store

if TYPE_CHECKING:
    from oncology.outcomes_in import OBSERVED_AT_FORM as OBSERVED_AT_FORM
    from oncology.outcomes_in import OutcomeIn as OutcomeIn
    from oncology.outcomes_in import validation_problems as validation_problems

#: The records, Hive-partitioned by the UTC date of ``observed_at``.
PREFIX: Final = "monitoring/outcomes"
#: One claim per request id: the arbiter of conflicts.
IDS_PREFIX: Final = "monitoring/outcome-ids"
#: Refused outcomes that differed from the one recorded.
CONFLICTS_PREFIX: Final = "monitoring/outcome-conflicts"
#: As the service's request ids (``X-Request-Id``): letters, digits and ``._:-``, up to 128.
REQUEST_ID_PATTERN: Final = r"^[A-Za-z0-9._:-]{1,128}$"
SOURCE_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9 ._:/@+-]{0,99}$"
#: The UCI data's class codes.
CODES: Final = {2: "benign", 4: "malignant"}
#: An observation time this far ahead of the receiver's clock is still taken (clocks differ a little).
CLOCK_SKEW: Final = timedelta(minutes=5)


def _now() -> datetime:
    return datetime.now(UTC)


class OutcomeRecord(Protocol):
    """What `OutcomeBook.record` reads of an outcome: an `OutcomeIn` (pydantic, `oncology.outcomes_in`), or the
    service's `Outcome` (read without pydantic, with the same checks: `oncology.webservice.outcomes`)."""

    @property
    def request_id(self) -> str: ...
    @property
    def observed_at(self) -> datetime: ...
    @property
    def source(self) -> str: ...
    @property
    def label(self) -> str: ...


@dataclass(frozen=True)
class Outcome:
    """One outcome, checked as `OutcomeIn` checks it (``observed_at`` time-zone aware, not in the future)."""

    request_id: str
    outcome: str | int
    observed_at: datetime
    source: str

    @property
    def label(self) -> str:
        """``benign`` or ``malignant``."""
        return CODES[self.outcome] if isinstance(self.outcome, int) else self.outcome


def __getattr__(name: str) -> Any:
    if name in ("OutcomeIn", "validation_problems", "OBSERVED_AT_FORM"):  # pydantic's: loaded on first use
        from oncology import outcomes_in

        return getattr(outcomes_in, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class Stored:
    """An outcome as the store keeps it."""

    request_id: str
    outcome: str
    observed_at: str  # UTC, ISO 8601
    source: str
    received_at: str  # UTC, ISO 8601

    def encode(self) -> bytes:
        return json.dumps(self.__dict__, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> Stored:
        return cls(**json.loads(data))

    @classmethod
    def of(cls, record: OutcomeRecord, received_at: datetime) -> Stored:
        return cls(record.request_id, record.label, _utc(record.observed_at), record.source, _utc(received_at))

    def describe(self) -> str:
        return f"{self.outcome} (observed {self.observed_at}, source {self.source})"


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Conflict:
    """A different outcome for a request id that has one: refused, kept at ``key``."""

    index: int  # the record's position in its batch
    kept: Stored
    refused: Stored
    key: str

    def message(self) -> str:
        return (f"request id {self.kept.request_id} already has outcome {self.kept.describe()}; "
                f"{self.refused.describe()} is refused (kept as a conflict record, {self.key})")


@dataclass
class Intake:
    """What recording a batch did, record by record (by position in the batch)."""

    created: list[int] = field(default_factory=list)
    unchanged: list[int] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    @property
    def statuses(self) -> dict[int, str]:
        out = dict.fromkeys(self.created, "created") | dict.fromkeys(self.unchanged, "unchanged")
        return out | {c.index: "conflict" for c in self.conflicts}


class OutcomeConflict(OncologyError):
    """Outcomes that differ from the ones already recorded for their request ids (each listed)."""

    def __init__(self, conflicts: Sequence[Conflict]) -> None:
        self.conflicts = list(conflicts)
        super().__init__("; ".join(c.message() for c in conflicts))


def claim_key(request_id: str) -> str:
    # a leading '.' would make a hidden file in a local store: '%' is not in a request id, so no clash
    name = "%2E" + request_id[1:] if request_id.startswith(".") else request_id
    return f"{IDS_PREFIX}/{name}.json"


def data_key(date: str, content: bytes) -> str:
    return f"{PREFIX}/date={date}/{hashlib.sha256(content).hexdigest()[:32]}.jsonl"


def conflict_key(refused: Stored, received: datetime) -> str:
    digest = hashlib.sha256(refused.encode()).hexdigest()[:16]
    return f"{CONFLICTS_PREFIX}/date={received:%Y-%m-%d}/{refused.request_id}-{digest}.json"


class OutcomeBook:
    """Records outcomes in a store, once per request id."""

    def __init__(self, store: Store, clock: Callable[[], datetime] = _now) -> None:
        self.store = store
        self._clock = clock

    def record(self, records: Sequence[OutcomeRecord]) -> Intake:
        """Claim each record's request id, keep conflicts, then write the batch's data file(s).

        Conflicts are reported in the result, not raised (the other records of the batch are kept);
        a `StoreError` is raised as it comes (a retry of the same batch is safe).
        """
        received = self._clock()
        intake = Intake()
        held: dict[str, Stored] = {}  # request id -> the record its claim holds
        for index, record in enumerate(records):
            mine = Stored.of(record, received)
            kept = held.get(mine.request_id)
            if kept is None:
                kept = self._claim(mine)
                held[mine.request_id] = kept
                if kept is mine:
                    intake.created.append(index)
                    continue
            if kept.outcome == mine.outcome:
                intake.unchanged.append(index)
            else:
                key = conflict_key(mine, received)
                conflict = {"request_id": mine.request_id, "kept": kept.__dict__, "refused": mine.__dict__,
                            "received_at": mine.received_at}
                self.store.create(key, json.dumps(conflict, separators=(",", ":"), sort_keys=True).encode())
                intake.conflicts.append(Conflict(index, kept, mine, key))
        intake.files = self._write(held.values())
        return intake

    def _claim(self, mine: Stored) -> Stored:
        """``mine`` if its request id had no outcome (claimed now), else the outcome its claim holds."""
        key = claim_key(mine.request_id)
        try:
            if self.store.create(key, mine.encode()):  # create-once: If-None-Match: * on S3, an exclusive link locally
                return mine
        except ConflictError:  # held by another record (the usual case): read it below
            pass
        return Stored.decode(self.store.read(key))

    def _write(self, held: Iterable[Stored]) -> list[str]:
        by_date: dict[str, list[Stored]] = {}
        for stored in held:
            by_date.setdefault(stored.observed_at[:10], []).append(stored)
        keys = []
        for date, rows in sorted(by_date.items()):
            content = b"".join(r.encode() + b"\n" for r in sorted(rows, key=lambda r: r.request_id))
            key = data_key(date, content)
            self.store.create(key, content)  # content-addressed: the same batch again is a no-op
            keys.append(key)
        return keys

    def read_claim(self, request_id: str) -> Stored | None:
        key = claim_key(request_id)
        return Stored.decode(self.store.read(key)) if self.store.exists(key) else None
