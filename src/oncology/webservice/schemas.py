"""Decoding requests and encoding responses.

The hot path decodes with msgspec structs derived from `FEATURES` (one definition of the features);
a request it refuses is decoded again by the reference decoder (`refusals`: pydantic's `Tumor` and its
messages, without pydantic), which reports every bad field at once.  Both refuse exactly the same inputs,
and the reference says what pydantic says (property tests hold them together).
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterator, Sequence
from typing import Annotated, Any, Final
from urllib.parse import parse_qsl

import msgspec

from oncology.webservice import refusals
from oncology.webservice.errors import APIError, BadRequest, Unprocessable, from_pydantic
from oncology_model.datamodel import FEATURES, SCORE_MAX, SCORE_MIN, Decision, Prediction, row_of

_Score = Annotated[int, msgspec.Meta(ge=SCORE_MIN, le=SCORE_MAX)]
TumorIn: Any = msgspec.defstruct(
    "TumorIn", [(name, _Score) for name in FEATURES], forbid_unknown_fields=True, frozen=True
)



_one = msgspec.json.Decoder(TumorIn)
_many = msgspec.json.Decoder(list[TumorIn])
encode = msgspec.json.Encoder().encode


#: Bytes ``"`` in a body the fast decoder accepted: its keys are feature names and its values whole
#: numbers, so each key holds exactly two; more means a key is repeated (msgspec keeps the last).
_QUOTES_PER_TUMOR: Final = 2 * len(FEATURES)


def decode_tumor(body: bytes) -> tuple[int, ...]:
    """The feature row of one tumor; `APIError` (400/422) otherwise."""
    try:
        tumor = _one.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError):  # msgspec raises the latter for a bad key
        return _slow_tumor(body)
    if body.count(b'"') != _QUOTES_PER_TUMOR:
        refuse_duplicate_keys(body)
    return row_of(tumor)  # type: ignore[no-any-return,unused-ignore]


def _slow_tumor(body: bytes) -> tuple[int, ...]:
    """The reference decoder (`refusals`), reached for a body the fast one refused: lists every error.  It reads
    what the fast one does not: a score written as an integral float (``2.0``, as pandas writes whole numbers),
    which JSON Schema's ``integer`` includes, is the integer it equals."""
    refuse_empty(body, "a JSON tumor object")
    check_utf8(body)
    refuse_duplicate_keys(body)
    doc, errors = refusals.parse(body)
    errors = errors or refusals.tumor_errors(doc)
    if errors:
        raise from_pydantic(errors)
    return refusals.tumor_row(doc)


def refuse_empty(body: bytes, expected: str, what: str = "body") -> None:
    """A 400 that says so for an empty body (or one of whitespace only), rather than a JSON parser's "EOF"."""
    if (not body or body[:1].isspace()) and not body.strip():  # (no copy of a body that starts with JSON)
        raise BadRequest(f"the {what} is empty: send {expected}" if not body else
                         f"the {what} holds only whitespace: send {expected}")


