"""Why a body is refused, field by field, in pydantic's words, without pydantic.

A serving worker holds what it imports for as long as it serves, and pydantic is about 10 MB of it
(docs/grpc.md, "Cost"); the first refused body would load it.  So the reference decoders of the flat request
shapes (a tumor, an array of them) are written here: `json_invalid` says where a body stops being JSON as
pydantic's JSON parser (jiter) says it, and `tumor_errors`, `tumors_errors` list every bad field as
pydantic's `Tumor` (strict scores, integral floats read as the integers they equal) lists them: same order,
locations, inputs, types and messages; `outcomes_errors` does so for outcomes (`OutcomeIn`, its times read and
refused as pydantic's parser, speedate, reads and refuses them), but for a time written as a number (a Unix
time), a float outcome and a few rarer forms, whose verdict it leaves to pydantic (`Undecided`).  Each returns pydantic's error dicts (``type``, ``loc``, ``msg``,
``input``), which `errors.from_pydantic` renders.  tests/webservice/test_refusals.py holds them to pydantic
over generated bodies.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final

from oncology import outcomes
from oncology.outcomes import CODES, REQUEST_ID_PATTERN, SOURCE_PATTERN, Outcome
from oncology_model.datamodel import FEATURES, SCORE_MAX, SCORE_MIN

#: jiter's limits: containers nested deeper are refused, as are integers with more digits than Python reads.
_DEPTH: Final = 200
_MAX_DIGITS: Final = 4300
_WHITESPACE: Final = frozenset(b" \t\n\r")
_DIGITS: Final = frozenset(b"0123456789")
_HEX: Final = frozenset(b"0123456789abcdefABCDEF")
_ESCAPES: Final = frozenset(b'"\\/bfnrt')
_EOF_VALUE: Final = "EOF while parsing a value"
_EOF_LIST: Final = "EOF while parsing a list"
_EOF_OBJECT: Final = "EOF while parsing an object"
_LONG_DIGITS: Final = re.compile(b"[0-9]{%d}" % (_MAX_DIGITS + 1))


class _Invalid(Exception):
    def __init__(self, what: str, index: int) -> None:
        super().__init__(what)
        self.what = what
        self.index = index


class _Scanner:
    """A JSON syntax check that stops where jiter stops, with its error (the values are read by `json`)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.n = len(data)
        self.i = 0

    def next(self) -> int | None:
        """The next byte that is not whitespace (the scanner stays on it), None at the end."""
        data, i, n = self.data, self.i, self.n
        while i < n and data[i] in _WHITESPACE:
            i += 1
        self.i = i
        return data[i] if i < n else None

    def document(self) -> None:
        byte = self.next()
        if byte is None:
            raise _Invalid(_EOF_VALUE, self.n)
        self.value(byte, 0)
        if self.next() is not None:
            raise _Invalid("trailing characters", self.i)

    def value(self, byte: int, depth: int) -> None:
        if byte == ord("["):
            self.array(depth + 1)
        elif byte == ord("{"):
            self.object(depth + 1)
        elif byte == ord('"'):
            self.string()
        elif byte in b"tfnNI":
            self.ident({ord("t"): b"true", ord("f"): b"false", ord("n"): b"null", ord("N"): b"NaN",
                        ord("I"): b"Infinity"}[byte])
        elif byte == ord("-") or byte in _DIGITS:
            self.number()
        else:
            raise _Invalid("expected value", self.i)

    def ident(self, word: bytes) -> None:
        data, start = self.data, self.i
        for j in range(1, len(word)):
            if start + j >= self.n:
                raise _Invalid(_EOF_VALUE, self.n)
            if data[start + j] != word[j]:
                raise _Invalid("expected ident", start + j)
        self.i = start + len(word)

    def _digits(self) -> int:
        data, i, n = self.data, self.i, self.n
        while i < n and data[i] in _DIGITS:
            i += 1
        found = i - self.i
        self.i = i
        return found

    def _peek(self) -> int | None:
        return self.data[self.i] if self.i < self.n else None

    def number(self) -> None:
        if self._peek() == ord("-"):
            self.i += 1
            byte = self._peek()
            if byte is None:
                raise _Invalid(_EOF_VALUE, self.n)
            if byte == ord("I"):
                self.ident(b"Infinity")
                return
        start = self.i
        byte = self._peek()
        if byte == ord("0"):
            self.i += 1
            if self._peek() is not None and self._peek() in _DIGITS:
                raise _Invalid("invalid number", self.i)
        elif byte is not None and byte in _DIGITS:
            if self._digits() > _MAX_DIGITS:
                raise _Invalid("number out of range", start + _MAX_DIGITS + 1)
        else:
            raise _Invalid("invalid number", self.i)
        if self._peek() == ord("."):
            self.i += 1
            self._some_digits()
        if self._peek() in (ord("e"), ord("E")):
            self.i += 1
            if self._peek() in (ord("+"), ord("-")):
                self.i += 1
            self._some_digits()

    def _some_digits(self) -> None:
        byte = self._peek()
        if byte is None:
            raise _Invalid(_EOF_VALUE, self.n)
        if byte not in _DIGITS:
            raise _Invalid("invalid number", self.i)
        self._digits()

    def string(self) -> None:
        data, n = self.data, self.n
        i = self.i + 1
        while True:
            if i >= n:
                raise _Invalid("EOF while parsing a string", n)
            byte = data[i]
            if byte == ord('"'):
                self.i = i + 1
                return
            if byte == ord("\\"):
                if i + 1 >= n:
                    raise _Invalid("EOF while parsing a string", n)
                escape = data[i + 1]
                if escape in _ESCAPES:
                    i += 2
                elif escape == ord("u"):
                    i = self._unicode_escape(i + 1)
                else:
                    raise _Invalid("invalid escape", i + 1)
            elif byte < 0x20:
                raise _Invalid("control character (\\u0000-\\u001F) found while parsing a string", i)
            else:
                i += 1

    def _hex(self, u: int) -> int:
        """The code unit of the four hex digits after the ``u`` at ``u``."""
        data = self.data
        if u + 4 >= self.n:
            raise _Invalid("EOF while parsing a string", self.n)
        for j in range(u + 1, u + 5):
            if data[j] not in _HEX:
                raise _Invalid("invalid escape", j)
        return int(data[u + 1 : u + 5], 16)

    def _unicode_escape(self, u: int) -> int:
        """Past a ``\\uXXXX`` escape (and its trailing surrogate's, after a leading one); the index after it."""
        unit = self._hex(u)
        if 0xDC00 <= unit <= 0xDFFF:
            raise _Invalid("lone leading surrogate in hex escape", u + 4)
        if not 0xD800 <= unit <= 0xDBFF:
            return u + 5
        data, j = self.data, u + 5
        for k, expected in ((j, ord("\\")), (j + 1, ord("u"))):  # a leading surrogate: its trailing one must follow
            if k >= self.n:
                raise _Invalid("EOF while parsing a string", self.n)
            if data[k] != expected:
                raise _Invalid("unexpected end of hex escape", k)
        trail = self._hex(j + 1)
        if not 0xDC00 <= trail <= 0xDFFF:
            raise _Invalid("lone leading surrogate in hex escape", j + 5)
        return j + 6

    def member(self, byte: int, depth: int) -> None:
        """A value inside a container ``depth`` deep: past jiter's limit, refused where it starts."""
        if depth > _DEPTH:
            raise _Invalid("recursion limit exceeded", self.i)
        self.value(byte, depth)

    def _first(self, close: int, eof: str) -> int | None:
        """Past a container's opening bracket: the first byte of its first member, or None if it closes at once."""
        self.i += 1
        return self._unless_closed(close, eof)

    def _unless_closed(self, close: int, eof: str) -> int | None:
        """The next byte inside a container, or None (past it) where the container closes."""
        byte = self.next()
        if byte is None:
            raise _Invalid(eof, self.n)
        if byte == close:
            self.i += 1
            return None
        return byte

    def _then(self, close: int, eof: str) -> int | None:
        """After a container's member: the first byte of the next one (past its comma), or None once it closes."""
        byte = self._unless_closed(close, eof)
        if byte is None:
            return None
        if byte != ord(","):
            raise _Invalid(f"expected `,` or `{chr(close)}`", self.i)
        self.i += 1
        byte = self.next()
        if byte is None:
            raise _Invalid(_EOF_VALUE, self.n)
        if byte == close:
            raise _Invalid("trailing comma", self.i)
        return byte

    def array(self, depth: int) -> None:
        byte = self._first(ord("]"), _EOF_LIST)
        while byte is not None:
            self.member(byte, depth)
            byte = self._then(ord("]"), _EOF_LIST)

    def object(self, depth: int) -> None:
        byte = self._first(ord("}"), _EOF_OBJECT)
        while byte is not None:
            if byte != ord('"'):
                raise _Invalid("key must be a string", self.i)
            self.string()
            byte = self.next()
            if byte is None:
                raise _Invalid(_EOF_OBJECT, self.n)
            if byte != ord(":"):
                raise _Invalid("expected `:`", self.i)
            self.i += 1
            byte = self.next()
            if byte is None:
                raise _Invalid(_EOF_VALUE, self.n)
            self.member(byte, depth)
            byte = self._then(ord("}"), _EOF_OBJECT)


