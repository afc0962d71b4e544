"""Running the service: uvicorn (uvloop + httptools) with graceful shutdown, one or several workers.

On SIGTERM or SIGINT readiness turns false at once; after ``drain_seconds`` the listening socket
closes, in-flight requests finish (up to ``graceful_timeout``), then the process exits 0.  A second
signal stops waiting for in-flight requests; the app's own shutdown still runs, so the prediction log and the
access log write what they hold (the log within ``prediction_log_shutdown_seconds``).

The port is bound before anything else starts (`listen`), so a port that is taken is one clear error
before the service claims to be serving.  With ``workers > 1`` a small supervisor holds that socket, starts the workers (each a process
with its own app, serving the shared socket), forwards SIGTERM/SIGINT to all of them, so that every
worker drains exactly as a single process does, replaces a worker that dies while serving, and exits
0 when every worker stopped cleanly.  It removes the metrics folder it created for the workers.
Only uvicorn's public API is used (``Config``, ``Server.run(sockets)``,
``Server.should_exit``/``force_exit``, ``Server.capture_signals``), except one subclass: the ``http``
option is `overload.protocol`, uvicorn's httptools protocol with a deadline for reading a request,
which hooks its connection and parser callbacks (``connection_made``, ``on_message_begin``, ``on_headers_complete``,
``on_body``, ``on_message_complete``, ``on_response_complete``, ``connection_lost``, ``shutdown``).  It is given the
listening socket, to accept a burst of connections in batches, and the app's `Front`, to answer its hot routes
itself (``inline_hot_routes``).  The app is served behind `overload.Shedder`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from multiprocessing import resource_tracker
from multiprocessing.context import SpawnProcess
from types import FrameType
from typing import Any

import uvicorn

from oncology import logconfig
from oncology.settings import ServeSettings
from oncology.webservice import overload
from oncology.webservice.app import create_app
from oncology.webservice.transport import Front
from oncology_model.errors import OncologyError

log = logging.getLogger("oncology.webservice")

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def app_from_env() -> Front:
    """The app for a worker process, from ``ONCOLOGY_*`` variables."""
    logconfig.configure(json_lines=True)
    return create_app(ServeSettings())


class _DrainingServer(uvicorn.Server):
    """uvicorn's server with a drain: readiness off first, the listener closed ``drain_seconds`` later."""

    def __init__(
        self, config: uvicorn.Config, app: Front, drain_seconds: float, signals: tuple[int, ...] = _SIGNALS
    ) -> None:
        super().__init__(config)
        self._app = app
        self._drain = drain_seconds
        self._draining = False
        self._signals = signals
        #: signals that arrived before the server installed its handlers (a worker still starting)
        self.early: list[int] = []

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # our handlers, restored afterwards; unlike uvicorn's, the signal is not re-raised at the end:
        # a drained, graceful stop is a success (exit 0)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in self._signals}
        for sig in self.early:
            self.handle_exit(sig, None)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining:  # a second signal: stop now
            self.should_exit = self.force_exit = True
            return
        self._draining = True
        self._app.holder.draining = True
        log.info("signal %s: readiness off, draining for %.1fs, then finishing in-flight requests", sig, self._drain)
        if self._drain > 0:
            asyncio.get_event_loop().call_later(self._drain, self._close)
        else:
            self._close()

    def _close(self) -> None:
        self.should_exit = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # the gRPC port (when on) closes with the HTTP listener and its in-flight calls finish alongside
        grpc_server = getattr(self._app.router.state, "grpc", None)
        stopping = asyncio.ensure_future(grpc_server.stop()) if grpc_server is not None else None
        try:
            await super().shutdown(sockets)
            if self.force_exit:  # a second signal: uvicorn skips the app's shutdown, which then ran only as
                # asyncio cancelled the lifespan at exit, logged as an error with a traceback; it skips the wait only
                await self.lifespan.shutdown()
        finally:
            if stopping is not None:
                await stopping


def _options(
    settings: ServeSettings, shedder: overload.Shedder | None = None, sock: socket.socket | None = None,
    front: Front | None = None,
) -> dict[str, Any]:
    return {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        "lifespan": "on",
        "access_log": False,  # our middleware writes the access log, as JSON, without patient data
        "log_config": None,
        "server_header": False,
        "timeout_graceful_shutdown": settings.graceful_timeout,
        # httptools: a deadline for reading a request, shedding, connections from ``sock`` accepted in batches, the
        # hot routes of ``front`` answered inline
        "http": overload.protocol(settings, shedder, sock, front),
        "timeout_keep_alive": settings.keep_alive_timeout,
    }


class CannotListen(OncologyError):
    """The address and port cannot be bound: taken by another process, not an address of this machine..."""


