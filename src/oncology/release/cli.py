"""``oncology release ...``: start, follow, judge and end canary and shadow releases."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from oncology import clihelp
from oncology.clihelp import Command, StoreOpt, more
from oncology.release.plan import DEFAULT_STEPS
from oncology.settings import ReleaseSettings
from oncology_model.errors import OncologyError
from oncology_model.registry import ModelRegistry

if TYPE_CHECKING:
    from oncology.release.metrics import Source
    from oncology_model.release import ReleasePlan

release_app = clihelp.app(help="Canary and shadow releases: a candidate judged against the champion on live traffic.",
                          no_args_is_help=True)

_out = Console(width=None if sys.stdout.isatty() else 140)
_err = Console(stderr=True)

_DEFAULT_STEPS = ",".join(f"{share * 100:g}" for share in DEFAULT_STEPS)

def _fail(message: str, code: int = 2) -> typer.Exit:
    _err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _settings(store: str | None) -> ReleaseSettings:
    from pydantic import ValidationError

    try:
        return ReleaseSettings() if store is None else ReleaseSettings(store=store)
    except ValidationError as exc:
        raise _fail("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None


def _registry(settings: ReleaseSettings) -> ModelRegistry:
    from oncology_model.storage import open_existing_store

    return ModelRegistry(open_existing_store(settings.store))


def _time(text: str, option: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise _fail(f"{option} {text!r} is not an ISO 8601 time (2026-12-05T08:00:00+00:00)") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@release_app.command(cls=Command)
def start(
    version: Annotated[str, typer.Argument(metavar="VERSION", help="Version to release (N.N.N, or 'latest').")],
    canary: Annotated[str | None, typer.Option(
        help="Canary steps, percent of requests answered by the candidate." + more(default=_DEFAULT_STEPS),
        show_default=False)] = None,
    shadow: Annotated[str | None, typer.Option(
        help="Shadow release instead: the share of requests the candidate also scores, e.g. 100%."
        + more(default="none: a canary"), show_default=False)] = None,
    store: StoreOpt = None,
) -> None:
    """Start releasing VERSION (it must pass the quality gate): canary steps, or shadow.

    Exit status: 0 started (the line names the release id); 1 refused: the gate, a release already under way,
    no champion, VERSION is the champion, or the store could not be read; 2 a wrong option.
    """
    from oncology.release import plan

    if canary is not None and shadow is not None:
        raise _fail("choose --canary STEPS or --shadow SHARE, not both")
    try:
        steps = (plan.parse_share(shadow),) if shadow is not None else (
            plan.parse_steps(canary) if canary is not None else plan.DEFAULT_STEPS)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    settings = _settings(store)
    try:
        registry = _registry(settings)
        started = plan.start(registry, version, plan.SHADOW if shadow is not None else plan.CANARY, steps, settings)
    except OncologyError as exc:
        raise _fail(str(exc), 1) from None
    shares = " -> ".join(f"{s:.0%}" for s in started.steps)
    _out.print(f"release {started.id} of {started.version} against champion {started.champion} in {registry.store}: "
               f"{started.mode} {shares}", highlight=False, soft_wrap=True)


@release_app.command(cls=Command)
def status(
    store: StoreOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan and the release history as JSON."
                                          + more(default="a table"), show_default=False)] = False,
) -> None:
    """The release under way (if any) and the latest release decisions.

    Exit status: 0 shown (also when no release is under way); 2 the store could not be read, or a wrong option.
    """
    from oncology.release import plan

    settings = _settings(store)
    try:
        running, history = plan.status(_registry(settings))
    except OncologyError as exc:
        raise _fail(str(exc)) from None
    if as_json:
        print(json.dumps({"release": running.to_dict() if running else None, "history": history}, indent=1))
        return
    if running is None:
        _out.print("no release under way", highlight=False, soft_wrap=True)
    else:
        deadline = datetime.fromisoformat(running.step_started_at) + timedelta(minutes=settings.release_step_deadline_minutes)
        _out.print(
            f"release {running.id}: {running.version} against {running.champion}, {running.mode}, step {running.step + 1} "
            f"of {len(running.steps)} at {running.share:.0%} (since {running.step_started_at}; deadline "
            f"{deadline.isoformat(timespec='seconds')})", highlight=False, soft_wrap=True)
    if not history:  # rather than an empty table
        _out.print("no release decisions yet (`oncology release start VERSION` starts one)", highlight=False)
        return
    table = Table(title="release decisions")
    for col in ("at", "release", "action", "version", "why"):
        table.add_column(col)
    for move in history[-20:]:
        table.add_row(move["at"], str(move.get("release", "")), move["action"], str(move["to"] or move["from"]),
                      _why(move))
    _out.print(table)


def _why(move: dict[str, Any]) -> str:
    evidence = move.get("evidence") or {}
    reasons = evidence.get("reasons") or ([move["reason"]] if move.get("reason") else [])
    return "; ".join(reasons) if reasons else ("no harm found" if evidence else "")


@release_app.command(cls=Command)
def abort(store: StoreOpt = None,
          reason: Annotated[str, typer.Option(help="Why, recorded in the history.")] = "aborted by hand") -> None:
    """End the release under way; the champion stays and answers every request.

    Exit status: 0 aborted; 1 no release was under way, or the store could not be read; 2 a wrong option.
    """
    from oncology.release import plan

    settings = _settings(store)
    try:
        move = plan.abort(_registry(settings), reason)
    except OncologyError as exc:
        raise _fail(str(exc), 1) from None
    _out.print(f"release {move['release']} of {move['from']} aborted", highlight=False, soft_wrap=True)


def judge_pass(settings: ReleaseSettings, now: datetime | None = None, act: bool = True) -> dict[str, Any]:
    """One pass of the judge over the release under way: the verdict with its evidence, acted on if ``act``."""
    from oncology.monitoring.engine.layout import PARQUET_PREFIX
    from oncology.release import evidence, plan
    from oncology.release.judge import HOLD, PROMOTE, ROLLBACK, Verdict, judge
    from oncology_model.release import current_plan
    from oncology_model.storage import open_store

    now = now or datetime.now(UTC)
    registry = _registry(settings)
    running = current_plan(registry.state(), str(registry.store))
    if running is None:
        return {"verdict": None, "reasons": ["no release under way"]}
    since = datetime.fromisoformat(running.step_started_at)
    log_store = open_store(settings.prediction_log_store) if settings.prediction_log_store else registry.store
    source = metrics_source(settings)
    window = evidence.collect(log_store, running.champion, running.version, running.mode, since, now)
    past_deadline = now >= since + timedelta(minutes=settings.release_step_deadline_minutes)
    reading = None
    if source is not None:
        reading = source.read(registry.store, running.id, running.step, {running.champion, running.version}, since, now)
    if source is not None and reading is None:  # this pass read the window's start
        arms = {"champion": window.champion.summary(), "candidate": window.candidate.summary()}
        verdict = Verdict(ROLLBACK if past_deadline else HOLD, [
            ("inconclusive past the step's deadline: " if past_deadline else "")
            + f"the replicas' metrics ({source.describe()}) were first read now: the window of their counts starts "
            "here, the next pass judges it"], {}, arms)
    else:
        if reading is not None:
            evidence.apply_metrics(window, reading, running.champion, running.version, running.mode)
        verdict = judge(window.champion, window.candidate, settings, len(running.steps), window.paired, past_deadline)
    if not window.files and not verdict.tests:  # nothing logged at all: most likely a service that logs nowhere here
        verdict.reasons.append(
            f"no prediction log in {log_store}/{evidence.PREFIX}/ for this window (nor compacted parts in "
            f"{log_store}/{PARQUET_PREFIX}/): the service writes it only with "
            "ONCOLOGY_PREDICTION_LOG=true, to its store (or ONCOLOGY_PREDICTION_LOG_STORE, which the judge then needs "
            "too), every ONCOLOGY_PREDICTION_LOG_FLUSH_SECONDS")
    if not verdict.tests and (hint := _unrouted(running, window.champion.requests, window.candidate.requests)):
        verdict.reasons.append(hint)
    shown = verdict.evidence(evidence.describe(window, since, now),
                             {"release": running.id, "mode": running.mode, "step": running.step + 1,
                              "steps": list(running.steps), "share": running.share})
    shown["metrics"] = reading.describe() if reading is not None else (
        {"source": source.describe(), "baseline_recorded": now.isoformat(timespec="seconds")} if source is not None
        else {"source": "prediction log"})
    if act and verdict.action != HOLD:
        if verdict.action == PROMOTE:
            move = plan.promote(registry, running.id, running.step, shown)
            if move["action"] == "step" and reading is not None and reading.raw is not None and source is not None:
                source.remember(registry.store, running.id, running.step + 1, now, reading.raw)  # the next step's start
        else:
            move = plan.roll_back(registry, running.id, running.step, shown)
        shown["acted"] = {k: move[k] for k in ("alias", "action", "from", "to", "at")}
    return shown


def _unrouted(running: ReleasePlan, champion: int, candidate: int) -> str | None:
    """Why a step's candidate got no request while the champion got many: the replicas do not follow the release.
    At least 10 expected (the chance of none by the hash alone is then below 1 in 10,000)."""
    share = running.share
    if candidate or share >= 1:
        return None
    expected = champion * (share if running.mode == "shadow" else share / (1 - share))
    if expected < 10:
        return None
    return (f"the candidate {running.version} has no request among the {champion} of the champion logged in this step, "
            f"where about {expected:.0f} were expected at {share:.0%}: the replicas do not follow the release (a service "
            "started with ONCOLOGY_MODEL set to a version rather than `champion` ignores releases) or have not reloaded "
            "it yet (ONCOLOGY_RELOAD_INTERVAL)")


def metrics_source(settings: ReleaseSettings) -> Source | None:
    """Where the judge reads each arm's requests, errors and scoring times (None: the prediction log)."""
    from oncology.release import metrics

    return metrics.source(settings.release_metrics, prometheus_url=settings.release_prometheus_url,
                          replica_urls=settings.release_replica_urls, pods_selector=settings.release_pods_selector,
                          pods_port=settings.release_pods_port, pods_namespace=settings.release_pods_namespace)


