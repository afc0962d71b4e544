"""The reference decoders without pydantic (`refusals`) refuse what pydantic refuses, in pydantic's words: the same
JSON errors (jiter's, with their line and column), and the same errors field by field (order, location, input,
type, message), so that a refused body's answer is the one it was when pydantic wrote it (docs/grpc.md, "Cost")."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError, model_validator

from oncology.outcomes import OutcomeIn, Stored
from oncology.webservice import outcomes as service_outcomes
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
@example(b'"\\ud800"')  # JSON to `json`, not to jiter: `parse` must not take `json`'s word for it
@example(b'{"mitoses": "\\ud800x"}')
@example(b"[" * 250 + b"]" * 250)
@example(b'{"a":' * 195 + b"1" + b"}" * 195)
@example(b"[" * 185 + b"]" * 185)
def test_a_body_that_is_not_json_is_refused_with_pydantic_s_message(body: bytes) -> None:
    expected = [e["msg"] for e in _pydantic_errors(_ANY, body) if e["type"] == "json_invalid"]
    assert refusals.json_invalid(body) == (expected[0] if expected else None), body
    assert [e["msg"] for e in refusals.parse(body)[1]] == expected, body  # (`json` first: the scanner where they differ)


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


# ---- outcomes: `OutcomeIn`'s verdicts and words, and its records --------------------------------------------------

_OUTCOMES = TypeAdapter(list[OutcomeIn])


@st.composite
def _moments(draw: st.DrawFn) -> str:
    """A time as RFC 3339 writes it, in its variants (separator, seconds, fraction, zone), some naive or ahead."""
    moment = draw(st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1)))
    text = moment.strftime("%Y-%m-%d") + draw(st.sampled_from("Tt _")) + moment.strftime("%H:%M")
    if draw(st.booleans()):
        text += moment.strftime(":%S")
        if draw(st.booleans()):
            text += "." + f"{moment.microsecond:06d}"[:draw(st.integers(1, 9))].ljust(draw(st.integers(1, 7)), "0")
    zone = draw(st.sampled_from(["", "Z", "z", "+01:00", "-05:30", "+00:00", "-00:00", "+23:59", "+24:00", "+0100",
                                 "+01", "+12:60"]))
    return text + zone


_IDS = st.one_of(st.from_regex(r"[A-Za-z0-9._:-]{1,6}", fullmatch=True), st.sampled_from(["", "a\n", "a b", "x" * 129,
                                                                                        "é", "4f9c2a7e1b3d5a60"]),
                 st.integers(), st.none(), st.booleans())
_SOURCES = st.one_of(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9 ._:/@+-]{0,5}", fullmatch=True),
                     st.sampled_from([" lab", "lab\n", "", "a" * 101, "lab-1"]), st.integers(), st.none())
_OUTCOME_VALUES = st.sampled_from(["benign", "malignant", 2, 4, 3, "Benign", "x", None, True, False, 2.0, 4.5, [], {}])
@st.composite
def _broken_moments(draw: st.DrawFn) -> str:
    """A time with a few characters inserted, replaced or cut: each of pydantic's reasons for refusing one."""
    text = draw(_moments())
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(["", "0", "9", "3", "-", ":", "T", " ", "+", "Z", ".", ",", "x", "é"])) \
            + text[at + draw(st.integers(0, 2)):]
    return text


_TIMES = st.one_of(_moments(), _broken_moments(), st.sampled_from(["yesterday", "2026-12-01", "2026-13-01T09:30:00Z", "2026-02-30T09:30Z",
                                                "2026-12-01T24:00:00Z", "2026-12-01T09:60Z", "2026-12-01T09:30:60Z",
                                                "1700000000", "", "2026-12-01T09:30:00+01:00 "]),
                   st.integers(), st.floats(allow_nan=False), st.none(), st.booleans(), st.lists(st.none(), max_size=1))
_RECORDS = st.one_of(
    st.fixed_dictionaries({"request_id": _IDS, "outcome": _OUTCOME_VALUES, "observed_at": _TIMES, "source": _SOURCES}),
    st.dictionaries(st.sampled_from(["request_id", "outcome", "observed_at", "source", "extra"]),
                    st.one_of(_IDS, _OUTCOME_VALUES, _TIMES), max_size=5),
    _OUTCOME_VALUES,
)


def _reference_outcomes(body: bytes) -> list[tuple[str, str, str, str]]:
    """``POST /outcomes``' decoder as it was, on pydantic (`OutcomeIn`)."""
    schemas.check_utf8(body)
    schemas.refuse_duplicate_keys(body)
    try:
        records = _OUTCOMES.validate_json(body)
    except ValidationError as exc:
        raise from_pydantic(service_outcomes._safe(exc.errors(include_url=False))) from None
    return [(r.request_id, r.label, Stored.of(r, datetime.now(UTC)).observed_at, r.source) for r in records]


