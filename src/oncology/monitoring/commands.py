"""``oncology monitoring ...``: the monitoring data of a release, written to the store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from oncology import clihelp
from oncology.clihelp import Command, StoreOpt
from oncology.monitoring.engine.settings import EngineSettings
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


@monitoring_app.command(cls=Command)
def compact(
    store: StoreOpt = None,
    day: Annotated[
        list[str] | None,
        typer.Option("--date", metavar="YYYY-MM-DD", help="A day to compact (repeatable)." + clihelp.more(default="every closed day"),
                     show_default=False),
    ] = None,
    grace_minutes: Annotated[
        int, typer.Option(min=0, help="A day is closed this many minutes after its end (UTC): the writers' last flushes are in.")
    ] = 60,
    retain_jsonl_days: Annotated[
        int | None,
        typer.Option(min=0, help="Delete the JSON Lines that a manifest replaced, in days older than this."
                     + clihelp.more(default="keep them"), show_default=False),
    ] = None,
    on_corrupt: Annotated[
        str | None,
        typer.Option(help="A log object cut short: skip (left as JSON Lines) or refuse."
                     + clihelp.more("ONCOLOGY_ON_CORRUPT", clihelp.default(EngineSettings, "on_corrupt")), show_default=False),
    ] = None,
) -> None:
    """Compact closed days of the prediction log into Parquet (written once, with a manifest of what it replaced)."""
    from datetime import UTC, date, datetime, timedelta

    from pydantic import ValidationError

    from oncology.monitoring.compaction import compact as run_compact
    from oncology.monitoring.compaction import expire
    from oncology_model.storage import open_existing_store

    try:
        days = [date.fromisoformat(d) for d in day] if day else None
    except ValueError as exc:
        raise _fail(f"--date: {exc}; use YYYY-MM-DD") from None
    try:
        chosen: dict[str, Any] = {"on_corrupt": on_corrupt} if on_corrupt else {}
        settings = EngineSettings(**chosen)
    except ValidationError as exc:
        raise _fail(f"invalid setting: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}") from None
    try:
        target = open_existing_store(_store_uri(store))
        now = datetime.now(UTC)
        done = run_compact(target, now, days, timedelta(minutes=grace_minutes), None, settings)
        before = None if retain_jsonl_days is None else now.date() - timedelta(days=retain_jsonl_days)
        deleted = [] if before is None else expire(target, before)
    except OncologyError as exc:
        raise _fail(str(exc)) from None
    if not done:  # say so, rather than print nothing
        _out.print(f"nothing to compact: no closed day in the prediction log (a day closes {grace_minutes} minute(s) "
                   "after its end, in UTC; --grace-minutes)", highlight=False, soft_wrap=True)
    for result in done:
        for key, why in sorted(result.skipped.items()):
            _err.print(f"warning: {target}/{key}: cannot be read whole ({why}); left as JSON Lines", highlight=False, soft_wrap=True)
        if result.manifest is None:
            _out.print(f"{result.day}: nothing to compact", highlight=False)
        else:
            m = result.manifest
            _out.print(f"{result.day}: {m.rows - m.errors} predictions and {m.errors} failed scoring(s) from "
                       f"{len(m.replaced)} object(s) -> {target}/{m.parquet} ({m.malformed} malformed line(s) left out)",
                       highlight=False, soft_wrap=True)
    if before is not None:  # a deletion is never silent
        _out.print(f"--retain-jsonl-days {retain_jsonl_days}: deleted {len(deleted)} JSON Lines object(s) that a "
                   f"manifest replaced, in days before {before}", highlight=False, soft_wrap=True)


TableOpt = Annotated[str, typer.Option("--table", help="Name of the table in Athena (Glue).")]


@monitoring_app.command("predictions-ddl", cls=Command)
def predictions_ddl(
    store: StoreOpt = None,
    location_base: Annotated[
        str | None,
        typer.Option("--location-base", help="Where Athena reads the store, s3://bucket/prefix (a copy of a local store)."
                     + clihelp.more(default="the store's own URI"), show_default=False),
    ] = None,
    table_name: TableOpt = "oncology_predictions",
) -> None:
    """Print the Athena (Glue) DDL of the compacted prediction log (monitoring/predictions-parquet/)."""
    from oncology.monitoring.engine.layout import PARQUET_PREFIX
    from oncology.monitoring.engine.table import athena_ddl
    from oncology.monitoring.upload import default_manifest_base
    from oncology_model.storage import open_store

    try:
        base = location_base or default_manifest_base(open_store(_store_uri(store)))
    except OncologyError as exc:
        raise _fail(str(exc)) from None
    typer.echo(athena_ddl(f"{base.rstrip('/')}/{PARQUET_PREFIX}/", table_name), nl=False)


@monitoring_app.command("predictions-dataset", cls=Command)
def predictions_dataset(
    data_source_arn: Annotated[str, typer.Argument(metavar="DATA_SOURCE_ARN",
                                                   help="ARN of the QuickSight data source over Athena.")],
    database: Annotated[str, typer.Option(help="Athena (Glue) database holding the table.")] = "oncology",
    table_name: TableOpt = "oncology_predictions",
) -> None:
    """Print the QuickSight data set (CreateDataSet input) over the Athena table of the compacted prediction log."""
    import json

    from oncology.monitoring.engine.table import quicksight_dataset

    if not data_source_arn.startswith("arn:"):
        raise _fail(f"DATA_SOURCE_ARN: {data_source_arn!r} is not an ARN (arn:aws:quicksight:REGION:ACCOUNT:datasource/ID)")
    typer.echo(json.dumps(quicksight_dataset(data_source_arn, database, table_name), indent=2))