def _bind(host: str, port: int, what: str, option: str) -> socket.socket:
    """A socket bound to ``host:port`` as uvicorn binds one (SO_REUSEADDR, IPv6 for an address with a colon);
    `CannotListen` with the reason, in one line, naming ``what`` listens there and the ``option`` that moves it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        hint = (f": another process is listening there; stop it, or choose another port with {option}"
                if exc.errno == errno.EADDRINUSE else "")
        raise CannotListen(f"cannot listen{what} on {host}:{port}: {exc.strerror or exc}{hint}") from None
    return sock


def listen(settings: ServeSettings) -> socket.socket:
    """The service's listening socket, bound before anything starts (inheritable by the workers)."""
    sock = _bind(settings.host, settings.port, "", "--port or ONCOLOGY_PORT")
    sock.set_inheritable(True)
    return sock


def check_grpc_port(settings: ServeSettings) -> None:
    """`CannotListen`, in one line, when the gRPC port is taken: checked before anything starts, as `listen` checks
    the HTTP port (gRPC's own bind, later, fails with a line of its C core and the start-up's traceback)."""
    if settings.grpc_port:
        _bind(settings.host, settings.grpc_port, " for gRPC", "--grpc-port or ONCOLOGY_GRPC_PORT").close()


def serve(settings: ServeSettings, sock: socket.socket | None = None) -> None:
    """Serve until stopped, on ``sock`` (from `listen`; bound here when not given)."""
    sock = sock or listen(settings)
    logconfig.configure(json_lines=True)
    if settings.workers > 1:
        _supervise(settings, sock)
        return
    app = create_app(settings)
    shedder = overload.Shedder(app, settings, app.metrics)
    _DrainingServer(uvicorn.Config(shedder, **_options(settings, shedder, sock, app)), app, settings.drain_seconds).run(
        sockets=[sock]
    )


# ---- several workers ------------------------------------------------------------------------------


def _worker(sock: socket.socket) -> None:
    """A worker process: its own app from the environment, serving the supervisor's socket.

    It stops on SIGTERM, which the supervisor forwards; a Ctrl-C reaches the whole process group, so
    SIGINT is left to the supervisor (else each worker would see two signals and skip the drain).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    early: list[int] = []
    signal.signal(signal.SIGTERM, lambda sig, frame: early.append(sig))  # a stop while starting still drains
    # the supervisor spawned us with SIGTERM blocked (see _start_worker): one sent while the interpreter
    # was still starting waited, pending; now it reaches the handler above instead of killing us
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    app = app_from_env()
    settings = ServeSettings()
    shedder = overload.Shedder(app, settings, app.metrics)
    config = uvicorn.Config(shedder, **_options(settings, shedder, sock, app))
    server = _DrainingServer(config, app, settings.drain_seconds, signals=(signal.SIGTERM,))
    server.early = early  # the same list: a signal until the server's own handler is in place is kept
    server.run(sockets=[sock])


def _supervise(settings: ServeSettings, sock: socket.socket) -> None:
    # each worker builds its app from the environment; /metrics merges all workers' files
    for name, value in settings.model_dump(exclude_none=True, exclude={"api_tokens"}).items():
        os.environ[f"ONCOLOGY_{name.upper()}"] = str(value)
    if settings.api_tokens:
        os.environ["ONCOLOGY_API_TOKENS"] = ",".join(t.get_secret_value() for t in settings.api_tokens)
    own_metrics_dir = None
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        own_metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="oncology-metrics-")
    stopping: list[int] = []
    previous = {sig: signal.signal(sig, lambda sig, frame: stopping.append(sig)) for sig in _SIGNALS}
    context = multiprocessing.get_context("spawn")
    workers: list[SpawnProcess] = []
    failed = False
    try:
        workers = [_start_worker(context, sock) for _ in range(settings.workers)]
        log.info("supervisor %d: %d workers on %s:%d", os.getpid(), len(workers), settings.host, settings.port)
        forwarded = 0
        while True:
            if len(stopping) > forwarded:  # forward each signal to every live worker: they drain as one
                for worker in workers:
                    if worker.is_alive() and worker.pid is not None:
                        os.kill(worker.pid, signal.SIGTERM)
                forwarded = len(stopping)
                sock.close()  # the workers' copies close after their drain; no new worker will need it
            if stopping and not any(w.is_alive() for w in workers):
                break
            if not stopping:
                for i, worker in enumerate(workers):
                    if not worker.is_alive():
                        log.error("worker %s exited with %s while serving; starting another", worker.pid, worker.exitcode)
                        workers[i] = _start_worker(context, sock)
            time.sleep(0.1)
        failed = any(w.exitcode != 0 for w in workers)
        if failed:
            log.error("workers exited with %s", [w.exitcode for w in workers])
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.kill()
            worker.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
        if own_metrics_dir is not None:
            shutil.rmtree(own_metrics_dir, ignore_errors=True)
    if failed:
        raise SystemExit(1)


def _start_worker(context: Any, sock: socket.socket) -> SpawnProcess:
    """A worker, spawned with SIGTERM blocked: the blocked mask survives exec, so a stop forwarded before
    the worker has its handler stays pending until ``_worker`` unblocks it, rather than killing it."""
    process: SpawnProcess = context.Process(target=_worker, args=(sock,), daemon=False)
    # spawn starts multiprocessing's resource tracker on first use, and that start *unblocks* SIGTERM
    # when it is done: have it running before we block, or the first worker would be spawned unblocked
    resource_tracker.ensure_running()
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        process.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    return process
