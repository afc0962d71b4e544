"""The access log: one JSON line per request, buffered and written in batches.

Python's `logging` costs about 30 µs per record here (record, formatter, datetime, json), as much
as the whole rest of a prediction.  A request's entry (`request`) costs a tuple appended to a
buffer: its line is made when the buffer is flushed, by the event loop every 50 ms or every 256
entries, and at shutdown.  Its time is the request's own clock reading (``time.perf_counter``,
which its latency is measured with), turned into the wall-clock time once per flush; its constant
parts (method, route and status; the model version) are encoded once and kept, so a line is a join
of bytes, the same bytes as encoding the whole entry would give.  It writes only what it is given:
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
#: A request's entry: its end (``time.perf_counter()``), request id, method, route, status, seconds, model version, arm.
_Entry = tuple[float, str, str, str, int, float, "str | None", "str | None"]


class AccessLog:
    def __init__(self, stream: BinaryIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr.buffer
        self._lines: list[bytes | _Entry] = []  # lines (`write`) and requests' entries (`request`), in order
        self._scheduled = False
        self._second = -1
        self._prefix = ""
        self._encode = msgspec.json.Encoder().encode
        self._middles: dict[tuple[str, str, int], bytes] = {}
        self._tails: dict[tuple[str | None, str | None], bytes] = {}

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
        ``time.perf_counter()``; now when not given)."""
        lines = self._lines
        lines.append((time.perf_counter() if end is None else end, request_id, method, route, status, seconds,
                      model_version, arm))
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
            self.stream.write(b"\n".join(self._made(lines)) + b"\n")
            self.stream.flush()

    def _made(self, lines: list[bytes | _Entry]) -> list[bytes]:
        """The lines of ``lines``, requests' entries made into lines."""
        made: list[bytes] = []
        append, encode, middles, tails = made.append, self._encode, self._middles, self._tails
        offset = time.time() - time.perf_counter()  # from the requests' clock to the wall clock
        last, head = -1, b""
        for line in lines:
            if isinstance(line, bytes):
                append(line)
                continue
            end, request_id, method, route, status, seconds, model_version, arm = line
            milli = int((end + offset) * 1000)
            if milli != last:  # the line's head up to the request id, once a millisecond of the batch
                last = milli
                head = b"".join((b'{"ts":"', self._date(milli // 1000).encode(), b".", _MILLIS[milli % 1000], _HEAD))
            middle = middles.get((method, route, status))
            if middle is None:
                middle = encode({"method": method, "route": route, "status": status})[1:-1]
                if len(middles) < MAX_CACHED:
                    middles[(method, route, status)] = middle
            tail = tails.get((model_version, arm))
            if tail is None:
                tail = b',"model_version":' + encode(model_version) + b',"arm":' + encode(arm) + b"}"
                if len(tails) < MAX_CACHED:
                    tails[(model_version, arm)] = tail
            # the latency in ms as JSON encodes round(ms, 3): its 3 decimals without trailing zeros (and one at least)
            latency = (b"%.3f" % (seconds * 1000)).rstrip(b"0")
            if latency[-1] == 46:  # b"."
                latency += b"0"
            append(b"".join((head, request_id.encode(), b'",', middle, b',"latency_ms":', latency, tail)))
        return made
