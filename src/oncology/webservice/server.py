"""Running the service: uvicorn (uvloop + httptools) with graceful shutdown.

On SIGTERM or SIGINT readiness turns false at once; after ``drain_seconds`` the listening socket
closes, in-flight requests finish (up to ``graceful_timeout``), then the process exits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import tempfile
from types import FrameType
from typing import Any

import uvicorn

from oncology import logconfig
from oncology.settings import ServeSettings
from oncology.webservice.app import Front, create_app

log = logging.getLogger("oncology.webservice")


def app_from_env() -> Front:
    """The app for a worker process, from ``ONCOLOGY_*`` variables (used by multi-worker runs)."""
    logconfig.configure(json_lines=True)
    return create_app(ServeSettings())


class _DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: Front, drain_seconds: float) -> None:
        super().__init__(config)
        self._app = app
        self._drain = drain_seconds
        self._draining = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        holder = self._app.holder
        if self._draining:  # a second signal: stop now
            super().handle_exit(sig, frame)
            return
        self._draining = True
        holder.draining = True
        log.info("signal %s: readiness off, draining for %.1fs, then finishing in-flight requests", sig, self._drain)
        if self._drain > 0:
            asyncio.get_event_loop().call_later(self._drain, self._shut_down, sig, frame)
        else:
            self._shut_down(sig, frame)

    def _shut_down(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if sig == signal.SIGTERM:  # a graceful stop is a success: exit 0 rather than re-raising SIGTERM
            self._captured_signals.remove(sig)


def _options(settings: ServeSettings) -> dict[str, Any]:
    return {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        "http": "httptools",
        "lifespan": "on",
        "access_log": False,  # our middleware writes the access log, as JSON, without patient data
        "log_config": None,
        "server_header": False,
        "timeout_graceful_shutdown": settings.graceful_timeout,
    }


def serve(settings: ServeSettings) -> None:
    logconfig.configure(json_lines=True)
    if settings.workers > 1:
        # each worker process builds its app from the environment; /metrics merges all workers
        for name, value in settings.model_dump(exclude_none=True, exclude={"api_tokens"}).items():
            os.environ[f"ONCOLOGY_{name.upper()}"] = str(value)
        if settings.api_tokens:
            os.environ["ONCOLOGY_API_TOKENS"] = ",".join(t.get_secret_value() for t in settings.api_tokens)
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="oncology-metrics-"))
        uvicorn.run(
            "oncology.webservice.server:app_from_env", factory=True, workers=settings.workers, **_options(settings)
        )
        return
    app = create_app(settings)
    _DrainingServer(uvicorn.Config(app, **_options(settings)), app, settings.drain_seconds).run()