def _position(data: bytes, index: int) -> str:
    """jiter's ``line L column C`` of the byte at ``index`` (the end: its last byte), a newline counted on the line
    it starts."""
    index = min(index, len(data) - 1)
    line = data.count(b"\n", 0, index + 1) + 1
    column = index - data.rfind(b"\n", 0, index + 1)
    return f"line {line} column {column}"


def json_invalid(body: bytes) -> str | None:
    """pydantic's message for a body that is not JSON (``Invalid JSON: <what> at line L column C``); None for
    JSON.  ``body`` is UTF-8 text (the callers check it first)."""
    try:
        _Scanner(body).document()
    except _Invalid as exc:
        return f"Invalid JSON: {exc.what} at {_position(body, exc.index)}"
    return None


def _nested(doc: Any, levels: int) -> bool:
    """Whether ``doc`` holds containers ``levels`` deep (one level at a time: no recursion)."""
    todo = [doc] if isinstance(doc, (dict, list)) else []
    while todo:
        levels -= 1
        if levels <= 0:
            return True
        todo = [v for c in todo for v in (c.values() if isinstance(c, dict) else c) if isinstance(v, (dict, list))]
    return False


def parse(body: bytes) -> tuple[Any, list[dict[str, Any]]]:
    """The JSON document of ``body`` and no errors, or None and pydantic's ``json_invalid`` error.

    Read by `json` (C) first; the scanner, byte by byte in Python, runs only where `json` and jiter may disagree: a
    body `json` refuses (to say where it stops being JSON), one with a ``\\u`` escape (`json` reads lone surrogates,
    which jiter refuses), one with a run of more digits than jiter reads in a number (`json` reads such a float), or
    one nested near jiter's limit (`json` reads deeper).  A refused 8 MB batch with one bad
    score took ~0.7 s of the event loop in the scanner alone, against ~0.25 s for pydantic's whole verdict."""
    if b"\\u" not in body and not _LONG_DIGITS.search(body):
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            pass
        else:
            if not _nested(doc, _DEPTH - 10):
                return doc, []
    message = json_invalid(body)
    if message is not None:
        return None, [{"type": "json_invalid", "loc": (), "msg": message, "input": body}]
    return json.loads(body), []


