"""``oncology outcomes ...``: bulk import of outcomes, and the outcome check (realized performance, alarms)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.markup import escape

from oncology import clihelp
from oncology.clihelp import Command, StoreOpt, default, more
from oncology.settings import OutcomeSettings
from oncology_model.errors import OncologyError

outcomes_app = clihelp.app(help="Outcomes (biopsy results): import them, and check realized performance per version.",
                           no_args_is_help=True)

_out = Console(width=160)
_err = Console(stderr=True, width=160)



def _fail(message: str, code: int = 2) -> typer.Exit:
    _err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _say(text: str) -> None:
    _out.print(text, highlight=False, soft_wrap=True, markup=False)


@outcomes_app.command("import", cls=Command)
def import_file(
    file: Annotated[str, typer.Argument(metavar="FILE", help="CSV (header request_id,outcome,observed_at,source) or JSON Lines; a path or s3://...")],
    store: StoreOpt = None,
    skip_invalid: Annotated[bool, typer.Option("--skip-invalid", help="Record the good rows and report the bad ones "
                                               "(off: a file with a bad row writes nothing)." + more(default="off"),
                                               show_default=False)] = False,
    fmt: Annotated[str | None, typer.Option("--format", help="csv or jsonl." + more(default="from the file name"),
                                            show_default=False)] = None,
) -> None:
    """Record the outcomes of FILE, once per request id.  Exit 0 done, 1 conflicts refused, 2 bad input."""
    from oncology.monitoring.outcomes import import_outcomes, parse_file
    from oncology.settings import StoreSettings
    from oncology_model.storage import open_existing_store, read_uri

    if fmt not in (None, "csv", "jsonl"):
        raise _fail(f"--format must be csv or jsonl, not {fmt!r}")
    fmt_: Literal["csv", "jsonl"] | None = fmt  # type: ignore[assignment]
    try:
        parsed = parse_file(read_uri(file), file, fmt_)
        # a mistyped --store would make a new folder, where no prediction is logged: refused, as by `check`
        target = open_existing_store(StoreSettings().store if store is None else store)
        done = import_outcomes(target, parsed, file, skip_invalid)
    except OncologyError as exc:
        raise _fail(str(exc)) from None
    for problem in done.skipped:
        _say(f"skipped {problem.message()}")
    for row, conflict in done.conflicts:
        _say(f"conflict at row {row}: {conflict.message()}")
    _say(f"{file}: {done.created} outcome(s) recorded, {done.unchanged} already recorded (unchanged), "
         f"{len(done.conflicts)} conflict(s) refused, {len({p.row for p in done.skipped})} row(s) skipped")
    if done.orphans:
        shown = ", ".join(done.orphans[:10]) + (" ..." if len(done.orphans) > 10 else "")
        _say(f"{len(done.orphans)} orphan(s): request ids with no logged prediction (yet; they join when it appears): {shown}")
    if done.conflicts:
        raise _fail(f"{len(done.conflicts)} outcome(s) differ from the one already recorded for their request id "
                    "(listed above); they were refused and kept as conflict records", 1)


@outcomes_app.command(cls=Command)
def check(
    store: StoreOpt = None,
    period: Annotated[str | None, typer.Option(
        help="Calendar chunks: day, week, month, quarter, year."
        + more("ONCOLOGY_OUTCOMES_PERIOD", default(OutcomeSettings, "outcomes_period")), show_default=False)] = None,
    chunk_size: Annotated[int | None, typer.Option(
        help="Chunks of N labelled cases instead (0: calendar chunks)."
        + more("ONCOLOGY_OUTCOMES_CHUNK_SIZE", default(OutcomeSettings, "outcomes_chunk_size")), show_default=False)] = None,
) -> None:
    """Join outcomes with the prediction log; realized performance per version and chunk; CUSUM alarms.

    Writes its report (JSON) and the realized table (CSV) once into the store.  Exit 0 no alarm, 1 alarm,
    2 nothing to check (no labelled case) or an error.
    """
    from pydantic import ValidationError

    from oncology.monitoring.outcomes import check as run_check
    from oncology.settings import OutcomeSettings
    from oncology_model.storage import open_existing_store

    overrides: dict[str, Any] = {k: v for k, v in {"store": store, "outcomes_period": period,
                                                    "outcomes_chunk_size": chunk_size}.items() if v is not None}
    try:
        settings = OutcomeSettings(**overrides)
    except ValidationError as exc:
        raise _fail("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None
    try:
        target = open_existing_store(settings.store)
        result = run_check(target, settings)
    except OncologyError as exc:
        raise _fail(str(exc)) from None
    report = result.report
    if report["unreadable_files"]:  # their predictions are not in the join: name them, as drift does
        shown = ", ".join(report["unreadable_files"][:10]) + (" ..." if len(report["unreadable_files"]) > 10 else "")
        _err.print(f"warning: {len(report['unreadable_files'])} unreadable log file(s) skipped: {escape(shown)}",
                   highlight=False, soft_wrap=True)
    for version, r in sorted(report["versions"].items()):
        _say(f"version {version}: {r['predictions']} predictions, {r['labelled']} labelled ({r['chunking']})")
        for chunk in r["chunks"]:
            figures = "  ".join(f"{name} {_fmt(chunk[name])}" for name in ("accuracy", "recall", "specificity", "roc_auc", "brier"))
            _say(f"  {chunk['chunk']}: n={chunk['labelled']} ({chunk['malignant']} malignant)  {figures}")
            if "cbpe" in chunk:
                acc = chunk["cbpe"]["accuracy"]
                _say(f"    accuracy realized {acc['realized']:.3f}, CBPE {acc['estimated']:.3f} "
                     f"[{acc['low']:.3f}, {acc['high']:.3f}]{'  DISAGREE' if chunk['cbpe']['disagree'] else ''}")
        bias = r["verification"]
        if bias.get("biased"):
            _say(f"  verification bias: {bias['note']}")
            if "corrected_recall" in bias:
                _say(f"  corrected recall {_fmt(bias['corrected_recall'])}, naive {_fmt(bias['naive_recall'])}")
        for name, alarm in r["alarms"].items():
            if name == "calibration":
                state = (f"ALARM in {', '.join(alarm['chunks'])}" if alarm["alarm"] else
                         "realized within the CBPE estimates" if alarm["checked"] else f"not checked: {alarm['note']}")
                _say(f"  calibration (realized vs CBPE): {state}")
                continue
            state = f"ALARM at labelled case {alarm['alarm_at']}" if alarm["alarm"] else "no alarm"
            _say(f"  {name} CUSUM: {state} (statistic {alarm['statistic']}, h {alarm['h']}, {alarm['n']} cases)")
    if report["orphans"]["count"]:
        _say(f"{report['orphans']['count']} orphan outcome(s) (no logged prediction yet)")
    if report["ambiguous_outcomes"]:
        _say(f"{report['ambiguous_outcomes']} ambiguous outcome(s) left out: each names a request id logged more "
             "than once (a /predict/batch request, or a reused X-Request-Id); give every prediction its own id")
    # where it wrote, as `oncology drift` says it: the store's location and the key (to open or to copy)
    _say(f"report: {target}/{result.key}" if result.key else "report not written")
    if result.table_key:
        _say(f"table: {target}/{result.table_key}")
    if result.key:  # the dashboard shows the newest outcome check: write it again
        from oncology.monitoring.report import write_report as write_dashboard

        try:
            _say(f"dashboard: {target}/{write_dashboard(target)}")
        except OncologyError as exc:
            typer.echo(f"warning: the dashboard was not written ({exc})", err=True)
    if result.status == "nothing":
        raise _fail("nothing to check: no outcome joins exactly one logged prediction "
                    f"({report['orphans']['count']} orphan(s), {report['ambiguous_outcomes']} ambiguous)", 2)
    if result.status == "alarm":  # the verdict the command exists to give, not an error (as drift's "drift flagged")
        _err.print(f"[bold red]alarm:[/] {escape('; '.join(report['alarms']))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    _say("no alarm")


def _fmt(figure: dict[str, Any]) -> str:
    if figure.get("value") is None:
        return "n/a"
    if figure.get("low") is None:
        return f"{figure['value']:.3f}"
    return f"{figure['value']:.3f} [{figure['low']:.3f}, {figure['high']:.3f}]"
