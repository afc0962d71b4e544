"""Running ``oncology serve``: the command's work, and its command line read without Typer when it is plain.

A serving process holds what it imported for as long as it serves.  Typer (and what it imports: the shell
completion, subprocess, difflib...) is about 1.2 MB of a worker's resident memory and 20-30 ms of its start
(docs/grpc.md, "Cost"), and is needed only to print help or a usage error.  So `main` reads a plain command
line (known options, each once, each with a plain value: ``--port 8080``, ``--store=/srv/models``) itself,
exactly as Typer reads it (a property test holds the two together), and hands anything else (``--help``, an
unknown or repeated option, a value Typer might read otherwise) to the Typer command in `oncology.serve_cli`,
whose help and errors are unchanged.  Both run `run`.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from oncology_model.errors import OncologyError

if TYPE_CHECKING:
    from rich.console import Console

_stderr: list[Console] = []


def _console() -> Console:
    if not _stderr:
        from rich.console import Console

        _stderr.append(Console(stderr=True))
    return _stderr[0]


def _fail(message: str, code: int = 2) -> SystemExit:
    _console().print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return SystemExit(code)


def run(store: str | None = None, model: str | None = None, host: str | None = None, port: int | None = None,
        workers: int | None = None, grpc_port: int | None = None) -> None:
    """``oncology serve`` with these options (None: the setting's environment variable, else its default)."""
    from oncology.settings import ServeSettings
    from oncology.webservice.model import ModelHolder
    from oncology.webservice.server import check_grpc_port, listen
    from oncology.webservice.server import serve as run_server
    from oncology_model.errors import StoreUnavailable

    given: dict[str, Any] = {"store": store, "model": model, "host": host, "port": port, "workers": workers, "grpc_port": grpc_port}
    try:
        settings = ServeSettings(**{k: v for k, v in given.items() if v is not None})
        settings.tokens()
    except ValueError as exc:  # a bad setting (pydantic's ValidationError is one): one line naming it, as the other
        raise _fail(_one_line(exc) if _validation_error(exc) else str(exc)) from None  # commands say it
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


def _validation_error(exc: ValueError) -> bool:
    """Whether ``exc`` is pydantic's `ValidationError` (only raised once pydantic is loaded: a worker whose settings
    are read without it never loads it)."""
    core = sys.modules.get("pydantic_core")
    return core is not None and isinstance(exc, core.ValidationError)


def _one_line(exc: Any) -> str:
    from oncology.clihelp import one_line

    return one_line(exc)


#: The options of ``oncology serve``: `run`'s parameters, spelled as Typer spells them, and whether each is a number.
OPTIONS: Final = {f"--{p.name.replace('_', '-')}": (p.name, "int" in str(p.annotation).split(" | "))
                  for p in inspect.signature(run).parameters.values()}


def plain_options(args: Sequence[str]) -> dict[str, Any] | None:
    """The options of a plain ``oncology serve`` command line (the words after ``serve``), as Typer reads them;
    None for any other line: Typer is then to read it, with its help and its errors.

    Plain: each word a known option, given once, with its value in the next word or after ``=``; a value is not
    empty and does not start with ``-``, and a number is written in ASCII digits only.
    """
    found: dict[str, Any] = {}
    words = iter(args)
    for word in words:
        option, equals, value = word.partition("=")
        if option not in OPTIONS:
            return None
        name, number = OPTIONS[option]
        if name in found:
            return None
        if not equals:
            value = next(words, "")
        if not value or value.startswith("-") or (number and not (value.isascii() and value.isdigit())):
            return None
        found[name] = int(value) if number else value
    return found


def main(args: Sequence[str]) -> None:
    """``oncology serve ARGS``: `run` for a plain command line, else the Typer command (help, usage errors)."""
    options = None if os.environ.get("_ONCOLOGY_COMPLETE") else plain_options(args)  # (shell completion: Typer's)
    if options is None:
        from oncology.serve_cli import app

        app()
        return
    try:
        run(**options)
    except KeyboardInterrupt:  # as Typer ends a command stopped while it starts: quietly, 130
        raise SystemExit(130) from None
    except BrokenPipeError:  # ... and one whose output has nobody to read it
        raise SystemExit(1) from None