def _score_error(value: Any) -> tuple[str, str] | None:
    if type(value) is not int:
        return "int_type", "Input should be a valid integer"
    if value < SCORE_MIN:
        return "greater_than_equal", f"Input should be greater than or equal to {SCORE_MIN}"
    if value > SCORE_MAX:
        return "less_than_equal", f"Input should be less than or equal to {SCORE_MAX}"
    return None


def tumor_row(doc: dict[str, Any]) -> tuple[int, ...]:
    """The feature row of a tumor that `tumor_errors` found nothing wrong with."""
    return tuple(int(doc[name]) for name in FEATURES)


def tumor_errors(doc: Any, loc: tuple[int, ...] = ()) -> list[dict[str, Any]]:
    """pydantic's errors for ``doc`` (a decoded JSON value) as a tumor: the features in order, then extra keys."""
    if type(doc) is not dict:
        return [{"type": "model_type", "loc": loc, "msg": "Input should be an object", "input": doc}]
    # integral floats are the integers they equal (JSON Schema's integer includes 2.0, as pandas writes it)
    values = {k: int(v) if type(v) is float and v.is_integer() else v for k, v in doc.items()}
    found: list[dict[str, Any]] = []
    for name in FEATURES:
        if name not in values:
            found.append({"type": "missing", "loc": (*loc, name), "msg": "Field required", "input": values})
            continue
        error = _score_error(values[name])
        if error is not None:
            found.append({"type": error[0], "loc": (*loc, name), "msg": error[1], "input": values[name]})
    found += [{"type": "extra_forbidden", "loc": (*loc, key), "msg": "Extra inputs are not permitted", "input": value}
              for key, value in values.items() if key not in _FEATURE_SET]
    return found


_FEATURE_SET: Final = frozenset(FEATURES)


