"""Graceful degradation under overload: shed the excess early, bound slow clients.

`Shedder` is an ASGI wrapper around the app.  A worker is one event loop running synchronous,
CPU-bound handlers, so the queue of an overloaded worker is not in the app (its in-flight count
stays near one) but in front of it: requests read and parsed in one turn of the loop wait, as
tasks, for the ones before them to be scored.  `protocol` stamps each request with the loop's time
when its first bytes were parsed (``RECEIVED``); the Shedder, when the request's turn comes, knows
how long it has waited.  A request that waited more than ``overload_max_lag`` seconds while the loop
is behind (its lag timer, ticking every `TICK` seconds, was itself more than ``overload_max_lag``
late: sustained load, not a single stall such as a model reload) is answered at once with ``503``
and ``Retry-After`` (in the service's one error shape), before its body is read: it costs little
more than its parsing, and the connection stays open.  Each turn of the loop therefore scores at
most ``overload_max_lag`` seconds of requests (plus the one that crosses it) and sheds the rest,
which bounds the latency of admitted requests to about twice that (the turn before, in which they
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


class Shedder:
    """ASGI wrapper: 503 + Retry-After for non-probe requests while the event loop lags."""

    def __init__(self, app: ASGIApp, settings: ServeSettings, metrics: Metrics) -> None:
        self.app = app
        self.max_lag = settings.overload_max_lag
        self.retry_after = b"%d" % settings.overload_retry_after
        self.shed = Counter("oncology_http_shed", "Requests answered 503 + Retry-After because the worker was overloaded",
                            ["reason"], registry=metrics.registry).labels("loop_lag")
        self._due = math.inf  # when the next tick should run; inf until the timer runs
        self._late = False  # whether the last tick ran more than max_lag late
        self._loop: asyncio.AbstractEventLoop | None = None

    def _tick(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        self._late = now - self._due > self.max_lag  # this tick itself came late: the loop was already behind
        self._due = now + TICK
        self._loop.call_at(self._due, self._tick)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.max_lag <= 0 or scope["path"] in EXEMPT:
            await self.app(scope, receive, send)
            return
        loop = self._loop
        if loop is None:  # first request: start the timer on the server's loop
            loop = self._loop = asyncio.get_running_loop()
            self._tick()
        # overloaded: this request waited too long for its turn, and the loop is behind (the last tick was late
        # too); a single stall alone (a GC pause, a model reload holding the GIL) sheds nothing
        if not self._late or loop.time() - scope.get(RECEIVED, math.inf) <= self.max_lag:
            await self.app(scope, receive, send)
            return
        self.shed.inc()  # the body is never read: the server discards it, and the connection is kept
        await send({"type": "http.response.start", "status": 503, "headers": SHED_HEADERS + [(b"retry-after", self.retry_after)]})
        await send({"type": "http.response.body", "body": SHED_BODY})


#: The scope key holding the loop's time when the request's first bytes were parsed (set by `protocol`).
RECEIVED: Final = "oncology.received"

SHED_BODY = schemas.encode({"error": "overloaded: the request was not processed; retry after the Retry-After seconds",
                            "status": 503, "request_id": "", "details": []})
SHED_HEADERS: Final = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(SHED_BODY))]


class _ReadDeadline(HttpToolsProtocol):
    """httptools with a deadline for receiving each whole request (slow clients are disconnected)."""

    read_timeout = 10.0
    _read_timer: asyncio.TimerHandle | None = None

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

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def protocol(settings: ServeSettings) -> type[HttpToolsProtocol]:
    """The HTTP protocol class for uvicorn's ``http`` option, with ``request_read_timeout``."""
    return type("HttpToolsReadDeadline", (_ReadDeadline,), {"read_timeout": settings.request_read_timeout})


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
