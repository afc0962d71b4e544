"""Property-based fuzzing of the whole API from its own OpenAPI document, against the real server,
with every check schemathesis has, each with its defaults: no 5xx; responses conform to the documented
status codes, content types and schemas; a request the document calls valid is accepted and one it calls
invalid is refused (with one of the statuses schemathesis expects for that: a batch over `maxItems` is a
422).  Bounded: a fixed number of examples per operation."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from oncology.settings import ServeSettings
from oncology.webservice.openapi import openapi_document

from . import schemathesis_hooks  # noqa: F401  (registers the hook: positive V2 requests keep shape[0] x 9 == len(data))
from .conftest import EXAMPLE, Server

schema = schemathesis.openapi.from_dict(openapi_document(ServeSettings()))


def in_the_past(case: schemathesis.Case) -> None:
    """An outcome's `observed_at` must not be in the future, which JSON Schema cannot say (`format: date-time`
    has no bound): a generated date-time after now is moved back into the past, a century at a time, so that
    a record the document calls valid is one the service must accept.  Nothing else of the case changes (a
    negative case stays negative for its own reason)."""
    if case.path != "/outcomes" or not isinstance(case.body, list):
        return
    now = datetime.now(UTC)
    for item in case.body:
        if isinstance(item, dict) and isinstance(item.get("observed_at"), str):
            try:
                moment = datetime.fromisoformat(item["observed_at"])
            except ValueError:
                continue
            if moment.tzinfo is not None and moment > now:
                years = 100 * ((moment.year - now.year) // 100 + 1)
                item["observed_at"] = item["observed_at"].replace(f"{moment.year:04d}", f"{moment.year - years:04d}", 1)


@schema.exclude(path_regex="^/docs").parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi_document(case: schemathesis.Case, live: Server) -> None:
    in_the_past(case)
    response = case.call(base_url=live.url, timeout=10)
    case.validate_response(response)  # every check, positive and negative data included, on every operation


@schema.include(path_regex="^/(predict|model)").parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_decisions_explanations_and_the_card_conform_to_the_document(case: schemathesis.Case, live_banded: Server) -> None:
    """The same against a model with a referral band and a card (`refer` answers, `GET /model/card` 200s)."""
    response = case.call(base_url=live_banded.url, timeout=10)
    case.validate_response(response)


# ---- byte-level fuzzing: whatever arrives, a 4xx (or a 2xx), never a 5xx or a hang -----------------

ROW = list(EXAMPLE.values())
VALID = {
    "json-object": json.dumps(EXAMPLE).encode(),
    "json-array": json.dumps([EXAMPLE, EXAMPLE]).encode(),
    "csv": (",".join(map(str, ROW)) + "\n").encode() * 2,
    "v2": json.dumps({"id": "1", "inputs": [{"name": "tumor", "shape": [1, 9], "datatype": "INT64", "data": ROW}]}).encode(),
    "outcomes": json.dumps([{"request_id": "fuzz-1", "outcome": "benign", "observed_at": "2026-11-02T14:30:00+01:00",
                             "source": "lab"}]).encode(),
}
#: Every POST route, under every content type a client may send (and the binary V2 framing).
ROUTES = ("/predict", "/predict?explain=true", "/predict/batch", "/predict/batch?explain=true", "/invocations",
          "/v2/models/oncology/infer", "/v2/models/oncology/versions/1.0.1/infer", "/outcomes")
CONTENT_TYPES = ("application/json", "text/csv", None, "application/octet-stream", "text/plain; charset=utf-8")
#: Bytes that are not UTF-8 (a lone continuation, an overlong '/', a surrogate, a start with nothing after)
#: and characters that str.isdigit() and int() take for digits.
NOT_UTF8 = [b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"\x80"]
DIGITS_TO_PYTHON = ["\u00b2", "\u0663", "\uff11", "\u1369"]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    body = bytearray(draw(st.sampled_from(list(VALID.values()))))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(body)))
        op = draw(st.sampled_from(["truncate", "flip", "insert", "unicode", "delete", "duplicate"]))
        if op == "truncate":
            del body[i:]
        elif op == "flip" and i < len(body):
            body[i] = draw(st.integers(0, 255))
        elif op == "insert":
            body[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "unicode":  # not UTF-8, or a digit only to Python, in a key, a value or a cell
            body[i:i] = draw(st.one_of(st.sampled_from(NOT_UTF8), st.sampled_from(DIGITS_TO_PYTHON).map(str.encode)))
        elif op == "delete":
            del body[i : i + draw(st.integers(1, 8))]
        else:
            body[i:i] = body[max(0, i - 12) : i]
    return bytes(body)


def _deep(n: int, kind: str) -> bytes:
    return {"array": b"[" * n + b"]" * n, "object": b'{"mitoses":' * n + b"1" + b"}" * n,
            "open": b"[{" * n, "v2": b'{"inputs":[{"name":"tumor","shape":[1,9],"datatype":"INT64","data":' + b"[" * n + b"1" + b"]" * n + b"}]}"}[kind]


odd_text = st.text(st.characters(codec=None, exclude_categories=[]), max_size=6)  # any code point (surrogates too)
bodies = st.one_of(
    st.binary(max_size=200),
    mutated(),
    st.builds(_deep, st.sampled_from([10, 1000, 100_000]), st.sampled_from(["array", "object", "open", "v2"])),
    st.sampled_from([b"1" + b"0" * 5000, b"1e999999", b"-1e-999999", b"1" * 5000 + b".5", b"NaN", b"Infinity"]).map(
        lambda n: json.dumps(EXAMPLE).encode().replace(b'"mitoses": 1', b'"mitoses": ' + n)),
    st.tuples(odd_text, odd_text).map(  # odd Unicode as key and as value, escaped and raw
        lambda kv: (json.dumps({**EXAMPLE, kv[0]: kv[1]}, ensure_ascii=bool(len(kv[0]) % 2))
                    .encode("utf-8", "surrogatepass"))),
    st.just(VALID["v2"].replace(b'"tumor"', b'"\\ud800"')),
)


@pytest.mark.parametrize("path", ROUTES)
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(ctype=st.sampled_from(CONTENT_TYPES), body=bodies,
       binary_header=st.one_of(st.none(), st.integers(-2, 400).map(str), st.just("x")))
@example(ctype="application/json", body=b'{"\xff": 1}', binary_header=None)  # the crashes of issue 9
@example(ctype="application/json", body=b'[{"a\xc0\xaf":1}]', binary_header=None)
@example(ctype="text/csv", body="5,1,1,1,2,\u00b2,3,1,1\n".encode(), binary_header=None)
@example(ctype=None, body=VALID["v2"].replace(b'"tumor"', b'"tu\xffmor"'), binary_header=None)
@example(ctype=None, body=_deep(1000, "object"), binary_header=None)  # found by this test: deep V2 was a 500
@example(ctype=None, body=_deep(1000, "v2"), binary_header=None)
def test_no_bytes_make_a_5xx_or_a_hang(live: Server, path: str, ctype: str | None, body: bytes, binary_header: str | None) -> None:
    headers = {} if ctype is None else {"content-type": ctype}
    if binary_header is not None and "/v2/" in path:
        headers["inference-header-content-length"] = binary_header
    response = httpx.post(live.url + path, content=body, headers=headers, timeout=30)  # a hang fails here
    assert response.status_code < 500, (path, ctype, body[:200], response.text[:500])
    assert response.headers["content-type"].startswith(("application/json", "application/octet-stream"))


def test_the_server_is_still_ready_and_logged_no_error_after_the_fuzzing(live: Server) -> None:
    """Runs after the fuzzing above (same module, same server)."""
    assert live.proc.poll() is None
    assert httpx.get(f"{live.url}/readyz", timeout=10).status_code == 200
    assert httpx.post(f"{live.url}/predict", json=EXAMPLE, timeout=10).status_code == 200
    marker = 987654321  # a bad value is echoed to its client, never written to the log
    refused = httpx.post(f"{live.url}/predict", json={**EXAMPLE, "mitoses": marker}, timeout=10)
    assert refused.status_code == 422 and str(marker) in refused.text
    logs = live.logs()
    assert str(marker) not in logs
    assert "unhandled error" not in logs and "Traceback" not in logs and '"status":5' not in logs
