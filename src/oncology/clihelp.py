"""How the ``oncology`` commands present their help: every option with its default and its environment
variable, flags without a type, arguments in the usage line as ``VERSION``.

Typer's own rendering shows each flag as ``<bool>`` and a required argument as ``{version}``; the
`Command` and `Group` classes below (passed as ``cls=``) leave the flag's type out and write the argument's
metavar alone.  The defaults are read from the settings classes, so the help cannot drift from them.
"""

from __future__ import annotations

import inspect
import re
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from typer.core import TyperCommand, TyperGroup, TyperOption

from oncology.settings import StoreSettings

_BRACED = re.compile(r"^\{(.+)\}(\.\.\.)?$")


def reflow(text: str | None) -> str | None:
    """A docstring's paragraphs each on one line.  Typer keeps the single line breaks of the paragraphs after the
    first, so a sentence wrapped in the source broke mid-line in ``--help``; a paragraph that starts with ``\\b``
    keeps its lines (click's convention)."""
    if not text:
        return text
    shown, cut, hidden = inspect.cleandoc(text).partition("\f")  # what follows \f is not shown: left as it is
    paragraphs = shown.split("\n\n")
    return "\n\n".join(p if p.startswith("\b") else " ".join(p.split()) for p in paragraphs) + cut + hidden


class _Plain:
    help: str | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = reflow(self.help)

    def get_params(self, ctx: Any) -> list[Any]:
        params: list[Any] = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
                param.metavar = ""  # a flag takes no value: no "<bool>"
        return params

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces: list[str] = super().collect_usage_pieces(ctx)  # type: ignore[misc]
        return [_BRACED.sub(r"\1\2", piece) for piece in pieces]


class Command(_Plain, TyperCommand):
    """A command whose help shows flags without a type and arguments by their metavar."""


class Group(_Plain, TyperGroup):
    """A group of commands, presented like `Command`."""


def app(**kwargs: Any) -> typer.Typer:
    """A Typer app whose group and commands use `Group` and `Command` (add each command with ``cls=Command``)."""
    return typer.Typer(cls=Group, **kwargs)


def default(settings: type[BaseModel], name: str) -> Any:
    """A setting's default, as the help shows it."""
    return settings.model_fields[name].default


def more(env: str | None = None, default: Any = None) -> str:
    """`` [env: ONCOLOGY_X; default: y]`` for the end of an option's help (brackets escaped for Rich markup)."""
    parts = [f"env: {env}" if env else "", f"default: {default}" if default is not None else ""]
    text = "; ".join(p for p in parts if p)
    return f" \\[{text}]" if text else ""


STORE_HELP = "Store URI (a folder, file://..., s3://bucket/prefix)." + more(
    "ONCOLOGY_STORE", f"./{default(StoreSettings, 'store')}"
)
StoreOpt = Annotated[str | None, typer.Option("--store", help=STORE_HELP, show_default=False)]


def overrides(**values: Any) -> dict[str, Any]:
    """The options given on the command line (not None), as settings overrides: the rest come from the environment."""
    return {k: v for k, v in values.items() if v is not None}


def one_line(exc: Any) -> str:
    """A pydantic validation error as one line: each setting and what is wrong with it."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
