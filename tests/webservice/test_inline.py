"""The hot routes answered by the HTTP protocol itself (``inline_hot_routes``, overload.py): the same bytes, access-log
lines and metrics as through uvicorn's ASGI cycle, over raw sockets to real servers (uvicorn in a thread of the test,
so that a fault can be injected on cue: a broken model, a handler that suspends)."""

from __future__ import annotations

import asyncio
import io
import json
import re
import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from localproc import free_port  # infra/localproc.py, on sys.path through tests/conftest.py

from oncology.settings import ServeSettings
from oncology.webservice import overload
from oncology.webservice.accesslog import AccessLog
from oncology.webservice.app import create_app
from oncology.webservice.metrics import Metrics
from oncology.webservice.server import _options
from oncology.webservice.transport import Front, Handler, Reply, Req
from support import poll

from .conftest import EXAMPLE, MALIGNANT, read_answer

TOKEN = "inline-test-token-0123456789"
ROW = json.dumps(EXAMPLE).encode()
V2 = json.dumps({"id": "v2-1", "inputs": [{"name": "tumor", "shape": [2, 9], "datatype": "INT64",
                                            "data": [*EXAMPLE.values(), *MALIGNANT.values()]}]}).encode()


@dataclass
class Serving:
    port: int
    app: Front
    shedder: overload.Shedder
    log: io.BytesIO
    inlined: list[str]  # the request ids the protocol answered inline (`Front.inline` calls)


@contextmanager
def serving(store: Path, inline: bool, shedding: bool = True, budget: float | None = None) -> Iterator[Serving]:
    """``oncology serve``'s app, shedder and uvicorn options (the protocol of `server._options`) on a free port, in a
    thread of this process, its access log kept in memory; stopped on leaving, even on failure.  ``shedding``
    False: ``overload_max_lag`` 0 (the protocol then answers inline every request it can, whatever the timing);
    ``budget``: another ``overload_max_lag``."""
    lag = {} if shedding and budget is None else {"overload_max_lag": budget if shedding else 0}
    settings = ServeSettings(store=str(store), port=free_port(), reload_interval=0, api_tokens=[TOKEN],
                             max_body_bytes=1024, inline_hot_routes=inline, **lag)
    log = io.BytesIO()
    app = create_app(settings, access_log=AccessLog(log))
    shedder = overload.Shedder(app, settings, app.metrics)
    inlined: list[str] = []
    answer = app.inline

    def counted(*args: Any) -> Any:  # (instrumentation: which requests took the inline path)
        state, answering = answer(*args)
        inlined.append(state["request_id"])
        return state, answering

    app.inline = counted  # type: ignore[method-assign]
    server = uvicorn.Server(uvicorn.Config(shedder, **_options(settings, shedder, None, app)))
    thread = threading.Thread(target=server.run)
    thread.start()
    try:
        poll(lambda: server.started or None, 60, "the server did not start")
        yield Serving(settings.port, app, shedder, log, inlined)
    finally:
        server.should_exit = True
        thread.join(60)
    assert not thread.is_alive()


def request(path: str, body: bytes = ROW, *, headers: tuple[str, ...] = ("Content-Type: application/json",),
            version: str = "1.1", method: str = "POST", auth: bool = True) -> bytes:
    head = [f"{method} {path} HTTP/{version}", "Host: 127.0.0.1", *headers]
    if auth:
        head.append(f"Authorization: Bearer {TOKEN}")
    if body or method == "POST":
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


CLOSE = ("Content-Type: application/json", "Connection: close")


