"""The ``oncology`` command: one sub-command per pipeline step, each with local defaults."""

from __future__ import annotations

import logging
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from oncology.monitoring.commands import monitoring_app
from oncology.settings import GateSettings, StoreSettings, TrainSettings
from oncology_model.errors import OncologyError

app = typer.Typer(help="oncology: train, register and serve a breast-cancer classifier.", no_args_is_help=True)
models_app = typer.Typer(help="The model registry: versions, the champion alias, promotion and rollback.")
app.add_typer(models_app, name="models")
app.add_typer(monitoring_app, name="monitoring")

out = Console(width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True)
log = logging.getLogger("oncology")

StoreOpt = Annotated[str | None, typer.Option("--store", help="Store URI (path, file://, s3://bucket/prefix). [env: ONCOLOGY_STORE]")]

KPI_ROWS = (
    ("accuracy", "accuracy"),
    ("recall", "malignant recall (sensitivity)"),
    ("specificity", "specificity"),
    ("precision", "precision"),
    ("f1", "F1"),
    ("roc_auc", "ROC AUC"),
    ("brier", "Brier score"),
)


def _overrides(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


@app.command()
def train(
    data: Annotated[str | None, typer.Option(help="Raw data URI; default: the bundled UCI file. [env: ONCOLOGY_DATA]")] = None,
    store: StoreOpt = None,
    seed: Annotated[int | None, typer.Option(help="Random seed. [env: ONCOLOGY_SEED]")] = None,
    promote: Annotated[
        bool | None, typer.Option("--promote/--no-promote", help="Promote to champion if the gate passes. [env: ONCOLOGY_PROMOTE]")
    ] = None,
) -> None:
    """Train, evaluate and publish a new model version (if it passes the quality gate)."""
    from oncology.trainer.pipeline import GateFailed, run_training

    _setup_logging()
    settings = TrainSettings(**_overrides(data=data, store=store, seed=seed, promote=promote))
    try:
        outcome = run_training(settings, interactive=err.is_terminal, console=err)
    except GateFailed as exc:
        _print_kpis(exc.kpis)
        raise _fail(f"version {exc.version} failed the quality gate and was not published: {'; '.join(exc.reasons)}", 1) from None
    except OncologyError as exc:
        raise _fail(str(exc)) from None
    _print_kpis(outcome.kpis)
    out.print(f"published model version [bold]{outcome.version}[/] to {settings.store}", highlight=False)
    if outcome.promoted:
        out.print(f"champion is now {outcome.version}", highlight=False)


def _print_kpis(kpis: dict[str, Any]) -> None:
    table = Table(title=f"model {kpis['version']}  (threshold {kpis['threshold']:.4f})")
    table.add_column("KPI")
    table.add_column(f"held-out test (n={kpis['test']['n']})", justify="right")
    table.add_column(f"CV {kpis['cv']['repeats']}x{kpis['cv']['folds']}-fold mean ± std", justify="right")
    for key, label in KPI_ROWS:
        table.add_row(label, f"{kpis['test'][key]:.4f}", f"{kpis['cv']['mean'][key]:.4f} ± {kpis['cv']['std'][key]:.4f}")
    cm = kpis["test"]["confusion_matrix"]
    table.add_row("confusion (tn fp / fn tp)", f"{cm['tn']} {cm['fp']} / {cm['fn']} {cm['tp']}", "")
    out.print(table)


def _registry(store: str | None) -> Any:
    from oncology_model.registry import ModelRegistry
    from oncology_model.storage import open_store

    return ModelRegistry(open_store(StoreSettings(**_overrides(store=store)).store))


@models_app.command("list")
def models_list(store: StoreOpt = None) -> None:
    """List published versions with their headline test KPIs and aliases."""
    try:
        registry = _registry(store)
        aliases = registry.state()["aliases"]
        table = Table(title=f"models in {registry.store}")
        for col in ("version", "aliases", "family", "accuracy", "recall", "specificity", "ROC AUC", "created"):
            table.add_column(col)
        for version in registry.versions():
            bundle = registry.load(version)
            test = bundle.kpis["test"]
            table.add_row(
                version,
                ",".join(sorted(a for a, v in aliases.items() if v == version)),
                bundle.metadata["model"]["family"],
                *(f"{test[k]:.4f}" for k in ("accuracy", "recall", "specificity", "roc_auc")),
                bundle.metadata["created_at"],
            )
    except OncologyError as exc:
        raise _fail(str(exc)) from None
    out.print(table)


@models_app.command()
def promote(
    version: Annotated[str, typer.Argument(help="Version to make champion (or 'latest').")],
    store: StoreOpt = None,
) -> None:
    """Make VERSION the champion, if its KPIs pass the quality gate."""
    from oncology.trainer import gate

    try:
        registry = _registry(store)
        version = registry.resolve(version)
        if reasons := gate.failures(registry.kpis(version), GateSettings(**_overrides(store=store))):
            raise _fail(f"version {version} fails the quality gate: {'; '.join(reasons)}", 1)
        move = registry.promote(version)
    except OncologyError as exc:
        raise _fail(str(exc)) from None
    out.print(f"champion: {move['from']} -> {move['to']}", highlight=False)


@models_app.command()
def rollback(store: StoreOpt = None) -> None:
    """Move the champion back to the version it had before its latest promotion."""
    try:
        move = _registry(store).rollback()
    except OncologyError as exc:
        raise _fail(str(exc)) from None
    out.print(f"champion: {move['from']} -> {move['to']}", highlight=False)


@models_app.command()
def history(store: StoreOpt = None) -> None:
    """Every move of an alias: when, from, to."""
    try:
        moves = _registry(store).history()
    except OncologyError as exc:
        raise _fail(str(exc)) from None
    table = Table(title="alias history")
    for col in ("at", "alias", "action", "from", "to"):
        table.add_column(col)
    for m in moves:
        table.add_row(m["at"], m["alias"], m["action"], str(m["from"]), m["to"])
    out.print(table)


@app.command()
def wheel(
    store: StoreOpt = None,
    model: Annotated[str, typer.Option(help="Version or alias to package.")] = "champion",
    out: Annotated[str, typer.Option(help="Output folder.")] = "dist",
) -> None:
    """Build the oncology-model wheel carrying MODEL (its version is the model's)."""
    from pathlib import Path

    from oncology.packaging import build_model_wheel

    try:
        path = build_model_wheel(StoreSettings(**_overrides(store=store)).store, model, Path(out))
    except OncologyError as exc:
        raise _fail(str(exc)) from None
    print(path)  # the path alone, for scripts


@app.command()
def serve(
    store: Annotated[str | None, typer.Option(help="Store to serve from; default: the model in the installed wheel. [env: ONCOLOGY_STORE]")] = None,
    model: Annotated[str | None, typer.Option(help="Version, champion or latest. [env: ONCOLOGY_MODEL]")] = None,
    host: Annotated[str | None, typer.Option(help="Address to bind. [env: ONCOLOGY_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="Port. [env: ONCOLOGY_PORT]")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes. [env: ONCOLOGY_WORKERS]")] = None,
) -> None:
    """Serve predictions over HTTP (REST and the Open Inference Protocol)."""
    from pydantic import ValidationError

    from oncology.settings import ServeSettings
    from oncology.webservice.server import serve as run_server

    try:
        settings = ServeSettings(**_overrides(store=store, model=model, host=host, port=port, workers=workers))
        settings.tokens()
    except (ValidationError, ValueError) as exc:
        raise _fail(str(exc)) from None
    err.print(f"docs: http://{settings.host}:{settings.port}/docs", highlight=False, soft_wrap=True)
    run_server(settings)


def main() -> None:
    app()
