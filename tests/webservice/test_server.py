"""The real server process: graceful shutdown, hot model reload under load, several workers."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector

from oncology.trainer.pipeline import run_training
from oncology_model.registry import ModelRegistry
from oncology_model.storage import LocalStore
from support import fast_settings

from .conftest import EXAMPLE, MALIGNANT

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


def test_a_bad_model_source_stops_the_start_with_a_clear_error(serve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = serve({"ONCOLOGY_STORE": str(tmp_path / "empty")}, wait=False)
    assert server.proc.wait(timeout=20) != 0
    assert "alias 'champion' is not set" in server.logs()


@dataclass
class Load:
    """Client threads posting one tumor in a loop; every answer and every exception is kept."""

    url: str
    seen: list[tuple[int, str | None]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        try:
            with httpx.Client(timeout=10) as client:
                deadline = time.monotonic() + 60  # bounded, whatever happens
                while not self.stop.is_set() and time.monotonic() < deadline:
                    r = client.post(f"{self.url}/predict", content=BODY, headers={"content-type": "application/json"})
                    self.seen.append((r.status_code, r.json().get("model_version")))
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
    threads = [threading.Thread(target=load.run) for _ in range(4)]
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
    switches = [b for a, b in zip(versions, versions[1:]) if a != b]
    assert versions[0] == "1.0.1" and "1.0.2" in versions and versions[-1] == "1.0.1"
    assert len(switches) <= 2 * len(threads)  # each client sees one switch each way
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


def test_sigterm_turns_readiness_off_and_finishes_in_flight_requests(serve, trained_store: Path) -> None:  # type: ignore[no-untyped-def]
    server = serve({"ONCOLOGY_STORE": str(trained_store), "ONCOLOGY_DRAIN_SECONDS": "2"})
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as conn:
        head = f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n"
        conn.sendall(head.encode() + BODY[:10])  # a request in flight: half its body sent
        # an answer on another connection: the server's loop has turned since those bytes arrived
        assert httpx.get(f"{server.url}/readyz").status_code == 200
        server.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        while httpx.get(f"{server.url}/readyz").status_code != 503:  # draining: readiness turns off at once
            assert time.monotonic() - signalled < 1.5, "readiness still on during the drain"
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
    assert server.proc.wait(timeout=10) == 0


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
    per_worker = served_by_worker()
    assert len(per_worker) == 2 and all(n > 0 for n in per_worker.values()), per_worker
    assert sum(per_worker.values()) == sent
    text = httpx.get(f"{server.url}/metrics").text
    assert f'oncology_http_requests_total{{method="POST",route="/predict",status="200"}} {float(sent)}' in text
    assert f'oncology_predictions_total{{prediction="malignant"}} {float(sent)}' in text
