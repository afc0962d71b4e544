"""Routes in process: every answer a client can get, in the one documented shape."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from oncology.settings import ServeSettings
from oncology.webservice.accesslog import AccessLog
from oncology.webservice.app import create_app
from oncology_model import Classifier, Tumor
from oncology_model.datamodel import FEATURES

from .conftest import EXAMPLE, MALIGNANT


def assert_error(response, status: int) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error", "status", "request_id", "details"}
    assert body["status"] == status and isinstance(body["error"], str) and body["error"]
    assert body["request_id"] == response.headers["x-request-id"]
    return body


def test_predict_answers_like_the_classifier(client: TestClient, trained_store: Path) -> None:
    clf = Classifier.from_uri(trained_store)
    for payload in (EXAMPLE, MALIGNANT):
        body = client.post("/predict", json=payload).json()
        tumor = Tumor(**payload)
        assert body == {"prediction": clf.predict(tumor).value, "probability": clf.predict_proba(tumor),
                        "decision": clf.predict_decision(tumor).value, "model_version": "1.0.1"}


def test_batch_keeps_the_order(client: TestClient, trained_store: Path) -> None:
    clf = Classifier.from_uri(trained_store)
    rows = [EXAMPLE, MALIGNANT, EXAMPLE]
    body = client.post("/predict/batch", json=rows).json()
    assert [r["prediction"] for r in body] == [p.value for p in clf.predict_batch(Tumor(**r) for r in rows)]
    assert client.post("/predict/batch", json=[]).json() == []


def test_a_bad_row_makes_the_batch_a_422_naming_index_and_field(client: TestClient) -> None:
    rows = [EXAMPLE, EXAMPLE, {**EXAMPLE, "mitoses": 11}, {k: v for k, v in EXAMPLE.items() if k != "bare_nuclei"}]
    body = assert_error(client.post("/predict/batch", json=rows), 422)
    assert [d["loc"] for d in body["details"]] == [["body", 2, "mitoses"], ["body", 3, "bare_nuclei"]]
    assert body["details"][0]["value"] == 11 and "less than or equal to 10" in body["details"][0]["reason"]


def test_every_bad_field_is_listed_with_location_value_and_reason(client: TestClient) -> None:
    payload = {**EXAMPLE, "clump_thickness": 0, "mitoses": "3", "bare_nuclei": 2.5, "extra": 1}
    body = assert_error(client.post("/predict", json=payload), 422)
    found = {tuple(d["loc"]): d["value"] for d in body["details"]}
    assert found == {("body", "clump_thickness"): 0, ("body", "mitoses"): "3", ("body", "bare_nuclei"): 2.5, ("body", "extra"): 1}


@pytest.mark.parametrize("body", [b"{", b"", b"[1,", b"\xff"])
def test_invalid_json_is_a_400(client: TestClient, body: bytes) -> None:
    assert_error(client.post("/predict", content=body, headers={"content-type": "application/json"}), 400)


@pytest.mark.parametrize("body", [b"[]", b"3", b"null", b'"x"'])
def test_json_that_is_not_a_tumor_is_a_422(client: TestClient, body: bytes) -> None:
    assert_error(client.post("/predict", content=body, headers={"content-type": "application/json"}), 422)


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", None])
def test_wrong_content_type_is_a_415(client: TestClient, ctype: str | None) -> None:
    headers = {"content-type": ctype} if ctype else {}
    assert_error(client.post("/predict", content=json.dumps(EXAMPLE), headers=headers), 415)


def test_content_type_parameters_are_accepted(client: TestClient) -> None:
    response = client.post("/predict", content=json.dumps(EXAMPLE), headers={"content-type": "application/json; charset=utf-8"})
    assert response.status_code == 200


def test_the_byte_limit_is_413_and_the_row_limit_422_as_documented(trained_store: Path) -> None:
    """Bytes over the limit: 413.  Rows over the batch limit (the document's `maxItems`, a schema limit): 422."""
    settings = ServeSettings(store=str(trained_store), max_body_bytes=1024, max_batch=3, max_batch_body_bytes=4096)
    with TestClient(create_app(settings)) as client:
        padded = json.dumps(EXAMPLE) + " " * 2000
        assert_error(client.post("/predict", content=padded, headers={"content-type": "application/json"}), 413)
        assert_error(client.post("/predict/batch", json=[EXAMPLE] * 30), 413)  # over the bytes before the rows
        body = assert_error(client.post("/predict/batch", json=[EXAMPLE] * 4), 422)  # over maxItems
        assert "at most 3 rows" in body["error"] and body["details"] == [
            {"loc": ["body"], "value": None, "reason": "more than 3 rows"}]
        csv = (",".join(map(str, EXAMPLE.values())) + "\n") * 4
        assert_error(client.post("/invocations", content=csv, headers={"content-type": "text/csv"}), 422)
        assert_error(client.post("/invocations", json=[EXAMPLE] * 4), 422)
        v2 = {"inputs": [{"name": "tumor", "shape": [4, 9], "datatype": "INT64", "data": list(EXAMPLE.values()) * 4}]}
        assert assert_error(client.post("/v2/models/oncology/infer", json=v2), 422)["details"][0]["loc"] == [
            "body", "inputs", 0, "shape"]
        assert client.post("/predict/batch", json=[EXAMPLE] * 3).status_code == 200
        doc = client.get("/openapi.json").json()
        assert doc["paths"]["/predict/batch"]["post"]["requestBody"]["content"]["application/json"]["schema"]["maxItems"] == 3
        shape = doc["components"]["schemas"]["V2Tensor"]["properties"]["shape"]
        assert shape["prefixItems"] == [{"type": "integer", "minimum": 0, "maximum": 3}, {"const": 9}]


def test_unknown_routes_and_methods_are_json_404_and_405(client: TestClient) -> None:
    assert_error(client.get("/nope"), 404)
    assert_error(client.delete("/predict"), 405)
    assert "POST" in client.get("/predict").headers["allow"]


def test_request_id_is_accepted_or_generated_and_returned(client: TestClient) -> None:
    assert client.post("/predict", json=EXAMPLE, headers={"x-request-id": "abc-123"}).headers["x-request-id"] == "abc-123"
    generated = client.post("/predict", json=EXAMPLE, headers={"x-request-id": "bad id\nwith newline"}).headers["x-request-id"]
    assert generated != "bad id\nwith newline" and len(generated) == 16


def test_model_route_shows_version_metadata_and_kpis(client: TestClient) -> None:
    body = client.get("/model").json()
    assert body["version"] == "1.0.1" and body["metadata"]["features"] == list(FEATURES)
    assert set(body["kpis"]) >= {"test", "cv"} and 0 < body["threshold"] < 1
    assert set(body) == {"version", "source", "threshold", "referral", "metadata", "kpis"}


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready", "model_version": "1.0.1"}


def test_a_store_without_the_model_never_becomes_ready(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="champion"), TestClient(create_app(ServeSettings(store=str(tmp_path)))):
        pass


def test_tokens_protect_prediction_routes_only(trained_store: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "tokens"
    token_file.write_text("# one per line\nfile-token\n")
    settings = ServeSettings(store=str(trained_store), api_tokens="env-token", api_tokens_file=token_file)  # type: ignore[arg-type]
    with TestClient(create_app(settings)) as client:
        body = assert_error(client.post("/predict", json=EXAMPLE), 401)
        assert "Bearer" in body["error"]
        assert client.post("/predict", json=EXAMPLE).headers["www-authenticate"] == "Bearer"
        assert_error(client.post("/predict", json=EXAMPLE, headers={"authorization": "Bearer wrong"}), 401)
        assert_error(client.post("/predict", json=EXAMPLE, headers={"authorization": "Basic env-token"}), 401)
        for token in ("env-token", "file-token"):
            assert client.post("/predict", json=EXAMPLE, headers={"authorization": f"Bearer {token}"}).status_code == 200
        assert_error(client.post("/predict/batch", json=[EXAMPLE]), 401)
        assert_error(client.post("/v2/models/oncology/infer", json={}), 401)
        for open_route in ("/healthz", "/readyz", "/metrics", "/v2/health/ready", "/model", "/openapi.json"):
            assert client.get(open_route).status_code == 200, open_route
        assert client.get("/openapi.json").json()["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_metrics_count_requests_predictions_and_the_model(client: TestClient) -> None:
    client.post("/predict", json=EXAMPLE)
    client.post("/predict/batch", json=[MALIGNANT, MALIGNANT])
    client.post("/predict", json={})
    text = client.get("/metrics").text
    assert 'oncology_http_requests_total{method="POST",route="/predict",status="200"} 1.0' in text
    assert 'oncology_http_requests_total{method="POST",route="/predict",status="422"} 1.0' in text
    assert 'oncology_http_request_duration_seconds_bucket{le="0.005",route="/predict",status="200"}' in text
    assert 'oncology_predictions_total{prediction="malignant"} 2.0' in text
    assert 'oncology_predictions_total{prediction="benign"} 1.0' in text
    assert 'oncology_model_info{version="1.0.1"} 1.0' in text
    assert 'oncology_model_reloads_total{result="initial"} 1.0' in text


def test_latency_histogram_counts_every_request_in_its_bucket(trained_store: Path) -> None:
    """The per-request counts are added to Prometheus once per turn of the loop: a scrape still reads every answer
    before it, each latency in the bucket prometheus_client would put it in."""
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from oncology.webservice.metrics import LATENCY_BUCKETS, Metrics

    metrics = Metrics()
    with TestClient(create_app(ServeSettings(store=str(trained_store)), metrics=metrics)) as client:
        for _ in range(7):
            client.post("/predict", json=MALIGNANT)
        text = client.get("/metrics").text
    assert 'oncology_http_requests_total{method="POST",route="/predict",status="200"} 7.0' in text
    assert 'oncology_http_request_duration_seconds_count{route="/predict",status="200"} 7.0' in text
    assert 'oncology_predictions_total{prediction="malignant"} 7.0' in text
    # the same latencies observed one by one by prometheus_client give the same buckets and sum
    reference = CollectorRegistry()
    histogram = Histogram("oncology_http_request_duration_seconds", "", ["route", "status"], buckets=LATENCY_BUCKETS,
                          registry=reference).labels("/predict", "200")
    some = [0.0001, 0.0005, 0.00050001, 0.001, 0.3, 2.5, 7.0]
    for seconds in some:
        metrics.observe("/predict", "POST", 200, seconds)  # no loop here: added at once
        histogram.observe(seconds)

    def samples(text: str) -> list[str]:
        return sorted(line for line in text.splitlines() if line.startswith("oncology_http_request_duration_seconds_"))

    ours = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in samples(metrics.exposition().decode())}
    theirs = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in samples(generate_latest(reference).decode())
              if "_created" not in line}
    served = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in samples(text)}
    for name, value in theirs.items():
        if name.endswith("_sum"):
            assert ours[name] == pytest.approx(served[name] + value), name
        else:
            assert ours[name] == served[name] + value, name


