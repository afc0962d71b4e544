"""The real server process: graceful shutdown, hot model reload under load, several workers."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from tcp_proxy import HttpProxy

from oncology.trainer.pipeline import run_training
from oncology_model.registry import ModelRegistry
from oncology_model.storage import LocalStore, open_store
from support import S3, fast_settings, poll

from .conftest import EXAMPLE, MALIGNANT, free_port

BODY = httpx.Request("POST", "http://x", json=EXAMPLE).content


@pytest.fixture(scope="module")
def two_versions(trained_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with 1.0.1 (champion) and 1.0.2 (another seed, not promoted)."""
    store = tmp_path_factory.mktemp("two") / "store"
    shutil.copytree(trained_store, store)
    run_training(fast_settings(store, seed=7))
    return store


@pytest.fixture
def store(two_versions: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "store"
    shutil.copytree(two_versions, copy)
    return copy


def test_serves_the_wheel_model_or_a_store_version(serve, store: Path) -> None:  # type: ignore[no-untyped-def]
    server = serve({"ONCOLOGY_STORE": str(store)}, "--model", "1.0.2")
    assert httpx.post(f"{server.url}/predict", json=EXAMPLE).json()["model_version"] == "1.0.2"
    latest = serve({"ONCOLOGY_STORE": str(store), "ONCOLOGY_MODEL": "latest"})
    assert httpx.get(f"{latest.url}/model").json()["version"] == "1.0.2"


def test_in_a_source_checkout_serve_defaults_to_the_store_folder_like_every_command(  # type: ignore[no-untyped-def]
    serve, store: Path, tmp_path: Path
) -> None:
    from oncology.settings import ServeSettings
    from oncology_model.classifier import carries_a_model

    assert not carries_a_model()  # a source checkout: no model in the installed oncology-model
    work = tmp_path / "work"
    shutil.copytree(store, work / "store")
    server = serve({}, cwd=work)  # no --store, no ONCOLOGY_STORE: ./store, as train and drift use
    assert httpx.get(f"{server.url}/model").json()["version"] == "1.0.1"  # its champion
    assert ServeSettings().store == "store"
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = serve({}, cwd=empty, wait=False)
    assert missing.proc.wait(timeout=30) == 2
    assert missing.logs().strip().splitlines() == [
        f"error: cannot serve champion from store: {empty / 'store'}: no such store folder (a mistyped --store or "
        "ONCOLOGY_STORE?)"
    ]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_that_is_taken_is_one_line_and_exit_2_before_anything_claims_to_serve(
    trained_store: Path, tmp_path: Path, workers: str
) -> None:
    import os
    import subprocess
    import sys

    holder = socket.socket()
    try:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        base = {k: v for k, v in os.environ.items() if not k.startswith("ONCOLOGY_")}
        proc = subprocess.run(
            [str(Path(sys.executable).parent / "oncology"), "serve", "--store", str(trained_store), "--port", str(port),
             "--workers", workers],
            env={**base, "COLUMNS": "300"}, capture_output=True, text=True, timeout=60,
        )
    finally:
        holder.close()
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use: another process is listening there; stop "
        "it, or choose another port with --port or ONCOLOGY_PORT"
    ]


def _tamper(store: Path) -> Path:
    model = store / "models" / "1.0.2" / "model.json"
    model.write_text(model.read_text().replace("0", "1", 1))
    return store