def replay_pass(settings: ReleaseSettings, since: datetime, until: datetime, aa: bool) -> dict[str, Any]:
    """What the judge would have decided on the logged window ``[since, until)``: of the latest release started
    before ``until``, or (``aa``) of the champion's own traffic split in two halves (a false-alarm check)."""
    from oncology.release import evidence
    from oncology.release.judge import judge
    from oncology_model.release import bucket
    from oncology_model.storage import open_store

    registry = _registry(settings)
    log_store = open_store(settings.prediction_log_store) if settings.prediction_log_store else registry.store
    state = registry.state()
    if aa:
        champions = [m for m in state["history"] if m["alias"] == "champion" and m["at"] < until.isoformat()]
        if not champions:
            raise _fail(f"no champion before {until.isoformat()}")
        version = champions[-1]["to"]
        requests, files, malformed, unreadable = evidence.read_requests(log_store, since, until, {version})
        halves = {"a": [], "b": []}  # type: dict[str, list[Any]]
        for (request_id, arm), r in requests.items():
            if arm == "champion":
                halves["a" if bucket("replay-aa", request_id) < 0.5 else "b"].append(r)
        window = evidence.Window(evidence.arm_of(version, halves["a"]), evidence.arm_of(version, halves["b"]), None,
                                 files, malformed, unreadable)
        plan_shown: dict[str, Any] = {"replay": "A/A: the champion's requests split in two by request id"}
        steps = 1
    else:
        starts = [m for m in state["history"] if m["action"] == "start" and m["at"] < until.isoformat()]
        if not starts:
            raise _fail(f"no release was started before {until.isoformat()}: replay --aa checks the champion alone")
        start_move = starts[-1]
        info = start_move["plan"]
        window = evidence.collect(log_store, info["champion"], start_move["to"], info["mode"], since, until)
        plan_shown = {"release": start_move["release"], "mode": info["mode"], "steps": info["steps"], "replay": True}
        steps = len(info["steps"])
    verdict = judge(window.champion, window.candidate, settings, steps, window.paired)
    return verdict.evidence(evidence.describe(window, since, until), plan_shown)