def check_utf8(body: bytes, what: str = "body") -> None:
    """A 400 for a body that is not UTF-8 text (JSON must be; the offending bytes are not echoed)."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the {what} is not UTF-8 text (invalid byte at offset {exc.start})") from None


class _Pairs(dict[str, Any]):
    """A JSON object that remembers its repeated keys (and their values, in order)."""

    repeated: dict[str, list[Any]]


def _pairs(pairs: list[tuple[str, Any]]) -> _Pairs:
    obj = _Pairs(pairs)
    obj.repeated = {}
    if len(obj) != len(pairs):
        for key, _ in pairs:
            values = [v for k, v in pairs if k == key]
            if len(values) > 1:
                obj.repeated[key] = values
    return obj


def refuse_duplicate_keys(body: bytes) -> None:
    """A 422 naming every repeated key of a tumor object (top level, or the items of a top-level array).

    ``{"mitoses": 99, ..., "mitoses": 1}`` is ambiguous patient data: parsers differ on which value
    wins.  A body that is not JSON is left to the decoder's own error.
    """
    try:
        doc = json.loads(body, object_pairs_hook=_pairs)
    except (ValueError, RecursionError):
        return
    found: list[tuple[list[str | int], list[Any]]] = []
    if isinstance(doc, _Pairs):
        found = [(["body", key], values) for key, values in doc.repeated.items()]
    elif isinstance(doc, list):
        found = [
            (["body", i, key], values)
            for i, item in enumerate(doc) if isinstance(item, _Pairs)
            for key, values in item.repeated.items()
        ]
    if found:
        details = [{"loc": loc, "value": values, "reason": "given more than once"} for loc, values in found]
        where = ", ".join(".".join(str(p) for p in loc[1:]) for loc, _ in found[:5])
        raise Unprocessable(f"ambiguous input: {where} given more than once", details[:100])


# ---- the REST answers: one definition of each wire shape, which both encodes the answers (msgspec, fast) and is
# the document's schema (`openapi` derives PredictionOut, Explanation and Contributions from these structs)

Contributions: Any = msgspec.defstruct(  # one number per feature, named from `FEATURES` (one source of truth)
    "Contributions",
    [(name, Annotated[float, msgspec.Meta(description=f"Contribution of {name}.")]) for name in FEATURES],
    forbid_unknown_fields=True,
    namespace={"__doc__": "Each feature's contribution to the malignant log-odds: coef * (value - training mean) / "
                          "training scale. Positive pushes towards malignant."},
)


class Explanation(msgspec.Struct):
    """Why the model gave its probability (``?explain=true``): ``baseline + sum(contributions) == log_odds``.

    Exact for this linear model (up to floating-point rounding): no sampling, no approximation.
    """

    baseline: Annotated[float, msgspec.Meta(
        description="The malignant log-odds of the training-mean tumor (every feature at its mean over the "
        "training data): the model's intercept. The contributions say how far each feature moves the log-odds "
        "from it.")]
    contributions: Annotated[Contributions, msgspec.Meta(description="Each feature's share of the log-odds, in feature order.")]
    log_odds: Annotated[float, msgspec.Meta(description="The malignant log-odds: logit(probability).")]


_DECISION_DOC = (
    "What to do: `refer` (refer for review) when the probability is inside the model's referral band "
    "[low, high) (see `GET /model`), where the model is unsure; otherwise the prediction. A model "
    "without a band never refers."
)


class PredictionOut(msgspec.Struct):
    """The prediction for one tumor."""

    prediction: Annotated[Prediction, msgspec.Meta(
        description="`malignant` when the probability reaches the model's threshold.")]
    probability: Annotated[float, msgspec.Meta(ge=0, le=1, description="Probability that the tumor is malignant.")]
    decision: Annotated[Decision, msgspec.Meta(description=_DECISION_DOC)]
    model_version: Annotated[str, msgspec.Meta(description="Version of the model that answered.")]
    explanation: Annotated[Explanation, msgspec.Meta(
        description="Only with `?explain=true` (/predict and /predict/batch).")] | msgspec.UnsetType = msgspec.UNSET


#: The names the handlers use: a prediction without its explanation (left out of the JSON), and with it.
Result = PredictionOut
ExplainedResult = PredictionOut
ExplanationOut = Explanation


#: The query parameter that adds explanations to /predict and /predict/batch.
EXPLAIN: Final = "explain"


_EXPLAIN_EXACT: Final = {b"explain=true": True, b"explain=false": False}


def decode_explain(query: bytes) -> bool:
    """Whether the query string asks for explanations: ``explain=true``; absent or ``false`` is no.

    Strict, as the OpenAPI document's boolean: any other value (or the parameter given twice) is a
    422 naming the parameter.  Other parameters are ignored.
    """
    if query in _EXPLAIN_EXACT:  # the usual query strings, without parsing
        return _EXPLAIN_EXACT[query]
    values = [v for k, v in parse_qsl(query.decode("latin-1"), keep_blank_values=True) if k == EXPLAIN]
    if not values:
        return False
    if len(values) == 1 and values[0] in ("true", "false"):
        return values[0] == "true"
    value: Any = values[0] if len(values) == 1 else values
    reason = "given more than once" if len(values) > 1 else "must be true or false"
    raise Unprocessable(
        f"invalid query parameter {EXPLAIN}: {value!r} ({reason})",
        [{"loc": ["query", EXPLAIN], "value": value, "reason": reason}],
    )


def decode_tumors(body: bytes, limit: int) -> Iterator[tuple[int, ...]]:
    """The feature rows of a JSON array of tumors, in order (an iterator: rows are not copied)."""
    try:
        structs = _many.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError):
        refuse_empty(body, "a JSON array of tumor objects")
        check_utf8(body)
        refuse_duplicate_keys(body)
        doc, errors = refusals.parse(body)  # the reference decoder, as in `_slow_tumor`
        errors = errors or refusals.tumors_errors(doc)
        if errors:
            raise from_pydantic(errors) from None
        if len(doc) > limit:
            raise _too_many(limit, len(doc), ["body"]) from None
        return map(refusals.tumor_row, doc)
    if body.count(b'"') != _QUOTES_PER_TUMOR * len(structs):
        refuse_duplicate_keys(body)
    if len(structs) > limit:
        raise _too_many(limit, len(structs), ["body"])
    return map(row_of, structs)


def _too_many(limit: int, n: int, loc: list[str | int]) -> APIError:
    """More rows than a batch may hold: a schema limit (the document's ``maxItems``), so a 422 (413 is for bytes)."""
    return Unprocessable(
        f"a batch holds at most {limit} rows; this one has {n}",
        [{"loc": loc, "value": None, "reason": f"more than {limit} rows"}],
    )


#: CSV as the OpenAPI document describes it (`CSV_PATTERN`): lines end in LF, CRLF or CR (not at the
#: other characters str.splitlines() breaks on), cells may be padded with spaces and tabs.
_LINE_END: Final = re.compile(r"\r\n|\r|\n")
_BLANK: Final = " \t"
_CSV_ROW: Final = rf"[ \t]*0*(10|[1-9])[ \t]*(,[ \t]*0*(10|[1-9])[ \t]*){{{len(FEATURES) - 1}}}"
CSV_PATTERN: Final = rf"^({_CSV_ROW}|[ \t]*)((\r\n|\r|\n)({_CSV_ROW}|[ \t]*))*$"


def _is_score(cell: str) -> bool:
    # ASCII digits only: str.isdigit() and int() also take "²" and "٣"
    return cell.isascii() and cell.isdigit() and SCORE_MIN <= int(cell) <= SCORE_MAX


def decode_csv(body: bytes, limit: int) -> list[tuple[int, ...]]:
    """Rows of CSV (no header), nine whole numbers 1-10 per line in `FEATURES` order; no rows, no results."""
    try:
        lines = [line for line in _LINE_END.split(body.decode("utf-8")) if line.strip(_BLANK)]
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the CSV body is not UTF-8 text (invalid byte at offset {exc.start})") from None
    if len(lines) > limit:
        raise _too_many(limit, len(lines), ["body"])
    rows: list[tuple[int, ...]] = []
    details: list[dict[str, Any]] = []
    for i, line in enumerate(lines):
        cells = [c.strip(_BLANK) for c in line.split(",")]
        if len(cells) != len(FEATURES):
            details.append({"loc": ["body", i], "value": line, "reason": f"expected {len(FEATURES)} values, found {len(cells)}"})
            continue
        bad = [(name, cell) for name, cell in zip(FEATURES, cells) if not _is_score(cell)]
        for name, cell in bad:
            details.append({"loc": ["body", i, name], "value": cell, "reason": f"must be a whole number {SCORE_MIN}-{SCORE_MAX}"})
        if not bad:
            rows.append(tuple(int(c) for c in cells))
    if details:
        raise Unprocessable(f"{len(details)} invalid CSV value(s); first at row {details[0]['loc'][1]}", details[:100])
    return rows


# ---- the Open Inference Protocol (V2) -------------------------------------------------------------

V2_MODEL: Final = "oncology"
V2_INPUT: Final = "tumor"
V2_INPUT_DATATYPES: Final = ("INT64", "INT32", "FP32", "FP64")
V2_OUTPUTS: Final = {"label": "BYTES", "probability": "FP64", "decision": "BYTES"}


def _doc(description: str, **schema: Any) -> msgspec.Meta:
    """Documentation of a field for the OpenAPI document.  ``schema`` holds JSON Schema keywords that the
    document shows but msgspec does not check: `decode_v2` checks them itself, with the protocol's own
    statuses and messages (a wrong input name is a 400, as in Triton)."""
    return msgspec.Meta(description=description, extra_json_schema=schema or None)


#: A value of the input tensor as the document states it (JSON Schema's integer includes 2.0, and so does the service).
V2_SCORE: Final = {"type": "integer", "minimum": SCORE_MIN, "maximum": SCORE_MAX}


class V2Tensor(msgspec.Struct, forbid_unknown_fields=False):
    """An input tensor."""

    name: Annotated[str, _doc(f"The model's one input, `{V2_INPUT}` (any other name is a 400, as in Triton).",
                              const=V2_INPUT)]
    # the row limit (``maximum`` of N) is the settings' ``max_batch``: `openapi` sets it
    shape: Annotated[list[int], _doc(
        f"[N, {len(FEATURES)}]: N rows (0 included) of the {len(FEATURES)} features.", minItems=2, maxItems=2,
        prefixItems=[{"type": "integer", "minimum": 0}, {"const": len(FEATURES)}], items=False)]
    datatype: Annotated[str, _doc(f"One of {', '.join(V2_INPUT_DATATYPES)}.", enum=list(V2_INPUT_DATATYPES))]
    #: absent when the values follow the JSON as binary (Triton's extension; the document requires it in JSON)
    data: Annotated[list[Any], _doc(
        f"The N x {len(FEATURES)} values (exactly N x {len(FEATURES)}, as `shape` says), row-major: flat, or nested as "
        f"N rows of {len(FEATURES)}; in the order {', '.join(FEATURES)}; whole numbers {SCORE_MIN}-{SCORE_MAX}.",
        anyOf=[{"type": "array", "items": V2_SCORE},
               {"type": "array", "items": {"type": "array", "items": V2_SCORE,
                                           "minItems": len(FEATURES), "maxItems": len(FEATURES)}}])] | None = None
    parameters: dict[str, Any] | None = None


class V2RequestedOutput(msgspec.Struct):
    """An output the client asks for (all of them when the request names none)."""

    name: Annotated[str, _doc(f"One of {', '.join(V2_OUTPUTS)}.", enum=list(V2_OUTPUTS))]
    parameters: dict[str, Any] | None = None


class V2InferRequest(msgspec.Struct):
    """An inference request of the Open Inference Protocol (V2)."""

    inputs: Annotated[list[V2Tensor], _doc(f"Exactly one tensor, `{V2_INPUT}`.", minItems=1, maxItems=1)]
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[V2RequestedOutput] | None = None


# The V2 answers (for the document; the handlers encode plain dicts of these shapes)


class V2OutputTensor(msgspec.Struct):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]


