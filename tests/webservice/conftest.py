"""Fixtures for the web service: an in-process app and a real server process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from oncology.settings import ServeSettings
from oncology.webservice.app import create_app

EXAMPLE = {
    "clump_thickness": 5, "uniformity_of_cell_size": 1, "uniformity_of_cell_shape": 1, "marginal_adhesion": 1,
    "single_epithelial_cell_size": 2, "bare_nuclei": 1, "bland_chromatin": 3, "normal_nucleoli": 1, "mitoses": 1,
}
MALIGNANT = {**dict.fromkeys(EXAMPLE, 10), "mitoses": 1}


@pytest.fixture
def client(trained_store: Path) -> Iterator[TestClient]:
    with TestClient(create_app(ServeSettings(store=str(trained_store)))) as c:
        yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def logs(self) -> str:
        return self.log.read_text()


def start_server(tmp_path: Path, env: dict[str, str], *args: str, wait: bool = True) -> Server:
    """`oncology serve` as a user starts it, on a free port of 127.0.0.1."""
    port = free_port()
    log = tmp_path / f"server-{port}.log"
    base = {k: v for k, v in os.environ.items() if not k.startswith("ONCOLOGY_")}
    with log.open("wb") as out:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "oncology"), "serve", "--port", str(port), *args],
            env={**base, **env}, stdout=out, stderr=subprocess.STDOUT,
        )
    server = Server(f"http://127.0.0.1:{port}", proc, log)
    if wait:
        wait_ready(server)
    return server


def wait_ready(server: Server, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"server exited with {server.proc.returncode}:\n{server.logs()}")
        try:
            if httpx.get(f"{server.url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"server not ready in {timeout}s:\n{server.logs()}")


def stop_server(server: Server) -> None:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[object]:
    """Start servers with `serve(env, *args)`; every one is stopped at the end, even on failure."""
    started: list[Server] = []

    def _start(env: dict[str, str], *args: str, wait: bool = True) -> Server:
        server = start_server(tmp_path, env, *args, wait=wait)
        started.append(server)
        return server

    yield _start
    for server in started:
        stop_server(server)


@pytest.fixture(scope="module")
def live(trained_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real server for read-only tests of a module."""
    server = start_server(tmp_path_factory.mktemp("live"), {"ONCOLOGY_STORE": str(trained_store)})
    try:
        yield server
    finally:
        stop_server(server)
