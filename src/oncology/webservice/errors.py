"""One error shape for every failed request.

``{"error": "<message>", "status": <code>, "request_id": "...", "details": [{"loc": [...], "value": ..., "reason": "..."}]}``

``error`` is a string, as the Open Inference Protocol's error response requires.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from oncology_model.errors import OncologyError


class APIError(OncologyError):
    """An error with its HTTP status; raised by the handlers, rendered by one function."""

    status = 500

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []
        if status is not None:
            self.status = status


class BadRequest(APIError):
    status = 400


class Unauthorized(APIError):
    status = 401


class NotFound(APIError):
    status = 404


class ClientDisconnected(Exception):
    """The client went away before its request was read: nothing to answer (logged as status 499)."""


class Conflict(APIError):
    status = 409


class PayloadTooLarge(APIError):
    status = 413


class UnsupportedMediaType(APIError):
    status = 415


class Unprocessable(APIError):
    status = 422


class NotReady(APIError):
    status = 503


def from_pydantic(errors: Sequence[Mapping[str, Any]], prefix: tuple[str | int, ...] = ("body",)) -> APIError:
    """A 400 for malformed JSON, else a 422 that lists every bad field: location, value, reason.  ``errors``: as
    pydantic's ``ValidationError.errors()`` gives them (or `refusals` makes them)."""
    if any(e["type"] == "json_invalid" for e in errors):
        reason = next(e["msg"] for e in errors if e["type"] == "json_invalid")
        return BadRequest(f"the body is not valid JSON: {reason}")
    details = [
        {
            "loc": [*prefix, *e["loc"]],
            # a missing field's "input" is the whole object: echo only the offending value
            "value": None if e["type"] == "missing" else e.get("input"),
            "reason": e["msg"],
        }
        for e in errors
    ]
    # an error about the whole body (not an object, say) has an empty loc: name it
    where = ", ".join(".".join(str(p) for p in (*prefix, *e["loc"])[1:]) or str(prefix[0]) for e in errors[:5])
    more = f" and {len(details) - 5} more" if len(details) > 5 else ""
    return Unprocessable(f"invalid input at {where}{more}", details)
