"""POST /outcomes as a client reads its promise (the OpenAPI document): recorded once per request id,
the same outcome again a no-op, a different one a 409 kept as a conflict record, bad input a 422 that
names the record and field with nothing written."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from oncology.outcomes import CONFLICTS_PREFIX, PREFIX, OutcomeBook
from oncology.settings import ServeSettings
from oncology.webservice.app import create_app
from oncology_model.storage import LocalStore


def outcome(request_id: str = "req-1", value: Any = "malignant", observed_at: str = "2026-11-02T14:30:00+01:00",
            source: str = "pathology-lab-1") -> dict[str, Any]:
    return {"request_id": request_id, "outcome": value, "observed_at": observed_at, "source": source}


@pytest.fixture
def outcome_store(tmp_path: Path) -> Path:
    return tmp_path / "outcomes-store"


@pytest.fixture
def client(trained_store: Path, outcome_store: Path) -> Iterator[TestClient]:
    settings = ServeSettings(store=str(trained_store), outcomes=True, outcomes_store=str(outcome_store))
    with TestClient(create_app(settings)) as c:
        yield c


def files(store: Path, prefix: str) -> list[str]:
    return LocalStore(store).list(prefix + "/")


def data_lines(store: Path) -> list[dict[str, Any]]:
    s = LocalStore(store)
    return [json.loads(line) for key in s.list(PREFIX + "/") for line in s.read(key).splitlines()]


def test_an_outcome_is_recorded_once_and_the_same_again_is_a_no_op(client: TestClient, outcome_store: Path) -> None:
    first = client.post("/outcomes", json=[outcome("a", "malignant"), outcome("b", 2)])
    assert first.status_code == 200, first.text
    assert first.json() == {"created": 2, "unchanged": 0, "results": [
        {"request_id": "a", "status": "created"}, {"request_id": "b", "status": "created"}]}
    again = client.post("/outcomes", json=[outcome("a", 4, source="another-export"), outcome("b", "benign")])
    assert again.status_code == 200, again.text
    assert again.json()["unchanged"] == 2 and again.json()["created"] == 0
    claims = {r.request_id: r for r in map(OutcomeBook(LocalStore(outcome_store)).read_claim, ["a", "b"]) if r}
    assert claims["a"].outcome == "malignant" and claims["a"].source == "pathology-lab-1"  # the first kept
    assert claims["b"].outcome == "benign"  # the UCI code 2
    assert claims["a"].observed_at == "2026-11-02T13:30:00.000+00:00"  # in UTC
    rows = data_lines(outcome_store)
    assert {r["request_id"] for r in rows} == {"a", "b"}
    assert set(rows[0]) == {"request_id", "outcome", "observed_at", "source", "received_at"}  # nothing else kept
    assert all(k.startswith(f"{PREFIX}/date=2026-11-02/") for k in files(outcome_store, PREFIX))


def test_a_different_outcome_is_refused_with_409_kept_as_a_conflict_and_never_overwrites(
        client: TestClient, outcome_store: Path) -> None:
    assert client.post("/outcomes", json=[outcome("a", "malignant")]).status_code == 200
    refused = client.post("/outcomes", json=[outcome("c", "benign"), outcome("a", "benign")])
    assert refused.status_code == 409, refused.text
    body = refused.json()
    assert body["status"] == 409 and "1 outcome(s)" in body["error"] and "other 1 record(s) were accepted" in body["error"]
    (detail,) = body["details"]
    assert detail["loc"] == ["body", 1, "outcome"] and detail["value"] == "benign"
    assert "already has outcome malignant" in detail["reason"] and "benign" in detail["reason"]
    (conflict_key,) = files(outcome_store, CONFLICTS_PREFIX)
    assert conflict_key in detail["reason"]
    conflict = json.loads(LocalStore(outcome_store).read(conflict_key))
    assert conflict["kept"]["outcome"] == "malignant" and conflict["refused"]["outcome"] == "benign"
    book = OutcomeBook(LocalStore(outcome_store))
    assert book.read_claim("a").outcome == "malignant"  # type: ignore[union-attr]
    assert book.read_claim("c").outcome == "benign"  # type: ignore[union-attr]  # the good record of the batch


def test_two_outcomes_for_one_request_id_in_one_batch_conflict(client: TestClient) -> None:
    response = client.post("/outcomes", json=[outcome("x", "benign"), outcome("x", "benign"), outcome("x", 4)])
    assert response.status_code == 409
    assert [d["loc"] for d in response.json()["details"]] == [["body", 2, "outcome"]]


def test_a_request_id_with_no_logged_prediction_is_accepted(client: TestClient) -> None:
    """The service keeps no index of its predictions: an orphan is accepted; the outcome check reports it."""
    assert client.post("/outcomes", json=[outcome("never-predicted")]).status_code == 200


@pytest.mark.parametrize(("record", "field", "reason"), [
    (outcome(value="cancer"), "outcome", "Input should be"),
    (outcome(value=3), "outcome", "Input should be"),
    (outcome(value="2"), "outcome", "Input should be"),  # a string is not the code
    (outcome(observed_at="2026-11-02T14:30:00"), "observed_at", "timezone"),
    (outcome(observed_at="2026-11-02"), "observed_at", "datetime"),
    (outcome(observed_at="yesterday"), "observed_at", "datetime"),
    (outcome(observed_at=(datetime.now(UTC) + timedelta(days=2)).isoformat()), "observed_at", "in the future"),
    (outcome(request_id="a b"), "request_id", "pattern"),
    (outcome(request_id=""), "request_id", "pattern"),
    (outcome(source=""), "source", "pattern"),
    ({**outcome(), "patient_name": "Jane Doe"}, "patient_name", "Extra inputs"),  # no patient data beyond the join's
    ({k: v for k, v in outcome().items() if k != "source"}, "source", "Field required"),
])
def test_a_bad_record_is_a_422_naming_it_and_nothing_is_written(
        client: TestClient, outcome_store: Path, record: dict[str, Any], field: str, reason: str) -> None:
    response = client.post("/outcomes", json=[outcome("good"), record])
    assert response.status_code == 422, response.text
    locs = [d["loc"] for d in response.json()["details"]]
    assert ["body", 1, field] in locs
    assert any(reason in d["reason"] for d in response.json()["details"]), response.text
    assert not (outcome_store / "monitoring").exists()  # not even the good record


@pytest.mark.parametrize(("body", "status"), [
    (b"{not json", 400), (b'{"request_id": "a"}', 422), (b"\xff", 400), (b"[" * 100_000, 400),
    (b'[{"request_id": "a", "request_id": "b", "outcome": 4, "observed_at": "2026-11-02T14:30:00Z", "source": "l"}]', 422),
])
def test_malformed_bodies_are_4xx(client: TestClient, body: bytes, status: int) -> None:
    response = client.post("/outcomes", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text


def test_the_body_is_bounded(trained_store: Path, tmp_path: Path) -> None:
    settings = ServeSettings(store=str(trained_store), outcomes=True, outcomes_store=str(tmp_path), max_batch=3,
                             max_batch_body_bytes=2048)
    with TestClient(create_app(settings)) as c:
        too_many = c.post("/outcomes", json=[outcome(f"r{i}") for i in range(4)])
        assert too_many.status_code == 422 and "at most 3 records" in too_many.json()["error"]
        too_big = c.post("/outcomes", json=[outcome("r", source="s" * 90)] * 30)
        assert too_big.status_code == 413
    assert not (tmp_path / "monitoring").exists()


def test_the_same_auth_as_the_prediction_routes(trained_store: Path, tmp_path: Path) -> None:
    settings = ServeSettings(store=str(trained_store), outcomes=True, outcomes_store=str(tmp_path),
                             api_tokens="s3cret")  # type: ignore[arg-type]
    with TestClient(create_app(settings)) as c:
        assert c.post("/outcomes", json=[outcome()]).status_code == 401
        assert c.post("/outcomes", json=[outcome()], headers={"authorization": "Bearer wrong"}).status_code == 401
        assert not (tmp_path / "monitoring").exists()
        assert c.post("/outcomes", json=[outcome()], headers={"authorization": "Bearer s3cret"}).status_code == 200


def test_intake_is_off_unless_turned_on(trained_store: Path) -> None:
    with TestClient(create_app(ServeSettings(store=str(trained_store)))) as c:
        response = c.post("/outcomes", json=[outcome()])
    assert response.status_code == 404 and "ONCOLOGY_OUTCOMES" in response.json()["error"]


def test_an_unwritable_store_is_a_503_and_the_retry_records_it(trained_store: Path, tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the store's folder should be")
    settings = ServeSettings(store=str(trained_store), outcomes=True, outcomes_store=str(blocked))
    with TestClient(create_app(settings)) as c:
        response = c.post("/outcomes", json=[outcome()])
        assert response.status_code == 503 and "retry is safe" in response.json()["error"]
        # the operator's log says where and why, not only "StoreError"
        logged = [r.getMessage() for r in caplog.records if "could not be recorded" in r.getMessage()]
        assert len(logged) == 1 and f"{blocked}/" in logged[0] and "Not a directory" in logged[0], logged
        unread = [r.getMessage() for r in caplog.records if "newest outcome check cannot be read" in r.getMessage()]
        assert unread and all(f"{blocked}/" in m and "Not a directory" in m for m in unread), unread
        blocked.unlink()
        assert c.post("/outcomes", json=[outcome()]).json()["created"] == 1


def test_outcomes_are_counted_for_the_alert_rules(client: TestClient) -> None:
    client.post("/outcomes", json=[outcome("m", 4)])
    client.post("/outcomes", json=[outcome("m", 4), outcome("m", 2)])
    text = client.get("/metrics").text
    for result, n in (("created", 1), ("unchanged", 1), ("conflict", 1)):
        assert f'oncology_outcomes_total{{result="{result}"}} {n}.0' in text


def test_the_route_and_its_answers_are_documented(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    operation = doc["paths"]["/outcomes"]["post"]
    assert {"200", "401", "404", "409", "413", "422", "503"} <= set(operation["responses"])
    schema = doc["components"]["schemas"]["OutcomeIn"]
    assert set(schema["required"]) == {"request_id", "outcome", "observed_at", "source"}
    assert schema["additionalProperties"] is False
    assert schema["properties"]["outcome"]["enum"] == ["benign", "malignant", 2, 4]
    assert schema["properties"]["observed_at"]["format"] == "date-time"


def test_the_example_of_the_outcomes_page_is_recorded_as_it_shows(client: TestClient) -> None:
    """docs/outcomes.md step 3, as a reader copies it: its record is accepted and the answer is the one shown
    (an `observed_at` later than today would be a 422: outcomes from the future are refused)."""
    import re

    page = (Path(__file__).parents[2] / "docs" / "outcomes.md").read_text(encoding="utf-8")
    (block,) = [b for b in re.findall(r"```sh\n(.*?)```", page, re.S) if "/outcomes\n" in b and "curl" in b]
    body = re.search(r"-d '(.*?)'", block, re.S)
    shown = re.search(r"^\s*# (\{.*\})$", block, re.M)
    assert body and shown, block
    answer = client.post("/outcomes", content=body.group(1), headers={"content-type": "application/json"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == json.loads(shown.group(1))