def chunked(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


#: Each case: what a client sends on one connection (in parts, sent one after the other), the last request asking
#: the server to close (or HTTP/1.0), so that the answers end where the connection does.
CASES: dict[str, list[bytes]] = {
    "valid, kept alive then closed": [request("/predict"), request("/predict", headers=CLOSE)],
    "explain": [request("/predict?explain=true", headers=CLOSE)],
    "given request id": [request("/predict", headers=(*CLOSE, "X-Request-Id: client-1.a:b_c"))],
    "request id refused (generated)": [request("/predict", headers=(*CLOSE, "X-Request-Id: not/one"))],
    "no token: 401": [request("/predict", headers=CLOSE, auth=False)],
    "wrong token: 401": [request("/predict", headers=(*CLOSE, "Authorization: Bearer nope"), auth=False)],
    "text/plain: 415": [request("/predict", headers=("Content-Type: text/plain", "Connection: close"))],
    "no content type: 415": [request("/predict", headers=("Connection: close",))],
    "over max_body_bytes: 413": [request("/predict", ROW + b" " * 1100, headers=CLOSE)],
    "a bad field: 422": [request("/predict", json.dumps({**EXAMPLE, "mitoses": 11}).encode(), headers=CLOSE)],
    "not JSON: 400": [request("/predict", b"{not json", headers=CLOSE)],
    "empty body: 400": [request("/predict", b"", headers=CLOSE)],
    "HTTP/1.0": [request("/predict", version="1.0")],
    "HTTP/1.0 asking keep-alive": [request("/predict", version="1.0",
                                           headers=("Content-Type: application/json", "Connection: keep-alive"))],
    "pipelined, a probe between": [request("/predict") + request("/healthz", b"", method="GET", headers=())
                                   + request("/predict/batch", json.dumps([EXAMPLE, MALIGNANT]).encode())
                                   + request("/invocations", b"5,1,1,1,2,1,3,1,1\n10,10,10,10,10,10,10,10,1\n",
                                             headers=("Content-Type: text/csv",))
                                   + request("/v2/models/oncology/infer", V2)
                                   + request("/predict", headers=CLOSE)],
    "batch: 422 naming the row": [request("/predict/batch", json.dumps([EXAMPLE, {**EXAMPLE, "bare_nuclei": 0}]).encode(),
                                          headers=CLOSE)],
    "invocations, one JSON tumor": [request("/invocations", headers=CLOSE)],
    "invocations: 415": [request("/invocations", b"x", headers=("Content-Type: text/html", "Connection: close"))],
    "V2 infer, a binary output": [request("/v2/models/oncology/infer", json.dumps({
        "inputs": [{"name": "tumor", "shape": [1, 9], "datatype": "INT64", "data": list(EXAMPLE.values())}],
        "outputs": [{"name": "probability", "parameters": {"binary_data": True}}]}).encode(), headers=CLOSE)],
    "V2 infer: 400 on a wrong datatype": [request("/v2/models/oncology/infer", V2.replace(b"INT64", b"FP32"), headers=CLOSE)],
    "a chunked body": [request("/predict", b"", headers=(*CLOSE, "Transfer-Encoding: chunked")).replace(
        b"Content-Length: 0\r\n", b"") + chunked(ROW)],
    "headers, then the body": [request("/predict", headers=CLOSE)[:-len(ROW)], ROW],
    "a body past 64 KiB (the ASGI way)": [request("/predict/batch", json.dumps([EXAMPLE] * 300).encode(), headers=CLOSE)],
    "percent-encoded path (the ASGI way)": [request("/pre%64ict", headers=CLOSE)],
    "Expect: 100-continue (the ASGI way)": [request("/predict", headers=(*CLOSE, "Expect: 100-continue"))],
}


def exchange(port: int, parts: list[bytes]) -> bytes:
    """Send ``parts`` on one connection, one after the other, each once the server had a moment to read the one before
    (and what it answered meanwhile is read); then read until the server closes the connection."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        for i, part in enumerate(parts):
            if i:
                conn.settimeout(0.05)
                with suppress(TimeoutError):
                    received += conn.recv(1 << 16)
                conn.settimeout(30)
            conn.sendall(part)
        while chunk := conn.recv(1 << 16):
            received += chunk
    return received


def masked(answers: bytes) -> bytes:
    """Answers with their date header and the ids the server generated masked."""
    answers = re.sub(rb"date: [^\r]*\r\n", b"date: *\r\n", answers)
    for generated in set(re.findall(rb"x-request-id: ([0-9a-f]{16})\r\n", answers)):
        answers = answers.replace(generated, b"<generated>")
    return answers


def log_lines(serving: Serving) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in serving.log.getvalue().splitlines()]
    for line in lines:
        assert line["latency_ms"] >= 0 and line["ts"]
        line["ts"] = line["latency_ms"] = None
        if re.fullmatch("[0-9a-f]{16}", line["request_id"]):
            line["request_id"] = "<generated>"
    return lines


def request_counts(serving: Serving) -> list[str]:
    text = serving.app.metrics.exposition().decode()
    return sorted(line for line in text.splitlines() if line.startswith(("oncology_http_requests_total",
                                                                          "oncology_predictions_total")))


def test_the_hot_routes_answer_the_same_bytes_logs_and_metrics_inline_as_through_asgi(
    trained_store: Path, caplog: pytest.LogCaptureFixture
) -> None:
    answers: dict[bool, dict[str, bytes]] = {}
    seen: dict[bool, Serving] = {}
    for inline in (True, False):
        # shedding off: on, its accounting of the work answered inline in one millisecond of the loop's clock can
        # send a request the ASGI way when the cases follow each other fast (same bytes, but the count below would
        # depend on the timing); its decisions are tested below, `Shedder.inline` with given loop times
        with serving(trained_store, inline, shedding=False) as server:
            answers[inline] = {name: exchange(server.port, parts) for name, parts in CASES.items()}
            # an unexpected error: the model fails; a 500 that names no value, its line in the server log
            server.app.holder.classifier._scorer = _Broken()  # type: ignore[assignment, union-attr]
            answers[inline]["500"] = exchange(server.port, [request("/predict", headers=(*CLOSE, "X-Request-Id: e-1"))])
            seen[inline] = server
    for name in answers[True]:
        assert masked(answers[True][name]) == masked(answers[False][name]), name
    assert b"HTTP/1.1 500 " in answers[True]["500"] and b'"request_id":"e-1"' in answers[True]["500"]
    assert answers[True]["valid, kept alive then closed"].count(b"HTTP/1.1 200 OK\r\n") == 2
    assert answers[True]["pipelined, a probe between"].count(b"HTTP/1.1 200 OK\r\n") == 6
    assert answers[True]["no token: 401"].count(b"www-authenticate: Bearer\r\n") == 1
    assert log_lines(seen[True]) == log_lines(seen[False])
    assert request_counts(seen[True]) == request_counts(seen[False])
    # the inline path answered the hot routes' 29 requests (the 500's included) but the ones that go the ASGI way: the
    # three cases so named, and the four pipelined behind the probe (parsed while its answer was pending)
    assert len(seen[True].inlined) == 29 - 3 - 4 + 2 and seen[False].inlined == []
    # the same log line (its frames but the outermost: the method that caught the error)
    errors = [r.getMessage().rsplit(" <- ", 1)[0] for r in caplog.records if "unhandled error" in r.getMessage()]
    assert len(errors) == 2 and errors[0] == errors[1] and "(request e-1)" in errors[0], errors
    assert seen[True].shedder.queued == seen[False].shedder.queued == 0


class _Broken:
    """A model's scorer that fails (a fault injected on cue: no trained model fails so)."""

    def proba_many(self, rows: object) -> list[float]:
        raise RuntimeError("the model failed")


def test_an_answer_that_suspends_is_continued_as_a_task_and_pipelined_requests_wait_for_it(trained_store: Path) -> None:
    """No hot route's handler suspends once the body is in; if one did (here: /predict made to await a timer first), the
    protocol continues it as a task, and the requests pipelined behind it are answered after it, in order, with the
    same bytes as through ASGI."""
    got: dict[bool, bytes] = {}
    for inline in (True, False):
        with serving(trained_store, inline) as server:
            endpoint = server.app.fast[("POST", "/predict")]
            endpoint.handler = _later(endpoint.handler)
            got[inline] = exchange(server.port, [
                request("/predict", headers=("Content-Type: application/json", "X-Request-Id: first"))
                + request("/predict/batch", json.dumps([MALIGNANT]).encode(),
                          headers=("Content-Type: application/json", "X-Request-Id: second"))
                + request("/predict", headers=(*CLOSE, "X-Request-Id: third"))])
        assert [line["request_id"] for line in log_lines(server)] == ["first", "second", "third"]  # (flushed at the stop)
        assert server.shedder.queued == 0 and server.shedder.work == 0.0
        # the others, parsed while its answer was pending, went the ASGI way
        assert server.inlined == (["first"] if inline else [])
    assert masked(got[True]) == masked(got[False])
    assert [m.group(1) for m in re.finditer(rb"x-request-id: (\w+)", got[True])] == [b"first", b"second", b"third"]


def _answer_once(conns: list[socket.socket]) -> None:
    """Each connection accepted and answered once (a probe), so that what is sent on it next is read at once."""
    for conn in conns:
        conn.sendall(request("/healthz", b"", method="GET", headers=()))
    for conn in conns:
        assert b" 200 OK" in conn.recv(1 << 16)


def _later(handler: Handler) -> Handler:
    """``handler``, once a timer has fired: a handler that suspends (a fault injected on cue: none of ours does)."""

    async def later(req: Req) -> Reply:
        await asyncio.sleep(0.05)
        return await handler(req)

    return later


def _costly(handler: Handler, seconds: float, stalled: threading.Event, go: threading.Event) -> Handler:
    """``handler``, taking ``seconds`` of CPU first (a request costlier than a quantum); the request with the id
    ``stall`` holds the loop until ``go`` is set (``stalled`` set meanwhile): the requests sent meanwhile are read together."""

    async def costly(req: Req) -> Reply:
        if req.headers.get(b"x-request-id") == b"stall":
            stalled.set()
            assert go.wait(60)
        spin = time.thread_time() + seconds
        while time.thread_time() < spin:
            pass
        return await handler(req)

    return costly


def test_requests_read_together_past_a_quantum_are_answered_inline_in_turns_and_a_probe_between(trained_store: Path) -> None:
    """32 requests of ~2 ms of CPU each (more than a quantum of 1 ms) and then a readiness probe reach the worker while
    its loop is held (a request's handler waits), so that it reads them all in one iteration.  The loop answers inline
    at most a quantum of their work in an iteration (counted by iteration, not by the loop's millisecond clock, which
    moves while they run) and defers the rest: they take turns and are answered inline in later iterations, none the
    ASGI way, and the loop reads between turns: the probe is answered before most of them.  Two requests pipelined on
    one connection behind a deferred one are answered after it, in order; every answer is right.  (The order is the
    server's, as it finishes each answer: the client, a thread of this process, shares the GIL with the spinning
    server, and reads in bursts.)"""
    stalled, go = threading.Event(), threading.Event()
    with serving(trained_store, True, budget=60) as server:  # (a budget nothing here comes near: nothing is shed)
        endpoint = server.app.fast[("POST", "/predict")]
        endpoint.handler = _costly(endpoint.handler, 0.002, stalled, go)
        finished: list[str] = []  # request ids (the probe: its route), in the order the server answered them
        finish = server.app.finish

        def noted(state: dict[str, Any], method: str, start: float) -> None:  # (instrumentation: the answers' order)
            finished.append(state["route"] if state["route"] == "/readyz" else state["request_id"])
            finish(state, method, start)

        server.app.finish = noted  # type: ignore[method-assign]
        expected = exchange(server.port, [request("/predict", headers=(*CLOSE, "X-Request-Id: warm"))])  # (its cost: ~2 ms)
        assert expected.startswith(b"HTTP/1.1 200 OK\r\n")
        probability = json.loads(expected.partition(b"\r\n\r\n")[2])["probability"]
        conns = [socket.create_connection(("127.0.0.1", server.port), timeout=60) for _ in range(35)]
        try:
            _answer_once(conns)
            conns[0].sendall(request("/predict", headers=("Content-Type: application/json", "X-Request-Id: stall")))
            assert stalled.wait(60)
            ids = [f"r{i}" for i in range(32)]
            for conn, rid in zip(conns[1:33], ids, strict=True):
                conn.sendall(request("/predict", headers=("Content-Type: application/json", f"X-Request-Id: {rid}")))
            conns[33].sendall(b"".join(request("/predict", headers=("Content-Type: application/json", f"X-Request-Id: {rid}"))
                                       for rid in ("p1", "p2")))
            conns[34].sendall(request("/readyz", b"", method="GET", headers=()))
            go.set()
            answered: list[str] = []  # request ids (the probe: its route), as the client read them
            got = {conn.fileno(): b"" for conn in conns}
            wanted = {conns[0].fileno(): 1, **{conn.fileno(): 1 for conn in conns[1:33]}, conns[33].fileno(): 2,
                      conns[34].fileno(): 1}
            pending = {conn.fileno(): conn for conn in conns}
            deadline = time.monotonic() + 120
            while pending:
                assert time.monotonic() < deadline, f"answers missing: {sorted(pending)}"
                for fd in select.select(list(pending), [], [], 1.0)[0]:
                    chunk = pending[fd].recv(1 << 16)
                    assert chunk, "a connection closed before its answer"
                    got[fd] += chunk
                    while True:  # the answers complete so far on this connection
                        head, sep, rest = got[fd].partition(b"\r\n\r\n")
                        length = re.search(rb"content-length: (\d+)", head)
                        if not (sep and length and len(rest) >= int(length.group(1))):
                            break
                        body, got[fd] = rest[:int(length.group(1))], rest[int(length.group(1)):]
                        assert head.startswith(b"HTTP/1.1 200 OK\r\n"), head
                        rid = re.search(rb"x-request-id: ([\w-]+)", head)
                        if fd == conns[34].fileno():
                            answered.append("/readyz")
                        else:
                            assert rid is not None and json.loads(body)["probability"] == probability
                            answered.append(rid.group(1).decode())
                        wanted[fd] -= 1
                        if not wanted[fd]:
                            del pending[fd]
        finally:
            go.set()
            for conn in conns:
                conn.close()
        assert sorted(answered) == sorted(["stall", *ids, "p1", "p2", "/readyz"])
        assert answered.index("p1") < answered.index("p2")  # (on one connection: as the client reads them)
        order = finished[finished.index("stall"):]
        assert sorted(order) == sorted(answered)
        assert order.index("/readyz") < 8, f"the probe was answered after {order.index('/readyz')} requests: {order}"
        # every request answered inline, now or in a later iteration; only p2, pipelined, waited the ASGI way
        assert set(server.inlined) == {"warm", "stall", *ids, "p1"} | ({"p2"} & set(server.inlined)), server.inlined
        assert server.shedder.queued == 0 and server.shedder.work == 0.0 and not server.shedder.turns.waiting


def test_deferred_requests_that_waited_past_the_budget_are_shed_at_their_turn_and_their_connections_kept(
    trained_store: Path,
) -> None:
    """16 requests of ~2 ms read together behind a held loop are all deferred (the work answered at once since the last
    deferred ones ran is past a quantum).  The first to run stands for a stall past the budget (50 ms: the arrival
    times of those queued behind it are moved back by twice the budget, a held loop's effect without the wall clock)
    and, as a cost underestimated would, leaves the queued work over it: at their turn, the next ones have waited past
    the budget with the work queued over it, so they are shed (503 with Retry-After, counted as reason "wait") while at least
    ``overload_min_queue`` (8) others are queued; the last 8 are answered.  Their connections are kept."""
    stalled, go = threading.Event(), threading.Event()
    with serving(trained_store, True) as server:
        endpoint = server.app.fast[("POST", "/predict")]
        costly = _costly(endpoint.handler, 0.002, stalled, go)

        async def late(req: Req) -> Reply:  # the first deferred request: a stall, the queued work found costlier
            if req.headers.get(b"x-request-id") == b"r0":
                server.shedder.work += 10.0
                # the stall: the requests deferred behind this one (still queued: it runs first) arrived twice the budget
                # ago, as if the loop had been held that long, so they have waited past it at their turn
                queued = list(server.shedder.turns.deferred)
                assert len(queued) == 15, queued
                for deferred in queued:
                    deferred.received -= 2 * server.shedder.max_lag
            return await costly(req)

        endpoint.handler = late
        assert exchange(server.port, [request("/predict", headers=CLOSE)]).startswith(b"HTTP/1.1 200 OK\r\n")
        conns = [socket.create_connection(("127.0.0.1", server.port), timeout=60) for _ in range(17)]
        try:
            _answer_once(conns)
            conns[0].sendall(request("/predict", headers=("Content-Type: application/json", "X-Request-Id: stall")))
            assert stalled.wait(60)
            for i, conn in enumerate(conns[1:]):
                conn.sendall(request("/predict", headers=("Content-Type: application/json", f"X-Request-Id: r{i}")))
            go.set()
            answers = [read_answer(conn) for conn in conns[1:]]
            for conn in conns[1:]:  # every connection kept: answered again
                conn.sendall(request("/predict", headers=("Content-Type: application/json",)))
            again = [read_answer(conn)[0] for conn in conns[1:]]
        finally:
            go.set()
            for conn in conns:
                conn.close()
    statuses = [status for status, _, _ in answers]
    assert statuses == [200] + [503] * 7 + [200] * 8, statuses
    for status, headers, body in answers:
        if status == 503:
            assert headers["retry-after"] == "1" and "overloaded" in json.loads(body)["error"]
    assert again == [200] * 16
    metrics = server.app.metrics.exposition().decode()
    assert re.findall(r'^oncology_http_shed_total\{reason="(\w+)"\} (\S+)$', metrics, re.M) == [("wait", "7.0"),
                                                                                             ("queue", "0.0")]
    assert server.shedder.queued == 0 and server.shedder.work == 0.0


@pytest.mark.parametrize("min_queue", [8, 0])
def test_requests_are_answered_inline_up_to_a_quantum_of_work_between_two_runs_of_the_deferred_ones(min_queue: int) -> None:
    """`Shedder.inline`: with nothing queued, requests are answered inline while their estimated work since the deferred
    requests last ran (`Shedder._next`, which begins an iteration of the loop) fits in a quantum (the first alone
    whatever its cost, unless min_queue is 0, as a turn would run it); the next ones are deferred (they take a turn).
    The loop's clock has no part in it: uvloop's is read anew, so requests of one iteration parsed in different
    milliseconds count together.  A request waiting for a turn or holding one stops every inline answer; the first of a
    size, then one every SAMPLE_SECONDS, is measured."""
    shedder = overload.Shedder(None, ServeSettings(overload_min_queue=min_queue), Metrics())  # type: ignore[arg-type]
    nothing_waits: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # (`_next` grants nothing: no loop)
    size = (300).bit_length()
    assert shedder.inline(300, 1.0) == size  # the first of its size: inline, measured
    shedder.learn(size, 0.0003)
    shedder._next(nothing_waits)
    quantum = shedder.turns.quantum
    assert quantum == overload.MIN_QUANTUM
    verdicts = [shedder.inline(300, 2.0 + i * 0.001) for i in range(5)]  # one iteration, five milliseconds
    fits = int(quantum // 0.0003)  # 3 requests of 0.3 ms in a 1 ms quantum
    assert [how != overload.DEFER for how in verdicts] == [True] * fits + [False] * (5 - fits)
    shedder._next(nothing_waits)  # the next iteration
    assert shedder.inline(300, 2.005) == overload.INLINE  # (and measured 5 ms ago: not again)
    shedder._next(nothing_waits)
    shedder.costs[size] = 0.005  # now more than a quantum: alone only, if min_queue allows
    alone = shedder.inline(300, 3.0)
    assert alone == (size if min_queue else overload.DEFER)
    assert shedder.inline(300, 3.5) == overload.DEFER
    shedder._next(nothing_waits)
    shedder.costs[size] = 0.0001
    shedder.turns.waiting.append((None, 0.0001))  # type: ignore[arg-type]
    assert shedder.inline(300, 4.0) == overload.DEFER  # a request waits for its turn: none overtakes it
    shedder.turns.waiting.clear()
    shedder.turns.holders = 1
    assert shedder.inline(300, 4.0) == overload.DEFER  # nor one granted a turn, whose batch runs next
    shedder.turns.holders = 0
    shedder.turns.deferred.append(None)  # type: ignore[arg-type]
    assert shedder.inline(300, 4.0) == overload.DEFER  # nor one deferred already
    shedder.turns.deferred.clear()
    # the first request of a read whose connection was last answered at ``since`` (``answered`` then): what was answered
    # at once after it counts, what was before does not (an earlier iteration's), whatever `_next` did
    shedder._next(nothing_waits)
    shedder.costs[size] = tiny = 2.0 ** -14  # (sums of it are exact: 16 fit in a 1 ms quantum)
    first = shedder.answered
    assert [shedder.inline(300, 4.1) != overload.DEFER for _ in range(18)] == [True] * 16 + [False] * 2
    assert shedder.inline(300, 4.2, since=first) == overload.DEFER  # 16 answered after it: 17 with it
    assert shedder.inline(300, 4.2, since=first + tiny) != overload.DEFER  # 15 after it
    shedder._next(nothing_waits)
    assert shedder.inline(300, 4.3, since=-1.0) != overload.DEFER  # pipelined, but nothing answered at once since
    assert shedder.inline(300, 4.3, since=-1.0) == overload.DEFER  # pipelined behind one answered at once
    shedder.costs[size] = 0.0001
    # by the loop's clock: one every SAMPLE_SECONDS (here every third iteration, 0.4 of it apart), whatever the rate
    step = overload.SAMPLE_SECONDS * 0.4
    measured = []
    for i in range(30):
        shedder._next(nothing_waits)
        measured.append(shedder.inline(300, 5.0 + i * step))
    assert [i for i, how in enumerate(measured) if how == size] == list(range(0, 30, 3))
    assert set(measured) == {overload.INLINE, size}


def test_a_fault_after_the_answer_closes_the_connection_as_through_asgi_never_a_400(trained_store: Path) -> None:
    """A fault of the service's own code after the answer (here: the metrics fail, on cue) is not the client's: the
    answer stands and the connection is closed, as uvicorn does when its app fails; raised into the parser, it would
    be taken for a malformed request (a 400)."""
    got: dict[bool, bytes] = {}
    for inline in (True, False):
        with serving(trained_store, inline) as server:

            def failing(*args: object) -> None:
                raise RuntimeError("the metrics failed")

            server.app.metrics.observe = failing  # type: ignore[method-assign]
            got[inline] = exchange(server.port, [request("/predict", headers=("Content-Type: application/json",
                                                                               "X-Request-Id: f-1"))])
    assert masked(got[True]) == masked(got[False])
    assert got[True].startswith(b"HTTP/1.1 200 OK\r\n") and got[True].count(b"HTTP/1.1") == 1
