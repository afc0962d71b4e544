"""The prediction log: every prediction, buffered in memory and written to the store in batches.

Opt-in (``ONCOLOGY_PREDICTION_LOG``): the records hold the tumor's features, which are patient data.
Knows nothing of HTTP.  The request path only calls `PredictionLog.record`, which turns each
prediction into one small untracked struct (the line to be, timestamp formatted) on a bounded buffer
and never waits, raises or touches the store; a background thread encodes and compresses whole batches, a few
hundred lines at a time with the CPU yielded between (the event loop shares it), and writes them.

Each batch becomes immutable objects (`Store.create`, write-once), one per UTC date of its records::

    monitoring/predictions/date=YYYY-MM-DD/<writer>-<seq>.jsonl.gz

gzip JSON Lines, one line per prediction, keys in this order::

    {"ts": "2026-12-01T21:40:00.123+00:00", "request_id": "...", "model_version": "1.0.1", "route": "/predict",
     "inputs": {"clump_thickness": 5, ... the nine features in FEATURES order},
     "probability": 0.0344, "prediction": "benign", "decision": "benign", "latency_ms": 0.213}

While a release is under way, two more keys end each line: ``arm``, the request's part in the release
(``candidate``, ``shadow``: the candidate's score of a request the champion answered, under the same
request id and timestamp; ``pinned``: a request that named its version; ``champion`` is left out, as outside a
release), and ``latency_ms``, the time the model took to score the request (the same for every row of a
batch, to the microsecond).  A request the model failed to score is one line with ``"prediction": "error"`` (and
``"decision": "error"``, ``inputs`` and ``probability`` null): the release judge counts them.

``<writer>`` is unique per process and start (`default_writer_id`: host, pid and 8 random hex
digits), so the workers of ``--workers N`` and the replicas of a deployment never name the same
object; ``<seq>`` counts the writer's objects, zero-padded.  The ``date=`` folders are Hive-style
partitions (Athena, Glue, QuickSight).

A slow or failing store never slows or fails a prediction: the buffer is bounded, a batch that
cannot be written is retried a bounded number of times and then dropped, and a prediction that
finds the buffer full is dropped; every dropped prediction is counted
(``oncology_prediction_log_dropped_total{reason}``).  `PredictionLog.close` writes what is
buffered at shutdown, within its timeout.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from itertools import repeat
from typing import Any, Final

import msgspec
from isal import isal_zlib

from oncology.settings import ServeSettings
from oncology.webservice.metrics import Metrics
from oncology_model.datamodel import FEATURES
from oncology_model.errors import OncologyError, RegistryError, StoreError
from oncology_model.storage import Store, open_store

log = logging.getLogger("oncology.webservice.predlog")

PREFIX: Final = "monitoring/predictions"
#: Why a prediction was left out of the log (the ``reason`` label of the dropped counter).
DROP_REASONS: Final = ("buffer_full", "write_failed", "shutdown", "invalid")
#: Lines encoded per call.  After each call, and after compressing each call's bytes, the writer thread yields the
#: CPU (`_yield`): it shares the worker's CPU with the event loop, and a batch encoded and compressed in one go (5,000
#: lines, several ms of CPU, the first part holding the GIL) held up every request that came meanwhile: p99 at 8
#: connections 2.9-3.2 ms with the log on against 0.4 ms off; in pieces of 128 lines with a yield between, 0.7-0.8 ms
#: (`benchmarks/predlog.py --http`, each server alone).
_CHUNK = 128
#: Gives the CPU, and the GIL, to a thread that waits for them (the event loop's), between two pieces of a batch.
_yield = os.sched_yield
#: ISA-L's deflate at its level 0: ~1.1k instructions a line where zlib's level 1 takes ~10k (the largest part
#: of the writer's cost, on the CPU the requests need), for objects ~1.5x larger (these lines compress ~16x
#: instead of ~25x).  Not its level 1: its ratio depends on the data (8x to 25x on batches of these lines).
_gzip = isal_zlib.compress
_GZIP_LEVEL = 0


def _compress(chunks: list[bytes]) -> bytes:
    """One gzip member (header and CRC: wbits=31) of ``chunks`` joined, compressed a chunk at a time with a yield
    between (`_CHUNK`); the same bytes as `_gzip` of them joined would decompress to."""
    stream = isal_zlib.compressobj(_GZIP_LEVEL, isal_zlib.DEFLATED, 31)
    parts = []
    for chunk in chunks:
        parts.append(stream.compress(chunk))
        _yield()
    parts.append(stream.flush())
    return b"".join(parts)


# gc=False: record() makes two of these per prediction and the buffer keeps them until their batch is written;
# untracked, they neither trigger nor lengthen the garbage collector's passes (they hold only strings, numbers,
# enum members and each other, so they cannot be part of a reference cycle).  A buffer of the request's own
# tuples and lists instead cost ~3% of single-row throughput in retained, tracked objects alone.
_Inputs: Any = msgspec.defstruct("PredictionInputs", list(FEATURES), gc=False)
#: A timestamp's end, by its milliseconds: ".000+00:00" ... ".999+00:00" (an f-string with a format spec costs
#: more than the rest of a line's serialisation).
_MILLIS: Final = tuple(f".{ms:03d}+00:00" for ms in range(1000))


#: A line's latency outside a release: left out of the line.  msgspec leaves out a field whose value *is* its default
#: (the same object), so `record` passes this very object (another 0.0 would be written as "latency_ms":0.0).
_NO_LATENCY: Final = 0.0


class _Line(msgspec.Struct, gc=False, omit_defaults=True):
    ts: str
    request_id: str
    model_version: str
    route: str
    inputs: Any
    probability: float | None
    prediction: str
    decision: str
    arm: str = "champion"  # omitted when "champion" (and 0.0): outside a release the lines are as before
    latency_ms: float | msgspec.Raw = _NO_LATENCY  # (Raw: written once for a pass's lines, `record_shadow_lines`)


def _shadow_lines(answered: Sequence[_Line], model_version: str, probabilities: Sequence[float], labels: Sequence[str],
                  decisions: Sequence[str], latencies_ms: Iterable[float | msgspec.Raw]) -> list[_Line]:
    """The shadow lines of rows each logged in one champion line (``answered``): its timestamp, request id, route and
    inputs (the same objects), the candidate's version, scores and latency, arm ``shadow``."""
    # made whole, positionally (msgspec's `replace` with six keywords cost ~1,000 instructions more a line; C maps
    # over the line's type with `attrgetter`s of the champion line's fields, ~25% more time a pass than this)
    return [_Line(line.ts, line.request_id, model_version, line.route, line.inputs, probability, label, decision,
                  "shadow", latency_ms)
            for line, probability, label, decision, latency_ms
            in zip(answered, probabilities, labels, decisions, latencies_ms, strict=True)]