def _decoded_outcomes(body: bytes) -> list[tuple[str, str, str, str]]:
    return [(r.request_id, r.label, Stored.of(r, datetime.now(UTC)).observed_at, r.source)
            for r in service_outcomes.decode_outcomes(body, 10)]


@given(st.one_of(st.lists(_RECORDS, max_size=3), _RECORDS).map(_render))
@settings(max_examples=1500, deadline=None)
@example(b'[{"request_id": "4f9c2a7e1b3d5a60", "outcome": "maybe"}]')
@example(b'{"request_id": "x"}')
def test_outcomes_are_read_and_refused_as_outcome_in_reads_and_refuses_them(body: bytes) -> None:
    assert _answer(_decoded_outcomes, body) == _answer(_reference_outcomes, body)


def test_the_usual_bad_outcomes_are_told_without_pydantic() -> None:
    """The usual mistakes are told without pydantic; a time written as a number (a Unix time) goes to it."""
    usual = [{"request_id": "a", "outcome": "maybe", "observed_at": "2026-12-01T09:30:00", "source": " lab", "x": 1},
             {"outcome": 2, "observed_at": "2999-01-01T00:00:00.5+01:00"}, 5]
    records, found = refusals.outcomes_errors(usual)
    assert [(e["type"], e["loc"]) for e in found] == [
        ("literal_error", (0, "outcome")), ("timezone_aware", (0, "observed_at")),
        ("string_pattern_mismatch", (0, "source")), ("extra_forbidden", (0, "x")), ("missing", (1, "request_id")),
        ("value_error", (1, "observed_at")), ("missing", (1, "source")), ("model_type", (2,))]
    assert [e["msg"] for e in refusals.outcomes_errors([{"observed_at": "yesterday"}])[1]
            if e["loc"] == (0, "observed_at")] == ["Input should be a valid datetime, input is too short"]
    with pytest.raises(refusals.Undecided):  # a Unix time: pydantic's to read
        refusals.outcomes_errors([{"observed_at": "1700000000"}])


def test_an_outcome_a_little_ahead_of_the_clock_is_taken_as_outcome_in_takes_it() -> None:
    """Clocks differ a little (`oncology.outcomes.CLOCK_SKEW`): two minutes ahead is taken, ten are refused."""
    for minutes in (2, 10):
        ahead = (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat()
        body = _render([{"request_id": "a", "outcome": 4, "observed_at": ahead, "source": "lab"}])
        assert _answer(_decoded_outcomes, body) == _answer(_reference_outcomes, body)
        assert (len(refusals.outcomes_errors(json.loads(body))[1]) == 1) == (minutes == 10)


@pytest.mark.parametrize("written", [
    "yesterday", "", "2026-12-01", "2026-12-01T", "2026-12-01Tx", "2026-12-01T9:30", "2026-12-01T09:3",
    "2026-12-01T09-30", "2026-12-01T09:30:", "2026-12-01T09:30:5", "2026-12-01T09:30:00.", "2026-12-01T09:30:00.Z",
    "2026-12-01T09:30:00,5Z", "2026-12-01T09:30:00.1234567890Z", "2026-12-01T09:30+", "2026-12-01T09:30+1",
    "2026-12-01T09:30+01:", "2026-12-01T09:30+01:3", "2026-12-01T09:30+01:30x", "2026-12-01T09:30+0130",
    "2026-12-01T09:30 +01:00", "2026-12-01T09:30x", "2026-12-01T25:30Z", "2026-12-01T23:60Z", "2026-12-01T09:30:60Z",
    "2026-00-01T09:30Z", "2026-12-00T09:30Z", "2026-12-32T09:30Z", "2024-02-29T09:30Z", "2023-02-29T09:30Z",
    "1900-02-29T09:30Z", "2000-02-29T09:30Z", "x026-12-01T09:30Z", "2026/12/01T09:30Z", "2026-1x-01T09:30Z",
    "2026-12-0xT09:30Z", "2026-12-01T09:30:00+01:00:00", "  2026-12-01T09:30Z", "2026-12-01T09:30Z ",
    "2026-12-01t09:30z", "2026-12-01_09:30Z", "2026-12-01T09:30+23:59", "2026-12-01T09:30-00:00",
    "2026-12-01T09:30+24:00", "2026-12-01T09:30-24:00", "2026-12-01T09:30+99", "2026-12-01T09:30+01:60",
    "0000-01-01T00:00Z", "0001-01-01T00:00Z", "1700000000", "-5", "1.5", "1e3", "２０２６-12-01T09:30Z",
])
def test_a_time_is_read_or_refused_as_pydantic_reads_or_refuses_it(written: str) -> None:
    body = _render([{"request_id": "a", "outcome": "benign", "observed_at": written, "source": "lab"}])
    assert _answer(_decoded_outcomes, body) == _answer(_reference_outcomes, body)
