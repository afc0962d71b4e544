"""The access log: one JSON line per request, buffered and written in batches.

Python's `logging` costs about 30 µs per record here (record, formatter, datetime, json), as much
as the whole rest of a prediction; this writer costs about 2 µs, and a request's line (`request`)
less: its constant parts (method, route and status; the model version) are encoded once and kept,
so a line is a join of bytes, the same bytes as encoding the whole entry would give.  Lines are
flushed by the event loop every 50 ms or every 256 lines, and at shutdown.  It writes only what it
is given: the handlers never give it feature values (patient data).
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any, BinaryIO

import msgspec

FLUSH_SECONDS = 0.05
MAX_BUFFERED = 256
#: At most this many (method, route, status) and model-version encodings are kept (methods are the client's).
MAX_CACHED = 512
_HEAD = b'","level":"info","logger":"oncology.access","msg":"request","request_id":"'


class AccessLog:
    def __init__(self, stream: BinaryIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr.buffer
        self._lines: list[bytes] = []
        self._scheduled = False
        self._second = -1
        self._prefix = ""
        self._encode = msgspec.json.Encoder().encode
        self._middles: dict[tuple[str, str, int], bytes] = {}
        self._tails: dict[tuple[str | None, str | None], bytes] = {}

    def _timestamp(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:  # format the date once a second
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{int((now - second) * 1000):03d}+00:00"

    def write(self, entry: dict[str, Any]) -> None:
        self._append(self._encode({"ts": self._timestamp(), "level": "info", "logger": "oncology.access", "msg": "request", **entry}))

    def request(self, request_id: str, method: str, route: str, status: int, seconds: float,
                model_version: str | None, arm: str | None = None) -> None:
        """One request's line: the same bytes as `write` of ``{"request_id": ..., "method": ..., "route": ...,
        "status": ..., "latency_ms": ..., "model_version": ..., "arm": ...}`` (``request_id`` is the service's, which needs no
        escaping in JSON: `transport` accepts only ``[A-Za-z0-9._:-]`` from a client)."""
        middle = self._middles.get((method, route, status))
        if middle is None:
            middle = self._encode({"method": method, "route": route, "status": status})[1:-1]
            if len(self._middles) < MAX_CACHED:
                self._middles[(method, route, status)] = middle
        tail = self._tails.get((model_version, arm))
        if tail is None:
            tail = b',"model_version":' + self._encode(model_version) + b',"arm":' + self._encode(arm) + b"}"
            if len(self._tails) < MAX_CACHED:
                self._tails[(model_version, arm)] = tail
        self._append(b"".join((b'{"ts":"', self._timestamp().encode(), _HEAD, request_id.encode(), b'",', middle,
                               b',"latency_ms":', self._encode(round(seconds * 1000, 3)), tail)))

    def _append(self, line: bytes) -> None:
        self._lines.append(line)
        if len(self._lines) >= MAX_BUFFERED:
            self.flush()
        elif not self._scheduled:
            try:
                asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)
                self._scheduled = True
            except RuntimeError:  # no loop: write now
                self.flush()

    def flush(self) -> None:
        self._scheduled = False
        if self._lines:
            data = b"\n".join(self._lines) + b"\n"
            self._lines.clear()
            self.stream.write(data)
            self.stream.flush()
