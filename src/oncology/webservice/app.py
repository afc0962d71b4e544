"""The application: `create_app(settings)` wires the protocols' routes to the transport, and runs
the model's loading and reloading for the app's lifetime.

Each protocol is a module of thin handlers over one `Core` that knows no HTTP: `rest` (/predict,
/model, health, docs), `sagemaker` (/ping, /invocations), `v2` (the Open Inference Protocol) and `outcomes`
(POST /outcomes); `transport` turns them into ASGI (`Endpoint`, `Front`).  `grpc` serves the Open Inference
Protocol over gRPC on its own port (``grpc_port``), over the same `Core`, started and stopped with the app.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from oncology.settings import ServeSettings
from oncology.webservice import schemas
from oncology.webservice.accesslog import AccessLog
from oncology.webservice.auth import Tokens
from oncology.webservice.core import Core
from oncology.webservice.metrics import Metrics
from oncology.webservice.model import ModelHolder, follow, load_with_backoff
from oncology.webservice.openapi import SWAGGER_UI_DIR
from oncology.webservice.outcomes import CheckFollower, Outcomes, follow_checks
from oncology.webservice.rest import Rest
from oncology.webservice.routing import Release
from oncology.webservice.sagemaker import SageMaker
from oncology.webservice.transport import Endpoint, Front, Labelled, not_found_or_not_allowed
from oncology.webservice.v2 import V2
from oncology_model.errors import StoreUnavailable
from oncology_model.storage import open_store

log = logging.getLogger("oncology.webservice")

#: Hot routes: matched by exact path in `Front`, before the router.
FAST_ROUTES = ("/predict", "/predict/batch", "/invocations", f"/v2/models/{schemas.V2_MODEL}/infer")
#: Swagger UI's assets, served from the installed package; one route label for all of them.
DOCS_ASSETS = "/docs/static"


def create_app(settings: ServeSettings, holder: ModelHolder | None = None, metrics: Metrics | None = None,
               access_log: AccessLog | None = None) -> Front:
    """The ASGI application.  It loads the model at start-up and follows its alias in the background."""
    metrics = metrics or Metrics()
    holder = holder or ModelHolder(settings, on_reload=metrics.model_loaded, on_release=_release_metrics(metrics))
    if access_log is None and settings.access_log:
        access_log = AccessLog()
    prediction_log = None
    if settings.prediction_log:  # imported only then (msgspec structs, ISA-L): a shorter cold start without it
        from oncology.webservice import predlog

        prediction_log = predlog.from_settings(settings, metrics)
    core = Core(settings, holder, metrics, prediction_log)
    tokens = Tokens(settings)
    checks = None
    if settings.outcomes and settings.outcome_store_uri:
        checks = CheckFollower(open_store(settings.outcome_store_uri), metrics)
    table = [route for protocol in (Rest, SageMaker, V2, Outcomes) for route in protocol(core, tokens).routes()]
    routes: list[Route | Mount] = [Route(path, Endpoint(path, handler), methods=[method]) for method, path, handler in table]
    routes.append(Mount(DOCS_ASSETS, app=Labelled(DOCS_ASSETS, StaticFiles(directory=SWAGGER_UI_DIR)), name="swagger-ui"))
    grpc_server = None
    if settings.grpc_port:  # imported only when on: a service without gRPC does not load grpcio
        from oncology.webservice.grpc import GrpcServer

        grpc_server = GrpcServer(core, tokens, access_log)
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
                tasks.append(asyncio.create_task(load_with_backoff(holder)))
        if checks is not None:
            tasks.append(asyncio.create_task(follow_checks(checks, settings.outcome_check_interval)))
        if holder.follows_alias and settings.reload_interval > 0:
            tasks.append(asyncio.create_task(follow(holder, settings.reload_interval)))
        # What start-up made (modules, the app, the model: ~50k objects) lives as long as the process: move it
        # out of the garbage collector's reach, so that a full collection walks only what requests left behind
        # (each one took ~30 ms of the request thread's CPU; the prediction log's buffer makes them ~4x as
        # frequent).  The Python documentation's advice for long-lived servers (gc.freeze).
        if grpc_server is not None:
            await grpc_server.start()
        gc.freeze()
        try:
            yield
        finally:
            holder.draining = True
            if grpc_server is not None:  # the server began this stop with the HTTP drain; else it begins here
                await grpc_server.stop()
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            # the shadow scorings of answered requests, then the log of them all
            core.shadow.flush()
            if prediction_log is not None:  # after the drain: every answered prediction is in the buffer
                await asyncio.to_thread(prediction_log.close, settings.prediction_log_shutdown_seconds)
            if access_log is not None:
                access_log.flush()

    router = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: not_found_or_not_allowed})
    router.state.grpc = grpc_server  # for the server's drain (server.py)
    return Front(router, fast, holder, metrics, access_log)


def _release_metrics(metrics: Metrics) -> Callable[[Release | None, str | None], None]:
    def followed(release: Release | None, last_rollback: str | None) -> None:
        rolled_back = datetime.fromisoformat(last_rollback).timestamp() if last_rollback else 0.0
        if release is None:
            metrics.release_followed(None, None, 0.0, 0.0, rolled_back)
        else:
            plan = release.plan
            metrics.release_followed(plan.version, plan.mode, plan.share,
                                     datetime.fromisoformat(plan.step_started_at).timestamp(), rolled_back)

    return followed
