"""The ``oncology`` command: one sub-command per pipeline step, each with local defaults."""

from __future__ import annotations

import logging
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from oncology import clihelp
from oncology.clihelp import Command, StoreOpt, default, more
from oncology.monitoring.commands import monitoring_app
from oncology.monitoring.outcomes_cli import outcomes_app
from oncology.release.cli import release_app
from oncology.serve_cli import HELP, serve
from oncology.settings import GateSettings, RetrainSettings, StoreSettings, TrainSettings
from oncology_model.errors import OncologyError

app = clihelp.app(help=HELP, no_args_is_help=True)
models_app = clihelp.app(help="The model registry: versions, the champion alias, promotion and rollback.")
app.add_typer(models_app, name="models")
app.add_typer(monitoring_app, name="monitoring")
app.add_typer(outcomes_app, name="outcomes")
app.add_typer(release_app, name="release")

out = Console(width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True)
log = logging.getLogger("oncology")

KPI_ROWS = (
    ("accuracy", "accuracy"),
    ("recall", "malignant recall (sensitivity)"),
    ("specificity", "specificity"),
    ("precision", "precision"),
    ("f1", "F1"),
    ("roc_auc", "ROC AUC"),
    ("brier", "Brier score"),
)
REFERRAL_ROWS = (
    ("referred", "share referred"),
    ("recall_not_referred", "malignant recall, not referred"),
    ("specificity_not_referred", "specificity, not referred"),
    ("accuracy_not_referred", "accuracy, not referred"),
)


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


@app.command(cls=Command)
def train(
    data: Annotated[
        str | None, typer.Option(help="Raw data URI." + more("ONCOLOGY_DATA", "the bundled UCI file"), show_default=False)
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option(help="A dataset version of the store (made by `oncology outcomes dataset`): its number or "
                     "'latest'; not with --data." + more("ONCOLOGY_DATASET", "off: the raw data of --data"),
                     show_default=False, metavar="VERSION"),
    ] = None,
    store: StoreOpt = None,
    seed: Annotated[
        int | None, typer.Option(help="Random seed." + more("ONCOLOGY_SEED", default(TrainSettings, "seed")), show_default=False)
    ] = None,
    promote: Annotated[
        bool | None,
        typer.Option(
            "--promote/--no-promote",
            help="Promote to champion if the gate passes."
            + more("ONCOLOGY_PROMOTE", "--promote" if default(TrainSettings, "promote") else "--no-promote"),
            show_default=False,
        ),
    ] = None,
) -> None:
    """Train, evaluate and publish a new model version (if it passes the quality gate).

    On the raw data (--data, default the bundled UCI file) or on a dataset version of the store (--dataset: the raw
    data plus the labelled cases outcomes gave); the model's metadata and card name what it was trained on.
    """
    from pydantic import ValidationError

    from oncology import gate
    from oncology.trainer.pipeline import GateFailed, run_training

    _setup_logging()
    try:
        settings = TrainSettings(**clihelp.overrides(data=data, dataset=dataset, store=store, seed=seed, promote=promote))
    except ValidationError as exc:
        raise _fail(clihelp.one_line(exc)) from None
    try:
        outcome = run_training(settings, interactive=err.is_terminal, console=err)
    except GateFailed as exc:
        _print_kpis(exc.kpis)
        raise _fail(f"the new model failed the quality gate and was not published: {'; '.join(exc.reasons)}", 1) from None
    except OncologyError as exc:
        raise _fail(str(exc)) from None
    _print_kpis(outcome.kpis)
    out.print(f"quality gate passed: {gate.describe(settings)}", highlight=False, soft_wrap=True)
    trained_on = ""
    if settings.dataset is not None:
        meta = outcome.dataset_version or {}
        trained_on = (f" (trained on dataset version {meta.get('version')}: {meta.get('outcome_cases')} case(s) "
                      "from outcomes)")
    if outcome.published:
        out.print(f"published model version [bold]{outcome.version}[/] to {settings.store}{trained_on}",
                  highlight=False)
    else:
        out.print(f"version [bold]{outcome.version}[/] in {settings.store} already holds this very model "
                  "(same data, same settings): nothing published", highlight=False)
    if outcome.promoted:
        out.print(f"champion is now {outcome.version}", highlight=False)