def test_access_log_lines_are_the_json_of_their_entries() -> None:
    import msgspec

    stream = io.BytesIO()
    log = AccessLog(stream)
    entries = [("req-1", "POST", "/predict", 200, 0.0012345, "1.0.1", "champion"),
               ("a:b.c", "GET", "unmatched", 404, 0.0, None, None),
               ("x", "PATCH", '/odd "route" é', 405, 1.5, 'v"\\ é\n', "candidate")]
    for entry in entries:
        log.request(*entry)
    log.flush()
    for line, (request_id, method, route, status, seconds, version, arm) in zip(stream.getvalue().splitlines(), entries,
                                                                               strict=True):
        ts = json.loads(line)["ts"]
        assert line == msgspec.json.encode({
            "ts": ts, "level": "info", "logger": "oncology.access", "msg": "request", "request_id": request_id,
            "method": method, "route": route, "status": status, "latency_ms": round(seconds * 1000, 3),
            "model_version": version, "arm": arm})


def test_access_log_lines_are_timed_at_the_requests_end_in_wall_clock_time() -> None:
    """A line's ``ts`` is its request's end (``end``, a `time.perf_counter` reading) as the wall clock read it, to the
    millisecond, however long before the flush the request ended, and each millisecond of a batch has its own."""
    from datetime import datetime

    stream = io.BytesIO()
    log = AccessLog(stream)
    now, wall = time.perf_counter(), time.time()
    ago = [2.5, 1.0, 0.2034, 0.2, 0.0]
    for seconds in ago:
        log.request("r", "POST", "/predict", 200, 0.001, "1.0.1", None, end=now - seconds)
    log.flush()
    stamps = [datetime.fromisoformat(json.loads(line)["ts"]).timestamp() for line in stream.getvalue().splitlines()]
    for stamp, seconds in zip(stamps, ago, strict=True):
        assert abs(stamp - (wall - seconds)) < 0.05, (stamp, wall - seconds)
    assert stamps[2] <= stamps[3] - 0.002 and stamps == sorted(stamps), stamps  # 3.4 ms apart: not one head for both