@pytest.mark.parametrize(
    ("case", "args", "message"),
    [
        ("missing store", ["--store", "{tmp}/nonexistent"], "{tmp}/nonexistent: no such store folder"),
        ("alias not set", ["--store", "{tmp}/empty"], "{tmp}/empty: alias 'champion' is not set"),
        ("unknown version", ["--store", "{store}", "--model", "9.9.9"], "model version 9.9.9 is not published"),
        ("tampered bundle", ["--store", "{tampered}", "--model", "1.0.2"], "1.0.2/model.json: sha256 does not match"),
    ],
)
def test_a_model_that_can_never_load_stops_the_start_with_one_clear_line(  # type: ignore[no-untyped-def]
    serve, store: Path, tmp_path: Path, case: str, args: list[str], message: str
) -> None:
    (tmp_path / "empty").mkdir()
    where = {"tmp": str(tmp_path), "store": str(store), "tampered": str(store)}
    if case == "tampered bundle":
        _tamper(store)
    server = serve({}, *[a.format(**where) for a in args], wait=False)
    assert server.proc.wait(timeout=30) == 2
    lines = server.logs().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot serve"), lines
    assert message.format(**where) in lines[0]


def test_a_store_that_is_down_at_start_gives_a_live_unready_server_that_becomes_ready(  # type: ignore[no-untyped-def]
    serve, s3: S3, trained_store: Path
) -> None:
    uri = f"s3://{s3.bucket}/down-at-start-{uuid.uuid4().hex[:8]}"
    registry = ModelRegistry(open_store(uri))
    registry.publish(ModelRegistry(LocalStore(trained_store)).load("1.0.1").files)
    registry.promote("1.0.1")
    port = free_port()  # nothing listens here yet: the store is "down"
    server = serve(s3.env(AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", ONCOLOGY_STORE=uri), wait=False)
    deadline = time.monotonic() + 30
    while True:  # live ...
        assert server.proc.poll() is None, server.logs()
        try:
            if httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, server.logs()
        time.sleep(0.05)
    assert httpx.get(f"{server.url}/readyz").status_code == 503  # ... but not ready
    assert httpx.post(f"{server.url}/predict", json=EXAMPLE).status_code == 503
    assert "cannot reach the S3 server" in server.logs()
    with HttpProxy(s3.endpoint_url, port=port):  # the store comes back
        deadline = time.monotonic() + 30
        while httpx.get(f"{server.url}/readyz").status_code != 200:
            assert server.proc.poll() is None and time.monotonic() < deadline, server.logs()[-2000:]
            time.sleep(0.1)
        assert httpx.post(f"{server.url}/predict", json=EXAMPLE).json()["model_version"] == "1.0.1"
    assert 'oncology_model_reloads_total{result="failure"}' in httpx.get(f"{server.url}/metrics").text


@dataclass
class Load:
    """Client threads posting one tumor in a loop; every answer and every exception is kept."""

    url: str
    seen: list[tuple[int, str | None]] = field(default_factory=list)
    #: each client's versions, in the order it got them (``seen`` interleaves the clients' appends)
    by_client: dict[int, list[str | None]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, client_id: int) -> None:
        mine = self.by_client.setdefault(client_id, [])
        try:
            with httpx.Client(timeout=10) as client:
                deadline = time.monotonic() + 60  # bounded, whatever happens
                while not self.stop.is_set() and time.monotonic() < deadline:
                    r = client.post(f"{self.url}/predict", content=BODY, headers={"content-type": "application/json"})
                    version = r.json().get("model_version")
                    mine.append(version)
                    self.seen.append((r.status_code, version))
        except Exception as exc:  # noqa: BLE001 - any exception fails the test, none kills it silently
            self.errors.append(repr(exc))

    def wait_for(self, version: str, more: int = 100, timeout: float = 20) -> None:
        """Until ``more`` further answers have come and the latest names ``version``."""
        deadline = time.monotonic() + timeout
        target = len(self.seen) + more
        while time.monotonic() < deadline and not self.errors:
            if len(self.seen) >= target and self.seen[-1][1] == version:
                return
            time.sleep(0.02)
        raise AssertionError(f"no run of answers from {version}: last {self.seen[-3:]}, errors {self.errors[:3]}")


def test_promote_and_rollback_switch_the_model_under_load_with_no_failed_request(serve, store: Path) -> None:  # type: ignore[no-untyped-def]
    server = serve({"ONCOLOGY_STORE": str(store), "ONCOLOGY_RELOAD_INTERVAL": "0.1"})
    registry = ModelRegistry(LocalStore(store))
    load = Load(server.url)
    threads = [threading.Thread(target=load.run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        load.wait_for("1.0.1")
        registry.promote("1.0.2")
        load.wait_for("1.0.2")
        registry.rollback()
        load.wait_for("1.0.1")
    finally:
        load.stop.set()
        for t in threads:
            t.join()
    seen = load.seen
    assert load.errors == []
    assert len(seen) > 100
    assert {status for status, _ in seen} == {200}, [s for s in seen if s[0] != 200][:3]
    versions = [v for _, v in seen]
    assert versions[0] == "1.0.1" and "1.0.2" in versions and versions[-1] == "1.0.1"
    # each client, in the order of its own answers, sees one switch each way at most (never back and forth); the
    # merged list may switch more often, as a client appends an answer from before a switch after another's from after
    for client_id, mine in load.by_client.items():
        switches = [b for a, b in zip(mine, mine[1:]) if a != b]
        assert switches in ([], ["1.0.2"], ["1.0.1"], ["1.0.2", "1.0.1"]), (client_id, switches)
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'oncology_model_reloads_total{result="success"} 2.0' in metrics
    assert 'oncology_model_info{version="1.0.1"} 1.0' in metrics and 'oncology_model_info{version="1.0.2"} 0.0' in metrics


def test_a_bundle_failing_verification_is_not_served_and_is_counted(serve, store: Path) -> None:  # type: ignore[no-untyped-def]
    server = serve({"ONCOLOGY_STORE": str(store), "ONCOLOGY_RELOAD_INTERVAL": "0.1"})
    model = store / "models" / "1.0.2" / "model.json"
    model.write_text(model.read_text().replace("0", "1", 1))
    registry = ModelRegistry(LocalStore(store))  # promote refuses a tampered bundle: move the alias by hand,
    state = registry.state()  # as if the file had been altered after its promotion
    state["aliases"]["champion"] = "1.0.2"
    registry.store.write("registry/aliases.json", json.dumps(state).encode())
    deadline = time.monotonic() + 10
    while 'oncology_model_reloads_total{result="failure"}' not in (text := httpx.get(f"{server.url}/metrics").text):
        assert time.monotonic() < deadline, "the failed reload was never counted"
        time.sleep(0.05)
    assert httpx.post(f"{server.url}/predict", json=EXAMPLE).json()["model_version"] == "1.0.1"
    assert httpx.get(f"{server.url}/readyz").status_code == 200
    assert "model reload failed, still serving 1.0.1" in server.logs() and "sha256 does not match" in server.logs()
    assert 'oncology_model_info{version="1.0.1"} 1.0' in text


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_turns_readiness_off_and_finishes_in_flight_requests(  # type: ignore[no-untyped-def]
    serve, trained_store: Path, tmp_path: Path, workers: int
) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {"ONCOLOGY_STORE": str(trained_store), "ONCOLOGY_DRAIN_SECONDS": "5", "TMPDIR": str(tmp)}
    server = serve(env, "--workers", str(workers))
    children = _workers(server.proc.pid)
    assert len(children) == (workers if workers > 1 else 0), children
    metrics_dirs = list(tmp.glob("oncology-metrics-*"))
    assert len(metrics_dirs) == (1 if workers > 1 else 0), metrics_dirs
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as conn:
        head = f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n"
        conn.sendall(head.encode() + BODY[:10])  # a request in flight: half its body sent
        # an answer on another connection: the server's loop has turned since those bytes arrived
        assert httpx.get(f"{server.url}/readyz").status_code == 200
        server.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 60  # a hang guard: readiness must turn off while the listener still answers
        while True:
            try:
                if httpx.get(f"{server.url}/readyz").status_code == 503:  # draining: readiness off ...
                    break
            except httpx.ConnectError:
                pytest.fail("the listener closed before readiness turned off")
            assert time.monotonic() < deadline, "readiness never turned off"
            time.sleep(0.02)
        assert httpx.get(f"{server.url}/healthz").status_code == 200  # ... and the process is still live
        deadline = time.monotonic() + 10  # past the drain the listener closes; shutdown then waits for us
        while True:
            try:
                httpx.get(f"{server.url}/healthz", timeout=1)
            except httpx.ConnectError:
                break
            except httpx.TransportError:  # a probe that met the listener while it closed: probe again
                pass
            assert time.monotonic() < deadline, "the listener never closed after the drain"
            time.sleep(0.05)
        conn.sendall(BODY[10:])
        conn.settimeout(10)
        chunks = []
        while chunk := conn.recv(65536):  # the server closes the connection after it: read to the end
            chunks.append(chunk)
        response = b"".join(chunks).decode()
    assert response.startswith("HTTP/1.1 200"), response
    assert '"model_version":"1.0.1"' in response
    assert server.proc.wait(timeout=30) == 0, server.logs()[-3000:]
    assert [pid for pid in children if Path(f"/proc/{pid}").exists()] == []  # no worker left behind
    assert list(tmp.glob("oncology-metrics-*")) == []  # the workers' metrics folder is removed at exit
    assert "Traceback" not in server.logs(), server.logs()[-3000:]


def test_a_stop_while_the_workers_are_still_starting_is_a_clean_exit(  # type: ignore[no-untyped-def]
    serve, trained_store: Path
) -> None:
    """SIGTERM that reaches a worker before it has imported anything is kept for it, not fatal to it.

    (CI once saw `workers exited with [-15, 0]`: one worker was still starting when the stop came.)
    """
    server = serve({"ONCOLOGY_STORE": str(trained_store), "ONCOLOGY_DRAIN_SECONDS": "0"}, "--workers", "2", wait=False)
    deadline = time.monotonic() + 30
    while len(children := _workers(server.proc.pid)) < 2:  # both spawned; neither can have imported the app yet
        assert server.proc.poll() is None and time.monotonic() < deadline, server.logs()
        time.sleep(0.005)
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=60) == 0, server.logs()[-3000:]
    assert "workers exited with" not in server.logs()
    assert [pid for pid in children if Path(f"/proc/{pid}").exists()] == []


def _workers(pid: int) -> list[int]:
    """The worker processes that ``pid`` started (its children running multiprocessing's spawn_main)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if parent == pid and b"spawn_main" in cmdline:
            found.append(int(stat.parent.name))
    return found


def test_several_workers_share_the_port_and_merge_their_metrics(  # type: ignore[no-untyped-def]
    serve, trained_store: Path, tmp_path: Path
) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    server = serve({"ONCOLOGY_STORE": str(trained_store), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}, "--workers", "2")

    def served_by_worker() -> dict[str, float]:
        """Predictions counted in each worker's own metrics file (one file per process)."""
        counts = {}
        for path in metrics_dir.glob("counter_*.db"):
            merged = MultiProcessCollector.merge([str(path)], accumulate=False)
            counts[path.stem] = sum(
                s.value for m in merged if m.name == "oncology_predictions" for s in m.samples if s.name.endswith("_total")
            )
        return counts

    sent = 0
    deadline = time.monotonic() + 60
    with httpx.Client() as client:  # a new connection per request: the kernel hands each to either worker
        while sent < 20 or sum(1 for n in served_by_worker().values() if n > 0) < 2:
            assert time.monotonic() < deadline, f"after {sent} requests, one worker served none: {served_by_worker()}"
            assert client.post(f"{server.url}/predict", json=MALIGNANT, headers={"connection": "close"}).status_code == 200
            sent += 1
    # a worker writes its counts at the end of the loop turn that answered: the last ones may follow the answer
    per_worker = poll(lambda: counts if sum((counts := served_by_worker()).values()) >= sent else None,
                      max(deadline - time.monotonic(), 0), lambda: f"{sent} answered, {served_by_worker()} counted", 0.05)
    assert len(per_worker) == 2 and all(n > 0 for n in per_worker.values()), per_worker
    assert sum(per_worker.values()) == sent
    # the request counts are added after the answer is sent, maybe in a later turn than the predictions: polled too
    wanted = (f'oncology_http_requests_total{{method="POST",route="/predict",status="200"}} {float(sent)}',
              f'oncology_predictions_total{{prediction="malignant"}} {float(sent)}')

    def counted() -> bool:
        text = httpx.get(f"{server.url}/metrics").text
        return all(line in text for line in wanted)

    poll(counted, max(deadline - time.monotonic(), 0),
         lambda: "\n".join(line for line in httpx.get(f"{server.url}/metrics").text.splitlines() if "_total{" in line), 0.05)


def test_a_client_that_leaves_halfway_through_its_body_is_a_disconnect_not_an_error(live) -> None:  # type: ignore[no-untyped-def]
    port = int(live.url.rsplit(":", 1)[1])
    for path in ("/predict", "/predict/batch", "/invocations"):
        with socket.create_connection(("127.0.0.1", port)) as conn:
            head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(BODY) + 50}\r\n\r\n"
            conn.sendall(head.encode() + BODY[:10])
    text = poll(lambda: t if (t := httpx.get(f"{live.url}/metrics").text).count('status="499"') >= 3 else None, 10,
                lambda: str([line for line in httpx.get(f"{live.url}/metrics").text.splitlines() if "requests_total" in line]),
                0.05)
    for path in ("/predict", "/predict/batch", "/invocations"):
        assert f'oncology_http_requests_total{{method="POST",route="{path}",status="499"}} 1.0' in text
    assert not [line for line in text.splitlines() if line.startswith("oncology_http_requests_total") and 'status="4' in line
                and 'status="499"' not in line]  # not a bad request
    assert 'status="500"' not in text and "Traceback" not in live.logs()


def test_a_store_outage_keeps_the_old_model_serving_and_the_new_one_loads_when_it_is_back(  # type: ignore[no-untyped-def]
    serve, s3: S3, two_versions: Path
) -> None:
    uri = f"s3://{s3.bucket}/outage-{uuid.uuid4().hex[:8]}"
    registry = ModelRegistry(open_store(uri))
    local = ModelRegistry(LocalStore(two_versions))
    for version in ("1.0.1", "1.0.2"):
        registry.publish(local.load(version).files)
    registry.promote("1.0.1")
    port = free_port()
    forwarder = HttpProxy(s3.endpoint_url, port=port).__enter__()
    try:
        server = serve(s3.env(AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", ONCOLOGY_STORE=uri,
                              ONCOLOGY_RELOAD_INTERVAL="0.5"))
    finally:
        forwarder.__exit__()  # S3 goes away for the service ...
    registry.promote("1.0.2")  # ... while the alias moves (the test reaches S3 directly)

    def failures() -> float:
        text = httpx.get(f"{server.url}/metrics").text
        line = [ln for ln in text.splitlines() if ln.startswith('oncology_model_reloads_total{result="failure"}')]
        return float(line[0].split()[-1]) if line else 0.0

    deadline = time.monotonic() + 60
    while failures() < 2:  # failed reloads are counted ...
        assert time.monotonic() < deadline, server.logs()[-2000:]
        time.sleep(0.1)
    assert httpx.get(f"{server.url}/readyz").status_code == 200  # ... the service stays ready
    assert httpx.post(f"{server.url}/predict", json=EXAMPLE).json()["model_version"] == "1.0.1"  # on the old model
    with HttpProxy(s3.endpoint_url, port=port):  # S3 is back: the new model within a reload interval (and a retry)
        deadline = time.monotonic() + 30
        while httpx.post(f"{server.url}/predict", json=EXAMPLE).json()["model_version"] != "1.0.2":
            assert time.monotonic() < deadline, server.logs()[-2000:]
            time.sleep(0.05)
    assert "model reload failed, still serving 1.0.1" in server.logs()