def _print_kpis(kpis: dict[str, Any]) -> None:
    test, cv = kpis["test"], kpis["cv"]
    table = Table(title=f"model {kpis['version']}  (threshold {kpis['threshold']:.4f})")
    table.add_column("KPI")
    table.add_column(f"held-out test (n={test['n']})", justify="right")
    table.add_column("test 95% CI", justify="right")
    inner = f", {cv['inner_folds']}-fold inner" if "inner_folds" in cv else ""
    table.add_column(f"{cv.get('method', 'CV')} CV {cv['repeats']}x{cv['folds']}-fold{inner}, mean ± std", justify="right")
    for key, label in KPI_ROWS:
        lo_hi = test.get("ci", {}).get(key)
        table.add_row(
            label,
            f"{test[key]:.4f}",
            f"[{lo_hi[0]:.4f}, {lo_hi[1]:.4f}]" if lo_hi else "",
            f"{cv['mean'][key]:.4f} ± {cv['std'][key]:.4f}",
        )
    cm = test["confusion_matrix"]
    table.add_row("confusion (tn fp / fn tp)", f"{cm['tn']} {cm['fp']} / {cm['fn']} {cm['tp']}", "", "")
    out.print(table)
    if referral := kpis.get("referral"):
        band = Table(title=f"referral band [{referral['low']:.4f}, {referral['high']:.4f}): refer for review")
        band.add_column("figure")
        band.add_column(f"held-out test (n={referral['test']['n']})", justify="right")
        band.add_column("test 95% CI", justify="right")
        band.add_column("nested CV mean ± std", justify="right")
        for key, label in REFERRAL_ROWS:
            lo, hi = referral["test"]["ci"][key]
            band.add_row(
                label,
                f"{referral['test'][key]:.4f}",
                f"[{lo:.4f}, {hi:.4f}]",
                f"{referral['cv']['mean'][key]:.4f} ± {referral['cv']['std'][key]:.4f}",
            )
        out.print(band)
    if families := kpis.get("families"):
        fams = Table(title="families compared (nested CV mean ± std)")
        for col in ("family", "selectable", "accuracy", "recall", "specificity", "ROC AUC", "Brier"):
            fams.add_column(col)
        for f in families:
            fams.add_row(
                f["label"],
                "yes" if f["selectable"] else "no",
                *(f"{f['cv']['mean'][k]:.4f} ± {f['cv']['std'][k]:.4f}"
                  for k in ("accuracy", "recall", "specificity", "roc_auc", "brier")),
            )
        out.print(fams)
    if missed := [t for t in kpis.get("targets", []) if not t["met"]]:
        out.print("reporting targets not met (the project's aims for the nested-CV figures, reported in the model card; "
                  "they do not decide publication or promotion, the quality gate does):", highlight=False, soft_wrap=True)
        for target in missed:
            out.print(f"  {target['name']} {target['op']} {target['target']} (measured {target['value']:.4f})",
                      highlight=False)


def _registry(store: str | None) -> Any:
    """The registry of an existing store: a mistyped local path is an error, not an empty store."""
    from oncology_model.registry import ModelRegistry
    from oncology_model.storage import open_existing_store

    return ModelRegistry(open_existing_store(StoreSettings(**clihelp.overrides(store=store)).store))


def _in_store(registry: Any, exc: Exception) -> str:
    """The error, naming the store it is about when it does not already."""
    message = str(exc)
    return message if registry is None or str(registry.store) in message else f"{registry.store}: {message}"


@models_app.command("list", cls=Command)
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


@models_app.command(cls=Command)
def promote(
    version: Annotated[str, typer.Argument(help="Version to make champion (N.N.N, or 'latest').", metavar="VERSION")],
    store: StoreOpt = None,
) -> None:
    """Make VERSION the champion, if its verified bundle's KPIs pass the quality gate."""
    import re

    from oncology import gate
    from oncology_model.registry import CHAMPION, LATEST

    if version != LATEST and not re.fullmatch(r"\d+(\.\d+)*", version):
        raise _fail(f"promote takes a version (N.N.N) or 'latest', not {version!r}")
    try:
        registry = _registry(store)
        version = registry.resolve(version)
        bundle = registry.load(version)  # verified: manifest, sizes and sha256 of every file
        if reasons := gate.failures(bundle.kpis, GateSettings(**clihelp.overrides(store=store))):
            raise _fail(f"version {version} fails the quality gate: {'; '.join(reasons)}", 1)
        if registry.state()["aliases"].get(CHAMPION) == version:  # what a script asked for already holds: exit 0
            out.print(f"champion in {registry.store} is already {version}: nothing to change", highlight=False)
            return
        move = registry.promote(version)
    except OncologyError as exc:
        raise _fail(str(exc)) from None
    out.print(f"champion in {registry.store}: {move['from'] or 'none'} -> {move['to']}", highlight=False)


@models_app.command(cls=Command)
def rollback(store: StoreOpt = None) -> None:
    """Move the champion back to the version it had before its latest promotion."""
    registry = None
    try:
        registry = _registry(store)
        move = registry.rollback()
    except OncologyError as exc:
        raise _fail(_in_store(registry, exc)) from None
    out.print(f"champion in {registry.store}: {move['from']} -> {move['to']}", highlight=False)


