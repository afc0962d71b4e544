"""A small HTTP/1.1 load generator that keeps every answer: status, latency, body.

wrk cannot report latency by status (admitted vs shed) and cannot offer a fixed arrival rate, so the
overload and soak benchmarks use this one: one thread on epoll, raw keep-alive connections, one
request per connection at a time, a few µs of Python per request (the asyncio client it replaced
spent ~200 µs, and at 4x a worker's capacity it, not the server, was the limit).

- ``closed(port, request, connections, seconds)``: each connection sends its next request when the
  previous answer is in (the capacity measurement, and a fixed concurrency).
- ``fixed(port, request, connections, total)``: the closed loop for exactly ``total`` requests.
- ``open_loop(port, request, rate, seconds)``: requests are *scheduled* at a fixed rate, whatever the
  server does; each takes an idle connection or opens one (up to ``max_connections``, then waits for
  one).  Latency counts from the scheduled time, so time spent queueing in the client counts too
  (no coordinated omission).

Every answer is kept as (status, latency seconds, retry-after header or None, body); an exception
(connection refused or reset, a timeout) is kept as an error, never swallowed.
"""

from __future__ import annotations

import math
import select
import socket
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class Answer:
    status: int
    latency: float
    retry_after: bytes | None
    body: bytes
    at: float  # seconds since the run's start when the answer came
    index: int = -1  # open loop: the request's number in the run


@dataclass
class Run:
    seconds: float = 0.0
    answers: list[Answer] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    late_starts: int = 0  # open loop: requests the client itself could not send on time (>10 ms late)
    sent: int = 0  # closed loop: requests sent (numbered 0 .. sent-1, the answers' index)

    def statuses(self) -> dict[int, int]:
        found: dict[int, int] = {}
        for a in self.answers:
            found[a.status] = found.get(a.status, 0) + 1
        return found


def raw(method: str, path: str, body: bytes = b"", content_type: str = "application/json") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if body:
        head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


#: Seconds after which an idle connection is not reused (the server's keep-alive timeout is 5 s).
MAX_IDLE = 1.0


