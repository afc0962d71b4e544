"""``oncology report``: the dashboard page of a store, as one self-contained HTML file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from oncology.clihelp import StoreOpt
from oncology.settings import StoreSettings
from oncology_model.errors import OncologyError

_out = Console()
_err = Console(stderr=True)

#: Where the page goes without --out (git-ignored, like every report).
DEFAULT_OUT = Path("reports/dashboard.html")


def report(
    store: StoreOpt = None,
    out: Annotated[Path, typer.Option("--out", help="The HTML file to write.")] = DEFAULT_OUT,
) -> None:
    """Build the dashboard (KPIs, coverage, the champion's curves, promotions, drift) as one HTML file."""
    from oncology.monitoring.report import build_report
    from oncology_model.storage import open_existing_store

    uri = StoreSettings().store if store is None else store
    try:
        page = build_report(open_existing_store(uri)).encode("utf-8")
    except OncologyError as exc:
        _err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(page)
    except OSError as exc:
        _err.print(f"[bold red]error:[/] {out}: cannot write ({exc.strerror})", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    _out.print(f"wrote {out} ({len(page) / 1e6:.2f} MB) from {uri}", highlight=False, soft_wrap=True)


if __name__ == "__main__":  # python -m oncology.monitoring.report_cli (until `oncology report` is registered)
    typer.run(report)