@models_app.command(cls=Command)
def history(
    store: StoreOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print every move as JSON, a release decision's evidence whole "
                                          "(the table shortens it)." + more(default="a table"), show_default=False)] = False,
) -> None:
    """Every move of an alias: when, from, to, and a release decision's evidence."""
    registry = None
    try:
        registry = _registry(store)
        moves = registry.history()
    except OncologyError as exc:
        raise _fail(_in_store(registry, exc)) from None
    if as_json:
        import json

        print(json.dumps(moves, indent=1))
        return
    table = Table(title=f"alias history in {registry.store}")
    for col in ("at", "alias", "action", "from", "to", "evidence"):
        table.add_column(col)
    for m in moves:
        table.add_row(m["at"], m["alias"], m["action"], str(m["from"] or "–"), str(m["to"] or "–"), _evidence(m))
    out.print(table)


def _evidence(move: dict[str, Any]) -> str:
    """A release decision's evidence in one cell: the release, the window's requests per arm, and why."""
    evidence = move.get("evidence")
    if not evidence:
        return f"release {move['release']}" + (f": {move['reason']}" if move.get("reason") else "") if move.get("release") else ""
    arms = evidence.get("arms", {})
    counts = ", ".join(f"{name} {arm['version']} n={arm['requests']} errors={arm['errors']}" for name, arm in arms.items())
    why = "; ".join(evidence.get("reasons") or ["no harm found"])
    window = evidence.get("window", {})
    return f"release {move.get('release')}: {evidence.get('verdict')} on [{window.get('from')}, {window.get('to')}): {counts}. {why}"


@models_app.command(cls=Command)
def show(
    version: Annotated[str, typer.Argument(help="Version, champion or latest.", metavar="VERSION")],
    store: StoreOpt = None,
) -> None:
    """Print the model card (Markdown) of VERSION."""
    try:
        registry = _registry(store)
        resolved = registry.resolve(version)
        card = registry.load(resolved).card_markdown
    except OncologyError as exc:
        raise _fail(str(exc)) from None
    if card is None:
        raise _fail(f"version {resolved} has no model card: it was trained before model cards existed")
    out.print(card, markup=False, highlight=False, emoji=False, soft_wrap=True, end="")


@app.command(cls=Command)
def wheel(
    store: StoreOpt = None,
    model: Annotated[str, typer.Option(help="Version or alias to package.")] = "champion",
    out: Annotated[str, typer.Option(help="Output folder.")] = "dist",
) -> None:
    """Build the oncology-model wheel carrying MODEL (its version is the model's)."""
    from pathlib import Path

    from oncology.packaging import build_model_wheel

    try:
        path = build_model_wheel(StoreSettings(**clihelp.overrides(store=store)).store, model, Path(out))
    except OncologyError as exc:
        raise _fail(str(exc)) from None
    print(path)  # the path alone, for scripts


app.command(cls=Command)(serve)  # defined in serve_cli: `oncology serve` runs without the rest of this tree


# ---- monitoring: registered from their own modules (numpy, scipy and the plotting library load only when run)
from oncology.monitoring.drift_cli import drift as _drift  # noqa: E402
from oncology.monitoring.report_cli import report as _report  # noqa: E402

app.command("drift", cls=Command)(_drift)
app.command("report", cls=Command)(_report)


def main() -> None:
    app()


# ---- outcomes: the retraining dataset (here, not in monitoring/: it checks the raw file with the trainer's parser)


#: The raw data a dataset version starts from (`dataset`, `retrain`): the labelled cases are added to it.
RawDataOpt = Annotated[
    str | None,
    typer.Option(help="The raw data the dataset version starts from; the labelled cases are added to it."
                 + more("ONCOLOGY_DATA", "the bundled UCI file"), show_default=False),
]


@outcomes_app.command(cls=Command)
def dataset(store: StoreOpt = None, data: RawDataOpt = None) -> None:
    """Write a new dataset version: the raw data as it is, plus every labelled case (its logged features, its outcome).

    Under datasets/<n>/ in the store, with lineage.json (the raw file's hash, the outcome files joined, how many
    cases came from outcomes); train on it with ``oncology train --dataset N`` (the number printed).
    """
    from oncology.monitoring.outcomes import build_dataset
    from oncology.trainer.data import BUNDLED_DATA, DATA_FILE, parse
    from oncology_model.storage import open_existing_store, read_uri

    try:
        settings = TrainSettings(**clihelp.overrides(store=store, data=data))
        raw_uri = settings.data or str(BUNDLED_DATA)
        raw = read_uri(raw_uri)
        parse(raw, raw_uri)  # the raw file must be one the trainer reads
        built = build_dataset(open_existing_store(settings.store), raw, raw_uri, DATA_FILE)
    except OncologyError as exc:
        raise _fail(str(exc)) from None
    cases = built.lineage["outcomes"]["cases"]
    state = "written" if built.created else "unchanged (the newest version already holds these rows)"
    out.print(f"dataset version {built.version} {state}: the raw data plus {cases} labelled case(s) from outcomes",
              highlight=False, soft_wrap=True, markup=False)
    out.print(f"train on it: oncology train --dataset {built.version} --store {settings.store}", highlight=False,
              soft_wrap=True, markup=False)


