"""`OutcomeIn`: an outcome as ``oncology outcomes import`` reads it, and the schema the OpenAPI document shows for
``POST /outcomes`` (which the service checks without pydantic, in the same words: `oncology.webservice.outcomes`).
Re-exported by `oncology.outcomes`, which loads it on first use."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from oncology import outcomes
from oncology.outcomes import CODES, REQUEST_ID_PATTERN, SOURCE_PATTERN


class OutcomeIn(BaseModel):
    """One outcome: the truth about the prediction answered under ``request_id``."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        json_schema_extra={"examples": [{
            "request_id": "4f9c2a7e1b3d5a60", "outcome": "malignant", "observed_at": "2026-12-01T09:30:00+01:00",
            "source": "pathology-lab-1",
        }]},
    )

    request_id: str = Field(
        pattern=REQUEST_ID_PATTERN,
        description="The request id of the prediction (the `X-Request-Id` its answer carried).",
    )
    outcome: Literal["benign", "malignant", 2, 4] = Field(
        description="The truth: `benign` or `malignant` (or the UCI codes 2 and 4)."
    )
    observed_at: Annotated[AwareDatetime, Field(description=(
        "When the outcome was observed (e.g. the histology report): ISO 8601 with a time zone, not in the future."))]
    source: str = Field(pattern=SOURCE_PATTERN, description="Where the outcome comes from (a lab, an export); no patient data.")

    @field_validator("observed_at")
    @classmethod
    def _not_in_the_future(cls, value: datetime) -> datetime:
        if value > outcomes._now() + outcomes.CLOCK_SKEW:
            raise ValueError(f"{value.isoformat()} is in the future")
        return value

    @property
    def label(self) -> str:
        """``benign`` or ``malignant``."""
        return CODES[self.outcome] if isinstance(self.outcome, int) else self.outcome


#: how ``observed_at`` is written, for the messages about a time that is not
OBSERVED_AT_FORM: Final = "ISO 8601 with a time zone, e.g. 2026-12-05T10:00:00+01:00"


def validation_problems(exc: ValidationError) -> list[tuple[str, Any, str]]:
    """(field, value, reason) of each problem pydantic found in one record."""
    problems = []
    for e in exc.errors(include_url=False):
        where = ".".join(str(p) for p in e["loc"]) or "record"
        value = None if e["type"] == "missing" else e.get("input")
        reason = e["msg"].removeprefix("Value error, ")
        if where.endswith("observed_at") and (e["type"].startswith("datetime") or e["type"] == "timezone_aware"):
            reason += f" (write {OBSERVED_AT_FORM})"  # a spreadsheet's own date format is the usual cause
        problems.append((where, value, reason))
    return problems
