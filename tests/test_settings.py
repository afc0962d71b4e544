"""`ServeSettings` reads the environment exactly as pydantic-settings reads it (it does so itself, so that a
serving worker loads no pydantic-settings: docs/grpc.md, "Cost")."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr, ValidationError, create_model
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings.sources import EnvSettingsSource

import oncology.settings
from oncology.settings import ServeSettings


class _Prefixed(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ONCOLOGY_", extra="ignore")


#: `ServeSettings`' fields in a pydantic-settings class, as it was one: ``api_tokens`` comma-separated (not JSON).
_REFERENCE: Any = create_model(  # type: ignore[call-overload]
    "Reference", __base__=_Prefixed,
    **{name: (Annotated[list[SecretStr], NoDecode] if name == "api_tokens" else field.annotation, None)
       for name, field in ServeSettings.model_fields.items()},
)

_NAMES = st.sampled_from([f"ONCOLOGY_{name.upper()}" for name in ServeSettings.model_fields] + ["ONCOLOGY_BOGUS", "PORT"])
_CASES = st.sampled_from([str.upper, str.lower, str.title])
_VALUES = st.one_of(st.sampled_from(["", "8080", "-1", "0", "true", "no", "[1, 2]", '{"a": 1}', "a,b", " a , ,b",
                                     "null", "/srv/models", "s3://bucket/x", "1e3"]),
                    # what an environment variable can hold: no NUL, no lone surrogate
                    st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=6))


@given(st.lists(st.tuples(_NAMES, _CASES, _VALUES), max_size=6))
@settings(max_examples=300, deadline=None)
def test_serve_settings_read_the_environment_as_pydantic_settings_does(variables: list[tuple[str, Any, str]]) -> None:
    env = {case(name): value for name, case, value in variables}
    with mock.patch.dict(os.environ, env, clear=True):
        assert oncology.settings._environment(ServeSettings) == EnvSettingsSource(_REFERENCE)(), env


def test_command_line_values_win_over_the_environment_and_bad_ones_are_named() -> None:
    with mock.patch.dict(os.environ, {"ONCOLOGY_PORT": "9000", "oncology_workers": "3", "ONCOLOGY_API_TOKENS": "a, b"},
                         clear=True):
        found = ServeSettings(port=9001)
        assert (found.port, found.workers, found.tokens()) == (9001, 3, ["a", "b"])
    with mock.patch.dict(os.environ, {"ONCOLOGY_MAX_BATCH": "many"}, clear=True), pytest.raises(ValidationError) as bad:
        ServeSettings()
    assert [(e["loc"], e["type"]) for e in bad.value.errors()] == [(("max_batch",), "int_parsing")]


def test_a_serving_process_loads_neither_pydantic_settings_nor_the_other_commands_settings() -> None:
    import subprocess

    program = ("import sys; from oncology.settings import ServeSettings; ServeSettings(store='x'); "
               "print(sorted(m for m in sys.modules if m.startswith(('pydantic_settings', 'oncology.pipeline_settings'))))")
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"
    from oncology.settings import TrainSettings  # ... which load on first use

    assert TrainSettings.__module__ == "oncology.pipeline_settings"
