"""Why a body is refused, field by field, in pydantic's words, without pydantic.

A serving worker holds what it imports for as long as it serves, and pydantic is about 10 MB of it
(docs/grpc.md, "Cost"); the first refused body would load it.  So the reference decoders of the flat request
shapes (a tumor, an array of them) are written here: `json_invalid` says where a body stops being JSON as
pydantic's JSON parser (jiter) says it, and `tumor_errors`, `tumors_errors` list every bad field as
pydantic's `Tumor` (strict scores, integral floats read as the integers they equal) lists them: same order,
locations, inputs, types and messages.  Each returns pydantic's error dicts (``type``, ``loc``, ``msg``,
``input``), which `errors.from_pydantic` renders.  tests/webservice/test_refusals.py holds them to pydantic
over generated bodies.
"""

from __future__ import annotations

import json
from typing import Any, Final

from oncology_model.datamodel import FEATURES, SCORE_MAX, SCORE_MIN

#: jiter's limits: containers nested deeper are refused, as are integers with more digits than Python reads.
_DEPTH: Final = 200
_MAX_DIGITS: Final = 4300
_WHITESPACE: Final = frozenset(b" \t\n\r")
_DIGITS: Final = frozenset(b"0123456789")
_HEX: Final = frozenset(b"0123456789abcdefABCDEF")
_ESCAPES: Final = frozenset(b'"\\/bfnrt')
_EOF_VALUE: Final = "EOF while parsing a value"


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

    def array(self, depth: int) -> None:
        self.i += 1
        byte = self.next()
        if byte is None:
            raise _Invalid("EOF while parsing a list", self.n)
        if byte == ord("]"):
            self.i += 1
            return
        self.member(byte, depth)
        while True:
            byte = self.next()
            if byte is None:
                raise _Invalid("EOF while parsing a list", self.n)
            if byte == ord("]"):
                self.i += 1
                return
            if byte != ord(","):
                raise _Invalid("expected `,` or `]`", self.i)
            self.i += 1
            byte = self.next()
            if byte is None:
                raise _Invalid(_EOF_VALUE, self.n)
            if byte == ord("]"):
                raise _Invalid("trailing comma", self.i)
            self.member(byte, depth)

    def object(self, depth: int) -> None:
        self.i += 1
        byte = self.next()
        if byte is None:
            raise _Invalid("EOF while parsing an object", self.n)
        if byte == ord("}"):
            self.i += 1
            return
        while True:
            if byte != ord('"'):
                raise _Invalid("key must be a string", self.i)
            self.string()
            byte = self.next()
            if byte is None:
                raise _Invalid("EOF while parsing an object", self.n)
            if byte != ord(":"):
                raise _Invalid("expected `:`", self.i)
            self.i += 1
            byte = self.next()
            if byte is None:
                raise _Invalid(_EOF_VALUE, self.n)
            self.member(byte, depth)
            byte = self.next()
            if byte is None:
                raise _Invalid("EOF while parsing an object", self.n)
            if byte == ord("}"):
                self.i += 1
                return
            if byte != ord(","):
                raise _Invalid("expected `,` or `}`", self.i)
            self.i += 1
            byte = self.next()
            if byte is None:
                raise _Invalid(_EOF_VALUE, self.n)
            if byte == ord("}"):
                raise _Invalid("trailing comma", self.i)


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


def parse(body: bytes) -> tuple[Any, list[dict[str, Any]]]:
    """The JSON document of ``body`` and no errors, or None and pydantic's ``json_invalid`` error."""
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
