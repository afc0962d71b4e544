"""The HTTP transport: ASGI in, a handler's `Reply` (or the one error shape) out.

- `Req` is what a handler sees of a request (method, headers, path parameters, body); `Reply` is
  what it answers.  Handlers raise an `APIError` for anything a client did wrong.
- `Endpoint` adapts a handler to ASGI: it reads the request, calls the handler and sends the
  reply, rendering every `APIError` in the one error shape.
- `Front` is the outermost ASGI app: it gives every request an id, times, counts and logs it,
  and sends the hot routes (`POST /predict`, ...) straight to their endpoint; every other path
  goes through Starlette's router (path parameters, 404/405, the docs' static files).  Skipping
  the framework on the hot path halves the cost of a prediction (see benchmarks/).
- `Front.inline` is the same for a hot route's request that the HTTP protocol answers itself, without ASGI
  (`overload._ReadDeadline`): the same request id, handler, answer and error handling; the protocol writes the
  answer and calls `Front.finish` (metrics, access log), as `Front.__call__` does.

Nothing here knows the model or any protocol's shapes.
"""

from __future__ import annotations

import logging
import os
import re
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine, Generator
from dataclasses import dataclass, field
from random import getrandbits as _random_bits
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from oncology.webservice import errors, schemas
from oncology.webservice.accesslog import AccessLog
from oncology.webservice.metrics import Metrics
from oncology.webservice.model import ModelHolder

log = logging.getLogger("oncology.webservice")

JSON = b"application/json"
_JSON_TYPE = (b"content-type", JSON)
_clock = time.perf_counter
OCTETS = b"application/octet-stream"
MARKDOWN = b"text/markdown; charset=utf-8"
#: Logged (never sent) for a client that went away before its request was read, as nginx does.
CLIENT_CLOSED = 499
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # fullmatch: no trailing newline
#: Probes and scrapes stay out of the access log (they would drown it).
QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready", "/ping"})


