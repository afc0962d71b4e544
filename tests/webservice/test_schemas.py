"""The fast decoder and the pydantic model refuse exactly the same inputs, and read the same rows."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from pydantic import ValidationError

from oncology.settings import ServeSettings
from oncology.webservice import schemas
from oncology.webservice.errors import APIError
from oncology.webservice.openapi import openapi_document
from oncology_model.datamodel import FEATURES

from .test_refusals import TumorJSON

values = st.one_of(
    st.integers(-3, 14), st.integers(), st.floats(allow_nan=False), st.booleans(), st.none(),
    st.text(max_size=3), st.lists(st.integers(1, 10), max_size=2), st.just(3.0),
    st.integers(-3, 14).map(float), st.sampled_from([2.5, 1e300, -0.0, 10.000001]),  # integral floats and near misses
)
keys = st.sampled_from([*FEATURES, "extra", "Mitoses"])
tumors = st.one_of(
    st.fixed_dictionaries({f: st.integers(1, 10) for f in FEATURES}),  # valid
    st.fixed_dictionaries({f: values for f in FEATURES}),  # every field present, any value
    st.dictionaries(keys, values, max_size=11),  # fields missing or extra
)


def pydantic_row(body: bytes) -> tuple[int, ...] | None:
    try:
        return TumorJSON.model_validate_json(body).as_row()  # the reference: Tumor, integral floats read as ints
    except ValidationError:
        return None


def fast_row(body: bytes) -> tuple[int, ...] | None:
    try:
        return schemas.decode_tumor(body)
    except APIError as exc:
        assert exc.status in (400, 422)
        assert exc.details or exc.status == 400
        return None


@settings(max_examples=400, deadline=None)
@given(tumors)
def test_single_rows_agree(payload: dict[str, object]) -> None:
    body = json.dumps(payload).encode()
    assert fast_row(body) == pydantic_row(body)


def render(pairs: list[tuple[str, object]]) -> bytes:
    """A JSON object with its keys in order, repeats included (json.dumps of a dict cannot repeat one)."""
    return ("{" + ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in pairs) + "}").encode()


valid_pairs = st.fixed_dictionaries({f: st.integers(1, 10) for f in FEATURES}).map(lambda d: list(d.items()))


@settings(max_examples=300, deadline=None)
@given(valid_pairs, st.lists(st.tuples(keys, values), max_size=3), st.randoms(use_true_random=False))
def test_repeated_keys_are_refused_by_both_paths(pairs: list[tuple[str, object]], extra: list[tuple[str, object]],
                                                  rnd: object) -> None:
    """A repeated key is ambiguous patient data: refused, whichever decoder reads the body."""
    body_pairs = pairs + extra
    rnd.shuffle(body_pairs)  # type: ignore[attr-defined]
    body = render(body_pairs)
    names = [k for k, _ in body_pairs]
    repeated = {k for k in names if names.count(k) > 1}
    got = fast_row(body)
    if repeated:
        assert got is None
        with pytest.raises(APIError) as info:
            schemas.decode_tumor(body)
        if info.value.status == 422 and info.value.details[0]["reason"] == "given more than once":
            assert {d["loc"][1] for d in info.value.details} == repeated
    else:
        assert got == pydantic_row(body)


@pytest.mark.parametrize("body", [
    b'{"mitoses": 99, "clump_thickness": 5, "uniformity_of_cell_size": 1, "uniformity_of_cell_shape": 1, '
    b'"marginal_adhesion": 1, "single_epithelial_cell_size": 2, "bare_nuclei": 1, "bland_chromatin": 3, '
    b'"normal_nucleoli": 1, "mitoses": 1}',  # the fast decoder accepts this, keeping the last value
    b'{"mitoses": 1.0, "clump_thickness": 5, "uniformity_of_cell_size": 1, "uniformity_of_cell_shape": 1, '
    b'"marginal_adhesion": 1, "single_epithelial_cell_size": 2, "bare_nuclei": 1, "bland_chromatin": 3, '
    b'"normal_nucleoli": 1, "mitoses": 1}',  # the reference decoder's path (an integral float)
])
def test_a_repeated_feature_is_a_422_naming_it(body: bytes) -> None:
    with pytest.raises(APIError) as info:
        schemas.decode_tumor(body)
    assert info.value.status == 422
    assert info.value.details == [{"loc": ["body", "mitoses"], "value": [99 if b"99" in body else 1.0, 1],
                                   "reason": "given more than once"}]
    assert "mitoses" in info.value.message
    with pytest.raises(APIError) as batch:
        list(schemas.decode_tumors(b"[" + body.replace(b"99", b"1") + b"]", limit=10))
    assert batch.value.status == 422 and batch.value.details[0]["loc"] == ["body", 0, "mitoses"]


def test_integral_floats_are_the_integers_they_equal() -> None:
    """JSON Schema's integer includes 2.0 (pandas sends whole numbers so): read as 2, on every path."""
    ints = {f: i % 10 + 1 for i, f in enumerate(FEATURES)}
    floats = {f: float(v) for f, v in ints.items()}
    assert schemas.decode_tumor(json.dumps(floats).encode()) == tuple(ints.values())
    assert list(schemas.decode_tumors(json.dumps([floats, ints]).encode(), 10)) == [tuple(ints.values())] * 2
    for bad in (2.5, "2", True, 11.0, 0.0):
        with pytest.raises(APIError) as info:
            schemas.decode_tumor(json.dumps({**floats, "mitoses": bad}).encode())
        assert info.value.status == 422 and info.value.details[0]["loc"] == ["body", "mitoses"]