@outcomes_app.command(cls=Command)
def retrain(
    store: StoreOpt = None,
    data: RawDataOpt = None,
    cooldown_hours: Annotated[
        float | None,
        typer.Option(help="No retraining starts within this many hours of the last one's start (0: none)."
                     + more("ONCOLOGY_RETRAIN_COOLDOWN_HOURS", default(RetrainSettings, "retrain_cooldown_hours")),
                     show_default=False),
    ] = None,
) -> None:
    """Retrain when the newest outcome check or drift report alarms: a dataset version, then a CANDIDATE model.

    Reads monitoring/outcome-checks/latest.json and the newest monitoring/drift/drift-*.json of the store. If one \
alarms and no retraining started within the cooldown, it claims the next retraining (monitoring/retrains/<n>.json, \
created once: of two triggers at the same moment exactly one trains), writes a dataset version (as `oncology \
outcomes dataset`) and trains on it (as `oncology train --dataset N`), never promoting: the release path decides. \
What came of it is written beside the claim (<n>.result.json).

    Exit codes, each with its last line on stdout (errors on stderr):

    0 published: "published model version X to STORE (candidate, not promoted; trained on dataset version N: C \
case(s) from outcomes)"; or "model version X already holds this very model (...): nothing published".

    1 trained, not published: "error: the candidate failed the quality gate ..." or "error: retraining N failed: ...".

    2 an error before any claim: settings, store, an unreadable report.

    3 no alarm: "no alarm: nothing to retrain (what was read)".

    4 cooling down: "cooling down: retraining N started at T (...); next possible at T2"; also when another trigger \
claimed this retraining first.
    """
    from datetime import timedelta

    from pydantic import ValidationError

    from oncology import retrain as trigger
    from oncology_model.storage import open_existing_store

    _setup_logging()
    try:
        settings = RetrainSettings(**clihelp.overrides(store=store, data=data, retrain_cooldown_hours=cooldown_hours))
    except ValidationError as exc:
        raise _fail(clihelp.one_line(exc)) from None
    try:
        target = open_existing_store(settings.store)
        decision = trigger.decide(target, timedelta(hours=settings.retrain_cooldown_hours))
    except OncologyError as exc:
        raise _fail(str(exc), trigger.ERROR) from None

    def say(text: str) -> None:
        out.print(text, highlight=False, soft_wrap=True, markup=False)

    for alarm in decision.alarms:
        say(f"alarm: {alarm.describe()}")
    if decision.status == "no_alarm":
        say(f"no alarm: nothing to retrain ({'; '.join(decision.seen)})")
        raise typer.Exit(trigger.NO_ALARM)
    claim = decision.claim
    assert claim is not None
    if decision.status == "cooling_down":
        until = decision.until.isoformat(timespec="seconds") if decision.until else "?"
        say(f"cooling down: retraining {claim.number} started at {claim.record['started_at']} ({target}/{claim.key}, "
            f"by {claim.record.get('by')}); next possible at {until}")
        raise typer.Exit(trigger.COOLING_DOWN)
    say(f"retraining {claim.number} claimed: {target}/{claim.key}")
    result = trigger.retrain(target, claim, settings, interactive=err.is_terminal)
    if result.dataset_version is not None:
        say(f"dataset version {result.dataset_version}: the raw data plus {result.outcome_cases} labelled case(s) "
            "from outcomes")
    if result.status == "published":
        say(f"published model version {result.model_version} to {target} (candidate, not promoted; trained on dataset "
            f"version {result.dataset_version}: {result.outcome_cases} case(s) from outcomes)")
        return
    if result.status == "unchanged":
        say(f"model version {result.model_version} already holds this very model (same dataset, same settings): "
            "nothing published")
        return
    if result.status == "gate_failed":
        raise _fail(f"the candidate failed the quality gate and was not published: {result.reason}",
                    trigger.NOT_PUBLISHED)
    raise _fail(f"retraining {claim.number} failed: {result.reason}", trigger.NOT_PUBLISHED)
