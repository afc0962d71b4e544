"""`oncology release judge` over the prediction log a real server wrote: hold, promote, roll back with the
evidence in the alias history, and --replay (acting on nothing)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx
from webservice.conftest import dataset_rows, running_server

from oncology.release import plan
from oncology.settings import GateSettings
from oncology_model import FEATURES
from oncology_model.registry import ModelRegistry
from oncology_model.release import current_plan
from oncology_model.storage import LocalStore
from support import copy_versions

ONCOLOGY = str(Path(sys.executable).parent / "oncology")


def oncology(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ONCOLOGY_")}
    return subprocess.run([ONCOLOGY, *args], env={**base, **env}, capture_output=True, text=True, timeout=120)


def judge(store: Path, *args: str, **env: str) -> dict[str, object]:
    done = oncology("release", "judge", "--json", "--store", str(store), *args, **env)
    assert done.returncode == 0, done.stderr
    value: dict[str, object] = json.loads(done.stdout)
    return value


def traffic(store: Path, tmp_path: Path, prefix: str) -> list[str]:
    """Every row of the dataset, one request each, through a real server with the prediction log on; the server
    is stopped (its log written) on return."""
    env = {"ONCOLOGY_STORE": str(store), "ONCOLOGY_PREDICTION_LOG": "true", "ONCOLOGY_ACCESS_LOG": "false",
           "ONCOLOGY_PREDICTION_LOG_FLUSH_SECONDS": "3600"}
    ids = []
    with running_server(tmp_path, env) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        for i, row in enumerate(dataset_rows()):
            ids.append(f"{prefix}-{i}")
            response = client.post("/predict", json=dict(zip(FEATURES, row)), headers={"x-request-id": ids[-1]})
            assert response.status_code == 200, response.text
    return ids


def test_a_canary_holds_on_no_data_then_is_promoted_to_champion_with_its_evidence(
        trained_store: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    copy_versions(trained_store, LocalStore(store), {"1.0.2": None})
    registry = ModelRegistry(LocalStore(store))
    plan.start(registry, "1.0.2", "canary", (0.5,), GateSettings(store=str(store)))
    settings = {"ONCOLOGY_RELEASE_MIN_REQUESTS": "100"}
    held = judge(store, **settings)
    assert held["verdict"] == "hold" and "acted" not in held  # no traffic yet: never promoted
    shown = oncology("release", "judge", "--store", str(store), "--dry-run", **settings, COLUMNS="200")
    assert shown.returncode == 0 and "verdict: hold" in shown.stdout, shown.stderr
    assert "None" not in shown.stdout and "–" in shown.stdout  # no requests: no share, no latency, shown as such
    assert current_plan(registry.state()) is not None
    traffic(store, tmp_path, "aa")
    decided = judge(store, **settings)
    assert decided["verdict"] == "promote", decided["reasons"]
    arms = decided["arms"]
    assert isinstance(arms, dict)
    assert arms["champion"]["requests"] + arms["candidate"]["requests"] == len(dataset_rows())
    assert min(arms["champion"]["requests"], arms["candidate"]["requests"]) >= 100
    state = registry.state()
    assert state["aliases"] == {"champion": "1.0.2"} and current_plan(state) is None
    last = state["history"][-1]
    assert (last["alias"], last["action"], last["to"]) == ("champion", "promote", "1.0.2")
    assert last["evidence"]["tests"]["prediction_mix"]["p"] > 0.01
    shown = oncology("models", "history", "--store", str(store))
    assert shown.returncode == 0 and "promote on [" in shown.stdout and "candidate 1.0.2 n=" in shown.stdout


def test_a_judge_that_finds_no_prediction_log_says_where_it_looked_and_what_writes_it(two_versions: Path) -> None:
    """A service started without ONCOLOGY_PREDICTION_LOG: "0 requests, fewer than needed" alone would hold the
    release until its deadline rolls it back, with nothing to say why."""
    plan.start(ModelRegistry(LocalStore(two_versions)), "1.0.2", "canary", (0.5,), GateSettings(store=str(two_versions)))
    held = judge(two_versions)
    assert held["verdict"] == "hold" and held["window"]["log_files"] == 0  # type: ignore[index]
    hint = (f"no prediction log in {two_versions}/monitoring/predictions/ for this window (nor compacted parts in "
            f"{two_versions}/monitoring/predictions-parquet/)")
    assert [r for r in held["reasons"] if hint in r and "ONCOLOGY_PREDICTION_LOG=true" in r], held["reasons"]  # type: ignore[attr-defined]
    shown = oncology("release", "judge", "--store", str(two_versions), "--dry-run", COLUMNS="300")
    assert hint in " ".join(shown.stdout.split()), shown.stdout
    today = datetime.now(UTC)  # a log there, thin: the reason is the thin arm alone
    day = LocalStore(two_versions).root / f"monitoring/predictions/date={today:%Y-%m-%d}"
    day.mkdir(parents=True)
    (day / "w-00000001.jsonl.gz").write_bytes(gzip.compress(b""))
    thin = judge(two_versions)
    assert thin["verdict"] == "hold" and not [r for r in thin["reasons"] if "no prediction log" in r], thin  # type: ignore[attr-defined]


def test_a_canary_the_service_does_not_follow_is_named_with_the_likely_cause(two_versions: Path, tmp_path: Path) -> None:
    """A service pinned to a version (ONCOLOGY_MODEL=1.0.1) ignores the release: its requests are all the
    champion's, and "fewer than the 600 needed" alone would hold the release until its deadline rolls it back."""
    plan.start(ModelRegistry(LocalStore(two_versions)), "1.0.2", "canary", (0.5,), GateSettings(store=str(two_versions)))

    def send(model: str, n: int) -> None:
        env = {"ONCOLOGY_STORE": str(two_versions), "ONCOLOGY_MODEL": model, "ONCOLOGY_PREDICTION_LOG": "true",
               "ONCOLOGY_ACCESS_LOG": "false", "ONCOLOGY_PREDICTION_LOG_FLUSH_SECONDS": "3600"}
        with running_server(tmp_path / model, env) as server, httpx.Client(base_url=server.url, timeout=10) as client:
            for row in dataset_rows()[:n]:
                assert client.post("/predict", json=dict(zip(FEATURES, row))).status_code == 200

    (tmp_path / "1.0.1").mkdir()
    send("1.0.1", 40)
    held = judge(two_versions)
    hint = "the candidate 1.0.2 has no request among the 40 of the champion logged in this step, where about 40"
    assert held["verdict"] == "hold"
    assert [r for r in held["reasons"] if hint in r and "ONCOLOGY_MODEL" in r], held["reasons"]  # type: ignore[attr-defined]
    (tmp_path / "champion").mkdir()
    send("champion", 40)  # a service that follows the release: the candidate answers about half
    thin = judge(two_versions)
    assert thin["verdict"] == "hold" and not [r for r in thin["reasons"] if "no request among" in r], thin  # type: ignore[attr-defined]


