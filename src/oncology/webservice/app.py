"""The HTTP transport: thin handlers that parse, call the model, and shape the answer.

`create_app(settings, holder)` builds the ASGI application.  One ASGI middleware gives every
request an id, times it, counts it, logs it (never with feature values) and renders every error
in one JSON shape; the handlers below only decode, score and encode.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import metadata as importlib_metadata
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from oncology.settings import ServeSettings
from oncology.webservice import errors, schemas
from oncology.webservice.metrics import Metrics
from oncology.webservice.model import ModelHolder
from oncology.webservice.openapi import DOCS_HTML, SWAGGER_UI_DIR, openapi_document
from oncology_model.classifier import Classifier
from oncology_model.datamodel import FEATURES

log = logging.getLogger("oncology.webservice")
access_log = logging.getLogger("oncology.access")

JSON = "application/json"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
#: Probes and scrapes stay out of the access log (they would drown it).
QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready", "/ping"})


def _json(body: Any, status: int = 200) -> Response:
    return Response(schemas.encode(body), status_code=status, media_type=JSON)


class Service:
    """The route handlers, bound to one settings object, model holder and metrics registry."""

    def __init__(self, settings: ServeSettings, holder: ModelHolder, metrics: Metrics) -> None:
        self.settings = settings
        self.holder = holder
        self.metrics = metrics
        self._tokens = [t.encode() for t in settings.tokens()]
        self._server_version = importlib_metadata.version("oncology")

    # ---- helpers ---------------------------------------------------------------------------------

    def classifier(self) -> Classifier:
        classifier = self.holder.classifier
        if classifier is None:
            raise errors.NotReady("no verified model is loaded yet")
        return classifier

    def authorize(self, request: Request) -> None:
        if not self._tokens:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        given = token.strip().encode()
        # compare with every token, always: the time taken does not depend on which one matched
        ok = False
        for expected in self._tokens:
            ok |= hmac.compare_digest(given, expected)
        if scheme.lower() != "bearer" or not ok:
            raise errors.Unauthorized("a valid `Authorization: Bearer <token>` header is required")

    async def body(self, request: Request, limit: int, json_if_untyped: bool = False, csv: bool = False) -> bytes:
        """The request body, after the content-type and size checks (415, 413)."""
        ctype = request.headers.get("content-type")
        if csv or (ctype is None and json_if_untyped):
            pass  # V2 clients (tritonclient among them) send JSON without a content type
        elif ctype is None or ctype.split(";", 1)[0].strip().lower() != JSON:
            hint = ""
            if "inference-header-content-length" in request.headers:
                hint = " (the binary tensor extension is not supported: send JSON tensors, e.g. binary_data=False)"
            raise errors.UnsupportedMediaType(f"the body must be {JSON}, not {ctype or 'missing'}{hint}")
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise errors.PayloadTooLarge(f"the body is {length} bytes; this route accepts at most {limit}")
        chunks = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise errors.PayloadTooLarge(f"the body exceeds {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def answer(self, request: Request, classifier: Classifier, rows: list[tuple[int, ...]]) -> tuple[list[float], list[str]]:
        probabilities = classifier.score_rows(rows)
        threshold = classifier.threshold
        labels = ["malignant" if p >= threshold else "benign" for p in probabilities]
        malignant = sum(1 for p in probabilities if p >= threshold)
        self.metrics.count_predictions(malignant, len(probabilities))
        request.scope["state"]["model_version"] = classifier.version
        return probabilities, labels

    # ---- REST ------------------------------------------------------------------------------------

    async def predict(self, request: Request) -> Response:
        """Predict one tumor."""
        self.authorize(request)
        row = schemas.decode_tumor(await self.body(request, self.settings.max_body_bytes))
        classifier = self.classifier()
        (p,), (label,) = self.answer(request, classifier, [row])
        return _json({"prediction": label, "probability": p, "model_version": classifier.version})

    async def predict_batch(self, request: Request) -> Response:
        """Predict a batch of tumors; results in the same order."""
        self.authorize(request)
        rows = schemas.decode_tumors(await self.body(request, self.settings.max_batch_body_bytes), self.settings.max_batch)
        classifier = self.classifier()
        probabilities, labels = self.answer(request, classifier, rows)
        version = classifier.version
        return _json([{"prediction": label, "probability": p, "model_version": version} for p, label in zip(probabilities, labels)])

    async def model(self, request: Request) -> Response:
        """The served model's version, metadata and KPIs."""
        classifier = self.classifier()
        return _json({
            "version": classifier.version,
            "source": self.holder.source,
            "threshold": classifier.threshold,
            "metadata": classifier.metadata,
            "kpis": classifier.kpis,
        })

    # ---- the SageMaker hosting contract (same image, managed hosting) --------------------------------

    async def ping(self, request: Request) -> Response:
        """SageMaker health check: 200 once a verified model is loaded."""
        return await self.readyz(request)

    async def invocations(self, request: Request) -> Response:
        """SageMaker inference: one tumor (JSON object), a JSON array of tumors, or CSV rows of nine values."""
        self.authorize(request)
        ctype = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
        if ctype == "text/csv":
            rows = schemas.decode_csv(await self.body(request, self.settings.max_batch_body_bytes, csv=True), self.settings.max_batch)
            single = False
        else:
            payload = await self.body(request, self.settings.max_batch_body_bytes)
            single = payload.lstrip()[:1] != b"["
            rows = [schemas.decode_tumor(payload)] if single else schemas.decode_tumors(payload, self.settings.max_batch)
        classifier = self.classifier()
        probabilities, labels = self.answer(request, classifier, rows)
        results = [{"prediction": label, "probability": p, "model_version": classifier.version} for p, label in zip(probabilities, labels)]
        return _json(results[0] if single else results)

    async def healthz(self, request: Request) -> Response:
        return _json({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        if not self.holder.ready:
            reason = "shutting down" if self.holder.draining else "no verified model is loaded yet"
            raise errors.NotReady(reason)
        return _json({"status": "ready", "model_version": self.classifier().version})

    async def metrics_route(self, request: Request) -> Response:
        return Response(self.metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    # ---- Open Inference Protocol (V2) ------------------------------------------------------------

    def _v2_model(self, request: Request) -> Classifier:
        name = request.path_params.get("model_name", schemas.V2_MODEL)
        classifier = self.classifier()
        version = request.path_params.get("model_version")
        if name != schemas.V2_MODEL or (version is not None and version != classifier.version):
            shown = f"{name}" + (f" version {version}" if version else "")
            raise errors.NotFound(f"model {shown} is not served here (serving {schemas.V2_MODEL} {classifier.version})")
        return classifier

    async def v2_server_metadata(self, request: Request) -> Response:
        return _json({"name": "oncology", "version": self._server_version, "extensions": []})

    async def v2_live(self, request: Request) -> Response:
        return _json({"live": True})

    async def v2_ready(self, request: Request) -> Response:
        if not self.holder.ready:
            raise errors.NotReady("not ready")
        return _json({"ready": True})

    async def v2_model_ready(self, request: Request) -> Response:
        self._v2_model(request)
        return await self.v2_ready(request)

    async def v2_model_metadata(self, request: Request) -> Response:
        classifier = self._v2_model(request)
        return _json({
            "name": schemas.V2_MODEL,
            "versions": [classifier.version],
            "platform": f"oncology/{classifier.metadata.get('model', {}).get('family', 'unknown')}",
            "inputs": [{"name": schemas.V2_INPUT, "datatype": "INT64", "shape": [-1, len(FEATURES)],
                        "parameters": {"features": list(FEATURES)}}],
            "outputs": [{"name": name, "datatype": dtype, "shape": [-1]} for name, dtype in schemas.V2_OUTPUTS.items()],
        })

    async def v2_infer(self, request: Request) -> Response:
        self.authorize(request)
        classifier = self._v2_model(request)
        if "inference-header-content-length" in request.headers:
            raise errors.UnsupportedMediaType(
                "the binary tensor extension is not supported: send JSON tensors (tritonclient: binary_data=False)"
            )
        payload = await self.body(request, self.settings.max_batch_body_bytes, json_if_untyped=True)
        infer, rows = schemas.decode_v2(payload, self.settings.max_batch)
        probabilities, labels = self.answer(request, classifier, rows)
        n = len(rows)
        outputs = {
            "label": {"name": "label", "shape": [n], "datatype": "BYTES", "data": labels},
            "probability": {"name": "probability", "shape": [n], "datatype": "FP64", "data": probabilities},
        }
        wanted = [o.name for o in infer.outputs] if infer.outputs else list(outputs)
        answer: dict[str, Any] = {
            "model_name": schemas.V2_MODEL,
            "model_version": classifier.version,
            "outputs": [outputs[name] for name in wanted],
        }
        if infer.id is not None:
            answer["id"] = infer.id
        return _json(answer)

    # ---- documentation ---------------------------------------------------------------------------

    async def openapi(self, request: Request) -> Response:
        return _json(openapi_document(self.settings))

    async def docs(self, request: Request) -> Response:
        return HTMLResponse(DOCS_HTML)


class Observability:
    """ASGI middleware: request id, timing, metrics, access log, and the one error shape."""

    def __init__(self, app: ASGIApp, metrics: Metrics, settings: ServeSettings) -> None:
        self.app = app
        self.metrics = metrics
        self.log_access = settings.access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if _REQUEST_ID.match(candidate):
                    request_id = candidate
                break
        if not request_id:
            request_id = os.urandom(8).hex()
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500
        started = False
        rid_header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = message["status"]
                started = True
                message["headers"] = [*message.get("headers", []), rid_header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error", extra={"request_id": request_id, "path": scope["path"]})
            if started:
                raise
            body = schemas.encode({"error": "internal error; the request id is in the server log", "status": 500,
                                   "request_id": request_id, "details": []})
            await send({"type": "http.response.start", "status": 500,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), rid_header]})
            await send({"type": "http.response.body", "body": body})
            status = 500
        finally:
            elapsed = time.perf_counter() - start
            route = state.get("route", "unmatched")
            self.metrics.observe(route, scope["method"], status, elapsed)
            if self.log_access and route not in QUIET_ROUTES:
                access_log.info(
                    "request",
                    extra={
                        "request_id": request_id,
                        "method": scope["method"],
                        "route": route,
                        "status": status,
                        "latency_ms": round(elapsed * 1000, 3),
                        "model_version": state.get("model_version"),
                    },
                )


def _route(path: str, endpoint: Callable[[Request], Awaitable[Response]], methods: list[str]) -> Route:
    async def tagged(request: Request) -> Response:
        request.scope["state"]["route"] = path  # the template, not the raw path: bounded label values
        return await endpoint(request)

    tagged.__doc__ = endpoint.__doc__
    return Route(path, tagged, methods=methods)


def _error_response(request: Request, exc: Exception) -> Response:
    if isinstance(exc, errors.APIError):
        status, message, details = exc.status, exc.message, exc.details
    elif isinstance(exc, HTTPException):
        status, details = exc.status_code, []
        message = {404: f"no route {request.url.path}", 405: f"{request.method} is not allowed on {request.url.path}"}.get(
            exc.status_code, str(exc.detail)
        )
    else:  # pragma: no cover - Observability renders unexpected errors
        raise exc
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if isinstance(exc, HTTPException) and exc.headers:
        headers = {**(headers or {}), **exc.headers}
    body = {"error": message, "status": status, "request_id": request.scope["state"].get("request_id", ""), "details": details}
    return Response(schemas.encode(body), status_code=status, media_type=JSON, headers=headers)


def create_app(settings: ServeSettings, holder: ModelHolder | None = None, metrics: Metrics | None = None) -> Starlette:
    """The ASGI application.  It loads the model at start-up and follows its alias in the background."""
    metrics = metrics or Metrics()
    holder = holder or ModelHolder(settings, on_reload=metrics.model_loaded)
    service = Service(settings, holder, metrics)
    v2m = "/v2/models/{model_name}"
    v2mv = "/v2/models/{model_name}/versions/{model_version}"
    routes: list[Route | Mount] = [
        _route("/predict", service.predict, ["POST"]),
        _route("/predict/batch", service.predict_batch, ["POST"]),
        _route("/model", service.model, ["GET"]),
        _route("/healthz", service.healthz, ["GET"]),
        _route("/readyz", service.readyz, ["GET"]),
        _route("/metrics", service.metrics_route, ["GET"]),
        _route("/ping", service.ping, ["GET"]),
        _route("/invocations", service.invocations, ["POST"]),
        _route("/v2", service.v2_server_metadata, ["GET"]),
        _route("/v2/health/live", service.v2_live, ["GET"]),
        _route("/v2/health/ready", service.v2_ready, ["GET"]),
        _route(v2m, service.v2_model_metadata, ["GET"]),
        _route(f"{v2m}/ready", service.v2_model_ready, ["GET"]),
        _route(f"{v2m}/infer", service.v2_infer, ["POST"]),
        _route(v2mv, service.v2_model_metadata, ["GET"]),
        _route(f"{v2mv}/ready", service.v2_model_ready, ["GET"]),
        _route(f"{v2mv}/infer", service.v2_infer, ["POST"]),
        _route("/openapi.json", service.openapi, ["GET"]),
        _route("/docs", service.docs, ["GET"]),
        Mount("/docs/static", app=StaticFiles(directory=SWAGGER_UI_DIR), name="swagger-ui"),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if holder.classifier is None:
            await asyncio.to_thread(holder.load)  # a model that fails verification stops the start
        task = None
        if holder.follows_alias and settings.reload_interval > 0:
            task = asyncio.create_task(_follow(holder, settings.reload_interval))
        try:
            yield
        finally:
            holder.draining = True
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={errors.APIError: _error_response, HTTPException: _error_response},
    )
    app.add_middleware(Observability, metrics=metrics, settings=settings)
    app.state.holder = holder
    app.state.metrics = metrics
    return app


async def _follow(holder: ModelHolder, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.to_thread(holder.refresh)
        except Exception:  # keep following: a failure is logged, the old model serves on
            log.exception("model refresh crashed")
