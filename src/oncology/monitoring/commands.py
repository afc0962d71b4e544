"""``oncology monitoring ...``: the monitoring data of a release, written to the store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from oncology import clihelp
from oncology.clihelp import Command, StoreOpt
from oncology.settings import StoreSettings
from oncology_model.errors import OncologyError

monitoring_app = clihelp.app(help="Monitoring data in the store: coverage, test KPIs, flat tables for QuickSight/Athena.")

_out = Console()
_err = Console(stderr=True)

BaseOpt = Annotated[
    str | None,
    typer.Option(
        "--manifest-base",
        help="Where reporting tools read the store (the QuickSight manifests name it)."
        + clihelp.more(default="the store's own URI"),
        show_default=False,
    ),
]


def _fail(message: str) -> typer.Exit:
    _err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(2)


def _store_uri(store: str | None) -> str:
    return StoreSettings().store if store is None else store


@monitoring_app.command(cls=Command)
def upload(
    store: StoreOpt = None,
    version: Annotated[str, typer.Option(help="Model version being released: a version, champion or latest.")] = "champion",
    coverage_dir: Annotated[Path, typer.Option(help="Folder holding unittest-coverage.json and test-coverage.json.")] = Path(
        "build/coverage"
    ),
    manifest_base: BaseOpt = None,
) -> None:
    """Upload VERSION's coverage reports, test KPIs and table rows, once; other content is refused."""
    from oncology.monitoring.upload import read_coverage
    from oncology.monitoring.upload import upload as run_upload
    from oncology_model.storage import open_store

    try:
        outcome = run_upload(open_store(_store_uri(store)), version, read_coverage(coverage_dir), manifest_base)
    except OncologyError as exc:
        raise _fail(str(exc)) from None
    for key in outcome.created:
        _out.print(f"wrote {key}", highlight=False, soft_wrap=True)
    for key in outcome.unchanged:
        _out.print(f"unchanged {key}", highlight=False, soft_wrap=True)
    _out.print(f"monitoring data of version {outcome.version} uploaded", highlight=False)


@monitoring_app.command(cls=Command)
def promotions(store: StoreOpt = None, manifest_base: BaseOpt = None) -> None:
    """Write the promotions table's files for alias moves made since the last upload."""
    from oncology.monitoring.upload import sync_promotions
    from oncology_model.storage import open_store

    try:
        outcome = sync_promotions(open_store(_store_uri(store)), manifest_base)
    except OncologyError as exc:
        raise _fail(str(exc)) from None
    for key in outcome.created:
        _out.print(f"wrote {key}", highlight=False, soft_wrap=True)
    _out.print(f"{len(outcome.created)} new alias move(s), {len(outcome.unchanged)} already written", highlight=False)