@dataclass(slots=True)
class Req:
    """What a handler sees of a request."""

    method: str
    headers: dict[bytes, bytes]  # lower-case names; the last value of a repeated header
    path_params: dict[str, str]
    state: dict[str, Any]
    receive: Receive
    query: bytes = b""  # the raw query string (still percent-encoded)

    async def body(self, limit: int) -> bytes:
        """The whole body; 413 past ``limit`` bytes (checked against Content-Length first)."""
        length = self.headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise errors.PayloadTooLarge(f"the body is {length.decode()} bytes; this route accepts at most {limit}")
        message = await self.receive()
        if message["type"] == "http.disconnect":
            raise errors.ClientDisconnected()
        body: bytes = message.get("body", b"")
        if not message.get("more_body"):
            if len(body) > limit:
                raise errors.PayloadTooLarge(f"the body exceeds {limit} bytes")
            return body
        chunks = [body]
        size = len(body)
        while message.get("more_body"):
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise errors.ClientDisconnected()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise errors.PayloadTooLarge(f"the body exceeds {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def json_body(self, limit: int, untyped_ok: bool = False) -> bytes:
        """The body of a JSON route, after the content-type (415) and size (413) checks."""
        if self.headers.get(b"content-type") == JSON:  # (the usual header, as it is: no parsing)
            return await self.body(limit)
        media = self.media_type()
        if media != JSON and not (media is None and untyped_ok):
            shown = "missing" if media is None else media.decode("latin-1")
            raise errors.UnsupportedMediaType(f"the body must be application/json, not {shown}")
        return await self.body(limit)

    def media_type(self) -> bytes | None:
        value = self.headers.get(b"content-type")
        return None if value is None else value.split(b";", 1)[0].strip().lower()

    @property
    def route(self) -> str:
        """The matched route's template (``/v2/models/{model_name}/infer``), not the raw path."""
        route: str = self.state["route"]
        return route

    @property
    def request_id(self) -> str:
        request_id: str = self.state["request_id"]
        return request_id


@dataclass(slots=True)
class Reply:
    body: bytes
    status: int = 200
    media_type: bytes = JSON
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


def json_reply(value: Any, status: int = 200) -> Reply:
    return Reply(schemas.encode(value), status)


Handler = Callable[[Req], Awaitable[Reply]]
#: An answer as it is sent: status, headers, body.
Answer = tuple[int, list[tuple[bytes, bytes]], bytes]


def error_body(status: int, message: str, request_id: str, details: list[dict[str, Any]] | None = None) -> bytes:
    return schemas.encode({"error": message, "status": status, "request_id": request_id, "details": details or []})


class Endpoint:
    """One route as an ASGI app: request in, handler, reply (or the one error shape) out."""

    def __init__(self, path: str, handler: Handler) -> None:
        self.path = path
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope["state"]
        reply = await self.reply(Req(scope["method"], state["headers"], scope.get("path_params") or {}, state, receive,
                                     scope["query_string"]))
        if reply is None:
            return
        await send({"type": "http.response.start", "status": reply.status, "headers": self.head(reply, state)})
        await send({"type": "http.response.body", "body": reply.body})

    async def reply(self, req: Req) -> Reply | None:
        """The handler's reply to ``req``, an `APIError` rendered in the one error shape; None when the client went
        away before its request was read (nobody to answer)."""
        state = req.state
        state["route"] = self.path  # the template, not the raw path: bounded metric labels
        try:
            reply = await self.handler(req)
        except errors.ClientDisconnected:
            state["disconnected"] = True  # nobody to answer
            return None
        except errors.APIError as exc:
            extra = [(b"www-authenticate", b"Bearer")] if exc.status == 401 else []
            reply = Reply(error_body(exc.status, exc.message, state["request_id"], exc.details), exc.status, headers=extra)
        state["status"] = reply.status  # (for `Front`: its metrics, its log, and that the answer has started)
        return reply

    @staticmethod
    def head(reply: Reply, state: dict[str, Any]) -> list[tuple[bytes, bytes]]:
        """The headers of ``reply``'s answer: its type and length, its own, the request id."""
        return [_JSON_TYPE if reply.media_type is JSON else (b"content-type", reply.media_type),
                (b"content-length", str(len(reply.body)).encode()), *reply.headers, state["request_id_header"]]


class Front:
    """The outermost ASGI app: request id, timing, metrics, access log; hot routes skip the router.

    The HTTP protocol (`overload`) may answer a hot route itself, without ASGI (`inline`): the same request id,
    handler, answer, error handling, metrics and log line, through the same methods."""

    def __init__(self, router: Starlette, fast: dict[tuple[str, str], Endpoint], holder: ModelHolder, metrics: Metrics,
                 access_log: AccessLog | None) -> None:
        self.router = router
        self.fast = fast
        #: The hot routes by their raw path, for the protocol (all of them are POST)
        self.hot = {path.encode("latin-1"): endpoint for (method, path), endpoint in fast.items() if method == "POST"}
        self.holder = holder  # the server turns readiness off through it when it drains
        self.metrics = metrics
        self.access_log = access_log
        self.routes = router.routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan
            await self.router(scope, receive, send)
            return
        start = _clock()
        state = scope.setdefault("state", {})
        identify(state, dict(scope["headers"]))
        endpoint = self.fast.get((scope["method"], scope["path"]))
        try:
            if endpoint is not None:  # it adds the request id to its answer, and notes the status
                await endpoint(scope, receive, send)
            else:
                await self.router(scope, receive, _SendWithId(send, state))
        except Exception as exc:
            answer = self.failed(exc, state)
            if answer is None:  # the answer is half sent: the connection is closed without more
                return
            status, headers, body = answer
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        finally:
            self.finish(state, scope["method"], start)

    def inline(self, endpoint: Endpoint, headers: dict[bytes, bytes], query: bytes,
               body: bytes) -> tuple[dict[str, Any], Coroutine[Any, Any, Answer | None]]:
        """A ``POST`` to the hot route ``endpoint`` whose whole ``body`` is in, for the HTTP protocol to answer itself:
        the request's state and the coroutine that gives its answer as `__call__` sends it (None: nothing to answer).
        The protocol drives the coroutine, writes the answer, then calls `finish` with the state."""
        state: dict[str, Any] = {}
        identify(state, headers)
        return state, self._answer(endpoint, Req("POST", headers, {}, state, _Whole(body), query))

    async def _answer(self, endpoint: Endpoint, req: Req) -> Answer | None:
        try:
            reply = await endpoint.reply(req)
        except Exception as exc:
            return self.failed(exc, req.state)
        if reply is None:
            return None
        return reply.status, endpoint.head(reply, req.state), reply.body

    @staticmethod
    def failed(exc: Exception, state: dict[str, Any]) -> Answer | None:
        """An unexpected error, logged; the 500 answer, or None when an answer has started (nothing more is sent)."""
        # never the exception's message or a traceback (either can carry patient data): its type and where
        request_id = state["request_id"]
        log.error("unhandled error %s (request %s) at %s", type(exc).__name__, request_id, _where(exc),
                  extra={"request_id": request_id, "path": state.get("route", "unmatched")})
        if "status" in state:
            return None
        body = error_body(500, "internal error; the request id is in the server log", request_id)
        state["status"] = 500
        # a model that failed to score names itself, as its answers do (x-model-version, x-model-arm in a release)
        return 500, [(b"content-type", JSON), (b"content-length", b"%d" % len(body)), state["request_id_header"],
                     *state.get("model_headers", ())], body

    def finish(self, state: dict[str, Any], method: str, start: float) -> None:
        """A request answered (or abandoned): timed from ``start``, counted in the metrics, written to the access log."""
        end = _clock()  # (one reading: the latency's, and the access log's time)
        seconds = end - start
        status = CLIENT_CLOSED if "disconnected" in state else state.get("status", 500)
        route = state.get("route", "unmatched")
        self.metrics.observe(route, method, status, seconds)
        if self.access_log is not None and route not in QUIET_ROUTES:
            self.access_log.request(state["request_id"], method, route, status, seconds, state.get("model_version"),
                                    state.get("model_arm"), end)


def identify(state: dict[str, Any], headers: dict[bytes, bytes]) -> None:
    """A request's id in its ``state``: the client's ``x-request-id`` if it is one (``[A-Za-z0-9._:-]{1,128}``), else
    64 random bits; with the request's ``headers`` and the answer's header naming it."""
    given = headers.get(b"x-request-id")
    if given is not None and _REQUEST_ID.fullmatch(request_id := given.decode("latin-1")):
        rid = given
    else:
        request_id = _random_bits(64).to_bytes(8, "big").hex()  # (as f"{bits:016x}", a third cheaper)
        rid = request_id.encode()
    state["request_id"] = request_id
    state["headers"] = headers
    state["request_id_header"] = (b"x-request-id", rid)


class _Whole:
    """``receive`` of a request whose whole body is in: its one message, at once (awaiting it never suspends)."""

    __slots__ = ("message",)

    def __init__(self, body: bytes) -> None:
        self.message: Message = {"type": "http.request", "body": body, "more_body": False}

    def __call__(self) -> _Done:
        return _Done(self.message)


class _Done:
    """An awaitable whose result is there: awaiting it returns at once."""

    __slots__ = ("value",)

    def __init__(self, value: Message) -> None:
        self.value = value

    def __await__(self) -> Generator[Any, None, Message]:
        return self.value
        yield  # (a generator: the line above is its result)


class _SendWithId:
    """``send`` for the routes behind the router: the request id added to the answer's headers, its status noted."""

    __slots__ = ("send", "state")

    def __init__(self, send: Send, state: dict[str, Any]) -> None:
        self.send, self.state = send, state

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start" and "status" not in self.state:  # (an `Endpoint` added both)
            self.state["status"] = message["status"]
            message["headers"] = [*message.get("headers", []), self.state["request_id_header"]]
        await self.send(message)


def _where(exc: BaseException) -> str:
    """The frames an exception went through, as ``file:line in function`` (code locations, no values)."""
    frames = traceback.extract_tb(exc.__traceback__)
    return " <- ".join(f"{os.path.basename(f.filename)}:{f.lineno} in {f.name}" for f in reversed(frames[-8:]))


class Labelled:
    """An ASGI app (the docs' static files) counted in the metrics and the access log under one route label."""

    def __init__(self, route: str, app: ASGIApp) -> None:
        self.route = route
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["state"]["route"] = self.route
        await self.app(scope, receive, send)


def not_found_or_not_allowed(request: Request, exc: Exception) -> Response:
    """Starlette's 404 and 405, in the one error shape."""
    assert isinstance(exc, HTTPException)
    path = request.url.path
    endpoint = request.scope.get("endpoint")  # a 405: the route exists, the method does not; count it under the route
    if exc.status_code == 405 and isinstance(endpoint, Endpoint):
        request.scope["state"]["route"] = endpoint.path
    message = {404: f"no route {path}", 405: f"{request.method} is not allowed on {path}"}.get(exc.status_code, str(exc.detail))
    body = error_body(exc.status_code, message, request.scope["state"].get("request_id", ""))
    return Response(body, status_code=exc.status_code, media_type="application/json", headers=exc.headers)
