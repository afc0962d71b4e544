"""A small HTTP/1.1 load generator that keeps every answer: status, latency, body.

wrk cannot report latency by status (admitted vs shed) and cannot offer a fixed arrival rate, so the
overload and soak benchmarks use this one: asyncio on uvloop, raw keep-alive connections, one
request per connection at a time.

- ``closed(port, request, connections, seconds)``: each connection sends its next request when the
  previous answer is in (the capacity measurement, and a fixed concurrency).
- ``open_loop(port, request, rate, seconds)``: requests are *scheduled* at a fixed rate, whatever the
  server does; each takes an idle connection or opens one (up to ``max_connections``, then waits for
  one).  Latency counts from the scheduled time, so time spent queueing in the client counts too
  (no coordinated omission).

Every answer is kept as (status, latency seconds, retry-after header or None, body); an exception
(connection refused or reset, a timeout) is kept as an error, never swallowed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import uvloop


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
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.idle_since = 0.0

    async def call(self, request: bytes) -> tuple[int, bytes | None, bytes, bool]:
        """(status, retry-after, body, keep-alive) of one request."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
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
        body = await self.reader.readexactly(length) if length else b""
        return status, retry_after, body, keep

    def close(self) -> None:
        self.writer.close()


async def _connect(port: int) -> _Conn:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    return _Conn(reader, writer)


async def _closed(port: int, request: bytes | Callable[[int], bytes], connections: int, seconds: float,
                  timeout: float) -> Run:
    run = Run()
    start = time.perf_counter()
    end = start + seconds

    async def client() -> None:
        conn = await _connect(port)
        try:
            while time.perf_counter() < end:
                i = run.sent
                run.sent += 1
                data = request(i) if callable(request) else request
                t0 = time.perf_counter()
                status, retry_after, body, keep = await asyncio.wait_for(conn.call(data), timeout)
                t1 = time.perf_counter()
                run.answers.append(Answer(status, t1 - t0, retry_after, body, t1 - start, i))
                if not keep:
                    conn.close()
                    conn = await _connect(port)
        except Exception as exc:  # noqa: BLE001 - kept and reported, never swallowed
            run.errors.append(repr(exc))
        finally:
            conn.close()

    await asyncio.gather(*(client() for _ in range(connections)))
    run.seconds = time.perf_counter() - start
    return run


async def _open(port: int, request: bytes | Callable[[int], bytes], rate: float, seconds: float,
                max_connections: int, timeout: float) -> Run:
    run = Run()
    idle: list[_Conn] = []
    opened = 0
    free = asyncio.Condition()
    start = time.perf_counter()
    total = int(rate * seconds)

    async def one(i: int, scheduled: float) -> None:
        nonlocal opened
        conn: _Conn | None = None
        try:
            async with free:
                while not idle and opened >= max_connections:
                    await free.wait()
                while idle and (idle[-1].reader.at_eof() or time.perf_counter() - idle[-1].idle_since > MAX_IDLE):
                    idle.pop().close()  # the server may close an idle keep-alive connection: never reuse an old one
                    opened -= 1
                if idle:
                    conn = idle.pop()
                else:
                    opened += 1
            if conn is None:
                try:
                    conn = await _connect(port)
                except BaseException:
                    async with free:
                        opened -= 1
                        free.notify()
                    raise
            data = request(i) if callable(request) else request
            status, retry_after, body, keep = await asyncio.wait_for(conn.call(data), timeout)
            now = time.perf_counter()
            run.answers.append(Answer(status, now - scheduled, retry_after, body, now - start, i))
            async with free:
                if keep:
                    conn.idle_since = time.perf_counter()
                    idle.append(conn)
                else:
                    conn.close()
                    opened -= 1
                free.notify()
            conn = None
        except Exception as exc:  # noqa: BLE001 - kept and reported, never swallowed
            run.errors.append(repr(exc))
            if conn is not None:
                conn.close()
                async with free:
                    opened -= 1
                    free.notify()

    tasks = []
    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -0.01:
            run.late_starts += 1
        tasks.append(asyncio.create_task(one(i, scheduled)))
    await asyncio.gather(*tasks)
    run.seconds = time.perf_counter() - start
    for conn in idle:
        conn.close()
    return run


def closed(port: int, request: bytes | Callable[[int], bytes], connections: int, seconds: float,
           timeout: float = 30.0) -> Run:
    return uvloop.run(_closed(port, request, connections, seconds, timeout))


def open_loop(port: int, request: bytes | Callable[[int], bytes], rate: float, seconds: float,
              max_connections: int = 256, timeout: float = 30.0) -> Run:
    return uvloop.run(_open(port, request, rate, seconds, max_connections, timeout))


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by the nearest rank; nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q * len(ordered) + 0.5)) - 1))]
