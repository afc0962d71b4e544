"""The HTTP transport: thin handlers that parse, call the model, and shape the answer.

`create_app(settings)` builds the ASGI application:

- `Service` holds the handlers.  Each takes a `Req` (method, headers, path parameters, body) and
  returns a `Reply` or raises an `APIError`; none knows about ASGI messages.
- `Endpoint` adapts a handler to ASGI: it reads the request, calls the handler and sends the
  reply, rendering every `APIError` in the one error shape.
- `Front` is the outermost ASGI app: it gives every request an id, times, counts and logs it,
  and sends the hot routes (`POST /predict`, ...) straight to their endpoint; every other path
  goes through Starlette's router (path parameters, 404/405, the docs' static files).  Skipping
  the framework on the hot path halves the cost of a prediction (see benchmarks/).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

from oncology.settings import ServeSettings
from oncology.webservice import errors, predlog, schemas
from oncology.webservice.accesslog import AccessLog
from oncology.webservice.auth import Tokens
from oncology.webservice.dashboard import HTML as DASHBOARD_HTML
from oncology.webservice.dashboard import Dashboard
from oncology.webservice.metrics import Metrics
from oncology.webservice.model import ModelHolder
from oncology.webservice.openapi import DOCS_HTML, SWAGGER_UI_DIR, openapi_document
from oncology_model.classifier import Classifier
from oncology_model.datamodel import FEATURES, Decision
from oncology_model.errors import OncologyError, StoreUnavailable

log = logging.getLogger("oncology.webservice")

JSON = b"application/json"
OCTETS = b"application/octet-stream"
#: Logged (never sent) for a client that went away before its request was read, as nginx does.
CLIENT_CLOSED = 499
MARKDOWN = b"text/markdown; charset=utf-8"
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

    def media_type(self) -> bytes | None:
        value = self.headers.get(b"content-type")
        return None if value is None else value.split(b";", 1)[0].strip().lower()


@dataclass(slots=True)
class Reply:
    body: bytes
    status: int = 200
    media_type: bytes = JSON
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


def _json(value: Any, status: int = 200) -> Reply:
    return Reply(schemas.encode(value), status)


class Service:
    """The route handlers, bound to one settings object, model holder and metrics registry."""

    def __init__(self, settings: ServeSettings, holder: ModelHolder, metrics: Metrics,
                 prediction_log: predlog.PredictionLog | None = None) -> None:
        self.settings = settings
        self.holder = holder
        self.metrics = metrics
        self.prediction_log = prediction_log
        self._tokens = Tokens(settings)
        self._dashboard = Dashboard(settings.store)
        self._server_version = importlib_metadata.version("oncology")

    # ---- helpers ---------------------------------------------------------------------------------

    def classifier(self) -> Classifier:
        classifier = self.holder.classifier
        if classifier is None:
            raise errors.NotReady("no verified model is loaded yet")
        return classifier

    def authorize(self, req: Req) -> None:
        if not self._tokens.enabled:
            return
        scheme, _, token = req.headers.get(b"authorization", b"").partition(b" ")
        if scheme.lower() != b"bearer" or not self._tokens.accepts(token.strip()):
            raise errors.Unauthorized("a valid `Authorization: Bearer <token>` header is required")

    async def json_body(self, req: Req, limit: int, untyped_ok: bool = False) -> bytes:
        """The body of a JSON route, after the content-type (415) and size (413) checks."""
        media = req.media_type()
        if media != JSON and not (media is None and untyped_ok):
            shown = "missing" if media is None else media.decode("latin-1")
            raise errors.UnsupportedMediaType(f"the body must be application/json, not {shown}")
        return await req.body(limit)

    def score(
        self, req: Req, classifier: Classifier, rows: Iterable[Sequence[int]]
    ) -> tuple[list[float], list[str], list[Decision]]:
        """Malignant probabilities, labels and decisions of ``rows``; counted, logged when the prediction log
        is on, and the version noted for the access log."""
        prediction_log = self.prediction_log
        if prediction_log is not None and not isinstance(rows, list):
            rows = list(rows)  # an iterator (decode_tumors) is consumed by scoring; the log needs the rows too
        probabilities = classifier.score_rows(rows)
        threshold = classifier.threshold
        labels = ["malignant" if p >= threshold else "benign" for p in probabilities]
        decisions = classifier.decide_many(probabilities)
        malignant = labels.count("malignant")
        referred = decisions.count(Decision.REFER) if classifier.referral is not None else 0
        self.metrics.count_predictions(malignant, len(labels), referred)
        req.state["model_version"] = classifier.version
        if prediction_log is not None:  # never blocks or raises: a slow store cannot slow a prediction
            prediction_log.record(req.state["route"], req.state["request_id"], classifier.version,
                                  rows, probabilities, labels, decisions)  # type: ignore[arg-type]
        return probabilities, labels, decisions

    def results(self, req: Req, classifier: Classifier, rows: Iterable[Sequence[int]]) -> list[schemas.Result]:
        probabilities, labels, decisions = self.score(req, classifier, rows)
        version = classifier.version
        return [schemas.Result(label, p, d, version) for p, label, d in zip(probabilities, labels, decisions)]

    def explained_results(self, req: Req, classifier: Classifier, rows: Iterable[Sequence[int]]) -> list[schemas.ExplainedResult]:
        rows = list(rows)
        explanations = [
            schemas.ExplanationOut(e.baseline, e.contributions, e.log_odds) for e in classifier.explain_rows(rows)
        ]
        return [
            schemas.ExplainedResult(r.prediction, r.probability, r.decision, r.model_version, e)
            for r, e in zip(self.results(req, classifier, rows), explanations)
        ]

    # ---- REST ------------------------------------------------------------------------------------

    async def predict(self, req: Req) -> Reply:
        """Predict one tumor; ``?explain=true`` adds each feature's contribution."""
        self.authorize(req)
        explain = schemas.decode_explain(req.query) if req.query else False
        row = schemas.decode_tumor(await self.json_body(req, self.settings.max_body_bytes))
        classifier = self.classifier()
        if explain:
            return Reply(schemas.encode(self.explained_results(req, classifier, [row])[0]))
        (result,) = self.results(req, classifier, [row])
        return Reply(schemas.encode(result))

    async def predict_batch(self, req: Req) -> Reply:
        """Predict a batch of tumors; results in the same order; ``?explain=true`` adds contributions."""
        self.authorize(req)
        explain = schemas.decode_explain(req.query) if req.query else False
        body = await self.json_body(req, self.settings.max_batch_body_bytes)
        rows = schemas.decode_tumors(body, self.settings.max_batch)
        classifier = self.classifier()
        if explain:
            return Reply(schemas.encode(self.explained_results(req, classifier, rows)))
        return Reply(schemas.encode(self.results(req, classifier, rows)))

    async def model(self, req: Req) -> Reply:
        """The served model's version, metadata, KPIs and referral band."""
        classifier = self.classifier()
        referral = classifier.referral
        return _json({
            "version": classifier.version,
            "source": self.holder.source,
            "threshold": classifier.threshold,
            "referral": None if referral is None else {"low": referral.low, "high": referral.high},
            "metadata": classifier.metadata,
            "kpis": classifier.kpis,
        })

    async def model_card(self, req: Req) -> Reply:
        """The served model's card: JSON (the card and its Markdown), or the Markdown alone for ``Accept: text/markdown``."""
        classifier = self.classifier()
        card, markdown = classifier.card, classifier.card_markdown
        if card is None and markdown is None:
            raise errors.NotFound(
                f"model {classifier.version} has no model card (it was trained before model cards existed)"
            )
        if _prefers_markdown(req.headers.get(b"accept", b"")):
            if markdown is None:
                raise errors.NotFound(f"model {classifier.version} has no Markdown card (card.md); ask for JSON")
            return Reply(markdown.encode(), media_type=MARKDOWN)
        return _json({"version": classifier.version, "card": card, "markdown": markdown})


    async def dashboard(self, req: Req) -> Reply:
        """The latest monitoring dashboard (HTML) that training and drift runs wrote into the store."""
        return Reply(await asyncio.to_thread(self._dashboard.page), media_type=DASHBOARD_HTML)
    async def healthz(self, req: Req) -> Reply:
        return _json({"status": "ok"})

    async def readyz(self, req: Req) -> Reply:
        if not self.holder.ready:
            raise errors.NotReady("shutting down" if self.holder.draining else "no verified model is loaded yet")
        return _json({"status": "ready", "model_version": self.classifier().version})

    async def metrics_text(self, req: Req) -> Reply:
        return Reply(self.metrics.exposition(), media_type=b"text/plain; version=0.0.4; charset=utf-8")

    # ---- the SageMaker hosting contract (same image, managed hosting) --------------------------------

    async def ping(self, req: Req) -> Reply:
        """SageMaker health check: 200 once a verified model is loaded."""
        return await self.readyz(req)

    async def invocations(self, req: Req) -> Reply:
        """SageMaker inference: one tumor (JSON object), a JSON array of tumors, or CSV rows of nine values."""
        self.authorize(req)
        limit = self.settings.max_batch_body_bytes
        single = False
        rows: Iterable[Sequence[int]]
        media = req.media_type()
        if media == b"text/csv":
            rows = schemas.decode_csv(await req.body(limit), self.settings.max_batch)
        elif media != JSON:
            shown = "missing" if media is None else media.decode("latin-1")
            raise errors.UnsupportedMediaType(f"the body must be application/json or text/csv, not {shown}")
        else:
            body = await req.body(limit)
            single = body.lstrip()[:1] != b"["
            rows = [schemas.decode_tumor(body)] if single else schemas.decode_tumors(body, self.settings.max_batch)
        results = self.results(req, self.classifier(), rows)
        return Reply(schemas.encode(results[0] if single else results))

    # ---- Open Inference Protocol (V2) ------------------------------------------------------------

    def _v2_model(self, req: Req) -> Classifier:
        name = req.path_params.get("model_name", schemas.V2_MODEL)
        classifier = self.classifier()
        version = req.path_params.get("model_version")
        if name != schemas.V2_MODEL or (version is not None and version != classifier.version):
            shown = name + (f" version {version}" if version else "")
            raise errors.NotFound(f"model {shown} is not served here (serving {schemas.V2_MODEL} {classifier.version})")
        return classifier

    async def v2_server_metadata(self, req: Req) -> Reply:
        return _json({"name": "oncology", "version": self._server_version, "extensions": ["binary_tensor_data"]})

    async def v2_live(self, req: Req) -> Reply:
        return _json({"live": True})

    async def v2_ready(self, req: Req) -> Reply:
        if not self.holder.ready:
            raise errors.NotReady("not ready")
        return _json({"ready": True})

    async def v2_model_ready(self, req: Req) -> Reply:
        self._v2_model(req)
        return await self.v2_ready(req)

    async def v2_model_metadata(self, req: Req) -> Reply:
        classifier = self._v2_model(req)
        return _json({
            "name": schemas.V2_MODEL,
            "versions": [classifier.version],
            "platform": f"oncology/{classifier.metadata.get('model', {}).get('family', 'unknown')}",
            "inputs": [{"name": schemas.V2_INPUT, "datatype": "INT64", "shape": [-1, len(FEATURES)],
                        "parameters": {"features": list(FEATURES)}}],
            "outputs": [{"name": name, "datatype": dtype, "shape": [-1]} for name, dtype in schemas.V2_OUTPUTS.items()],
        })

    async def v2_infer(self, req: Req) -> Reply:
        self.authorize(req)
        classifier = self._v2_model(req)
        header = req.headers.get(b"inference-header-content-length")
        if header is None:  # V2 clients (tritonclient among them) send JSON without a content type
            body = await self.json_body(req, self.settings.max_batch_body_bytes, untyped_ok=True)
            header_length = None
        else:  # Triton's binary tensor data extension: the JSON, then the tensors' bytes
            if not (header.isascii() and header.isdigit()):
                raise errors.BadRequest("Inference-Header-Content-Length must be a whole number of bytes")
            media = req.media_type()
            if media not in (None, JSON, OCTETS):
                raise errors.UnsupportedMediaType(
                    f"a binary inference request is application/octet-stream, not {media.decode('latin-1')}")
            body = await req.body(self.settings.max_batch_body_bytes)
            header_length = int(header)
        infer, rows = schemas.decode_v2(body, self.settings.max_batch, header_length)
        probabilities, labels, decisions = self.score(req, classifier, rows)
        values: dict[str, list[Any]] = {"label": labels, "probability": probabilities, "decision": decisions}
        wanted = [o.name for o in infer.outputs] if infer.outputs else list(values)
        outputs: list[dict[str, Any]] = []
        binaries: list[bytes] = []
        for name in wanted:
            datatype = schemas.V2_OUTPUTS[name]
            output: dict[str, Any] = {"name": name, "shape": [len(labels)], "datatype": datatype}
            if schemas.wants_binary(infer, name):
                raw = schemas.binary_tensor(datatype, values[name])
                output["parameters"] = {"binary_data_size": len(raw)}
                binaries.append(raw)
            else:
                output["data"] = values[name]
            outputs.append(output)
        answer: dict[str, Any] = {"model_name": schemas.V2_MODEL, "model_version": classifier.version, "outputs": outputs}
        if infer.id is not None:
            answer["id"] = infer.id
        if not binaries:
            return _json(answer)
        head = schemas.encode(answer)
        return Reply(b"".join([head, *binaries]), media_type=OCTETS,
                     headers=[(b"inference-header-content-length", b"%d" % len(head))])

    # ---- documentation ---------------------------------------------------------------------------

    async def openapi(self, req: Req) -> Reply:
        return _json(openapi_document(self.settings))

    async def docs(self, req: Req) -> Reply:
        return Reply(DOCS_HTML.encode(), media_type=b"text/html; charset=utf-8")