class V2InferResponse(msgspec.Struct):
    model_name: str
    model_version: str
    outputs: list[V2OutputTensor]
    id: str | None = None


class V2ServerMetadata(msgspec.Struct):
    name: str
    version: str
    extensions: list[str]


class V2MetadataTensor(msgspec.Struct):
    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any] | None = None


class V2ModelMetadata(msgspec.Struct):
    name: str
    versions: list[str]
    platform: str
    inputs: list[V2MetadataTensor]
    outputs: list[V2MetadataTensor]


class V2Live(msgspec.Struct):
    live: bool


class V2Ready(msgspec.Struct):
    ready: bool


_v2 = msgspec.json.Decoder(V2InferRequest)
#: Triton's binary tensor data extension: little-endian values, row-major.
#: struct codes of the numeric datatypes (little-endian, as Triton sends them); the service has no numpy
_BINARY_DTYPES: Final = {"INT64": "q", "INT32": "i", "FP32": "f", "FP64": "d"}


def decode_v2(body: bytes, limit: int, header_length: int | None = None) -> tuple[V2InferRequest, list[tuple[int, ...]]]:
    """An inference request and its rows: one tensor ``tumor`` of shape [N, 9] in `FEATURES` order.

    With ``header_length`` (the ``Inference-Header-Content-Length`` header of Triton's binary
    tensor data extension) the JSON is the first ``header_length`` bytes and the tensor's values,
    ``parameters.binary_data_size`` bytes of them, follow it.
    """
    binary = b""
    if header_length is not None:
        if not 0 <= header_length <= len(body):
            raise BadRequest(f"Inference-Header-Content-Length {header_length} is outside the body ({len(body)} bytes)")
        body, binary = body[:header_length], body[header_length:]
    check_utf8(body, "inference request")  # msgspec skips the keys it ignores without looking at their bytes
    try:
        request = _v2.decode(body)
    except msgspec.ValidationError as exc:
        raise Unprocessable(f"not an inference request: {exc}") from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        refuse_empty(body, "a JSON inference request", "body" if header_length is None else "inference header")
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    except RecursionError:  # msgspec's depth limit, where the unchecked `parameters` and `data` nest
        raise BadRequest("the body is nested too deeply") from None
    if len(request.inputs) != 1:
        raise Unprocessable(f"expected exactly one input tensor ({V2_INPUT!r}), got {len(request.inputs)}")
    tensor = request.inputs[0]
    loc: list[str | int] = ["body", "inputs", 0]
    if tensor.name != V2_INPUT:  # as Triton: an input the model does not have is a bad request
        raise BadRequest(
            f"unexpected inference input {tensor.name!r} for model {V2_MODEL!r}: its one input is {V2_INPUT!r}",
            [{"loc": [*loc, "name"], "value": tensor.name, "reason": f"must be {V2_INPUT!r}"}],
        )
    if tensor.datatype not in V2_INPUT_DATATYPES:
        raise Unprocessable(
            f"input datatype {tensor.datatype!r} is not one of {', '.join(V2_INPUT_DATATYPES)}",
            [{"loc": [*loc, "datatype"], "value": tensor.datatype, "reason": "unsupported datatype"}],
        )
    n_features = len(FEATURES)
    if len(tensor.shape) != 2 or tensor.shape[1] != n_features or tensor.shape[0] < 0:
        raise Unprocessable(
            f"input shape must be [N, {n_features}], got {tensor.shape}",
            [{"loc": [*loc, "shape"], "value": tensor.shape, "reason": f"expected [N, {n_features}]"}],
        )
    n = tensor.shape[0]
    if n > limit:
        raise _too_many(limit, n, [*loc, "shape"])
    flat = _tensor_values(tensor, binary, loc)
    if len(flat) != n * n_features:
        raise Unprocessable(
            f"input data has {len(flat)} values, shape {tensor.shape} needs {n * n_features}",
            [{"loc": [*loc, "data"], "value": None, "reason": "length does not match the shape"}],
        )
    floats = False
    details = []
    for i, value in enumerate(flat):
        # a whole number, written 2 or 2.0 (JSON Schema's integer, as the document says), whatever the datatype
        integral = type(value) is float and value.is_integer()
        floats |= integral
        ok = (type(value) is int or integral) and SCORE_MIN <= value <= SCORE_MAX
        if not ok:
            details.append({
                "loc": [*loc, "data", i],
                "value": value,
                "reason": f"{FEATURES[i % n_features]} of row {i // n_features} must be a whole number "
                f"{SCORE_MIN}-{SCORE_MAX}",
            })
    if details:
        raise Unprocessable(f"{len(details)} invalid input value(s); first: {details[0]['reason']}", details[:100])
    ints = [int(v) for v in flat] if floats else flat
    rows = [tuple(ints[i : i + n_features]) for i in range(0, len(ints), n_features)]
    if request.outputs is not None:
        unknown = [o.name for o in request.outputs if o.name not in V2_OUTPUTS]
        if unknown:
            raise Unprocessable(f"unknown output(s) {unknown}; this model has {list(V2_OUTPUTS)}")
    return request, rows


