"""Many connections at once, against a real server: a burst of new connections is accepted together, so that every
one gets its answer (or a 503 with Retry-After) while the worker is busy, instead of waiting, unaccepted and unread,
one loop iteration per connection."""

from __future__ import annotations

import json
import re
import resource
import selectors
import signal
import socket
import time
from pathlib import Path

import httpx

from .conftest import EXAMPLE, MALIGNANT

BUSY = 64  # keep-alive connections sending batches back to back: every loop iteration runs a batch
NEW = 512  # connections opened at once while the worker is stopped, one single-row request each


def _request(path: str, body: bytes) -> bytes:
    return (b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (path.encode(), len(body), body))


def _answer(data: bytes) -> tuple[int, dict[str, str], bytes] | None:
    """The HTTP answer at the start of ``data`` once it is all in (status, headers, body), else None."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    if not sep or length is None or len(rest) < int(length.group(1)):
        return None
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, rest[: int(length.group(1))]


def test_a_burst_of_new_connections_to_a_busy_worker_is_accepted_together_and_every_one_answered(  # type: ignore[no-untyped-def]
    serve, trained_store: Path
) -> None:
    """64 keep-alive connections keep the worker busy with 250-row batches (each re-sent as soon as its answer
    comes), and 512 new connections each send one single-row request while the worker is stopped (SIGSTOP: the
    kernel completes their handshakes and holds them for the worker to accept).  libuv accepts one connection per
    iteration of the event loop, and each iteration of this worker runs a turn of batches: left to it, the last new
    connection would wait 512 iterations, more than 512 batch answers, unaccepted, its request unread (what a wrk
    run with 1,024 connections counted as requests with no answer in 2 s).  The worker accepts the connections
    waiting behind the one libuv accepts: every new connection is answered (200 with the right probability) before
    the busy connections had four answers each, a count, not a duration: it holds on any machine."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4 * (BUSY + NEW):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4 * (BUSY + NEW)), hard))
    server = serve({"ONCOLOGY_STORE": str(trained_store), "ONCOLOGY_OVERLOAD_MAX_LAG": "60", "ONCOLOGY_ACCESS_LOG": "false"})
    port = int(server.url.rsplit(":", 1)[1])
    rows = [MALIGNANT if i % 2 else EXAMPLE for i in range(250)]
    expected_batch = [r["probability"] for r in httpx.post(f"{server.url}/predict/batch", json=rows).json()]
    expected_one = httpx.post(f"{server.url}/predict", json=EXAMPLE).json()["probability"]
    batch, one = _request("/predict/batch", json.dumps(rows).encode()), _request("/predict", json.dumps(EXAMPLE).encode())

    busy = [socket.create_connection(("127.0.0.1", port), timeout=60) for _ in range(BUSY)]
    new: list[socket.socket] = []
    selector = selectors.DefaultSelector()
    try:
        for conn in busy:  # accepted and served once before the stop
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while (got := _answer(data)) is None:
                chunk = conn.recv(65536)
                assert chunk, "a busy connection closed before its first answer"
                data += chunk
            assert got[0] == 200
        server.proc.send_signal(signal.SIGSTOP)
        try:
            for conn in busy:
                conn.sendall(batch)  # 58 kB: the socket buffers hold it while the worker is stopped
            for _ in range(NEW):
                conn = socket.create_connection(("127.0.0.1", port), timeout=60)  # the kernel's accept queue holds it
                new.append(conn)
                conn.sendall(one)
        finally:
            server.proc.send_signal(signal.SIGCONT)

        received = {conn: b"" for conn in busy + new}
        for conn in busy + new:
            conn.setblocking(False)
            selector.register(conn, selectors.EVENT_READ)
        kind = {conn: "busy" for conn in busy} | {conn: "new" for conn in new}
        busy_answers = 0  # batches answered so far
        busy_when = {}  # new connection number -> busy answers before its answer
        answers: list[tuple[int, dict[str, str], bytes]] = []
        deadline = time.monotonic() + 120  # bounded whatever happens; normally a few seconds
        while len(busy_when) < NEW:
            assert time.monotonic() < deadline, f"{NEW - len(busy_when)} of {NEW} new connections not answered"
            for key, _ in selector.select(timeout=1.0):
                conn = key.fileobj
                assert isinstance(conn, socket.socket)
                chunk = conn.recv(1 << 16)
                assert chunk, f"a {kind[conn]} connection was closed before its answer"
                received[conn] += chunk
                got = _answer(received[conn])
                if got is None:
                    continue
                received[conn] = b""
                status, headers, body = got
                assert status == 200 or (status == 503 and headers.get("retry-after", "").isdigit()), (status, body[:200])
                if kind[conn] == "busy":
                    busy_answers += 1
                    if status == 200:
                        assert [r["probability"] for r in json.loads(body)] == expected_batch
                    conn.setblocking(True)
                    conn.sendall(batch)  # at once: the worker never runs short of batches
                    conn.setblocking(False)
                else:
                    selector.unregister(conn)
                    busy_when[new.index(conn)] = busy_answers
                    answers.append(got)
        assert [s for s, _, _ in answers] == [200] * NEW  # (a 60 s budget sheds nothing)
        assert {json.loads(b)["probability"] for _, _, b in answers} == {expected_one}
        last = max(busy_when.values())
        assert last < 4 * BUSY, (f"the last new connection was answered after {last} batch answers "
                                 f"(median {sorted(busy_when.values())[NEW // 2]}): accepted one loop iteration at a time")
    finally:
        selector.close()
        for conn in busy + new:
            conn.close()