Handler = Callable[[Req], Awaitable[Reply]]


def error_body(status: int, message: str, request_id: str, details: list[dict[str, Any]] | None = None) -> bytes:
    return schemas.encode({"error": message, "status": status, "request_id": request_id, "details": details or []})


class Endpoint:
    """One route as an ASGI app: request in, handler, reply (or the one error shape) out."""

    def __init__(self, path: str, handler: Handler) -> None:
        self.path = path
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope["state"]
        state["route"] = self.path  # the template, not the raw path: bounded metric labels
        req = Req(scope["method"], state["headers"], scope.get("path_params") or {}, state, receive, scope["query_string"])
        try:
            reply = await self.handler(req)
        except errors.ClientDisconnected:
            state["disconnected"] = True  # nobody to answer
            return
        except errors.APIError as exc:
            extra = [(b"www-authenticate", b"Bearer")] if exc.status == 401 else []
            reply = Reply(error_body(exc.status, exc.message, state["request_id"], exc.details), exc.status, headers=extra)
        await send({
            "type": "http.response.start",
            "status": reply.status,
            "headers": [(b"content-type", reply.media_type), (b"content-length", b"%d" % len(reply.body)), *reply.headers],
        })
        await send({"type": "http.response.body", "body": reply.body})


class Front:
    """The outermost ASGI app: request id, timing, metrics, access log; hot routes skip the router."""

    def __init__(self, router: Starlette, fast: dict[tuple[str, str], Endpoint], holder: ModelHolder, metrics: Metrics,
                 access_log: AccessLog | None) -> None:
        self.router = router
        self.fast = fast
        self.holder = holder
        self.metrics = metrics
        self.access_log = access_log
        self.routes = router.routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan
            await self.router(scope, receive, send)
            return
        start = time.perf_counter()
        headers = dict(scope["headers"])
        request_id = headers.get(b"x-request-id", b"").decode("latin-1")
        if not _REQUEST_ID.fullmatch(request_id):
            request_id = os.urandom(8).hex()
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["headers"] = headers
        rid_header = (b"x-request-id", request_id.encode())
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = message["status"]
                started = True
                message["headers"] = [*message.get("headers", []), rid_header]
            await send(message)

        endpoint = self.fast.get((scope["method"], scope["path"]))
        try:
            if endpoint is not None:
                await endpoint(scope, receive, send_with_id)
            else:
                await self.router(scope, receive, send_with_id)
        except Exception as exc:
            # never the exception's message or a traceback (either can carry patient data): its type and where
            log.error("unhandled error %s (request %s) at %s", type(exc).__name__, request_id, _where(exc),
                      extra={"request_id": request_id, "path": state.get("route", "unmatched")})
            if started:  # the answer is half sent: the connection is closed without more
                return
            body = error_body(500, "internal error; the request id is in the server log", request_id)
            await send_with_id({"type": "http.response.start", "status": 500,
                                "headers": [(b"content-type", JSON), (b"content-length", b"%d" % len(body))]})
            await send_with_id({"type": "http.response.body", "body": body})
        finally:
            elapsed = time.perf_counter() - start
            if state.get("disconnected"):
                status = CLIENT_CLOSED
            route = state.get("route", "unmatched")
            self.metrics.observe(route, scope["method"], status, elapsed)
            if self.access_log is not None and route not in QUIET_ROUTES:
                self.access_log.write({
                    "request_id": request_id,
                    "method": scope["method"],
                    "route": route,
                    "status": status,
                    "latency_ms": round(elapsed * 1000, 3),
                    "model_version": state.get("model_version"),
                })