def test_a_valid_integer_body_takes_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def slow(body: bytes) -> None:
        raise AssertionError("the reference decoder was used for a valid body")

    monkeypatch.setattr(schemas, "_slow_tumor", slow)
    monkeypatch.setattr(schemas, "refuse_duplicate_keys", slow)
    body = json.dumps(dict.fromkeys(FEATURES, 3)).encode()
    assert schemas.decode_tumor(body) == (3,) * 9
    assert list(schemas.decode_tumors(b"[" + body + b"," + body + b"]", 10)) == [(3,) * 9] * 2


@pytest.mark.parametrize("body", [b'{"\xff": 1}', b'{"a\xc0\xaf":1}',
                                  b'{"mitoses": "\xff"}'])
def test_invalid_utf8_anywhere_is_a_400(body: bytes) -> None:
    for decode in (schemas.decode_tumor, lambda b: list(schemas.decode_tumors(b"[" + b + b"]", 10))):
        with pytest.raises(APIError) as info:
            decode(body)
        assert info.value.status == 400 and "UTF-8" in info.value.message
    v2 = b'{"inputs": [{"name": "tumor", "shape": [1, 9], "datatype": "INT64", "data": [1,1,1,1,1,1,1,1,1], "parameters": ' + body + b"}]}"
    for request in (v2, v2.replace(b'"name": "tumor"', b'"name": "tu\xffmor"')):
        with pytest.raises(APIError) as info:
            schemas.decode_v2(request, 10)
        assert info.value.status == 400


def test_an_error_about_the_whole_body_names_it() -> None:
    for body in (b"3", b"[1]", b"null"):
        with pytest.raises(APIError) as info:
            schemas.decode_tumor(body)
        assert info.value.status == 422 and info.value.message.startswith("invalid input at body")


@pytest.mark.parametrize("cell", ["²", "٣", "１", "+3", "3.0", ""])
def test_csv_cells_are_ascii_whole_numbers(cell: str) -> None:
    with pytest.raises(APIError) as info:
        schemas.decode_csv(f"5,1,1,1,2,{cell},3,1,1\n".encode(), 10)
    assert info.value.status == 422
    assert info.value.details == [{"loc": ["body", 0, "bare_nuclei"], "value": cell, "reason": "must be a whole number 1-10"}]


def test_an_empty_csv_body_is_an_empty_batch() -> None:
    assert schemas.decode_csv(b"", 10) == [] and schemas.decode_csv(b"\n \n", 10) == []


