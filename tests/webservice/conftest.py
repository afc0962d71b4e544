"""Fixtures for the web service: an in-process app and a real server process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from localproc import free_port  # infra/localproc.py, on sys.path through tests/conftest.py
from starlette.testclient import TestClient

from oncology.settings import ServeSettings
from oncology.trainer import data
from oncology.webservice.app import create_app
from oncology_model import FEATURES, Classifier
from support import republish

EXAMPLE = {
    "clump_thickness": 5, "uniformity_of_cell_size": 1, "uniformity_of_cell_shape": 1, "marginal_adhesion": 1,
    "single_epithelial_cell_size": 2, "bare_nuclei": 1, "bland_chromatin": 3, "normal_nucleoli": 1, "mitoses": 1,
}
MALIGNANT = {**dict.fromkeys(EXAMPLE, 10), "mitoses": 1}


@pytest.fixture
def client(trained_store: Path) -> Iterator[TestClient]:
    with TestClient(create_app(ServeSettings(store=str(trained_store)))) as c:
        yield c


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def logs(self) -> str:
        return self.log.read_text()


def start_server(tmp_path: Path, env: dict[str, str], *args: str, wait: bool = True, cwd: Path | None = None) -> Server:
    """`oncology serve` as a user starts it (in ``cwd``), on a free port of 127.0.0.1."""
    port = free_port()
    log = tmp_path / f"server-{port}.log"
    base = {k: v for k, v in os.environ.items() if not k.startswith("ONCOLOGY_")}
    with log.open("wb") as out:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "oncology"), "serve", "--port", str(port), *args],
            env={**base, **env}, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
        )
    server = Server(f"http://127.0.0.1:{port}", proc, log)
    if wait:
        wait_ready(server)
    return server


def wait_ready(server: Server, timeout: float = 60) -> None:
    """Until ``/readyz`` answers 200.  A hang guard, not a bound: at load average 7-8 on 2 cores ``oncology serve
    --workers 2`` got there in 2.8-3.4 s, and in 5.5 s under coverage (as ``make test`` runs it)."""
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


@contextmanager
def running_server(tmp_path: Path, env: dict[str, str], *args: str) -> Iterator[Server]:
    """`start_server`, stopped on leaving, even when the test failed or the server never turned ready."""
    server = start_server(tmp_path, env, *args, wait=False)
    try:
        wait_ready(server)
        yield server
    finally:
        stop_server(server)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[object]:
    """Start servers with `serve(env, *args)`; every one is stopped at the end, even on failure."""
    started: list[Server] = []

    def _start(env: dict[str, str], *args: str, wait: bool = True, cwd: Path | None = None) -> Server:
        server = start_server(tmp_path, env, *args, wait=False, cwd=cwd)
        started.append(server)  # before waiting: a server that never turns ready is stopped too
        if wait:
            wait_ready(server)
        return server

    yield _start
    for server in started:
        stop_server(server)


@pytest.fixture(scope="module")
def live(trained_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real server for read-only tests of a module (outcomes it takes go to a store of their own)."""
    tmp = tmp_path_factory.mktemp("live")
    env = {"ONCOLOGY_STORE": str(trained_store), "ONCOLOGY_OUTCOMES": "true", "ONCOLOGY_OUTCOMES_STORE": str(tmp / "outcomes")}
    with running_server(tmp, env) as server:
        yield server


# ---- a real model with a referral band and a card, and the same model as older versions wrote it ----

CARD = {"model": "oncology", "version": "1.0.1", "intended_use": "decision support for cytology review; not a diagnosis"}
CARD_MARKDOWN = "# Model card: oncology 1.0.1\n\nDecision support for cytology review; not a diagnosis.\n"


@dataclass(frozen=True)
class Edges:
    """Rows of the dataset at and around the edges of a referral band chosen for them on the trained model.

    ``rows`` in order: below the band, exactly at ``low``, inside below the threshold, inside at or
    above the threshold, exactly at ``high``; ``expected`` their (prediction, decision) pairs.
    """

    low: float
    high: float
    rows: list[dict[str, int]]
    expected: list[tuple[str, str]]


def dataset_rows() -> list[tuple[int, ...]]:
    """The complete rows of the bundled UCI file, as the trainer reads them."""
    return [tuple(int(v) for v in row) for row in data.load().X.tolist()]


@pytest.fixture(scope="session")
def edges(trained_store: Path) -> Edges:
    clf = Classifier.from_uri(trained_store)
    scored = sorted({(clf.score_rows([r])[0], r) for r in dataset_rows()})
    threshold = clf.threshold
    below, at_low = scored[0][1], next(r for p, r in scored if p > scored[0][0])  # the two lowest probabilities
    low = clf.score_rows([at_low])[0]
    inside_benign = next(r for p, r in scored if low < p < threshold)
    above = [(p, r) for p, r in scored if p >= threshold]
    inside_malignant, at_high = above[0][1], next(r for p, r in above if p > above[0][0])
    high = clf.score_rows([at_high])[0]
    rows = [dict(zip(FEATURES, r)) for r in (below, at_low, inside_benign, inside_malignant, at_high)]
    expected = [("benign", "benign"), ("benign", "refer"), ("benign", "refer"), ("malignant", "refer"),
                ("malignant", "malignant")]
    return Edges(low, high, rows, expected)


@pytest.fixture(scope="session")
def banded_store(trained_store: Path, edges: Edges, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained model with the referral band of `edges` and a model card."""
    band = {"low": edges.low, "high": edges.high}
    return republish(trained_store, tmp_path_factory.mktemp("banded"), band, CARD, CARD_MARKDOWN)


@pytest.fixture(scope="session")
def old_store(trained_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained model as versions before referral and cards were written: no band, no card."""
    return republish(trained_store, tmp_path_factory.mktemp("old"))


@pytest.fixture
def banded(banded_store: Path) -> Iterator[TestClient]:
    with TestClient(create_app(ServeSettings(store=str(banded_store)))) as c:
        yield c


@pytest.fixture
def old(old_store: Path) -> Iterator[TestClient]:
    with TestClient(create_app(ServeSettings(store=str(old_store)))) as c:
        yield c


@pytest.fixture(scope="module")
def live_banded(banded_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real server on the model with a band, for read-only tests of a module."""
    with running_server(tmp_path_factory.mktemp("live-banded"), {"ONCOLOGY_STORE": str(banded_store)}) as server:
        yield server


def read_answer(conn: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 answer (status, headers, body) from a blocking socket (with a timeout)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        assert chunk, f"the server closed the connection before answering: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    while len(body) < int(headers["content-length"]):
        chunk = conn.recv(65536)
        assert chunk, "the server closed the connection in the middle of a body"
        body += chunk
    return int(status_line.split()[1]), headers, body
