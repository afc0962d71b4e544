"""The reference decoders without pydantic (`refusals`) refuse what pydantic refuses, in pydantic's words: the same
JSON errors (jiter's, with their line and column), and the same errors field by field (order, location, input,
type, message), so that a refused body's answer is the one it was when pydantic wrote it (docs/grpc.md, "Cost")."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError, model_validator

from oncology.webservice import refusals, schemas
from oncology.webservice.errors import APIError, from_pydantic
from oncology_model.datamodel import FEATURES, Tumor


class TumorJSON(Tumor):
    """The reference the service used before: `Tumor`, with a score written as an integral float read as the
    integer it equals."""

    @model_validator(mode="before")
    @classmethod
    def _integral_floats(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: int(v) if type(v) is float and v.is_integer() else v for k, v in data.items()}
        return data


_ONE = TypeAdapter(TumorJSON)
_MANY = TypeAdapter(list[TumorJSON])
_ANY = TypeAdapter(Any)


def _pydantic_errors(adapter: TypeAdapter[Any], body: bytes) -> list[dict[str, Any]]:
    try:
        adapter.validate_json(body)
    except ValidationError as exc:
        return [{k: e[k] for k in ("type", "loc", "msg", "input")} for e in exc.errors(include_url=False)]  # type: ignore[literal-required]
    return []


# ---- JSON that is not: the same message, at the same line and column -------------------------------------------

_JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
              st.text(max_size=4)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)),
    max_leaves=8,
)
#: What breaks JSON: its punctuation, the starts of its words and numbers, escapes, whitespace, controls, surrogates.
_PIECES = st.sampled_from(['"', "{", "}", "[", "]", ",", ":", "-", "+", ".", "e", "E", "0", "1", "9", "t", "tr", "f",
                           "n", "nu", "N", "NaN", "I", "Inf", "Infinity", "x", "\\", "\\u", "\\ud800", "\\udc00",
                           "\\u00e9", "\\uD83D\\uDE00", "\\n", "\\x", " ", "\n", "\r\n", "\t", "\x01", "\x7f", "é", "€",
                           "😀", "00", "1e400", "true", "null", "false"])


@st.composite
def broken_json(draw: st.DrawFn) -> bytes:
    text = json.dumps(draw(_JSON_VALUES), ensure_ascii=draw(st.booleans()), indent=draw(st.sampled_from([None, 1])))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(text)))
        cut = draw(st.integers(0, 2))
        text = text[:at] + draw(st.one_of(st.just(""), _PIECES)) + text[at + cut:]
    return text.encode("utf-8")


@given(st.one_of(broken_json(), st.lists(_PIECES, max_size=8).map(lambda p: "".join(p).encode())))
@settings(max_examples=3000, deadline=None)
@example(b"{not json")
@example(b"[" * 300)
@example(b'{"a":' * 250)
@example(b"1" + b"0" * 5000)
@example(b"[" + b"1" * 4301 + b"]")
@example(b"-" + b"1" * 4301)
@example(b"1" * 4301 + b".5")
@example(b'"\\ud800')
@example(b'"\\ud800\\')
@example(b'"\\ud800\\u00')
@example(b'{"a"')
@example(b'{"a":1,')
@example(b"\n")
def test_a_body_that_is_not_json_is_refused_with_pydantic_s_message(body: bytes) -> None:
    expected = [e["msg"] for e in _pydantic_errors(_ANY, body) if e["type"] == "json_invalid"]
    assert refusals.json_invalid(body) == (expected[0] if expected else None), body
    if not expected:
        assert refusals.parse(body)[1] == []


# ---- a tumor, an array of them: every bad field, as pydantic lists them -----------------------------------------

_SCORES = st.one_of(st.integers(-3, 14), st.integers(), st.floats(), st.booleans(), st.none(), st.text(max_size=2),
                    st.lists(st.integers(1, 10), max_size=2), st.dictionaries(st.text(max_size=1), st.none(), max_size=1),
                    st.integers(-3, 14).map(float), st.sampled_from([2.5, -0.0, 10.000001, 1e300]))
_KEYS = st.sampled_from([*FEATURES, "extra", "Mitoses", ""])
_TUMORS = st.one_of(
    st.fixed_dictionaries({f: st.integers(1, 10) for f in FEATURES}),
    st.fixed_dictionaries({f: _SCORES for f in FEATURES}),
    st.dictionaries(_KEYS, _SCORES, max_size=11),
    _SCORES,
)


def _render(doc: Any) -> bytes:
    return json.dumps(doc, allow_nan=True).encode()


@given(_TUMORS)
@settings(max_examples=600, deadline=None)
def test_a_tumor_s_errors_are_pydantic_s(doc: Any) -> None:
    body = _render(doc)
    expected = _pydantic_errors(_ONE, body)
    got = refusals.tumor_errors(json.loads(body))
    assert _comparable(got) == _comparable(expected)
    if not expected:
        assert refusals.tumor_row(json.loads(body)) == _ONE.validate_json(body).as_row()


@given(st.one_of(st.lists(_TUMORS, max_size=4), _TUMORS))
@settings(max_examples=400, deadline=None)
def test_an_array_s_errors_are_pydantic_s(doc: Any) -> None:
    body = _render(doc)
    expected = _pydantic_errors(_MANY, body)
    assert _comparable(refusals.tumors_errors(json.loads(body))) == _comparable(expected)


def _comparable(errors: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Errors as tuples, inputs by their repr (NaN is not equal to itself; the type counts), a missing field's input
    left out (the service echoes null for it)."""
    return [(e["type"], tuple(e["loc"]), e["msg"], None if e["type"] == "missing" else repr(e["input"]))
            for e in errors]


# ---- the answers: the same status, message and details as when pydantic wrote them ------------------------------

def _answer(decode: Any, body: bytes) -> tuple[Any, ...]:
    try:
        return tuple(decode(body))
    except APIError as exc:
        return exc.status, exc.message, json.dumps(exc.details, allow_nan=True)


def _reference_one(body: bytes) -> tuple[int, ...]:
    """`schemas.decode_tumor`'s reference path as it was, on pydantic."""
    schemas.refuse_empty(body, "a JSON tumor object")
    schemas.check_utf8(body)
    schemas.refuse_duplicate_keys(body)
    try:
        return _ONE.validate_json(body).as_row()
    except ValidationError as exc:
        raise from_pydantic(exc.errors(include_url=False)) from None


def _reference_many(body: bytes) -> list[tuple[int, ...]]:
    schemas.refuse_empty(body, "a JSON array of tumor objects")
    schemas.check_utf8(body)
    schemas.refuse_duplicate_keys(body)
    try:
        return [t.as_row() for t in _MANY.validate_json(body)]
    except ValidationError as exc:
        raise from_pydantic(exc.errors(include_url=False)) from None


@given(st.one_of(_TUMORS.map(_render), broken_json()))
@settings(max_examples=500, deadline=None)
@example(b'{"mitoses": 11, "bare_nuclei": "x"}')
@example(b"{not json")
def test_a_refused_tumor_gets_the_answer_pydantic_gave(body: bytes) -> None:
    got = _answer(schemas.decode_tumor, body)
    assert got == _answer(_reference_one, body)


@given(st.one_of(st.lists(_TUMORS, max_size=3).map(_render), _TUMORS.map(_render), broken_json()))
@settings(max_examples=400, deadline=None)
def test_a_refused_batch_gets_the_answer_pydantic_gave(body: bytes) -> None:
    assert _answer(lambda b: list(schemas.decode_tumors(b, 10)), body) == _answer(_reference_many, body)