def test_a_shadow_that_calls_malignant_tumours_benign_is_rolled_back_naming_the_requests(
        trained_store: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    copy_versions(trained_store, LocalStore(store), {"1.0.2": 0.95})  # the same model, its threshold at 0.95
    registry = ModelRegistry(LocalStore(store))
    plan.start(registry, "1.0.2", "shadow", (1.0,), GateSettings(store=str(store)))
    ids = traffic(store, tmp_path, "sh")
    # what the log says, request by request: the champion's malignant answers the candidate scored benign
    lines = {}
    for path in store.glob("monitoring/predictions/date=*/*.jsonl.gz"):
        for raw in gzip.decompress(path.read_bytes()).splitlines():
            line = json.loads(raw)
            lines[(line["request_id"], line.get("arm", "champion"))] = line["prediction"]  # champion: left out
    costly = sorted(i for i in ids if lines[(i, "champion")] == "malignant" and lines[(i, "shadow")] == "benign")
    assert costly, "the 0.95 threshold should turn some malignant answers benign"
    settings = {"ONCOLOGY_RELEASE_MIN_REQUESTS": "100", "ONCOLOGY_RELEASE_MAX_COSTLY_SHARE": "0.001"}

    # replay: what the judge would decide on the logged window; it moves nothing
    replayed = judge(store, "--replay", "2000-01-01T00:00:00+00:00", "2100-01-01T00:00:00+00:00", **settings)
    assert replayed["verdict"] == "rollback" and "acted" not in replayed
    assert current_plan(registry.state()) is not None
    aa = judge(store, "--replay", "2000-01-01T00:00:00+00:00", "2100-01-01T00:00:00+00:00", "--aa", **settings)
    assert aa["verdict"] == "promote", aa["reasons"]  # the champion against itself: no false alarm

    decided = judge(store, **settings)
    assert decided["verdict"] == "rollback"
    paired = decided["paired"]
    assert isinstance(paired, dict)
    assert paired["rows"] == len(ids) and paired["costly"] == len(costly)
    assert paired["costly_request_ids"] == costly[:50]
    state = registry.state()
    assert state["aliases"] == {"champion": "1.0.1"} and current_plan(state) is None
    last = state["history"][-1]
    assert (last["alias"], last["action"], last["from"]) == ("candidate", "rollback", "1.0.2")
    assert last["evidence"]["paired"]["costly_request_ids"] == costly[:50]
    shown = oncology("models", "history", "--store", str(store), "--json")  # the whole evidence, as a script reads it
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)[-1] == last