@release_app.command("judge", cls=Command)
def judge_command(
    store: StoreOpt = None,
    replay: Annotated[tuple[str, str] | None, typer.Option(
        help="Replay the prediction log of \\[FROM, TO) (ISO times): what the judge would have decided; acts on nothing."
        + more(default="judge the release under way"), metavar="FROM TO", show_default=False)] = None,
    aa: Annotated[bool, typer.Option("--aa", help="With --replay: judge the champion against itself (its requests "
                                                  "split in two by request id), to check the false-alarm rate."
                                     + more(default="off"), show_default=False)] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Decide and print, but move nothing." + more(default="off: act"),
                                          show_default=False)] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole evidence as JSON (with --loop: one line per "
                                          "pass)." + more(default="a table"), show_default=False)] = False,
    loop: Annotated[float | None, typer.Option(
        "--loop", metavar="SECONDS", min=1.0,
        help="Judge every SECONDS until stopped (SIGTERM, SIGINT): one line per pass; a pass that fails is reported "
        "on stderr and the next one runs." + more(default="one pass"), show_default=False)] = None,
) -> None:
    """One pass of the judge: compare candidate and champion since the step began; promote, hold or roll back.

    Exit status: 0 the pass was done, whatever its verdict (or no release was under way; with --loop: stopped by
    a signal); 1 the store, the prediction log or the replicas' metrics could not be read, or the release moved
    meanwhile (another judge, an abort): nothing was moved; 2 a wrong option.
    """
    settings = _settings(store)
    if loop is not None:
        if replay is not None or aa:
            raise _fail("--loop judges the release under way: it does not go with --replay or --aa")
        raise typer.Exit(_loop(settings, loop, dry_run, as_json))
    try:
        if replay is not None:
            since, until = _time(replay[0], "--replay FROM"), _time(replay[1], "--replay TO")
            if until <= since:
                raise _fail(f"--replay: TO ({replay[1]}) must come after FROM ({replay[0]})")
            shown = replay_pass(settings, since, until, aa)
        elif aa:
            raise _fail("--aa goes with --replay FROM TO")
        else:
            shown = judge_pass(settings, act=not dry_run)
    except OncologyError as exc:
        raise _fail(str(exc), 1) from None
    if as_json:
        print(json.dumps(shown, indent=1, default=str))
        return
    if shown.get("verdict") is None:
        _out.print("no release under way: nothing to judge", highlight=False, soft_wrap=True)
        return
    arms = shown["arms"]
    table = Table(title=f"verdict: {shown['verdict']}" + (" (replay)" if replay else "") + (" (dry run)" if dry_run else ""))
    for col in ("arm", "version", "requests", "errors", "malignant share", "referred share", "latency p50 ms"):
        table.add_column(col)
    for name, arm in arms.items():
        table.add_row(name, arm["version"], str(arm["requests"]), str(arm["errors"]),
                      *(_cell(arm[k]) for k in ("malignant_share", "referred_share", "latency_ms_p50")))
    _out.print(table)
    for reason in shown["reasons"]:
        _out.print(f"- {reason}", highlight=False, soft_wrap=True)
    if acted := shown.get("acted"):
        _out.print(f"acted: {acted['alias']} {acted['action']} {acted['from']} -> {acted['to']}", highlight=False, soft_wrap=True)