def _where(exc: BaseException) -> str:
    """The frames an exception went through, as ``file:line in function`` (code locations, no values)."""
    frames = traceback.extract_tb(exc.__traceback__)
    return " <- ".join(f"{os.path.basename(f.filename)}:{f.lineno} in {f.name}" for f in reversed(frames[-8:]))


def _prefers_markdown(accept: bytes) -> bool:
    """Whether an Accept header ranks text/markdown above application/json (JSON wins ties and absence)."""
    quality = {b"application/json": 0.0, b"text/markdown": 0.0}
    for item in accept.split(b","):
        media, *params = (part.strip() for part in item.split(b";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition(b"=")
            if name.strip().lower() == b"q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        media = media.lower()
        targets = quality if media == b"*/*" else [m for m in quality if m == media or media == m.split(b"/")[0] + b"/*"]
        for m in targets:
            quality[m] = max(quality[m], q)
    return quality[b"text/markdown"] > quality[b"application/json"]


def _not_found_or_not_allowed(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    path = request.url.path
    message = {404: f"no route {path}", 405: f"{request.method} is not allowed on {path}"}.get(exc.status_code, str(exc.detail))
    body = error_body(exc.status_code, message, request.scope["state"].get("request_id", ""))
    return Response(body, status_code=exc.status_code, media_type="application/json", headers=exc.headers)


#: Hot routes: matched by exact path in `Front`, before the router.
FAST_ROUTES = ("/predict", "/predict/batch", "/invocations", f"/v2/models/{schemas.V2_MODEL}/infer")


def create_app(settings: ServeSettings, holder: ModelHolder | None = None, metrics: Metrics | None = None,
               access_log: AccessLog | None = None) -> Front:
    """The ASGI application.  It loads the model at start-up and follows its alias in the background."""
    metrics = metrics or Metrics()
    holder = holder or ModelHolder(settings, on_reload=metrics.model_loaded)
    if access_log is None and settings.access_log:
        access_log = AccessLog()
    prediction_log = predlog.from_settings(settings, metrics)  # None unless ONCOLOGY_PREDICTION_LOG
    service = Service(settings, holder, metrics, prediction_log)
    v2m = "/v2/models/{model_name}"
    v2mv = "/v2/models/{model_name}/versions/{model_version}"
    table: list[tuple[str, str, Handler]] = [
        ("POST", "/predict", service.predict),
        ("POST", "/predict/batch", service.predict_batch),
        ("GET", "/model", service.model),
        ("GET", "/model/card", service.model_card),
        ("GET", "/dashboard", service.dashboard),
        ("GET", "/healthz", service.healthz),
        ("GET", "/readyz", service.readyz),
        ("GET", "/metrics", service.metrics_text),
        ("GET", "/ping", service.ping),
        ("POST", "/invocations", service.invocations),
        ("GET", "/v2", service.v2_server_metadata),
        ("GET", "/v2/health/live", service.v2_live),
        ("GET", "/v2/health/ready", service.v2_ready),
        ("GET", v2m, service.v2_model_metadata),
        ("GET", f"{v2m}/ready", service.v2_model_ready),
        ("POST", f"{v2m}/infer", service.v2_infer),
        ("GET", v2mv, service.v2_model_metadata),
        ("GET", f"{v2mv}/ready", service.v2_model_ready),
        ("POST", f"{v2mv}/infer", service.v2_infer),
        ("GET", "/openapi.json", service.openapi),
        ("GET", "/docs", service.docs),
    ]
    routes: list[Route | Mount] = [Route(path, Endpoint(path, handler), methods=[method]) for method, path, handler in table]
    routes.append(Mount("/docs/static", app=StaticFiles(directory=SWAGGER_UI_DIR), name="swagger-ui"))
    fast = {
        (method, path.replace("{model_name}", schemas.V2_MODEL)): Endpoint(path, handler)
        for method, path, handler in table
        if path.replace("{model_name}", schemas.V2_MODEL) in FAST_ROUTES
    }

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        tasks = []
        if prediction_log is not None:
            prediction_log.start()
        if holder.classifier is None:
            try:
                await asyncio.to_thread(holder.load)  # a model that fails verification stops the start
            except StoreUnavailable as exc:  # the store may come back: live now, ready once the model loads
                log.warning("the model store cannot be reached (%s); serving not ready, retrying", exc)
                holder.count_failure()
                tasks.append(asyncio.create_task(_load_with_backoff(holder)))
        if holder.follows_alias and settings.reload_interval > 0:
            tasks.append(asyncio.create_task(_follow(holder, settings.reload_interval)))
        try:
            yield
        finally:
            holder.draining = True
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if prediction_log is not None:  # after the drain: every answered prediction is in the buffer
                await asyncio.to_thread(prediction_log.close, settings.prediction_log_shutdown_seconds)
            if access_log is not None:
                access_log.flush()

    router = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: _not_found_or_not_allowed})
    return Front(router, fast, holder, metrics, access_log)


#: Seconds between attempts to load the model while the store cannot be reached: doubling, capped.
LOAD_RETRY_FIRST, LOAD_RETRY_MAX = 0.5, 10.0


async def _load_with_backoff(holder: ModelHolder) -> None:
    delay = LOAD_RETRY_FIRST
    while holder.classifier is None:
        await asyncio.sleep(delay)
        delay = min(delay * 2, LOAD_RETRY_MAX)
        if holder.classifier is not None:  # the alias follower got there first
            return
        try:
            await asyncio.to_thread(holder.load)
        except OncologyError as exc:
            holder.count_failure()
            log.warning("model load failed, still not ready; next attempt in %.1fs: %s", delay, exc)


async def _follow(holder: ModelHolder, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.to_thread(holder.refresh)
        except Exception:  # keep following: a failure is logged, the old model serves on
            log.exception("model refresh crashed")
