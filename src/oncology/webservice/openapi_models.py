"""The pydantic models the OpenAPI document shows (`Tumor`, `OutcomeIn`, the error shape and the other answers'
shapes), and the JSON Schema components made of them.  A serving worker does not import pydantic (docs/grpc.md,
"Cost"), so the components are made here at build time and committed as `oncology.webservice.openapi_components`,
which the document reads; tests/webservice/test_openapi_components.py checks that the models still give those
bytes.  After changing a model:

    .venv/bin/python -m oncology.webservice.openapi_models   # writes src/oncology/webservice/openapi_components.py
"""

from __future__ import annotations

import pprint
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from oncology.outcomes import OutcomeIn
from oncology_model.tumor import Tumor

#: Where the generated module is written.
TARGET = Path(__file__).with_name("openapi_components.py")
REF_TEMPLATE = "#/components/schemas/{model}"


class ReferralBand(BaseModel):
    """Malignant probabilities p with low <= p < high are referred for review; low <= threshold <= high."""

    low: float = Field(ge=0, le=1, description="Lowest referred probability (below: benign).")
    high: float = Field(ge=0, le=1, description="Lowest probability decided malignant (from here up).")


class ModelOut(BaseModel):
    """The served model."""

    version: str
    source: str = Field(description="Where the model was loaded from.")
    threshold: float = Field(description="Malignant probability at or above which the prediction is malignant.")
    referral: ReferralBand | None = Field(
        description="The referral band, chosen on training data only; null for a model trained before referral "
        "existed (it never refers)."
    )
    metadata: dict[str, Any] = Field(description="The bundle's metadata.json.")
    kpis: dict[str, Any] = Field(description="The bundle's kpis.json: held-out test figures and CV mean/std.")


class ModelCardOut(BaseModel):
    """The served model's card: intended use, data, performance, limitations.  `Accept: text/markdown`
    returns the Markdown alone."""

    version: str = Field(description="The version the card describes (the served one).")
    card: dict[str, Any] | None = Field(description="The machine-readable card (the bundle's card.json).")
    markdown: str | None = Field(description="The card for people (the bundle's card.md), Markdown.")


class Status(BaseModel):
    status: str
    model_version: str | None = None


class ErrorDetail(BaseModel):
    loc: list[str | int] = Field(description="Where: e.g. [\"body\", 3, \"mitoses\"] is row 3's mitoses.")
    value: Any = Field(None, description="The offending value (null for a missing field).")
    reason: str


class ErrorOut(BaseModel):
    """Every error has this shape (`error` is a string, as in the Open Inference Protocol)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": "invalid input at mitoses",
                    "status": 422,
                    "request_id": "5f0c2a9d7e1b4c3a",
                    "details": [{"loc": ["body", "mitoses"], "value": 11, "reason": "Input should be less than or equal to 10"}],
                }
            ]
        }
    )
    error: str = Field(description="What went wrong.")
    status: int = Field(description="The HTTP status code.")
    request_id: str = Field(description="The request's id (X-Request-ID), also in the access log.")
    details: list[ErrorDetail] = Field(default_factory=list, description="Every bad field, for 422.")


class OutcomeResult(BaseModel):
    request_id: str
    status: Literal["created", "unchanged"] = Field(
        description="`created`: recorded now; `unchanged`: this request id already had this outcome (a no-op)."
    )


class OutcomesOut(BaseModel):
    """What POST /outcomes recorded, record by record, in the order sent."""

    created: int = Field(description="Outcomes recorded now.")
    unchanged: int = Field(description="Outcomes their request ids already had (no-ops).")
    results: list[OutcomeResult]


#: Documented with pydantic: the models the REST routes validate with (as the reference decoders do), and the other
#: answers' shapes.
MODELS: list[type[BaseModel]] = [Tumor, ErrorOut, ModelOut, ModelCardOut, Status, OutcomeIn, OutcomesOut]


def components() -> dict[str, Any]:
    """The JSON Schema components of `MODELS` (and the models they refer to), by name, in pydantic's order."""
    _, schemas = models_json_schema([(m, "validation") for m in MODELS], ref_template=REF_TEMPLATE)
    found: dict[str, Any] = schemas["$defs"]
    return found


def module_text() -> str:
    """The source of `oncology.webservice.openapi_components`."""
    body = pprint.pformat(components(), width=116, sort_dicts=False, underscore_numbers=False)
    return ('# ruff: noqa: E501\n"""The OpenAPI document\'s components made from pydantic models: generated, do not edit.\n\n'
            "Written by ``python -m oncology.webservice.openapi_models`` (see there); read by `oncology.webservice.openapi`.\n"
            '"""\n\nfrom typing import Any, Final\n\n'
            f"COMPONENTS: Final[dict[str, Any]] = {body}\n")


if __name__ == "__main__":
    TARGET.write_text(module_text(), encoding="utf-8")
    print(f"wrote {TARGET}", file=sys.stderr)