def test_access_log_latencies_are_written_as_json_writes_them_rounded_to_the_microsecond() -> None:
    """The log writes a latency's three decimals of milliseconds itself (cheaper than round() and an encoder): the same
    bytes as JSON of ``round(ms, 3)`` for every value, ties, whole numbers and zero included."""
    import random

    import msgspec

    rng = random.Random(20)
    latencies = [0.0, 0.0015, 0.0025, 1.5, 2.0, 0.0000005, 0.0000015, 1234.5678, 1e-9, 59.9999999]
    latencies += [rng.random() * 10 ** rng.uniform(-7, 3) for _ in range(5000)]
    latencies += [micro / 1e6 + 5e-10 for micro in range(0, 5000, 7)]  # half a nanosecond past each microsecond
    stream = io.BytesIO()
    log = AccessLog(stream)
    for seconds in latencies:
        log.request("r", "POST", "/predict", 200, seconds, "1.0.1", "champion")
    log.flush()
    written = [json.loads(line)["latency_ms"] for line in stream.getvalue().splitlines()]
    raw = [line.split(b'"latency_ms":')[1].split(b",")[0] for line in stream.getvalue().splitlines()]
    assert raw == [msgspec.json.encode(round(seconds * 1000, 3)) for seconds in latencies]
    assert written == [round(seconds * 1000, 3) for seconds in latencies]