@settings(max_examples=100, deadline=None)
@given(st.lists(tumors, max_size=5))
def test_batches_agree(rows: list[dict[str, object]]) -> None:
    body = json.dumps(rows).encode()
    expected = [pydantic_row(json.dumps(r).encode()) for r in rows]
    try:
        got = list(schemas.decode_tumors(body, limit=10))
    except APIError as exc:
        assert None in expected
        bad = {d["loc"][1] for d in exc.details}
        assert bad == {i for i, row in enumerate(expected) if row is None}
    else:
        assert got == expected


@pytest.mark.parametrize("body", [b'{"clump_thickness": 1e400}', b"[" * 10_000, b'{"a": 1, "a": 2}'])
def test_hostile_bodies_are_4xx(body: bytes) -> None:
    with pytest.raises(APIError) as info:
        schemas.decode_tumor(body)
    assert info.value.status in (400, 422)


csv_text = st.one_of(
    st.from_regex(schemas.CSV_PATTERN, fullmatch=True),
    st.lists(st.lists(st.sampled_from(["1", "5", "10", "01", " 3", "3\t", "11", "0", "²", "x", ""]), min_size=8, max_size=10)
             .map(",".join), max_size=3).flatmap(lambda rows: st.sampled_from(["\n", "\r\n", "\r", "\x0b", "\u2028"]).map(lambda end: end.join(rows))),
    st.text(max_size=30),
)


@settings(max_examples=100, deadline=None)  # generating from the pattern is slow: keep it modest
@given(csv_text)
def test_csv_is_accepted_exactly_when_the_documented_pattern_matches(text: str) -> None:
    import re

    documented = re.search(schemas.CSV_PATTERN, text) is not None
    try:
        schemas.decode_csv(text.encode(), 100)
    except APIError as exc:
        assert exc.status in (400, 422)
        accepted = False
    else:
        accepted = True
    assert accepted == documented


VALID_ROW = {f: 5 for f in FEATURES}


@pytest.mark.parametrize("feature", FEATURES)
@pytest.mark.parametrize("score", [0, 11])
def test_one_score_out_of_range_in_an_otherwise_valid_row_is_a_422_naming_it(feature: str, score: int) -> None:
    """Scores are 1-10: one field at 0 or 11 (the others valid) is refused by every decoder, naming that field."""
    row = {**VALID_ROW, feature: score}
    for decode, loc in [
        (schemas.decode_tumor, ["body", feature]),
        (lambda b: list(schemas.decode_tumors(b"[" + b + b"]", 10)), ["body", 0, feature]),
    ]:
        with pytest.raises(APIError) as info:
            decode(json.dumps(row).encode())
        assert info.value.status == 422
        assert [(d["loc"], d["value"]) for d in info.value.details] == [(loc, score)]
    with pytest.raises(APIError) as csv:
        schemas.decode_csv(",".join(str(row[f]) for f in FEATURES).encode(), 10)
    assert csv.value.status == 422 and [d["loc"] for d in csv.value.details] == [["body", 0, feature]]
    v2 = {"inputs": [{"name": "tumor", "shape": [1, 9], "datatype": "INT64", "data": [row[f] for f in FEATURES]}]}
    with pytest.raises(APIError) as info:
        schemas.decode_v2(json.dumps(v2).encode(), 10)
    assert info.value.status == 422
    (detail,) = info.value.details
    assert detail["loc"] == ["body", "inputs", 0, "data", FEATURES.index(feature)] and feature in detail["reason"]


@pytest.mark.parametrize("score", [1, 10])
def test_the_edges_of_the_score_range_are_accepted_by_every_decoder(score: int) -> None:
    for feature in FEATURES:
        row = {**VALID_ROW, feature: score}
        expected = tuple(row[f] for f in FEATURES)
        assert schemas.decode_tumor(json.dumps(row).encode()) == expected
        assert list(schemas.decode_tumors(json.dumps([row]).encode(), 10)) == [expected]
        assert schemas.decode_csv(",".join(map(str, expected)).encode(), 10) == [expected]
        v2 = {"inputs": [{"name": "tumor", "shape": [1, 9], "datatype": "INT64", "data": list(expected)}]}
        assert schemas.decode_v2(json.dumps(v2).encode(), 10)[1] == [expected]