class _Conn:
    """One keep-alive connection, non-blocking: the request being written, the answer being read."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.fd = self.sock.fileno()
        self.out = memoryview(b"")  # what is left to write of the request
        self.buf = bytearray()  # what was read of the answer
        self.index = -1  # the request in flight (-1: idle)
        self.t0 = 0.0  # when it was due (open loop) or sent (closed loop)
        self.idle_since = 0.0
        self.deadline = math.inf

    def answer(self) -> tuple[int, bytes | None, bytes, bool] | None:
        """(status, retry-after, body, keep-alive) once the whole answer is in, else None."""
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        lines = bytes(self.buf[:end]).split(b"\r\n")
        length, retry_after, keep = 0, None, True
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"retry-after":
                retry_after = value.strip()
            elif name == b"connection" and value.strip().lower() == b"close":
                keep = False
        if len(self.buf) < end + 4 + length:
            return None
        body = bytes(self.buf[end + 4:end + 4 + length])
        del self.buf[:end + 4 + length]
        return int(lines[0].split(b" ", 2)[1]), retry_after, body, keep


class _Engine:
    """One thread, epoll, raw sockets: a few µs of Python per request, so that the client, on a CPU of its own, can
    offer several times what one worker serves (an asyncio client spent ~200 µs a request and was the limit)."""

    def __init__(self, port: int, request: bytes | Callable[[int], bytes], timeout: float) -> None:
        self.port, self.request, self.timeout = port, request, timeout
        self.poll = select.epoll()
        self.conns: dict[int, _Conn] = {}
        self.idle: list[_Conn] = []
        self.busy = 0
        self.run = Run()
        self.start = self.checked = time.perf_counter()

    def open(self) -> _Conn:
        conn = _Conn(self.port)
        self.conns[conn.fd] = conn
        self.poll.register(conn.fd, select.EPOLLIN)
        return conn

    def drop(self, conn: _Conn) -> None:
        if self.conns.pop(conn.fd, None) is not None:
            self.poll.unregister(conn.fd)
            conn.sock.close()

    def send(self, conn: _Conn, i: int, t0: float) -> None:
        data = self.request(i) if callable(self.request) else self.request
        conn.index, conn.t0, conn.deadline = i, t0, time.perf_counter() + self.timeout
        self.busy += 1
        try:
            sent = conn.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self.fail(conn, exc)
            return
        if sent < len(data):
            conn.out = memoryview(data)[sent:]
            self.poll.modify(conn.fd, select.EPOLLIN | select.EPOLLOUT)

    def fail(self, conn: _Conn, exc: BaseException) -> None:
        self.run.errors.append(repr(exc))
        if conn.index >= 0:
            self.busy -= 1
        self.drop(conn)

    def step(self, wait: float) -> list[_Conn]:
        """Poll once (at most ``wait`` seconds): the connections whose answer came, their answers recorded."""
        done = []
        for fd, events in self.poll.poll(max(wait, 0.0)):
            conn = self.conns.get(fd)
            if conn is None:
                continue
            try:
                if events & select.EPOLLOUT and conn.out:
                    sent = conn.sock.send(conn.out)
                    conn.out = conn.out[sent:]
                    if not conn.out:
                        self.poll.modify(fd, select.EPOLLIN)
                if events & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                    data = conn.sock.recv(1 << 18)
                    if not data:
                        raise ConnectionError(f"the server closed a connection {'with' if conn.index >= 0 else 'without'} "
                                              "a request in flight")
                    conn.buf += data
                    answer = conn.answer() if conn.index >= 0 else None
                    if answer is not None:
                        now = time.perf_counter()
                        status, retry_after, body, keep = answer
                        self.run.answers.append(Answer(status, now - conn.t0, retry_after, body, now - self.start, conn.index))
                        conn.index, conn.deadline = -1, math.inf
                        self.busy -= 1
                        if keep:
                            conn.idle_since = now
                            done.append(conn)
                        else:
                            self.drop(conn)
            except BlockingIOError:
                continue
            except OSError as exc:
                if conn.index < 0:  # an idle connection closed by the server (keep-alive timeout): not an error
                    self.drop(conn)
                else:
                    self.fail(conn, exc)
        now = time.perf_counter()
        if now > self.checked + 0.1:  # (a scan of every connection: not at every poll)
            self.checked = now
            for conn in [c for c in self.conns.values() if c.deadline < now]:
                self.fail(conn, TimeoutError(f"no answer in {self.timeout:.0f}s"))
        return done

    def close(self) -> None:
        for conn in list(self.conns.values()):
            self.drop(conn)
        self.poll.close()


@contextmanager
def _engine(port: int, request: bytes | Callable[[int], bytes], timeout: float) -> Iterator[_Engine]:
    """An engine for one run: its sockets closed and its duration set at the end; a socket error kept in the run."""
    engine = _Engine(port, request, timeout)
    try:
        yield engine
    except OSError as exc:
        engine.run.errors.append(repr(exc))
    finally:
        engine.close()
        engine.run.seconds = time.perf_counter() - engine.start


def closed(port: int, request: bytes | Callable[[int], bytes], connections: int, seconds: float,
           timeout: float = 30.0) -> Run:
    """Each of ``connections`` sends its next request as soon as it has the previous answer, for ``seconds``."""
    with _engine(port, request, timeout) as engine:
        run, end = engine.run, engine.start + seconds
        ready = [engine.open() for _ in range(connections)]
        while True:
            now = time.perf_counter()
            if now < end:
                for conn in ready:
                    engine.send(conn, run.sent, time.perf_counter())
                    run.sent += 1
            elif not engine.busy:
                break
            ready = engine.step(0.05)
            if now < end:  # one closed after its answer (Connection: close) or failed: a new one takes its place
                ready += [engine.open() for _ in range(connections - len(engine.conns))]
    return engine.run


def fixed(port: int, request: bytes | Callable[[int], bytes], connections: int, total: int,
          timeout: float = 120.0) -> Run:
    """Exactly ``total`` requests, each of ``connections`` sending its next one as soon as it has the previous answer
    (a closed loop bounded by a count, not a duration: the instruction-count benchmark, benchmarks/cost.py)."""
    with _engine(port, request, timeout) as engine:
        run = engine.run
        ready = [engine.open() for _ in range(min(connections, total))]
        while run.sent < total or engine.busy:
            for conn in ready:
                if run.sent < total:
                    engine.send(conn, run.sent, time.perf_counter())
                    run.sent += 1
            ready = engine.step(0.05)
            if run.sent < total:
                ready += [engine.open() for _ in range(connections - len(engine.conns))]
    return engine.run


def open_loop(port: int, request: bytes | Callable[[int], bytes], rate: float, seconds: float,
              max_connections: int = 256, timeout: float = 30.0) -> Run:
    """``rate`` requests a second *scheduled* for ``seconds``, whatever the server does: each on an idle connection or a
    new one (up to ``max_connections``, then it waits for one); latency counts from when it was due."""
    total = int(rate * seconds)
    waiting: deque[int] = deque()  # requests due, waiting for a connection
    i = 0
    with _engine(port, request, timeout) as engine:
        while i < total or waiting or engine.busy:
            now = time.perf_counter()
            while i < total and engine.start + i / rate <= now:
                if now - (engine.start + i / rate) > 0.01:
                    engine.run.late_starts += 1  # this client itself was late (not a connection it waited for)
                waiting.append(i)
                i += 1
            while waiting and (engine.idle or len(engine.conns) < max_connections):
                conn = None
                while engine.idle and conn is None:
                    conn = engine.idle.pop()
                    if conn.fd not in engine.conns or now - conn.idle_since > MAX_IDLE:
                        engine.drop(conn)  # the server may close an idle keep-alive connection: never reuse an old one
                        conn = None
                if conn is None:
                    if len(engine.conns) >= max_connections:
                        break
                    conn = engine.open()
                n = waiting.popleft()
                engine.send(conn, n, engine.start + n / rate)
            due = engine.start + i / rate - time.perf_counter() if i < total else 0.05
            engine.idle += engine.step(min(due, 0.05))
    return engine.run


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by the nearest rank; nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q * len(ordered) + 0.5)) - 1))]
