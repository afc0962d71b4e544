"""``oncology drift``: the logged traffic of a model version against its training part.

Registered in ``oncology.cli`` with ``app.command()(drift)``; also runs alone as
``python -m oncology.monitoring.drift_cli``.

Which traffic: the records of one model version, ``--model`` (default: the version ``champion`` names
now; any version or alias), compared with that version's own ``reference.json``.  Records of other
versions in the window are counted and left out (a model is only compared with its own training data).

Exit codes, for a scheduled Job to alert on: 0 no drift, 1 drift flagged (the report is written either
way), 2 nothing could be checked: bad options, an unreachable store, a version without ``reference.json``
(trained before references were kept), or no logged predictions of that version in the window.  An
empty window is 2, not 0: a week without a single logged prediction more likely means the prediction
log is broken than that the model is fine, and a Job that silently succeeds would hide it.
"""

from __future__ import annotations

import json
import re
import sys
import time as _time
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Final

import typer
from pydantic import Field, ValidationError
from rich.console import Console
from rich.table import Table

from oncology.clihelp import StoreOpt, default, more
from oncology.monitoring.engine.settings import EngineSettings
from oncology.settings import ServeSettings, StoreSettings
from oncology_model.bundle import REFERENCE, dump_json
from oncology_model.errors import OncologyError, RegistryError
from oncology_model.registry import CHAMPION, ModelRegistry
from oncology_model.storage import Store, open_existing_store

if TYPE_CHECKING:  # numpy and scipy load when the command runs: oncology.cli (and the service image) stays without them
    from oncology.monitoring import drift as stats
    from oncology.monitoring.engine.run import LoggedCounts

REPORT_PREFIX: Final = "monitoring/drift"
DEFAULT_WINDOW: Final = timedelta(days=7)
_RELATIVE = re.compile(r"^(\d+)([dhm])$")
_UNITS: Final = {"d": "days", "h": "hours", "m": "minutes"}
#: Where logged predictions come from: a service that logs them, which is off by default.
_PREFIX: Final = ServeSettings.model_config.get("env_prefix", "")
LOG_HINT: Final = (
    f"the service logs predictions only when started with {_PREFIX}PREDICTION_LOG=true (setting prediction_log, off by "
    f"default: the inputs are patient data), into its store or {_PREFIX}PREDICTION_LOG_STORE"
)


class DriftSettings(StoreSettings):
    """``oncology drift``: which model, and the flagging rule (see `oncology.monitoring.drift`)."""

    model: str = Field(CHAMPION, description="Version or alias whose logged traffic is checked (default: champion).")
    drift_psi: float = Field(0.1, gt=0, description="PSI at or above which a feature can be flagged.")
    drift_alpha: float = Field(
        0.01, gt=0, lt=1, description="Family-wise significance level, Bonferroni-split over the ten tests."
    )


class WindowError(OncologyError):
    """``--since`` or ``--until`` is not a time, or the window is empty."""


class MissingReference(OncologyError):
    """The model version has no ``reference.json``: trained before drift references were kept."""


class NoPredictions(OncologyError):
    """No logged prediction of the model version in the window: nothing to compare."""


def report_key(created: datetime) -> str:
    return f"{REPORT_PREFIX}/drift-{created:%Y%m%dT%H%M%SZ}.json"