def test_replay_refuses_a_backwards_window(two_versions: Path) -> None:
    done = oncology("release", "judge", "--store", str(two_versions), "--replay", "2026-12-05T10:00:00", "2026-12-05T09:00:00")
    assert done.returncode == 2 and "must come after FROM" in done.stderr
    done = oncology("release", "judge", "--store", str(two_versions), "--replay", "yesterday", "2026-12-05T09:00:00")
    assert done.returncode == 2 and "'yesterday' is not an ISO 8601 time" in done.stderr


def test_the_judge_loops_until_stopped_and_a_failed_pass_does_not_stop_it(two_versions: Path, tmp_path: Path) -> None:
    import signal

    from support import poll

    registry = ModelRegistry(LocalStore(two_versions))
    plan.start(registry, "1.0.2", "canary", (0.5,), GateSettings(store=str(two_versions)))
    out, err = tmp_path / "out", tmp_path / "err"
    base = {k: v for k, v in os.environ.items() if not k.startswith("ONCOLOGY_")}
    with out.open("wb") as stdout, err.open("wb") as stderr:
        judge_loop = subprocess.Popen([ONCOLOGY, "release", "judge", "--loop", "1", "--json", "--store", str(two_versions)],
                                      env=base, stdout=stdout, stderr=stderr)
    try:
        def lines() -> list[dict[str, object]]:
            return [json.loads(line) for line in out.read_text().splitlines()]

        held = poll(lambda: [x for x in lines() if x.get("verdict") == "hold"][1:], 60, lambda: err.read_text())
        assert "fewer than the 600 needed" in str(held[0]["reasons"])  # no traffic: held, pass after pass
        plan.abort(registry, "test")
        poll(lambda: lines()[-1].get("reasons") == ["no release under way"], 60, lambda: out.read_text())
        assert judge_loop.poll() is None
        judge_loop.send_signal(signal.SIGTERM)
        assert judge_loop.wait(timeout=30) == 0
    finally:
        if judge_loop.poll() is None:
            judge_loop.kill()
            judge_loop.wait()
    # a pass that fails (replicas unreachable) is reported and the loop goes on
    plan.start(registry, "1.0.2", "canary", (0.5,), GateSettings(store=str(two_versions)))
    with err.open("wb") as stderr:
        judge_loop = subprocess.Popen([ONCOLOGY, "release", "judge", "--loop", "1", "--store", str(two_versions)],
                                      env={**base, "ONCOLOGY_RELEASE_METRICS": "replicas",
                                           "ONCOLOGY_RELEASE_REPLICA_URLS": "http://127.0.0.1:9"},
                                      stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        poll(lambda: err.read_text().count("no replica could be read") >= 2, 60, lambda: err.read_text())
        judge_loop.send_signal(signal.SIGINT)
        assert judge_loop.wait(timeout=30) == 0
    finally:
        if judge_loop.poll() is None:
            judge_loop.kill()
            judge_loop.wait()
    assert "Traceback" not in err.read_text()
    done = oncology("release", "judge", "--loop", "5", "--replay", "2026-12-05T09:00:00", "2026-12-05T10:00:00",
                    "--store", str(two_versions))
    assert done.returncode == 2 and "does not go with --replay" in done.stderr
    done = oncology("release", "judge", "--loop", "0", "--store", str(two_versions))
    assert done.returncode == 2
