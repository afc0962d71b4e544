"""``oncology serve``: the command, and the app that runs it alone.

A serving process holds what it imported for as long as it serves.  The whole ``oncology`` command tree
(the trainer's, the registry's, monitoring's and release's commands, Rich for their tables) is not needed to
serve, so `oncology.entry` runs ``oncology serve`` through `app` below, which has this one command: the same
function, registered in `oncology.cli` too, so its help and errors are the same either way.  Rich loads only
when there is a warning or an error to print.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from oncology import clihelp
from oncology.clihelp import Command, default, more
from oncology.settings import ServeSettings
from oncology_model.errors import OncologyError

if TYPE_CHECKING:
    from rich.console import Console

#: The group's help, shared with `oncology.cli` (``oncology --help``).
HELP = "oncology: train, register and serve a breast-cancer classifier."

_stderr: list[Console] = []


def _console() -> Console:
    if not _stderr:
        from rich.console import Console

        _stderr.append(Console(stderr=True))
    return _stderr[0]


def _fail(message: str, code: int = 2) -> typer.Exit:
    _console().print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def serve(
    store: Annotated[
        str | None,
        typer.Option(
            help="Store to serve from."
            + more("ONCOLOGY_STORE", "./store, or the model inside the installed wheel where it carries one"),
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help="Version, champion or latest." + more("ONCOLOGY_MODEL", default(ServeSettings, "model")),
                     show_default=False),
    ] = None,
    host: Annotated[
        str | None,
        typer.Option(help="Address to bind." + more("ONCOLOGY_HOST", default(ServeSettings, "host")), show_default=False),
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port." + more("ONCOLOGY_PORT", default(ServeSettings, "port")), show_default=False)
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Worker processes." + more("ONCOLOGY_WORKERS", default(ServeSettings, "workers")),
                     show_default=False),
    ] = None,
    grpc_port: Annotated[
        int | None,
        typer.Option(help="Port of the Open Inference Protocol over gRPC; 0: off."
                     + more("ONCOLOGY_GRPC_PORT", default(ServeSettings, "grpc_port")), show_default=False),
    ] = None,
) -> None:
    """Serve predictions over HTTP (REST and the Open Inference Protocol), and over gRPC when its port is set."""
    from pydantic import ValidationError

    from oncology.webservice.model import ModelHolder
    from oncology.webservice.server import check_grpc_port, listen
    from oncology.webservice.server import serve as run_server
    from oncology_model.errors import StoreUnavailable

    try:
        settings = ServeSettings(**clihelp.overrides(store=store, model=model, host=host, port=port, workers=workers,
                                                 grpc_port=grpc_port))
        settings.tokens()
    except (ValidationError, ValueError) as exc:  # a bad setting: one line naming it, as the other commands say it
        raise _fail(clihelp.one_line(exc) if isinstance(exc, ValidationError) else str(exc)) from None
    try:  # fail fast on a model that can never load: a missing store, an unknown version, a tampered bundle
        ModelHolder(settings).load()
    except StoreUnavailable as exc:  # ... but a store that is down may come back: start live, not ready
        _console().print(f"warning: {exc}; starting anyway, not ready until the model loads", highlight=False,
                         soft_wrap=True)
    except OncologyError as exc:
        raise _fail(f"cannot serve {settings.model} from {settings.store or 'the installed wheel'}: {exc}") from None
    try:  # before anything says it serves: a port that is taken is one line and exit 2, not a failed start-up
        check_grpc_port(settings)
        sock = listen(settings)
    except OncologyError as exc:
        raise _fail(str(exc)) from None
    # plain text, as Rich prints it here (no markup in it, no highlighting, not wrapped): Rich is not loaded for it
    sys.stderr.write(f"docs: http://{settings.host}:{settings.port}/docs\n")
    if settings.grpc_port:
        sys.stderr.write(f"gRPC (Open Inference Protocol): {settings.host}:{settings.grpc_port}\n")
    sys.stderr.flush()
    run_server(settings, sock)


#: ``oncology`` with only its ``serve`` command (`oncology.entry` runs it for ``oncology serve ...``).
app = clihelp.app(help=HELP, no_args_is_help=True)
app.command(cls=Command)(serve)


@app.callback()
def _group() -> None:
    # a callback keeps this a group (``oncology serve ...``), as the full CLI is; a one-command Typer app
    # would make ``serve`` its only command and take no command name
    pass