def tumors_errors(doc: Any) -> list[dict[str, Any]]:
    """pydantic's errors for ``doc`` as an array of tumors."""
    if type(doc) is not list:
        return [{"type": "list_type", "loc": (), "msg": "Input should be a valid array", "input": doc}]
    return [error for i, item in enumerate(doc) for error in tumor_errors(item, (i,))]


# ---- outcomes (POST /outcomes): `OutcomeIn`'s checks and words ------------------------------------------------------

class Undecided(Exception):
    """A value whose verdict is left to pydantic (a time written in a form other than the usual RFC 3339 one, say):
    the caller validates the body with `OutcomeIn` instead."""


def _pattern(pattern: str) -> re.Pattern[str]:
    # pydantic's ``$`` is the end of the text; Python's ``$`` also matches before a final newline
    return re.compile(pattern.removesuffix("$") + r"\Z")


_REQUEST_ID: Final = _pattern(REQUEST_ID_PATTERN)
_SOURCE: Final = _pattern(SOURCE_PATTERN)
#: The integers pydantic reads as such (64 bits, signed).
_I64: Final = (-(1 << 63), (1 << 63) - 1)
#: A number, which pydantic reads as a Unix time (in seconds or milliseconds): its verdict is pydantic's.
_NUMBER: Final = re.compile(r"[+-]?[0-9.]+", re.ASCII)
_OUTCOMES: Final = ("benign", "malignant")


def _text_error(value: Any, pattern: re.Pattern[str], written: str) -> tuple[str, str] | None:
    if type(value) is not str:
        return "string_type", "Input should be a valid string"
    if not pattern.match(value):
        return "string_pattern_mismatch", f"String should match pattern '{written}'"
    return None


class _Bad(Exception):
    """A time pydantic refuses, with its reason (speedate's words)."""


def _digits(data: bytes, start: int, count: int, reason: str) -> int:
    piece = data[start : start + count]
    if len(piece) != count or not piece.isdigit():
        raise _Bad(reason)
    return int(piece)


def _parse_moment(data: bytes) -> tuple[int, int, int, int, int, int, int, int | None]:
    """RFC 3339 as pydantic's parser (speedate) reads it: year, month, day, hour, minute, second, microsecond and the
    zone's offset in minutes (None: no zone); `_Bad` with its reason; `Undecided` where its verdict is not known here."""
    if len(data) < 10:
        raise _Bad("input is too short")
    year = _digits(data, 0, 4, "invalid character in year")
    if data[4:5] != b"-":
        raise _Bad("invalid date separator, expected `-`")
    month = _digits(data, 5, 2, "invalid character in month")
    if data[7:8] != b"-":
        raise _Bad("invalid date separator, expected `-`")
    day = _digits(data, 8, 2, "invalid character in day")
    if not 1 <= month <= 12:
        raise _Bad("month value is outside expected range of 1-12")
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    if not 1 <= day <= (29 if leap and month == 2 else (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)[month - 1]):
        raise _Bad("day value is outside expected range")
    if data[10:11] not in (b"T", b"t", b" ", b"_"):
        raise _Bad("invalid datetime separator, expected `T`, `t`, `_` or space")
    if len(data) - 11 < 5:
        raise _Bad("input is too short")
    hour = _digits(data, 11, 2, "invalid character in hour")
    if data[13:14] != b":":
        raise _Bad("invalid time separator, expected `:`")
    minute = _digits(data, 14, 2, "invalid character in minute")
    second = microsecond = 0
    at = 16
    if data[16:17] == b":":
        second = _digits(data, 17, 2, "invalid character in second")
        at = 19
        if data[19:20] in (b".", b","):
            end = 20
            while data[end : end + 1].isdigit():
                end += 1
            if end == 20:
                if data[19:20] == b",":
                    raise Undecided
                raise _Bad("second fraction digits missing after `.`")
            microsecond = int(data[20 : min(end, 26)].ljust(6, b"0"))
            at = end
    for value, most, what in ((hour, 23, "hour"), (minute, 59, "minute"), (second, 59, "second")):
        if value > most:
            raise _Bad(f"{what} value is outside expected range of 0-{most}")
    offset = None
    if at < len(data):
        sign = data[at : at + 1]
        if sign in (b"Z", b"z"):
            offset, at = 0, at + 1
        elif sign in (b"+", b"-"):
            tz_hours = _digits(data, at + 1, 2, "invalid timezone hour")
            at += 3
            if data[at : at + 1] == b":":
                at += 1
            tz_minutes = _digits(data, at, 2, "invalid timezone minute")
            at += 2
            if tz_minutes > 59:
                raise Undecided
            offset = (tz_hours * 60 + tz_minutes) * (-1 if sign == b"-" else 1)
            if abs(offset) >= 24 * 60:
                raise _Bad("timezone offset must be less than 24 hours")
        else:
            raise _Bad("invalid timezone sign")
        if at < len(data):
            raise _Bad("unexpected extra characters at the end of the input")
    if year == 0:
        raise Undecided
    return year, month, day, hour, minute, second, microsecond, offset


