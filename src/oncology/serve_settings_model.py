"""`ServeSettings` as a pydantic model: built from the fields `oncology.settings.ServeSettings` declares (their
types, defaults, bounds and descriptions), it is their documented schema (``ServeSettings.model_fields``, the
help, docs/reference/settings.md) and the reference that validates a value the plain reader does not read, with
pydantic's messages.  A serving worker started as usual never imports it (docs/grpc.md, "Cost").
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, create_model, field_validator, model_validator


class _Checks(BaseModel):
    """What the fields' types and bounds do not say: how ``api_tokens`` is written, the stores the features need."""

    model_config = ConfigDict(extra="ignore", validate_default=True)

    @field_validator("api_tokens", mode="before", check_fields=False)
    @classmethod
    def _split_tokens(cls, value: object) -> object:
        if isinstance(value, str):
            return [t.strip() for t in value.split(",") if t.strip()]
        return value

    @model_validator(mode="after")
    def _features_need_a_store(self) -> Any:
        from oncology.settings import missing_store

        problem = missing_store(self.__dict__)
        if problem:
            raise ValueError(problem)
        return self


#: The annotations `ServeSettings` writes, as types.
_TYPES: dict[str, Any] = {"int": int, "float": float, "bool": bool, "str": str, "str | None": str | None,
                          "Path | None": Path | None, "list[Secret]": list[SecretStr]}


@functools.cache
def model() -> type[BaseModel]:
    """The pydantic model of `oncology.settings.ServeSettings` (named so too: its errors say ``for ServeSettings``)."""
    from oncology.settings import ServeSettings

    fields: dict[str, Any] = {
        name: (_TYPES[kind], Field(**field.field_arguments()))
        for name, (kind, field) in ServeSettings.FIELDS.items()
    }
    built: type[BaseModel] = create_model("ServeSettings", __base__=_Checks, __module__=__name__, **fields)
    return built