def parse_time(text: str, now: datetime, end: bool = False) -> datetime:
    """``2026-11-24`` (a whole UTC day: its start, or with ``end`` its end), an ISO date-time (UTC if no
    offset), ``now``, or a time before now: ``7d``, ``12h``, ``30m``."""
    text = text.strip()
    if text == "now":
        return now
    if match := _RELATIVE.match(text):
        return now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        day = date.fromisoformat(text)
    except ValueError:
        pass
    else:
        start = datetime.combine(day, time(), UTC)
        return start + timedelta(days=1) if end else start
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise WindowError(
            f"{text!r} is not a time: use 2026-11-24, 2026-11-24T06:00:00+00:00, now, or 7d / 12h / 30m before now"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def check(
    store: Store, model: str, since: datetime, until: datetime, thresholds: stats.Thresholds, now: datetime,
    engine: EngineSettings | None = None,
) -> tuple[dict[str, Any], LoggedCounts]:
    """The drift report of ``model``'s logged traffic in ``[since, until)`` (not yet written), counted by
    the query engine that ``engine`` names (default: DuckDB, embedded)."""
    from oncology.monitoring import drift as stats
    from oncology.monitoring.engine.layout import JSONL_PREFIX
    from oncology.monitoring.engine.run import drift_counts

    if since >= until:
        raise WindowError(f"the window is empty: --since {since.isoformat()} is not before --until {until.isoformat()}")
    registry = ModelRegistry(store)
    version = registry.resolve(model)
    bundle = registry.load(version)
    where = f"{store}/models/{version}"
    data = bundle.files.get(REFERENCE)
    if data is None:
        raise MissingReference(
            f"model version {version} ({where}) has no {REFERENCE}: it was trained before drift references were "
            f"kept, so there is no training distribution to compare with; train a new version to check drift"
        )
    reference = stats.Reference.parse(json.loads(data), f"{where}/{REFERENCE}")
    logged = drift_counts(store, since, until, version, reference.probability.edges, engine)
    if logged.n == 0:
        others = ", ".join(f"{v}: {k}" for v, k in sorted(logged.other_versions.items())) or "none"
        raise NoPredictions(
            f"no predictions of model version {version} are logged in {store}/{JSONL_PREFIX}/ between "
            f"{since.isoformat()} and {until.isoformat()} (records of other versions: {others}): nothing to compare; "
            f"{LOG_HINT}"
        )
    body = stats.compare_observed(logged.observed, reference, thresholds, bundle.threshold)
    report = {
        "created_at": now.isoformat(timespec="seconds"),
        "model_version": version,
        "window": {"since": since.isoformat(), "until": until.isoformat()},
        **body,
    }
    return report, logged


def write_report(store: Store, report: dict[str, Any]) -> str:
    """Write the report once (`Store.create`) under its creation second; another run's report of the same
    second keeps its key, and this one takes the next second (waiting for it)."""
    for _ in range(5):
        created = datetime.fromisoformat(report["created_at"])
        key = report_key(created)
        try:
            store.create(key, dump_json(report))
            return key
        except RegistryError:
            later = max(created + timedelta(seconds=1), datetime.now(UTC).replace(microsecond=0))
            _time.sleep(max(0.0, (later - datetime.now(UTC)).total_seconds()))
            report["created_at"] = later.isoformat(timespec="seconds")
    raise RegistryError(f"{store}/{REPORT_PREFIX}: five drift reports of consecutive seconds already exist")


def drift(
    store: StoreOpt = None,
    since: Annotated[
        str | None,
        typer.Option(
            help="Start of the window: 2026-11-24, an ISO date-time, or 7d/12h before now."
            + more(default=f"{DEFAULT_WINDOW.days}d before --until"),
            show_default=False,
        ),
    ] = None,
    until: Annotated[str, typer.Option(help="End of the window (exclusive; a date means the end of that day).")] = "now",
    model: Annotated[
        str | None,
        typer.Option(help="Version or alias whose traffic is checked." + more("ONCOLOGY_MODEL", default(DriftSettings, "model")),
                     show_default=False),
    ] = None,
    psi: Annotated[
        float | None,
        typer.Option("--psi", help="PSI at or above which a feature or the prediction mix can be flagged."
                     + more("ONCOLOGY_DRIFT_PSI", default(DriftSettings, "drift_psi")), show_default=False),
    ] = None,
    alpha: Annotated[
        float | None,
        typer.Option(help="Family-wise significance level (Bonferroni-split over the ten tests)."
                     + more("ONCOLOGY_DRIFT_ALPHA", default(DriftSettings, "drift_alpha")), show_default=False),
    ] = None,
    engine: Annotated[
        str | None,
        typer.Option(help="Query engine: duckdb (embedded) or dask." + more("ONCOLOGY_ENGINE", default(EngineSettings, "engine")),
                     show_default=False),
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option(help="Dask scheduler, tcp://host:8786 (engine dask)." + more("ONCOLOGY_SCHEDULER", "a local cluster"),
                     show_default=False),
    ] = None,
    scheduler_timeout: Annotated[
        float | None,
        typer.Option(help="Seconds to wait for the Dask scheduler to answer (engine dask)."
                     + more("ONCOLOGY_SCHEDULER_TIMEOUT", default(EngineSettings, "scheduler_timeout")), show_default=False),
    ] = None,
    on_corrupt: Annotated[
        str | None,
        typer.Option(help="A log object cut short: skip (named in a warning) or refuse."
                     + more("ONCOLOGY_ON_CORRUPT", default(EngineSettings, "on_corrupt")), show_default=False),
    ] = None,
) -> None:
    """Compare logged inputs and predictions with the training data; write a drift report; exit 1 on drift."""
    out = Console(width=None if sys.stdout.isatty() else 140)
    err = Console(stderr=True)

    def fail(message: str) -> typer.Exit:
        err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
        return typer.Exit(2)

    now = datetime.now(UTC).replace(microsecond=0)
    # the window's "now" (--until's default, and what 30m and 7d count back from) is the end of this second: the
    # window's end is exclusive and shown to the second, so a prediction logged earlier in this second is in it
    window_now = now + timedelta(seconds=1)
    overrides: dict[str, Any] = {"store": store, "model": model, "drift_psi": psi, "drift_alpha": alpha}
    try:
        settings = DriftSettings(**{k: v for k, v in overrides.items() if v is not None})
        chosen: dict[str, Any] = {"engine": engine, "scheduler": scheduler, "scheduler_timeout": scheduler_timeout,
                                  "on_corrupt": on_corrupt}
        engine_settings = EngineSettings(**{k: v for k, v in chosen.items() if v is not None})
        end = parse_time(until, window_now, end=True)
        start = parse_time(since, window_now) if since is not None else end - DEFAULT_WINDOW
        from oncology.monitoring.drift import Thresholds

        thresholds = Thresholds(psi=settings.drift_psi, alpha=settings.drift_alpha)
        target = open_existing_store(settings.store)
        report, logged = check(target, settings.model, start, end, thresholds, now, engine_settings)
        key = write_report(target, report)
    except ValidationError as exc:
        raise fail(f"invalid setting: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}") from None
    except OncologyError as exc:
        raise fail(str(exc)) from None
    for problem in _skipped(logged):
        err.print(f"warning: {problem}", highlight=False, soft_wrap=True)
    _print(out, report)
    out.print(f"report: {target}/{key}", highlight=False, soft_wrap=True)
    try:  # the dashboard shows the latest drift report: write it again
        from oncology.monitoring.report import write_report as write_dashboard

        out.print(f"dashboard: {target}/{write_dashboard(target)}", highlight=False, soft_wrap=True)
    except OncologyError as exc:
        err.print(f"warning: the dashboard was not written ({exc})", highlight=False, soft_wrap=True)
    if report["drift"]:
        what = ", ".join(report["flagged"] + (["prediction mix"] if report["prediction_mix"]["flagged"] else []))
        err.print(f"[bold red]drift flagged:[/] {what}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    out.print("no drift flagged", highlight=False)


def _skipped(logged: LoggedCounts) -> list[str]:
    problems = []
    if logged.malformed:
        problems.append(f"{logged.malformed} malformed log line(s) skipped")
    if logged.unreadable_files:
        named = ", ".join(f"{key} ({logged.unreadable_why[key]})" if key in logged.unreadable_why else key
                          for key in logged.unreadable_files[:5])
        more = len(logged.unreadable_files) - 5
        problems.append(f"{len(logged.unreadable_files)} unreadable log file(s) skipped: {named}"
                        + (f" and {more} more" if more > 0 else ""))
    if logged.other_versions:
        problems.append(
            "records of other model versions left out: "
            + ", ".join(f"{v}: {k}" for v, k in sorted(logged.other_versions.items()))
        )
    return problems


def _print(out: Console, report: dict[str, Any]) -> None:
    from oncology.monitoring.report import mix_psi, p_value_text

    window = report["window"]
    table = Table(
        title=f"drift of model {report['model_version']}: {report['n']} predictions, {window['since']} to {window['until']}"
    )
    for col in ("feature", "PSI", "chi2", "p-value", "flagged"):
        table.add_column(col, justify="left" if col == "feature" else "right")
    for name, f in report["features"].items():
        table.add_row(name, f"{f['psi']:.4f}", f"{f['chi2']:.1f}", p_value_text(f["p_value"]), "YES" if f["flagged"] else "")
    mix = report["prediction_mix"]
    psi = mix_psi(mix)
    table.add_row(
        f"prediction mix (malignant share {mix['observed']['malignant']:.3f}, in training {mix['reference']['malignant']:.3f})",
        "–" if psi is None else f"{psi:.4f}",
        "",
        p_value_text(mix["p_value"]),
        "YES" if mix["flagged"] else "",
    )
    out.print(table)
    out.print(f"rule: {report['thresholds']['rule']}", highlight=False, soft_wrap=True)
    est = report["estimated"]
    figures = ", ".join(
        f"{label} {'n/a' if est[key] is None else format(est[key], '.3f')}"
        for key, label in (("accuracy", "accuracy"), ("recall", "malignant recall"))
    )
    out.print(f"estimated without labels ({est['method']}): {figures}; valid only if the probabilities are calibrated",
              highlight=False, soft_wrap=True)


def main() -> None:
    from oncology.clihelp import Command
    from oncology.clihelp import app as make_app

    app = make_app(add_completion=False)
    app.command(cls=Command)(drift)
    app()


if __name__ == "__main__":
    main()
