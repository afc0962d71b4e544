"""The fast decoder and the pydantic model refuse exactly the same inputs, and read the same rows."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from oncology.webservice import schemas
from oncology.webservice.errors import APIError
from oncology_model.datamodel import FEATURES, Tumor

values = st.one_of(
    st.integers(-3, 14), st.integers(), st.floats(allow_nan=False), st.booleans(), st.none(),
    st.text(max_size=3), st.lists(st.integers(1, 10), max_size=2), st.just(3.0),
)
keys = st.sampled_from([*FEATURES, "extra", "Mitoses"])
tumors = st.one_of(
    st.fixed_dictionaries({f: st.integers(1, 10) for f in FEATURES}),  # valid
    st.fixed_dictionaries({f: values for f in FEATURES}),  # every field present, any value
    st.dictionaries(keys, values, max_size=11),  # fields missing or extra
)


def pydantic_row(body: bytes) -> tuple[int, ...] | None:
    try:
        return Tumor.model_validate_json(body).as_row()
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