def _tensor_values(tensor: V2Tensor, binary: bytes, loc: list[str | int]) -> list[Any]:
    size = (tensor.parameters or {}).get("binary_data_size")
    if size is None:
        if binary:
            raise BadRequest(f"{len(binary)} bytes follow the inference header, but no input has binary_data_size")
        if tensor.data is None:
            raise Unprocessable("the input has neither data nor parameters.binary_data_size",
                                [{"loc": [*loc, "data"], "value": None, "reason": "missing"}])
        return _flatten(tensor.data, [*loc, "data"])
    if tensor.data is not None:
        raise Unprocessable("the input has both data and parameters.binary_data_size",
                            [{"loc": [*loc, "data"], "value": None, "reason": "give one or the other"}])
    code = _BINARY_DTYPES[tensor.datatype]
    itemsize = struct.calcsize("<" + code)
    if type(size) is not int or size != len(binary) or size % itemsize:
        raise BadRequest(
            f"parameters.binary_data_size is {size!r}, but {len(binary)} bytes of {tensor.datatype} "
            f"({itemsize} bytes each) follow the inference header",
            [{"loc": [*loc, "parameters", "binary_data_size"], "value": size, "reason": "does not match the binary data"}],
        )
    values: list[Any] = list(struct.unpack(f"<{size // itemsize}{code}", binary))
    return values


