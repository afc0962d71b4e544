"""The access log: one JSON line per request, buffered and written in batches.

Python's `logging` costs about 30 µs per record here (record, formatter, datetime, json), as much
as the whole rest of a prediction.  A request's line (`request`) is a join of bytes appended to a
buffer, written by the event loop every 50 ms or every 256 lines, and at shutdown.  Its time is the
request's own clock reading (``time.perf_counter``, which its latency is measured with), turned into
the wall-clock time by an offset taken at the first line of each batch, its head up to the request id made once a
millisecond; its constant parts (method, route and status; the model version) are encoded once and
kept, so the line is the same bytes as encoding the whole entry would give.  It writes only what it is given:
the handlers never give it feature values (patient data).
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
#: A timestamp's milliseconds, by their number.
_MILLIS = [b"%03d" % milli for milli in range(1000)]
_HEAD = b'+00:00","level":"info","logger":"oncology.access","msg":"request","request_id":"'


class AccessLog:
    def __init__(self, stream: BinaryIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr.buffer
        self._lines: list[bytes] = []  # lines not yet written, in order
        self._scheduled = False
        self._second = -1
        self._prefix = ""
        self._encode = msgspec.json.Encoder().encode
        self._middles: dict[tuple[str, str, int], bytes] = {}
        self._tails: dict[tuple[str | None, str | None], bytes] = {}
        #: from the requests' clock (``time.perf_counter``) to the wall clock, taken at the first line of each batch
        self._offset = time.time() - time.perf_counter()
        self._milli = -1  # the millisecond of ``_head``, the start of its lines
        self._head = b""

    def _date(self, second: int) -> str:
        """``second`` (since the epoch) as ISO 8601 up to its seconds, formatted once a second."""
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return self._prefix

    def _timestamp(self) -> str:
        now = time.time()
        second = int(now)
        return f"{self._date(second)}.{int((now - second) * 1000):03d}+00:00"

    def write(self, entry: dict[str, Any]) -> None:
        self._append(self._encode({"ts": self._timestamp(), "level": "info", "logger": "oncology.access", "msg": "request", **entry}))

    def request(self, request_id: str, method: str, route: str, status: int, seconds: float,
                model_version: str | None, arm: str | None = None, end: float | None = None) -> None:
        """One request's line: the same bytes as `write` of ``{"request_id": ..., "method": ..., "route": ...,
        "status": ..., "latency_ms": ..., "model_version": ..., "arm": ...}`` (``request_id`` is the service's, which needs no
        escaping in JSON: `transport` accepts only ``[A-Za-z0-9._:-]`` from a client), timed at ``end`` (a reading of
        ``time.perf_counter()``; now when not given).

        The line is made here, not when the buffer is flushed: making 256 lines at once held the event loop for
        ~200 µs, and every request in flight waited that long (the tail of the latency at c=8); made one at a time
        they cost the same in all, spread evenly."""
        lines = self._lines
        if not lines:  # the first line of a batch: the wall clock again (it may have been stepped since)
            self._offset = time.time() - time.perf_counter()
        milli = int(((time.perf_counter() if end is None else end) + self._offset) * 1000)
        if milli != self._milli:  # the line's head up to the request id, once a millisecond
            self._milli = milli
            self._head = b"".join((b'{"ts":"', self._date(milli // 1000).encode(), b".", _MILLIS[milli % 1000], _HEAD))
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
        # the latency in ms as JSON encodes round(ms, 3): its 3 decimals without trailing zeros (and one at least)
        latency = (b"%.3f" % (seconds * 1000)).rstrip(b"0")
        if latency[-1] == 46:  # b"."
            latency += b"0"
        lines.append(b"".join((self._head, request_id.encode(), b'",', middle, b',"latency_ms":', latency, tail)))
        if len(lines) >= MAX_BUFFERED:
            self.flush()
        elif not self._scheduled:
            self._schedule()

    def _append(self, line: bytes) -> None:
        self._lines.append(line)
        if len(self._lines) >= MAX_BUFFERED:
            self.flush()
        elif not self._scheduled:
            self._schedule()

    def _schedule(self) -> None:
        try:
            asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)
            self._scheduled = True
        except RuntimeError:  # no loop: write now
            self.flush()

    def flush(self) -> None:
        self._scheduled = False
        if self._lines:
            lines, self._lines = self._lines, []
            self.stream.write(b"\n".join(lines) + b"\n")
            self.stream.flush()