def default_writer_id() -> str:
    """``<host>-<pid>-<8 random hex digits>``: unique per process and start, also across replicas and restarts."""
    host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname()) or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(4)}"


def object_key(date: str, writer_id: str, seq: int) -> str:
    return f"{PREFIX}/date={date}/{writer_id}-{seq:08d}.jsonl.gz"


class PredictionLog:
    """A bounded in-memory buffer of predictions and the thread that writes it to ``store`` in batches.

    ``record`` is called on the request path; ``start`` starts the writer; ``close`` writes what is
    left and stops it.  Counts: ``written``, ``dropped`` (by reason), ``write_failures``, ``buffered``;
    also in ``metrics`` when given.  ``errors`` keeps every unexpected exception of the writer (a bug,
    never a store failure), which is also logged.
    """

    def __init__(
        self,
        store: Store,
        writer_id: str,
        max_buffered: int = 20_000,
        batch_rows: int = 5_000,
        flush_seconds: float = 10.0,
        metrics: Metrics | None = None,
        retries: int = 2,
        retry_seconds: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not re.fullmatch(r"[A-Za-z0-9._-]+", writer_id):
            raise ValueError(f"writer id {writer_id!r}: use letters, digits, '.', '_' and '-' only")
        self.store = store
        self.writer_id = writer_id
        self.max_buffered = max_buffered
        self.batch_rows = batch_rows
        self.flush_seconds = flush_seconds
        self.retries = retries
        self.retry_seconds = retry_seconds
        self._clock = clock
        self._entries: deque[_Line] = deque()
        self._lock = threading.Lock()
        self._queued = 0  # lines in _entries
        self._buffered = 0  # lines in _entries plus the batch being written
        self._second: tuple[int, str, str] = (-1, "", "")  # (UTC second, its "YYYY-MM-DDTHH:MM:SS", its date)
        self._dates_mixed = False  # a line in _entries may have another UTC date than the line before it
        self._closed = False
        self._abandoned = False  # close() gave up waiting: it counted the rest as dropped
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._deadline = float("inf")  # monotonic: set by close()
        self._thread: threading.Thread | None = None
        self._seq = 0
        self.written = 0
        self.dropped = dict.fromkeys(DROP_REASONS, 0)
        self.write_failures = 0
        self.errors: list[BaseException] = []
        encoder = msgspec.json.Encoder()
        self._encode_lines, self._encode = encoder.encode_lines, encoder.encode
        self._metrics = metrics
        self._drop_counters = {r: metrics.prediction_log_dropped.labels(r) for r in DROP_REASONS} if metrics else {}

    # ---- the request path ------------------------------------------------------------------------

    def record(
        self,
        route: str,
        request_id: str,
        model_version: str,
        rows: Sequence[Sequence[int]],
        probabilities: Sequence[float],
        labels: Sequence[str],
        decisions: Sequence[str] | None = None,
        arm: str = "champion",
        latency_ms: float = _NO_LATENCY,
    ) -> Sequence[_Line] | None:
        """Buffer the predictions of one request (``decisions`` default to ``labels``); the lines made (kept or
        dropped), from which `record_shadow` logs a shadow score of the same request, or None if none could be.

        Never blocks on the store and never raises: a prediction that does not fit in the buffer
        (or arrives after `close`) is dropped and counted.  What is kept is copied into the lines, so the
        caller's sequences are not kept alive (nor can later changes to them reach the log).
        """
        try:
            stamp = self._stamp()
            if len(probabilities) == 1:  # the common case, without a loop; the unpacking checks every length
                (row,), (probability,), (label,) = rows, probabilities, labels
                (decision,) = (label,) if decisions is None else decisions
                lines: Sequence[_Line] = (_Line(stamp, request_id, model_version, route, _Inputs(*row), probability,
                                                label, decision, arm, latency_ms),)
            else:
                lines = [
                    _Line(stamp, request_id, model_version, route, _Inputs(*row), probability, label, decision, arm,
                          latency_ms)
                    for row, probability, label, decision in zip(
                        rows, probabilities, labels, labels if decisions is None else decisions, strict=True)
                ]
            self._buffer(lines)
            return lines
        except Exception as exc:  # never fail a prediction because of its log: count it and keep the error
            self.errors.append(exc)
            self._drop("invalid", _length(probabilities))
            return None

    def record_shadow(
        self,
        answered: Sequence[Sequence[_Line]],
        model_version: str,
        probabilities: Sequence[float],
        labels: Sequence[str],
        decisions: Sequence[str],
        latencies_ms: Sequence[float],
    ) -> None:
        """Buffer the candidate's scores of requests the champion answered, arm ``shadow``: ``answered`` holds, for
        each request, the lines `record` made of the champion's answer; ``probabilities``, ``labels`` and
        ``decisions`` every row of them in that order, ``latencies_ms`` each request's scoring time.

        Each shadow line takes its champion line's timestamp, request id, route and inputs (the same objects: the
        row is not copied again), so the two lines of a pair differ only in the version, the scores, the arm and the
        latency, and fall in the same window and date.  Never blocks or raises, as `record`.
        """
        try:
            if list(map(len, answered)).count(1) == len(answered) == len(probabilities):  # a line a request
                self._buffer(_shadow_lines([line for (line,) in answered], model_version, probabilities, labels,
                                           decisions, latencies_ms))
                return
            lines = []
            row = 0
            for request_lines, latency_ms in zip(answered, latencies_ms, strict=True):
                for line in request_lines:
                    lines.append(_Line(line.ts, line.request_id, model_version, line.route, line.inputs,
                                       probabilities[row], labels[row], decisions[row], "shadow", latency_ms))
                    row += 1
            if row != len(probabilities):
                raise ValueError(f"{row} logged rows for {len(probabilities)} shadow scores")
            self._buffer(lines)
        except Exception as exc:
            self.errors.append(exc)
            self._drop("invalid", _length(probabilities))

    def record_shadow_lines(
        self,
        answered: Sequence[_Line],
        model_version: str,
        probabilities: Sequence[float],
        labels: Sequence[str],
        decisions: Sequence[str],
        latency_ms: float,
    ) -> None:
        """`record_shadow` of one-row requests: ``answered`` holds each request's one champion line, and every request
        took ``latency_ms`` (one row's share of the candidate's call)."""
        try:
            # the lines' one latency as msgspec writes it, written once: a short decimal's shortest form is msgspec's
            # slowest float (~400 instructions), once a line in the writer
            latency = msgspec.Raw(self._encode(latency_ms))
            self._buffer(_shadow_lines(answered, model_version, probabilities, labels, decisions,
                                       repeat(latency, len(answered))))
        except Exception as exc:
            self.errors.append(exc)
            self._drop("invalid", _length(probabilities))

    def record_error(self, route: str, request_id: str, model_version: str, arm: str, latency_ms: float) -> None:
        """Buffer one request that the model failed to score (see the module's documentation)."""
        try:
            self._buffer((_Line(self._stamp(), request_id, model_version, route, None, None, "error", "error", arm,
                                latency_ms),))
        except Exception as exc:
            self.errors.append(exc)
            self._drop("invalid", 1)

    def _buffer(self, lines: Sequence[_Line]) -> None:
        n = len(lines)
        with self._lock:
            if self._closed:
                reason = "shutdown"
            elif self._buffered + n > self.max_buffered:
                reason = "buffer_full"
            else:
                self._entries.extend(lines)
                self._queued += n
                self._buffered += n
                if self._queued >= self.batch_rows and not self._wake.is_set():
                    self._wake.set()
                return
            self.dropped[reason] += n
        counter = self._drop_counters.get(reason)
        if counter is not None:
            counter.inc(n)

    def _stamp(self) -> str:
        """Now, as "YYYY-MM-DDTHH:MM:SS.mmm+00:00" (UTC, to the nearest millisecond): the second's part is formatted
        once a second, the milliseconds looked up."""
        milli = round(self._clock() * 1000)  # binary floats: .998 is .99799...
        second, ms = divmod(milli, 1000)
        cached = self._second
        if cached[0] != second:
            prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            if prefix[:10] != cached[2] and cached[2]:  # (the first line of all follows no other)
                self._dates_mixed = True  # a new date (or a clock that went back past midnight): the writer splits
            cached = self._second = (second, prefix, prefix[:10])
        return cached[1] + _MILLIS[ms]

    @property
    def buffered(self) -> int:
        """Predictions recorded and not yet written or dropped."""
        return self._buffered

    # ---- life cycle ------------------------------------------------------------------------------

    def start(self) -> PredictionLog:
        """Start the writer thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
            self._thread.start()
        return self

    def close(self, timeout: float = 5.0) -> bool:
        """Write everything buffered (for up to ``timeout`` seconds), then stop; later records are dropped.

        True if nothing was lost meanwhile.  What could not be written in time is dropped and counted (reason
        ``shutdown``; a write still in flight then may land all the same).  Blocks: from async code,
        ``await asyncio.to_thread(log.close, timeout)``.
        """
        with self._lock:
            self._closed = True
            lost_before = sum(self.dropped.values())
        self._deadline = time.monotonic() + timeout
        self._stop.set()
        self._wake.set()
        self.start()  # a log that was never started still writes what it holds
        assert self._thread is not None
        self._thread.join(timeout + 1.0)  # the writer gives up at the deadline; a store call may overrun it a little
        with self._lock:
            self._abandoned = True
            left = self._buffered
            self._buffered = self._queued = 0
            self._entries.clear()
            if left:
                self.dropped["shutdown"] += left
        if left:
            log.error("prediction log: %d predictions could not be written before shutdown and are lost", left)
            counter = self._drop_counters.get("shutdown")
            if counter is not None:
                counter.inc(left)
        self._sample_gauge()
        return sum(self.dropped.values()) == lost_before and not self._thread.is_alive()

    # ---- the writer thread -----------------------------------------------------------------------

    def _run(self) -> None:
        last_flush = time.monotonic()
        tick = min(self.flush_seconds, 1.0)
        while True:
            stopping = self._stop.is_set()
            if not stopping:
                self._wake.wait(tick)
                self._wake.clear()
                stopping = self._stop.is_set()
            try:
                now = time.monotonic()
                if stopping or now - last_flush >= self.flush_seconds:
                    self._write_queued(everything=True)
                    last_flush = now
                elif self._queued >= self.batch_rows:
                    self._write_queued(everything=False)
                self._sample_gauge()
            except Exception as exc:  # a bug: keep the thread alive, log it, and keep it for the tests
                self.errors.append(exc)
                log.exception("prediction log writer failed")
            if stopping:
                return

    def _write_queued(self, everything: bool) -> None:
        """Write full batches; with ``everything``, also the rest that was queued when it started."""
        budget = self._queued
        while self._queued and (self._queued >= self.batch_rows or (everything and budget > 0)):
            if time.monotonic() >= self._deadline:
                return  # close() counts what is left
            lines, mixed = self._take()
            n = len(lines)
            budget -= n
            try:
                self._write_batch(lines, mixed)
            finally:
                with self._lock:  # (close() may have given up on this batch and zeroed the count)
                    self._buffered = max(0, self._buffered - n)

    def _take(self) -> tuple[list[_Line], bool]:
        """Up to ``batch_rows`` lines, oldest first, and whether their dates may differ."""
        with self._lock:
            entries = self._entries
            lines = list(entries)
            entries.clear()
            if len(lines) > self.batch_rows:  # the rest goes back, in order: in C, where a popleft a line cost
                # ~300 instructions more a line (under load the writer usually finds more than a batch waiting)
                entries.extend(lines[self.batch_rows:])
                del lines[self.batch_rows:]
            self._queued -= len(lines)
            mixed = self._dates_mixed
            if not entries:  # what arrives from now on follows nothing that is left: it starts the next batch
                self._dates_mixed = False
        return lines, mixed

    def _write_batch(self, lines: list[_Line], mixed: bool) -> None:
        by_date, invalid = self._serialise(lines, mixed)
        if invalid:
            self._drop("invalid", invalid)
        for date, (chunks, rows) in by_date.items():
            data = _compress(chunks)
            created = self._create(date, data)
            if self._abandoned:  # close() has already counted these as dropped
                continue
            if created:
                self.written += rows
                if self._metrics is not None:
                    self._metrics.prediction_log_written.inc(rows)
            else:
                self._drop("write_failed", rows)

    def _create(self, date: str, data: bytes) -> bool:
        """Write one object, retrying a failing store; False if it could not be written."""
        key = self._next_key(date)
        delay = self.retry_seconds
        for attempt in range(self.retries + 1):
            try:
                self.store.create(key, data)  # the same bytes again (a retry after a lost answer) is a no-op
                if attempt:
                    log.info("prediction log: %s written after %d failed attempts", key, attempt)
                return True
            except RegistryError as exc:  # the key holds other bytes: never overwrite, take the next number
                log.error("prediction log: %s; writing under a new key", exc)
                key = self._next_key(date)
            except OncologyError as exc:  # StoreError, StoreUnavailable: the store is failing
                self.write_failures += 1
                if self._metrics is not None:
                    self._metrics.prediction_log_write_failures.inc()
                left = self._deadline - time.monotonic()
                if attempt == self.retries or left <= 0:
                    log.error("prediction log: cannot write %s (%s); its predictions are dropped", key, exc)
                    return False
                log.warning("prediction log: cannot write %s (%s); retrying in %.1fs", key, exc, min(delay, left))
                time.sleep(min(delay, left))  # the writer's own back-off: no request waits for it
                delay *= 2
        return False

    def _next_key(self, date: str) -> str:
        self._seq += 1
        return object_key(date, self.writer_id, self._seq)

    def _drop(self, reason: str, n: int) -> None:
        with self._lock:
            self.dropped[reason] += n
        counter = self._drop_counters.get(reason)
        if counter is not None:
            counter.inc(n)

    def _serialise(self, lines: list[_Line], mixed: bool) -> tuple[dict[str, tuple[list[bytes], int]], int]:
        """JSON Lines by UTC date, in the order recorded, and the number of predictions that could not be encoded.

        msgspec encodes ``_CHUNK`` lines a call, the CPU yielded after each (`_yield`: the event loop runs between); only a batch
        whose dates may differ (``mixed``: around midnight, or a clock set back) is split line by line first.
        """
        if not lines:
            return {}, 0
        groups: dict[str, list[_Line]] = {}
        if mixed:
            for line in lines:
                groups.setdefault(line.ts[:10], []).append(line)
        else:
            groups[lines[0].ts[:10]] = lines
        by_date: dict[str, tuple[list[bytes], int]] = {}
        invalid = 0
        encode_lines = self._encode_lines
        for date, group in groups.items():
            chunks: list[bytes] = []
            rows = 0
            for start in range(0, len(group), _CHUNK):
                chunk = group[start:start + _CHUNK]
                try:
                    chunks.append(encode_lines(chunk))
                    rows += len(chunk)
                    _yield()
                except (TypeError, ValueError, msgspec.EncodeError):  # a caller passed what JSON cannot hold
                    for line in chunk:  # find it: the others are written
                        try:
                            chunks.append(encode_lines((line,)))
                            rows += 1
                        except (TypeError, ValueError, msgspec.EncodeError) as exc:
                            self.errors.append(exc)
                            log.error("prediction log: a prediction of request %s cannot be encoded (%r); dropped",
                                      line.request_id, exc)
                            invalid += 1
            if rows:
                by_date[date] = (chunks, rows)
        return by_date, invalid

    def _sample_gauge(self) -> None:
        if self._metrics is not None:
            self._metrics.prediction_log_buffered.set(self._buffered)


def _length(values: object) -> int:
    try:
        return len(values)  # type: ignore[arg-type]
    except TypeError:
        return 1


def from_settings(settings: ServeSettings, metrics: Metrics | None = None, writer_id: str | None = None) -> PredictionLog | None:
    """The prediction log that ``settings`` ask for (not started), or None when it is off."""
    if not settings.prediction_log:
        return None
    uri = settings.prediction_log_store or settings.store
    if not uri:
        raise StoreError("prediction_log needs a store: set ONCOLOGY_PREDICTION_LOG_STORE (or ONCOLOGY_STORE)")
    prediction_log = PredictionLog(
        open_store(uri),
        writer_id or default_writer_id(),
        max_buffered=settings.prediction_log_max_buffered,
        batch_rows=settings.prediction_log_batch_rows,
        flush_seconds=settings.prediction_log_flush_seconds,
        metrics=metrics,
    )
    log.warning("prediction log on: every prediction's inputs (patient data) go to %s/%s/ as %s-*.jsonl.gz",
                uri, PREFIX, prediction_log.writer_id)
    return prediction_log