def _moment(value: Any) -> tuple[datetime | None, tuple[str, str] | None]:
    """``observed_at`` read as `OutcomeIn` reads it: the time, or the error; `Undecided` for a form not read here."""
    if value is None or (type(value) is int and _I64[0] <= value <= _I64[1]):
        return None, ("datetime_type", "Input should be a valid datetime")
    if type(value) is not str or _NUMBER.fullmatch(value):
        raise Undecided
    try:
        year, month, day, hour, minute, second, microsecond, offset = _parse_moment(value.encode())
    except _Bad as exc:
        return None, ("datetime_parsing", f"Input should be a valid datetime, {exc}")
    if offset is None:
        return None, ("timezone_aware", "Input should have timezone info")
    zone = UTC if offset == 0 else timezone(timedelta(minutes=offset))
    moment = datetime(year, month, day, hour, minute, second, microsecond, zone)
    if moment > outcomes._now() + outcomes.CLOCK_SKEW:
        return None, ("value_error", f"Value error, {moment.isoformat()} is in the future")
    return moment, None


def outcome_errors(doc: Any, loc: tuple[int, ...]) -> tuple[Outcome | None, list[dict[str, Any]]]:
    """An outcome (a decoded JSON value) read as `OutcomeIn` reads it: the record, or pydantic's errors (the fields in
    order, then extra keys); `Undecided` for a value whose verdict is pydantic's to give."""
    if type(doc) is not dict:
        return None, [{"type": "model_type", "loc": loc, "msg": "Input should be an object", "input": doc}]
    found: list[dict[str, Any]] = []

    def check(name: str, error: tuple[str, str] | None) -> None:
        if name not in doc:
            found.append({"type": "missing", "loc": (*loc, name), "msg": "Field required", "input": doc})
        elif error is not None:
            found.append({"type": error[0], "loc": (*loc, name), "msg": error[1], "input": doc[name]})

    request_id, outcome, observed_at, source = (doc.get(k) for k in ("request_id", "outcome", "observed_at", "source"))
    check("request_id", _text_error(request_id, _REQUEST_ID, REQUEST_ID_PATTERN))
    if type(outcome) is float or (type(outcome) is int and not _I64[0] <= outcome <= _I64[1]):
        raise Undecided  # (pydantic takes 2.0 for the literal 2, and words an integer past 64 bits its own way)
    valid_outcome = (type(outcome) is str and outcome in _OUTCOMES) or (type(outcome) is int and outcome in CODES)
    check("outcome", None if valid_outcome else ("literal_error", "Input should be 'benign', 'malignant', 2 or 4"))
    moment, error = _moment(observed_at) if "observed_at" in doc else (None, None)
    check("observed_at", error)
    check("source", _text_error(source, _SOURCE, SOURCE_PATTERN))
    found += [{"type": "extra_forbidden", "loc": (*loc, key), "msg": "Extra inputs are not permitted", "input": value}
              for key, value in doc.items() if key not in _OUTCOME_FIELDS]
    if found or moment is None:
        return None, found
    return Outcome(doc["request_id"], doc["outcome"], moment, doc["source"]), []


_OUTCOME_FIELDS: Final = frozenset({"request_id", "outcome", "observed_at", "source"})


def outcomes_errors(doc: Any) -> tuple[list[Outcome], list[dict[str, Any]]]:
    """An array of outcomes read as ``list[OutcomeIn]`` reads it: the records, or pydantic's errors (`Undecided`)."""
    if type(doc) is not list:
        return [], [{"type": "list_type", "loc": (), "msg": "Input should be a valid array", "input": doc}]
    records: list[Outcome] = []
    found: list[dict[str, Any]] = []
    for i, item in enumerate(doc):
        record, errors = outcome_errors(item, (i,))
        found += errors
        if record is not None:
            records.append(record)
    return ([], found) if found else (records, [])