# ---- V2: the service accepts exactly the requests its document describes ---------------------------------------

V2_BATCH = 4
_doc = openapi_document(ServeSettings(max_batch=V2_BATCH))
_v2_request = Draft202012Validator({"$ref": "#/components/schemas/V2InferRequest", "components": _doc["components"]})
v2_values = st.one_of(st.integers(1, 10), st.integers(1, 10).map(float), st.sampled_from([0, 11, 2.5, None, True, "3", -1]))
v2_rows = st.lists(v2_values, min_size=8, max_size=10)
v2_data = st.one_of(
    st.lists(st.integers(1, 10), max_size=50).map(lambda d: d[: len(d) // 9 * 9]),  # flat, whole rows
    st.lists(st.lists(st.integers(1, 10), min_size=9, max_size=9), max_size=V2_BATCH + 1),  # nested rows
    st.lists(v2_values, max_size=40),  # flat, any values
    st.lists(st.one_of(v2_rows, v2_values, st.lists(v2_rows, max_size=2)), max_size=5),  # nested, any shape
)


@st.composite
def v2_requests(draw: st.DrawFn) -> dict[str, object]:
    data = draw(v2_data)
    rows = len(data) if data and isinstance(data[0], list) else len(data) // 9
    shape = draw(st.one_of(st.just([rows, 9]), st.lists(st.integers(-1, V2_BATCH + 2), min_size=1, max_size=3),
                           st.tuples(st.integers(-1, V2_BATCH + 2), st.sampled_from([0, 9])).map(list)))
    datatype = draw(st.sampled_from(["INT64", "INT32", "FP32", "FP64", "BYTES"]))
    return {"inputs": [{"name": "tumor", "shape": shape, "datatype": datatype, "data": data}]}


def _flat(data: list[object]) -> list[object]:
    return [v for row in data for v in row] if any(isinstance(r, list) for r in data) else data  # type: ignore[attr-defined]


@settings(max_examples=500, deadline=None)
@given(v2_requests())
def test_v2_requests_are_accepted_exactly_when_the_document_allows_them(request: dict[str, object]) -> None:
    """The document's V2InferRequest schema (shape [N, 9] with N at most the batch limit; data flat or rows of nine,
    whole numbers 1-10), plus the one rule it states in words (N x 9 values), is what the service accepts."""
    tensor = request["inputs"][0]  # type: ignore[index]
    documented = _v2_request.is_valid(request) and len(_flat(tensor["data"])) == tensor["shape"][0] * 9
    try:
        schemas.decode_v2(json.dumps(request).encode(), V2_BATCH)
    except APIError as exc:
        assert exc.status in (400, 422), exc.message
        accepted = False
    else:
        accepted = True
    assert accepted == documented, request


def test_the_v2_document_refuses_what_the_service_refuses() -> None:
    """The holes schemathesis found: shape [0, 0] with data [null, null] was schema-valid."""
    for tensor in ({"shape": [0, 0], "data": [None, None]}, {"shape": [0, 0], "data": []},
                   {"shape": [V2_BATCH + 1, 9], "data": [1] * 9 * (V2_BATCH + 1)}, {"shape": [1, 9, 1], "data": [1] * 9},
                   {"shape": [2, 9], "data": [[1] * 9, [1] * 8]}, {"shape": [1, 9], "data": [[[1]] * 9]}):
        request = {"inputs": [{"name": "tumor", "datatype": "INT64", **tensor}]}
        assert not _v2_request.is_valid(request), tensor
        with pytest.raises(APIError) as info:
            schemas.decode_v2(json.dumps(request).encode(), V2_BATCH)
        assert info.value.status == 422
    for tensor in ({"shape": [0, 9], "data": []}, {"shape": [1, 9], "data": [2.0] * 9},
                   {"shape": [2, 9], "data": [[1] * 9, [10] * 9]}):
        request = {"inputs": [{"name": "tumor", "datatype": "INT64", **tensor}]}
        assert _v2_request.is_valid(request), tensor
        assert len(schemas.decode_v2(json.dumps(request).encode(), V2_BATCH)[1]) == tensor["shape"][0]  # type: ignore[index]
