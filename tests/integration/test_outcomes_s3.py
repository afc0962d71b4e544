"""Outcomes recorded through two replicas of the service on one real S3 store (SeaweedFS), by clients
that are real processes racing with conflicting outcomes for the same request ids: for each id exactly
one outcome wins, whatever replica took it; every different one is a 409 with a conflict record."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from racing import START_LINE, start_together
from webservice.conftest import running_server

from oncology.outcomes import CONFLICTS_PREFIX, PREFIX, OutcomeBook
from oncology_model.storage import open_store
from support import S3

pytestmark = pytest.mark.s3

CLIENT = """
import json, sys, httpx
url, outcome, source, ids = sys.argv[1], sys.argv[3], sys.argv[4], sys.argv[5].split(",")
client = httpx.Client(timeout=30)
client.get(url + "/readyz")  # connected: at the line
""" + START_LINE + """
for request_id in ids:
    record = {"request_id": request_id, "outcome": outcome, "observed_at": "2026-11-02T14:30:00+01:00", "source": source}
    response = client.post(url + "/outcomes", json=[record])
    print(json.dumps({"id": request_id, "status": response.status_code, "body": response.json()}), flush=True)
client.close()
"""


def race(clients: list[tuple[str, str, str, list[str]]], go: Path) -> list[list[dict[str, Any]]]:
    """One process per client (url, outcome, source, ids in its order), all let go at once."""
    return start_together(CLIENT, [[url, str(go), outcome, source, ",".join(ids)] for url, outcome, source, ids in clients],
                          go, timeout=300)


def test_conflicting_outcomes_through_two_replicas_one_wins_per_request_id(
        s3: S3, trained_store: Path, tmp_path: Path) -> None:
    uri = f"s3://{s3.bucket}/outcomes-{uuid.uuid4().hex[:8]}"
    env = {**s3.env(), "ONCOLOGY_STORE": str(trained_store), "ONCOLOGY_OUTCOMES": "true",
           "ONCOLOGY_OUTCOMES_STORE": uri}
    ids = [f"race-{i:03d}" for i in range(40)]
    with ExitStack() as stack:
        replicas = [stack.enter_context(running_server(tmp_path, env)) for _ in (0, 1)]
        # two clients per outcome, each outcome through both replicas, all in the same order: they post each id
        # at about the same instant (the race is the point)
        plan = [(replicas[k % 2].url, outcome, f"client-{k}", ids)
                for k, outcome in enumerate(["benign", "malignant", "malignant", "benign"])]
        results = race(plan, tmp_path / "go")
        logs = "".join(r.logs() for r in replicas)

    store = open_store(uri)  # the s3 fixture set this process's AWS_* variables
    book = OutcomeBook(store)
    by_id: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for (_, outcome, _, _), lines in zip(plan, results):
        assert len(lines) == len(ids)
        for line in lines:
            by_id[line["id"]].append((outcome, line))
    conflict_keys = set(store.list(CONFLICTS_PREFIX + "/"))
    refused = 0
    for request_id, answers in by_id.items():
        created = [(o, a) for o, a in answers if a["status"] == 200 and a["body"]["results"][0]["status"] == "created"]
        assert len(created) == 1, (request_id, answers)  # exactly one winner per id
        winner = created[0][0]
        claim = book.read_claim(request_id)
        assert claim is not None and claim.outcome == winner
        for outcome, answer in answers:
            if outcome == winner and answer is not created[0][1]:
                assert answer["status"] == 200 and answer["body"]["results"][0]["status"] == "unchanged", answer
            elif outcome != winner:
                assert answer["status"] == 409, answer
                refused += 1
                (detail,) = answer["body"]["details"]
                key = next(k for k in conflict_keys if k in detail["reason"])
                record = json.loads(store.read(key))
                assert record["kept"]["outcome"] == winner and record["refused"]["outcome"] == outcome
    assert refused == 2 * len(ids) and len(conflict_keys) == refused  # every loser kept, once
    written = [json.loads(line) for key in store.list(PREFIX + "/") for line in store.read(key).splitlines()]
    assert {r["request_id"] for r in written} == set(ids)
    for r in written:  # the data files hold only the winners
        assert r["outcome"] == book.read_claim(r["request_id"]).outcome  # type: ignore[union-attr]
    assert "unhandled error" not in logs and "Traceback" not in logs


def test_the_check_reads_an_s3_store_with_duckdb(s3: S3) -> None:
    """The join runs where the files are: DuckDB's httpfs (from duckdb-ext-httpfs, no download) on SeaweedFS."""
    from datetime import timedelta

    from oncology.monitoring.outcomes import check, orphans
    from oncology.settings import OutcomeSettings
    from outcome_support import T0, Logged, post, write_log

    uri = f"s3://{s3.bucket}/check-{uuid.uuid4().hex[:8]}"
    store = open_store(uri)
    logged = [Logged(f"s{i}", "1.0.1", T0 + timedelta(days=i), 0.9 if i % 2 else 0.1) for i in range(40)]
    write_log(store, logged)
    post(store, [(p.request_id, "malignant" if p.probability > 0.5 else "benign", p.ts + timedelta(days=30))
                 for p in logged])
    result = check(store, OutcomeSettings(store=uri))
    assert result.status == "ok" and result.report["labelled"] == 40
    assert store.exists(result.key) and store.exists(result.table_key)  # type: ignore[arg-type]
    assert orphans(store, ["s1", "nobody"]) == ["nobody"]
