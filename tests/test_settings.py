"""`ServeSettings` reads the environment exactly as pydantic-settings reads it (it does so itself, so that a
serving worker loads no pydantic-settings: docs/grpc.md, "Cost")."""

from __future__ import annotations

import os
import sys
from pathlib import Path
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


# ---- the plain reader and the pydantic model: the same values, the same verdicts ---------------------------------

_KINDS = {name: kind for name, (kind, _) in ServeSettings.FIELDS.items()}
#: Values of each kind's usual and unusual forms (as text, from the environment; as Python values, from the code).
_TEXT = st.one_of(st.sampled_from(["", "0", "1", "007", "8080", "65535", "65536", "-1", "+1", " 5", "1_000", "1.0", "0.5",
                                   "1e3", "1e-05", "1E5", ".5", "5.", "inf", "nan", "true", "True", "FALSE", "t", "Y",
                                   "on", "Off", "yes", "no", "2", "a,b", " a , ,b", ",", "/srv/tokens", "s3://b/x",
                                   "ı", "K"]),
                  st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=6))
_PYTHON = st.one_of(st.integers(-3, 70_000), st.floats(allow_nan=True), st.booleans(), st.none(),
                    st.lists(st.sampled_from(["a", " b", ""]), max_size=3), st.tuples(st.just("a")),
                    st.builds(Path, st.sampled_from(["t", "/x/y"])), _TEXT)


def _pydantic(given: dict[str, Any]) -> dict[str, Any] | list[Any]:
    from oncology.serve_settings_model import model

    try:
        checked = model()(**given)
    except ValidationError as exc:
        return exc.errors(include_url=False)
    return {name: (getattr(checked, name) if name != "api_tokens" else
                   [t.get_secret_value() for t in checked.api_tokens]) for name in _KINDS}


@given(st.dictionaries(st.sampled_from(sorted(_KINDS)), st.one_of(_TEXT, _PYTHON), max_size=6))
@settings(max_examples=1000, deadline=None)
def test_what_the_plain_reader_reads_it_reads_as_the_pydantic_model_does(given_values: dict[str, Any]) -> None:
    """Each value the plain reader takes (without pydantic) has pydantic's value and type; what it does not take
    goes to pydantic, whose verdict (values, or errors) `ServeSettings` then gives."""
    for each in [*({k: v} for k, v in given_values.items()), given_values]:  # each value alone, then together
        reference = _pydantic(each)
        try:
            plain = oncology.settings._read_plainly(each)
        except oncology.settings._Unread:
            continue
        plain["api_tokens"] = [t.get_secret_value() for t in plain["api_tokens"]]
        assert isinstance(reference, dict), (each, reference)
        assert [(k, v, type(v)) for k, v in plain.items()] == [(k, v, type(v)) for k, v in reference.items()], each
    reference = _pydantic(given_values)
    with mock.patch.dict(os.environ, {}, clear=True):
        try:
            found: Any = ServeSettings(**given_values).model_dump()
            found["api_tokens"] = [t.get_secret_value() for t in found["api_tokens"]]
        except ValidationError as exc:
            found = exc.errors(include_url=False)
    assert found == reference, given_values


@pytest.mark.parametrize("environment", [
    {"ONCOLOGY_STORE": "/srv/models", "ONCOLOGY_PORT": "8080", "ONCOLOGY_GRPC_PORT": "8081", "ONCOLOGY_OUTCOMES": "true",
     "ONCOLOGY_API_TOKENS": "a,b", "ONCOLOGY_API_TOKENS_FILE": "/run/tokens", "ONCOLOGY_OVERLOAD_MAX_LAG": "0.05",
     "ONCOLOGY_PREDICTION_LOG": "True", "ONCOLOGY_DRAIN_SECONDS": "5.0", "ONCOLOGY_GRPC_REFLECTION": "False"},
    # what `oncology serve --workers N` writes for its workers (`server._supervise`: str() of each value)
    {f"ONCOLOGY_{k.upper()}": str(v) for k, v in ServeSettings(store="s", outcomes=True).model_dump(
        exclude_none=True, exclude={"api_tokens"}).items()},
])
def test_a_worker_reads_its_settings_without_pydantic(environment: dict[str, str]) -> None:
    import subprocess

    program = ("import sys; from oncology.settings import ServeSettings; print(ServeSettings().port); "
               "print(sorted(m for m in sys.modules if m.startswith(('pydantic', 'oncology.serve_settings_model'))))")
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True,
                          env={**{k: v for k, v in os.environ.items() if not k.startswith("ONCOLOGY_")}, **environment})
    assert done.stdout.split("\n")[1] == "[]", done.stdout


def test_a_bad_setting_is_refused_with_pydantic_s_message() -> None:
    with mock.patch.dict(os.environ, {"ONCOLOGY_PORT": "0", "ONCOLOGY_WORKERS": "x"}, clear=True), \
            pytest.raises(ValidationError) as bad:
        ServeSettings(store="s")
    assert bad.value.title == "ServeSettings"
    assert [(e["loc"], e["msg"]) for e in bad.value.errors()] == [
        (("port",), "Input should be greater than or equal to 1"),
        (("workers",), "Input should be a valid integer, unable to parse string as an integer")]
    with pytest.raises(ValidationError, match="outcomes needs a store to write to"):
        ServeSettings(store=None, outcomes=True)