def test_access_log_has_request_fields_and_never_feature_values(trained_store: Path) -> None:
    stream = io.BytesIO()
    log = AccessLog(stream)
    with TestClient(create_app(ServeSettings(store=str(trained_store)), access_log=log)) as client:
        odd = {**EXAMPLE, "clump_thickness": 7, "mitoses": 9}
        client.post("/predict", json=odd, headers={"x-request-id": "req-1"})
        client.post("/predict", json={**odd, "mitoses": 99}, headers={"x-request-id": "req-2"})
        client.get("/healthz")  # probes stay out of the log
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(e["request_id"], e["route"], e["status"], e["model_version"], e["arm"]) for e in lines] == [
        ("req-1", "/predict", 200, "1.0.1", "champion"), ("req-2", "/predict", 422, None, None)
    ]
    for entry in lines:
        assert set(entry) == {"ts", "level", "logger", "msg", "request_id", "method", "route", "status", "latency_ms",
                              "model_version", "arm"}
        assert entry["latency_ms"] > 0 and entry["ts"].endswith("+00:00")
        assert not any(feature in json.dumps(entry) for feature in FEATURES)


def test_openapi_documents_every_route_and_error(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    app_paths = {r.path for r in client.app.routes if hasattr(r, "methods")}  # type: ignore[attr-defined]
    assert app_paths == set(doc["paths"])
    predict = doc["paths"]["/predict"]["post"]
    assert set(predict["responses"]) == {"200", "400", "401", "405", "413", "415", "422", "503"}
    tumor = doc["components"]["schemas"]["Tumor"]
    assert list(tumor["properties"]) == list(FEATURES) and tumor["additionalProperties"] is False
    assert all(p["minimum"] == 1 and p["maximum"] == 10 and p["type"] == "integer" for p in tumor["properties"].values())
    assert doc["paths"]["/predict/batch"]["post"]["requestBody"]["content"]["application/json"]["schema"]["maxItems"] == 10_000


def test_docs_page_loads_swagger_ui_from_the_service(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200 and "/openapi.json" in page.text
    for asset in ("/docs/static/swagger-ui-bundle.js", "/docs/static/swagger-ui.css"):
        assert client.get(asset).status_code == 200


def test_sagemaker_contract_ping_and_invocations(client: TestClient) -> None:
    assert client.get("/ping").status_code == 200
    one = client.post("/invocations", json=EXAMPLE).json()
    assert one == client.post("/predict", json=EXAMPLE).json()
    many = client.post("/invocations", json=[EXAMPLE, MALIGNANT]).json()
    assert many == client.post("/predict/batch", json=[EXAMPLE, MALIGNANT]).json()
    csv = "\n".join(",".join(str(v) for v in row.values()) for row in (EXAMPLE, MALIGNANT)) + "\n"
    assert client.post("/invocations", content=csv, headers={"content-type": "text/csv"}).json() == many
    bad = assert_error(client.post("/invocations", content="5,1,1\n1,2,3,4,5,6,7,8,11\n", headers={"content-type": "text/csv"}), 422)
    assert [d["loc"] for d in bad["details"]] == [["body", 0], ["body", 1, "mitoses"]]


# ---- hostile input: a 4xx naming the problem, never a 500; values never in the log ---------------

BAD_KEYS = [b'{"\xff": 1}', b'{"a\xc0\xaf":1}']


def _json_routes(tumor: bytes) -> list[tuple[str, bytes]]:
    return [("/predict", tumor), ("/predict/batch", b"[" + tumor + b"]"), ("/invocations", tumor),
            ("/invocations", b"[" + tumor + b"]")]


@pytest.mark.parametrize("tumor", [*BAD_KEYS, b'{"mitoses": "\xff"}'])
def test_invalid_utf8_in_a_key_or_value_is_a_400_on_every_route(client: TestClient, tumor: bytes) -> None:
    for path, body in _json_routes(tumor):
        assert "UTF-8" in assert_error(client.post(path, content=body, headers={"content-type": "application/json"}), 400)["error"]
    v2 = b'{"inputs": [{"name": "tumor", "shape": [1, 9], "datatype": "INT64", "data": [1,1,1,1,1,1,1,1,1]}]}'
    for bad in (v2.replace(b'"tumor"', b'"tu\xffmor"'), v2.replace(b'"inputs"', tumor[1:-1] + b', "inputs"')):
        assert_error(client.post("/v2/models/oncology/infer", content=bad), 400)


def test_a_csv_cell_that_is_a_number_only_to_python_is_a_422(client: TestClient) -> None:
    response = client.post("/invocations", content="5,1,1,1,2,²,3,1,1\n".encode(), headers={"content-type": "text/csv"})
    body = assert_error(response, 422)
    assert body["details"] == [{"loc": ["body", 0, "bare_nuclei"], "value": "²", "reason": "must be a whole number 1-10"}]


def test_an_empty_csv_body_is_an_empty_batch_as_documented(client: TestClient) -> None:
    response = client.post("/invocations", content=b"", headers={"content-type": "text/csv"})
    assert response.status_code == 200 and response.json() == []


def test_integral_floats_are_accepted_as_json_schema_integers(client: TestClient) -> None:
    """pandas' to_dict() of a float column: 5.0 is the integer 5, as JSON Schema says; 5.5 is not."""
    floats = {k: float(v) for k, v in EXAMPLE.items()}
    expected = client.post("/predict", json=EXAMPLE).json()
    assert client.post("/predict", json=floats).json() == expected
    assert client.post("/predict/batch", json=[floats, EXAMPLE]).json() == [expected, expected]
    assert client.post("/invocations", json=floats).json() == expected
    for bad in (5.5, "5", True):
        body = assert_error(client.post("/predict", json={**floats, "clump_thickness": bad}), 422)
        assert body["details"][0]["loc"] == ["body", "clump_thickness"]


def test_a_repeated_key_is_a_422_naming_the_field_on_every_route(client: TestClient) -> None:
    tumor = json.dumps(EXAMPLE)[:-1].encode() + b', "mitoses": 9}'  # mitoses 1, then 9
    for path, body in _json_routes(tumor):
        error = assert_error(client.post(path, content=body, headers={"content-type": "application/json"}), 422)
        assert "mitoses" in error["error"]
        assert error["details"][0]["loc"][-1] == "mitoses" and error["details"][0]["value"] == [1, 9]


def test_invocations_415_names_every_accepted_type(client: TestClient) -> None:
    error = assert_error(client.post("/invocations", content=b"x", headers={"content-type": "text/plain"}), 415)
    assert "application/json" in error["error"] and "text/csv" in error["error"]


async def _call(app: object, path: str, headers: list[tuple[bytes, bytes]]) -> tuple[int, dict[bytes, bytes]]:
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": headers, "root_path": "", "scheme": "http", "server": ("t", 80), "client": ("c", 1)}
    await app(scope, receive, send)  # type: ignore[operator]
    start = sent[0]
    return start["status"], dict(start["headers"])  # type: ignore[return-value,arg-type]


def test_a_request_id_must_match_whole(client: TestClient) -> None:
    import asyncio

    app = client.app
    status, headers = asyncio.run(_call(app, "/healthz", [(b"x-request-id", b"abc-1")]))
    assert status == 200 and headers[b"x-request-id"] == b"abc-1"
    status, headers = asyncio.run(_call(app, "/healthz", [(b"x-request-id", b"abc-1\n")]))
    assert status == 200 and headers[b"x-request-id"] != b"abc-1\n" and len(headers[b"x-request-id"]) == 16


SECRET = 987654321  # stands for a patient's value: it must never reach a log line


def test_an_unhandled_error_is_a_500_whose_log_carries_no_request_value(
    trained_store: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    from oncology.webservice.core import Core

    def crash(self: object, route: str, request_id: str, classifier: object, rows: object, *more: object) -> None:
        rows = list(rows)  # type: ignore[call-overload]
        raise ValueError(f"cannot score {rows[0]} (marker {SECRET})")

    monkeypatch.setattr(Core, "results", crash)
    caplog.set_level("DEBUG")
    with TestClient(create_app(ServeSettings(store=str(trained_store))), raise_server_exceptions=False) as client:
        response = client.post("/predict", json={**EXAMPLE, "clump_thickness": 7}, headers={"x-request-id": "crash-1"})
        bad = client.post("/predict", json={**EXAMPLE, "mitoses": SECRET})  # a 422 may echo it to the client...
    body = assert_error(response, 500)
    assert str(SECRET) not in response.text and body["request_id"] == "crash-1"
    assert str(SECRET) in bad.text
    records = [r for r in caplog.records if r.name.startswith("oncology.webservice")]
    assert any("crash-1" in r.getMessage() and "ValueError" in r.getMessage() for r in records)
    assert all(r.exc_info is None and r.exc_text is None for r in records)
    out, err = capfd.readouterr()
    for text in (caplog.text, out, err, *(r.getMessage() for r in caplog.records)):  # ...the logs never
        assert str(SECRET) not in text and "(5, 1, 1" not in text and "(7, 1, 1" not in text


@pytest.mark.parametrize("feature", FEATURES)
def test_a_score_of_11_in_one_field_is_a_422_naming_it_on_every_route(client: TestClient, feature: str) -> None:
    row = {**EXAMPLE, feature: 11}
    values = [row[f] for f in FEATURES]
    answers = {
        "/predict": (client.post("/predict", json=row), ["body", feature]),
        "/predict?explain=true": (client.post("/predict?explain=true", json=row), ["body", feature]),
        "/predict/batch": (client.post("/predict/batch", json=[EXAMPLE, row]), ["body", 1, feature]),
        "/invocations object": (client.post("/invocations", json=row), ["body", feature]),
        "/invocations array": (client.post("/invocations", json=[row]), ["body", 0, feature]),
        "/invocations csv": (client.post("/invocations", content=",".join(map(str, values)),
                                         headers={"content-type": "text/csv"}), ["body", 0, feature]),
        "v2 infer": (client.post("/v2/models/oncology/infer", json={"inputs": [
            {"name": "tumor", "shape": [1, 9], "datatype": "INT64", "data": values}]}),
            ["body", "inputs", 0, "data", FEATURES.index(feature)]),
    }
    for route, (response, loc) in answers.items():
        body = assert_error(response, 422)
        assert [d["loc"] for d in body["details"]] == [loc], route
        assert body["details"][0]["value"] in (11, "11"), route


@pytest.mark.parametrize("body", [b"", b" \r\n\t"])
def test_an_empty_json_body_is_a_400_that_says_the_body_is_empty(client: TestClient, body: bytes) -> None:
    """Not a JSON parser's "EOF while parsing a value": every route that takes JSON says what is missing."""
    json_type = {"content-type": "application/json"}
    routes = {
        "/predict": json_type, "/predict?explain=true": json_type, "/predict/batch": json_type,
        "/invocations": json_type, "/v2/models/oncology/infer": json_type,
        "/v2/models/oncology/versions/1.0.1/infer": {},  # V2 clients send JSON without a content type
    }
    for route, headers in routes.items():
        error = assert_error(client.post(route, content=body, headers=headers), 400)["error"]
        assert error.startswith("the body is empty: send a JSON" if not body else
                                "the body holds only whitespace: send a JSON"), (route, error)
        assert "EOF" not in error and "truncated" not in error, (route, error)
    binary = client.post("/v2/models/oncology/infer", content=body + b"\x01" * 8,
                         headers={"inference-header-content-length": str(len(body))})
    assert assert_error(binary, 400)["error"].startswith("the inference header ")


def test_metrics_count_a_405_under_its_route_and_the_docs_assets_under_a_docs_label(client: TestClient) -> None:
    """Only a path no route has is `unmatched`: a wrong method is counted under the route that exists, Swagger UI's
    assets (found or not) under `/docs/static` (one label for all of them: the metric's labels stay bounded)."""
    assert_error(client.get("/predict"), 405)
    assert_error(client.put("/v2/models/oncology/infer"), 405)
    assert client.get("/docs").status_code == 200
    for asset in ("/docs/static/swagger-ui-bundle.js", "/docs/static/swagger-ui.css"):
        assert client.get(asset).status_code == 200
    assert_error(client.get("/docs/static/no-such-asset.js"), 404)
    assert_error(client.get("/no-such-route"), 404)
    counted = {
        line.rpartition(" ")[0]: float(line.rpartition(" ")[2])
        for line in client.get("/metrics").text.splitlines() if line.startswith("oncology_http_requests_total{")
    }
    assert counted == {
        'oncology_http_requests_total{method="GET",route="/predict",status="405"}': 1,
        'oncology_http_requests_total{method="PUT",route="/v2/models/{model_name}/infer",status="405"}': 1,
        'oncology_http_requests_total{method="GET",route="/docs",status="200"}': 1,
        'oncology_http_requests_total{method="GET",route="/docs/static",status="200"}': 2,
        'oncology_http_requests_total{method="GET",route="/docs/static",status="404"}': 1,
        'oncology_http_requests_total{method="GET",route="unmatched",status="404"}': 1,
    }


def test_the_answers_and_the_document_share_one_definition_of_a_prediction(client: TestClient) -> None:
    """`schemas.PredictionOut` encodes every REST and SageMaker answer and is the document's schema of it: the answers
    decode strictly into it (types, enums, 0 <= probability <= 1, no field it lacks), explained or not."""
    import msgspec

    from oncology.webservice import schemas

    doc = client.get("/openapi.json").json()["components"]["schemas"]
    _, derived = msgspec.json.schema_components([schemas.PredictionOut], ref_template="#/components/schemas/{name}")
    for name in ("PredictionOut", "Explanation", "Contributions"):
        assert {k: v for k, v in doc[name].items() if k not in ("description", "examples")} == {
            k: v for k, v in derived[name].items() if k != "description"}, name
    strict = msgspec.json.Decoder(list[msgspec.defstruct("Strict", [], bases=(schemas.PredictionOut,),
                                                           forbid_unknown_fields=True)])
    csv = ",".join(map(str, MALIGNANT.values()))
    answers = [
        b"[" + client.post("/predict", json=EXAMPLE).content + b"]",
        b"[" + client.post("/predict?explain=true", json=MALIGNANT).content + b"]",
        client.post("/predict/batch", json=[EXAMPLE, MALIGNANT]).content,
        client.post("/predict/batch?explain=true", json=[EXAMPLE, MALIGNANT]).content,
        client.post("/invocations", json=[EXAMPLE]).content,
        client.post("/invocations", content=csv, headers={"content-type": "text/csv"}).content,
    ]
    for answer in answers:
        for result in strict.decode(answer):
            assert result.model_version == "1.0.1" and result.prediction in ("benign", "malignant")
            if result.explanation is not msgspec.UNSET:
                explanation = result.explanation
                total = explanation.baseline + sum(msgspec.structs.asdict(explanation.contributions).values())
                assert abs(total - explanation.log_odds) < 1e-9
    assert b'"explanation"' not in answers[0] and b'"explanation"' in answers[1]