def wants_binary(request: V2InferRequest, name: str) -> bool:
    """Whether output ``name`` is to be sent as binary: its ``binary_data`` parameter, else the request's
    ``binary_data_output`` (tritonclient's default when it names no outputs)."""
    default = (request.parameters or {}).get("binary_data_output") is True
    for output in request.outputs or ():
        if output.name == name and output.parameters and "binary_data" in output.parameters:
            return output.parameters["binary_data"] is True
    return default


def binary_tensor(datatype: str, values: Sequence[Any]) -> bytes:
    """Values as Triton's binary extension carries them: BYTES length-prefixed (uint32 LE), numbers little-endian."""
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(b)) + b for b in (str(v).encode() for v in values))
    return struct.pack(f"<{len(values)}{_BINARY_DTYPES[datatype]}", *values)


def _flatten(data: list[Any], loc: list[str | int]) -> list[Any]:
    """The values, row-major: ``data`` itself when flat; rows of nine (the protocol's nested form of [N, 9]) joined.
    Any other nesting is a 422: the document allows these two forms only."""
    if not any(type(item) is list for item in data):
        return data  # (a value that is not a number is refused with its index by the caller)
    n_features = len(FEATURES)
    bad = [i for i, row in enumerate(data)
           if type(row) is not list or len(row) != n_features or any(type(v) is list for v in row)]
    if bad:
        raise Unprocessable(
            f"input data is neither flat nor rows of {n_features} values (first at index {bad[0]})",
            [{"loc": [*loc, i], "value": None, "reason": f"expected a row of {n_features} values"} for i in bad[:100]],
        )
    return [value for row in data for value in row]
