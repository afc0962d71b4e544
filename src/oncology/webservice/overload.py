"""Graceful degradation under overload: shed the excess early, bound slow clients.

`Shedder` is an ASGI wrapper around the app, and `protocol` the HTTP protocol that feeds it.  A
worker is one event loop running synchronous, CPU-bound handlers, so the queue of an overloaded
worker is not in the app (its in-flight count stays near one) but in front of it: requests read
and parsed in one turn of the loop wait, as tasks, for the ones before them to be scored.  The
budget is ``overload_max_lag`` seconds of waiting; it is enforced twice:

- at parse time (`Shedder.admit`, called by the protocol when a POST's headers are in): a request
  is admitted if the admitted requests still queued ahead of it would keep the loop busy for
  less than the budget (their number times the moving average of an admitted request's cost, in
  CPU time of the loop's thread), and otherwise answered at once with ``503`` and ``Retry-After``
  (in the service's one error shape) by the protocol itself: no ASGI task, its body skipped as it
  arrives, the connection kept.  That is the cheapest answer this server can give (through the app,
  a shed costs about as much CPU as a single-row prediction);
- at its turn (`Shedder.__call__`): a request that has waited more than the budget since its first
  bytes were parsed (``RECEIVED``), while the work still queued would also keep the loop busy for
  more than the budget, is answered 503 before its body is read.

Both with that budget only while the loop lags: its timer, ticking every `TICK` seconds, ran more
than half the budget late twice in a row within the last `LAG_HOLD` seconds (sustained load).
Otherwise the turn-time rule sheds nothing and the parse-time rule allows `BURST` budgets: the first
wave of an overload is capped before the lag shows.  A single stall (the process descheduled by a
busy machine, a GC pause, a model reload holding the GIL) sheds nothing: the wait it caused is over,
the queue it left is served in less than the budget, and the costs are CPU times, which a stall does
not inflate.  And neither rule sheds while fewer than ``overload_min_queue`` other requests wait in
the worker: a turn that comes late then is the machine's (the CPU taken by other processes, a pod's
cold start), not a queue's, and shedding a few would not shorten it.

Each turn of the loop therefore scores about one budget's worth of requests and sheds the rest,
which bounds the latency of admitted requests to a few budgets (the turn before, in which they
arrived, and their own).  Probes and scrapes (`EXEMPT`) are never shed: an overloaded worker is
still live, its readiness unchanged, its metrics readable.  Shed requests are counted in
``oncology_http_shed_total``; they skip the access log (writing a line each would add load).

`protocol(settings)` is the HTTP protocol for uvicorn: httptools with a deadline for reading
each request (headers and body, ``request_read_timeout``), counted from the connection or from
the request's first byte; a client slower than that (slowloris) is disconnected.  Idle
keep-alive connections are closed by uvicorn's ``timeout_keep_alive``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any, Final

from prometheus_client import Counter
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from oncology.settings import ServeSettings
from oncology.webservice import schemas
from oncology.webservice.metrics import Metrics

log = logging.getLogger("oncology.webservice")

#: Liveness, readiness and metrics: always answered.
EXEMPT = frozenset({"/healthz", "/readyz", "/metrics", "/ping", "/v2/health/live", "/v2/health/ready",
                    f"/v2/models/{schemas.V2_MODEL}/ready"})
#: Seconds between the lag timer's ticks (the lag is known to this resolution).
TICK = 0.01
#: How many budgets of queued work `Shedder.admit` lets in while the loop is not (yet) behind.
BURST = 2.0
#: Seconds the loop counts as behind after it last ran two ticks late in a row: shedding keeps some turns
#: short, and a turn on time amid overload must not let everything parsed in next (a long turn, a latency spike).
LAG_HOLD = 1.0


class Shedder:
    """ASGI wrapper: 503 + Retry-After for non-probe requests while the event loop lags."""

    def __init__(self, app: ASGIApp, settings: ServeSettings, metrics: Metrics) -> None:
        self.app = app
        self.max_lag = settings.overload_max_lag
        self.min_queue = settings.overload_min_queue
        self.retry_after = b"%d" % settings.overload_retry_after
        shed = Counter("oncology_http_shed", "Requests answered 503 + Retry-After because the worker was overloaded "
                       "(reason: queue, at parse time; loop_lag, at the request's turn)", ["reason"], registry=metrics.registry)
        self.shed, self.shed_queue = shed.labels("loop_lag"), shed.labels("queue")
        self._due = math.inf  # when the next tick should run; inf until the timer runs
        self._late = False  # whether the loop has stayed behind: the last two ticks each ran late
        self._was_late = False  # whether the last tick ran late
        self._lagging_until = -math.inf  # the loop time until which the loop counts as behind
        self._threshold = self.max_lag / 2  # a tick later than this ran late: a turn took half the budget
        self._loop: asyncio.AbstractEventLoop | None = None
        self.queued = 0  # requests admitted by the protocol (ADMITTED) and not finished yet
        self.cost = 0.0  # CPU seconds an admitted request keeps the loop busy (moving average)
        self.shed_response = (b"HTTP/1.1 503 Service Unavailable\r\n" + b"".join(
            name + b": " + value + b"\r\n" for name, value in [*SHED_HEADERS, (b"retry-after", self.retry_after)]))

    def admit(self) -> bool:
        """At parse time, once a POST's headers are in (from `protocol`): False to shed it there, cheaply, without
        a task.  (An admitted request joins ``queued`` once its body is in too: a slow upload does not hold the
        loop, and must not hold back others.)

        A request is shed when at least ``min_queue`` admitted requests are queued ahead of it and they would keep
        the loop busy for more than ``max_lag`` (their number times the moving average of their CPU cost) while the
        loop has stayed behind (two ticks in a row each more than half the budget late: sustained load), or for
        more than `BURST` times that otherwise (a burst after a single stall is let in; the first wave of an
        overload is not, before the lag has had time to show).
        """
        queued = self.queued  # (this request is not among them yet)
        if queued < self.min_queue or queued * self.cost <= (self.max_lag if self._late else BURST * self.max_lag):
            return True
        self.shed_queue.inc()
        return False

    def _tick(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        late = now - self._due > self._threshold  # this tick itself came late
        if late and self._was_late:  # ... and so did the one before it: the loop has stayed behind
            self._lagging_until = now + LAG_HOLD
        self._was_late = late
        self._late = now < self._lagging_until
        self._due = now + TICK
        self._loop.call_at(self._due, self._tick)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._serve(scope, receive, send)
        finally:
            if scope.get(ADMITTED, False):  # counted in self.queued by the protocol when its body was in
                self.queued -= 1

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.max_lag <= 0 or scope["path"] in EXEMPT:
            await self.app(scope, receive, send)
            return
        loop = self._loop
        if loop is None:  # first request: start the timer on the server's loop
            loop = self._loop = asyncio.get_running_loop()
            self._tick()
        # overloaded: this request waited too long for its turn, the loop is behind (its turns took half the budget
        # twice in a row), and the work still queued (this request's and the ones behind it) would make them wait
        # longer than the budget too.  A single stall (the process descheduled, a GC pause, a model reload holding
        # the GIL) sheds nothing: the wait it caused is over, and the queue it left is served in less than the budget
        now = loop.time()
        queued = self.queued
        if (not self._late or now - scope.get(RECEIVED, math.inf) <= self.max_lag
                or queued - scope.get(ADMITTED, False) < self.min_queue or queued * self.cost <= self.max_lag):
            cpu = time.thread_time()
            await self.app(scope, receive, send)
            # its cost: the CPU time of the loop's thread from its turn to its answer (time on the CPU, so that a
            # request that was descheduled or waited for the GIL does not count as costly: the next ones will not
            # be), measured when its body was all in before its turn (always under load: while it waits for its
            # body, the loop serves others)
            if scope.get(COMPLETE, math.inf) <= now:
                self.cost += (time.thread_time() - cpu - self.cost) * COST_WEIGHT
            return
        self.shed.inc()  # the body is never read: the server discards it, and the connection is kept
        await send({"type": "http.response.start", "status": 503,
                    "headers": SHED_HEADERS + [(b"retry-after", self.retry_after)]})
        await send({"type": "http.response.body", "body": SHED_BODY})


#: The scope key holding the loop's time when the request's first bytes were parsed (set by `protocol`).
RECEIVED: Final = "oncology.received"
#: The scope key set when the protocol counted the request in ``Shedder.queued`` (admitted, its body in, not answered).
ADMITTED: Final = "oncology.admitted"
#: The scope key holding the loop's time when the whole request (headers and body) was parsed (set by `protocol`).
COMPLETE: Final = "oncology.complete"
#: Weight of the newest request in the moving average of an admitted request's cost.
COST_WEIGHT: Final = 0.05

SHED_BODY = schemas.encode({"error": "overloaded: the request was not processed; retry after the Retry-After seconds",
                            "status": 503, "request_id": "", "details": []})
SHED_HEADERS: Final = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(SHED_BODY))]


class _ReadDeadline(HttpToolsProtocol):
    """httptools with a deadline for receiving each whole request (slow clients are disconnected), which sheds
    at parse time what `Shedder.admit` refuses."""

    read_timeout = 10.0
    shedder: Shedder | None = None
    _read_timer: asyncio.TimerHandle | None = None
    _shedding = False  # the request being parsed is shed: its body is skipped, the 503 written at its end
    _admitted = False  # the request being parsed was admitted by the shedder: queued once its body is in
    _keep_alive = True

    def _arm(self) -> None:
        if self._read_timer is None and self.read_timeout > 0:
            self._read_timer = self.loop.call_later(self.read_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _too_slow(self) -> None:
        self._read_timer = None
        if not self.transport.is_closing():
            log.debug("closing a connection that did not send its request in %.1fs", self.read_timeout)
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a connection that sends nothing at all is bounded too

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope[RECEIVED] = self.loop.time()  # type: ignore[typeddict-unknown-key]
        self._arm()

    def on_headers_complete(self) -> None:
        shedder = self.shedder
        if (shedder is not None and shedder.max_lag > 0 and self.parser.get_method() == b"POST"
                and (self.cycle is None or self.cycle.response_complete)  # no answer of this connection pending
                and not self.expect_100_continue and not self.parser.should_upgrade()
                and self.url.partition(b"?")[0].decode("latin-1") not in EXEMPT):
            if not shedder.admit():
                # no ASGI task, no scope: the cheapest answer this server can give (a shed costs as much CPU as
                # a small prediction when it goes through the app)
                self._shedding = True
                self._keep_alive = self.parser.should_keep_alive()
                return
            self._admitted = True
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._shedding:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()
        if not self._shedding:
            self.scope[COMPLETE] = self.loop.time()  # type: ignore[typeddict-unknown-key]
            if self._admitted:
                self._admitted = False
                if self.shedder is not None and not self.cycle.response_complete:  # (answered early: never queued)
                    self.scope[ADMITTED] = True  # type: ignore[typeddict-unknown-key]
                    self.shedder.queued += 1
            super().on_message_complete()
            return
        self._shedding = False
        assert self.shedder is not None
        default = b"".join(name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers)
        close = b"" if self._keep_alive else b"connection: close\r\n"
        self.transport.write(self.shedder.shed_response + default + close + b"\r\n" + SHED_BODY)
        if not self._keep_alive:
            self.transport.close()
            return
        self.on_response_complete()  # as after any answer: reading resumed, the keep-alive timer armed

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def protocol(settings: ServeSettings, shedder: Shedder | None = None) -> type[HttpToolsProtocol]:
    """The HTTP protocol class for uvicorn's ``http`` option, with ``request_read_timeout``, shedding at parse
    time for ``shedder`` (the one wrapping the app it serves) when given."""
    return type("HttpToolsReadDeadline", (_ReadDeadline,),
                {"read_timeout": settings.request_read_timeout, "shedder": shedder})


def document(doc: dict[str, Any]) -> dict[str, Any]:
    """Add the overload answer (503 with Retry-After) to every operation of an OpenAPI document that can be shed."""
    overloaded = "The worker is overloaded: the request was not processed; retry after `Retry-After` seconds."
    retry_after = {"Retry-After": {"description": "Seconds to wait before retrying (sent with an overload 503).",
                                   "schema": {"type": "integer", "minimum": 1}}}
    for path, operations in doc["paths"].items():
        if path.replace("{model_name}", schemas.V2_MODEL) in EXEMPT:
            continue
        for operation in operations.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            answer = operation["responses"].setdefault("503", {"description": "", "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}})
            answer["description"] = f"{answer['description']} Or: {overloaded}".strip() if answer["description"] else overloaded
            answer["headers"] = retry_after
    return doc
