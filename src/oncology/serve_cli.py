"""``oncology serve``: the Typer command, and the app that runs it alone.

A serving process holds what it imported for as long as it serves.  The whole ``oncology`` command tree
(the trainer's, the registry's, monitoring's and release's commands, Rich for their tables) is not needed to
serve, so `oncology.entry` runs ``oncology serve`` through `app` below, which has this one command: the same
function, registered in `oncology.cli` too, so its help and errors are the same either way.  A plain command
line does not even need Typer: `oncology.serving` reads it and runs the command's work (`oncology.serving.run`)
itself.  Rich loads only when there is a warning or an error to print.
"""

from __future__ import annotations

from typing import Annotated

import typer

from oncology import clihelp, serving
from oncology.clihelp import Command, default, more
from oncology.settings import ServeSettings

#: The group's help, shared with `oncology.cli` (``oncology --help``).
HELP = "oncology: train, register and serve a breast-cancer classifier."


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
    serving.run(store=store, model=model, host=host, port=port, workers=workers, grpc_port=grpc_port)


#: ``oncology`` with only its ``serve`` command (`oncology.entry` runs it for ``oncology serve ...``).
app = clihelp.app(help=HELP, no_args_is_help=True)
app.command(cls=Command)(serve)


@app.callback()
def _group() -> None:
    # a callback keeps this a group (``oncology serve ...``), as the full CLI is; a one-command Typer app
    # would make ``serve`` its only command and take no command name
    pass