def pass_line(shown: dict[str, Any], at: datetime) -> str:
    """One pass of ``--loop`` as one line: when, the release and step, the verdict, why, and what was moved."""
    when = at.isoformat(timespec="seconds")
    if shown.get("verdict") is None:
        return f"{when} no release under way"
    plan_shown = shown["plan"]
    arms = shown["arms"]
    line = (f"{when} release {plan_shown['release']} step {plan_shown['step']}/{len(plan_shown['steps'])}: "
            f"{shown['verdict']} (champion {arms['champion']['requests']}, candidate {arms['candidate']['requests']} "
            "requests)")
    if shown["reasons"]:
        line += ": " + "; ".join(shown["reasons"])
    if acted := shown.get("acted"):
        line += f"; acted: {acted['alias']} {acted['action']} {acted['from']} -> {acted['to']}"
    return line


def _cell(value: object) -> str:
    """A figure of an arm's row; "–" where the window has none (no requests yet: no share, no latency)."""
    return "–" if value is None else str(value)


def _loop(settings: ReleaseSettings, seconds: float, dry_run: bool, as_json: bool) -> int:
    """``--loop``: a pass every ``seconds`` (from the start of one to the next) until SIGTERM or SIGINT; 0."""
    import signal
    import threading
    import time

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.is_set():
        began, at = time.monotonic(), datetime.now(UTC)
        try:
            shown = judge_pass(settings, now=at, act=not dry_run)
        except OncologyError as exc:  # the next pass may succeed (a store or a replica back): reported, not fatal
            _err.print(f"[bold red]error:[/] {at.isoformat(timespec='seconds')} {exc}", highlight=False, soft_wrap=True)
        else:
            print(json.dumps({"at": at.isoformat(timespec="seconds"), **shown}, default=str) if as_json
                  else pass_line(shown, at), flush=True)
        stop.wait(max(0.0, seconds - (time.monotonic() - began)))
    return 0
