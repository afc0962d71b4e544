"""The cost of a request in CPU instructions, and the cold start: repeatable on a busy machine.

Wall-clock throughput on a shared machine moves by tens of percent; the number of instructions a server
executes for a request does not.  Each server runs under Valgrind's callgrind (``--instr-atstart=no``: start-up
runs uninstrumented), a client outside Valgrind (benchmarks/loadgen.py) sends ``--warmup`` single-row
``POST /predict`` requests, then instrumentation is switched on and zeroed (``callgrind_control``), exactly
``--requests`` more are sent on ``--connections`` keep-alive connections, and the counters are dumped: the
server's instructions per request, everything it ran included (the event loop, parsing, the app, timers that
fired meanwhile).  Every answer must be a 200 with the model's probability.

The servers, one at a time:

- ``floor``: benchmarks/floor.py, the bare ASGI app on the service's own uvicorn options;
- ``defaults``: ``oncology serve --store S`` with its defaults (metrics, access log, load shedding), S a store
  trained here (``oncology train --promote``) unless ``--store`` names one;
- ``no-shedding``: ``ONCOLOGY_OVERLOAD_MAX_LAG=0``;
- ``no-access-log``: ``ONCOLOGY_ACCESS_LOG=false``;
- ``neither``: both off.

Under Valgrind a request takes ~50x its native time, so work done by a timer (the access log's flush every
50 ms, uvicorn's date header every second) falls on fewer requests than it does natively: those costs are
overstated here, never understated.  With 8 connections the shedder never sheds (its ``overload_min_queue``
is 8 others waiting); with more, a queue builds and the shedder's turns run, but its budget must be scaled by
Valgrind's slowdown (``--budget 5``: its cost estimates are CPU times, ~50x the native ones), and so must the
least turn of its queue (``--min-quantum 0.1``, 1 ms natively).  The least turn is scaled by default, at any number
of connections (``--min-quantum 0.05``): it also bounds the work the protocol answers at once in an iteration of the
loop, and left at 1 ms, a single row (~1.7 ms under Valgrind) is more than a quantum alone, so that every request is
deferred to an iteration of its own, where natively a quantum holds about 28 of them (``--min-quantum 0.001``:
unscaled).  Any answer other than 200 aborts the run.

Cold start (no Valgrind, wall clock): process spawn to the first correct ``/predict`` answer, median of
``--cold-starts`` spawns, floor and defaults taking turns; and, for a figure the machine's load cannot move, the
instructions the service runs from ``exec`` to its first prediction (``--cold-instructions``, under callgrind
with instrumentation from the start).

    .venv/bin/python benchmarks/cost.py                       # ~2-4 minutes: 5 servers x 2,000 requests, cold starts
    .venv/bin/python benchmarks/cost.py --requests 500 --only defaults floor --cold-starts 0
    .venv/bin/python benchmarks/cost.py --connections 64 --budget 5 --only defaults no-shedding --cold-starts 0
    .venv/bin/python benchmarks/cost.py --connections 64 --budget 5 --min-quantum 0.1 --only defaults no-shedding --cold-starts 0

Writes benchmarks/results/cost-<UTC timestamp>.json and prints a table.  Needs ``valgrind`` (Debian package).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import loadgen
import run as bench  # benchmarks/run.py: this script's folder is on sys.path

from oncology_model import Classifier

ONCOLOGY = [sys.executable, "-c", "from oncology.entry import main; main()", "serve"]  # as the console script runs it
CONFIGS: dict[str, tuple[list[str], dict[str, str]]] = {
    "floor": ([sys.executable, str(bench.BENCH / "floor.py")], {}),
    "defaults": (ONCOLOGY, {}),
    "no-shedding": (ONCOLOGY, {"ONCOLOGY_OVERLOAD_MAX_LAG": "0"}),
    "no-access-log": (ONCOLOGY, {"ONCOLOGY_ACCESS_LOG": "false"}),
    "neither": (ONCOLOGY, {"ONCOLOGY_OVERLOAD_MAX_LAG": "0", "ONCOLOGY_ACCESS_LOG": "false"}),
}
BODY = json.dumps(bench.EXAMPLE).encode()
REQUEST = loadgen.raw("POST", "/predict", BODY)


class CostError(Exception):
    pass


def expected_probability(store: Path) -> float:
    from oncology_model import Tumor

    return Classifier.from_uri(str(store)).predict_proba(Tumor(**bench.EXAMPLE))


class Proc:
    """One server process, started in its own session, stopped by its PID."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        with log.open("ab") as out:
            self.proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=bench.ROOT,
                                         start_new_session=True)
        self.log = log

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            with suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])


def first_prediction(port: int, proc: Proc, probability: float | None, started: float, timeout: float) -> float:
    """Seconds from ``started`` to the first correct /predict answer (polled every ~5 ms on a new connection)."""
    request = bench.raw_request("POST", "/predict", BODY)
    while time.perf_counter() < started + timeout:
        if not proc.alive():
            raise CostError(f"the server exited before it answered:\n{proc.tail()}")
        status, body = bench.http_call(port, request, timeout=max(0.1, started + timeout - time.perf_counter()))
        if status == 200:
            check(body, probability)
            return time.perf_counter() - started
        time.sleep(bench.POLL_SECONDS)
    raise CostError(f"no prediction in {timeout:.0f}s:\n{proc.tail()}")


def check(body: bytes, probability: float | None) -> None:
    if probability is None:  # the floor: a constant body
        return
    got = json.loads(body)["probability"]
    if abs(got - probability) > 1e-12:
        raise CostError(f"a wrong answer: probability {got}, expected {probability}")


def send(port: int, connections: int, total: int, probability: float | None) -> None:
    run = loadgen.fixed(port, REQUEST, connections, total)
    statuses = run.statuses()
    if run.errors or statuses != {200: total}:
        raise CostError(f"expected {total} answers 200, got {statuses}, errors {run.errors[:3]}")
    for answer in run.answers[:: max(1, total // 20)]:
        check(answer.body, probability)


def callgrind(pid: int, *command: str) -> None:
    proc = subprocess.run(["callgrind_control", *command, str(pid)], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0 or "OK" not in proc.stdout:
        raise CostError(f"callgrind_control {' '.join(command)} failed: {proc.stdout}{proc.stderr}")


def dumped_instructions(out_dir: Path, before: set[Path]) -> int:
    """The instructions of the dump callgrind just wrote (a new ``cg.<pid>.<n>`` file)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for path in sorted(set(out_dir.glob("cg.*")) - before):
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith("summary:"):
                    return int(line.split()[1])
        time.sleep(0.1)
    raise CostError(f"no callgrind dump appeared in {out_dir}")


def measure(name: str, args: argparse.Namespace, probability: float | None, out_dir: Path) -> dict[str, Any]:
    argv, extra = CONFIGS[name]
    port = bench.free_port()
    probability = None if name == "floor" else probability
    instr_at_start = "yes" if args.cold_instructions and name in ("floor", "defaults") else "no"
    command = ["valgrind", "--tool=callgrind", f"--instr-atstart={instr_at_start}", "--dump-instr=no",
               f"--callgrind-out-file={out_dir}/cg.%p", *argv, "--host", bench.HOST, "--port", str(port)]
    env = {**bench.clean_env(), **extra}
    if args.budget is not None and "ONCOLOGY_OVERLOAD_MAX_LAG" not in extra and name != "floor":
        env["ONCOLOGY_OVERLOAD_MAX_LAG"] = str(args.budget)
    proc = Proc(command, env, out_dir / f"{name}.log")
    try:
        result: dict[str, Any] = {}
        seen = set(out_dir.glob("cg.*"))
        started = time.perf_counter()
        first_prediction(port, proc, probability, started, timeout=600)
        result["valgrind_start_s"] = round(time.perf_counter() - started, 1)
        if instr_at_start == "yes":
            callgrind(proc.proc.pid, "--dump")  # everything from exec to the first prediction (and the polls before)
            result["cold_start_instructions"] = dumped_instructions(out_dir, seen)
            seen = set(out_dir.glob("cg.*"))
        send(port, args.connections, args.warmup, probability)
        if instr_at_start == "no":
            callgrind(proc.proc.pid, "--instr=on")
        callgrind(proc.proc.pid, "--zero")
        send(port, args.connections, args.requests, probability)
        callgrind(proc.proc.pid, "--dump")
        total = dumped_instructions(out_dir, seen)
        result.update(instructions=total, per_request=round(total / args.requests))
        return result
    finally:
        proc.stop()


def cold_starts(runs: int, probability: float, out_dir: Path) -> dict[str, Any]:
    seen: dict[str, list[float]] = {"floor": [], "defaults": []}
    for i in range(runs):
        for name in seen:
            argv, extra = CONFIGS[name]
            port = bench.free_port()
            expected = None if name == "floor" else probability
            started = time.perf_counter()
            proc = Proc([*argv, "--host", bench.HOST, "--port", str(port)], {**bench.clean_env(), **extra},
                        out_dir / f"cold-{name}-{i}.log")
            try:
                seen[name].append(first_prediction(port, proc, expected, started, timeout=120))
            finally:
                proc.stop()
    return {name: {"median_s": round(statistics.median(v), 3), "samples_s": [round(x, 3) for x in v]}
            for name, v in seen.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests counted per server")
    parser.add_argument("--warmup", type=int, default=200, help="requests sent before counting")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--store", type=Path, help="serve this store's champion (default: train one)")
    parser.add_argument("--budget", type=float, help="ONCOLOGY_OVERLOAD_MAX_LAG of the shedding servers (with more than 8 "
                        "connections, e.g. 5: under Valgrind's ~50x slowdown the default 0.05 s would shed)")
    parser.add_argument("--min-quantum", type=float, default=0.05,
                        help="the shedder's least turn, in seconds of estimated work (oncology.webservice.overload."
                        "MIN_QUANTUM, 0.001 natively): scaled by Valgrind's ~50x slowdown, or a request (~1.7 ms under "
                        "Valgrind) is more than a quantum alone and every one is deferred to an iteration of its own, "
                        "where natively a quantum holds about 28 single rows; with --budget, scale it by the same "
                        "factor (e.g. 0.1 with --budget 5); 0.001: unscaled (default 0.05)")
    parser.add_argument("--only", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--cold-starts", type=int, default=5, help="wall-clock cold starts per server (0: none)")
    parser.add_argument("--cold-instructions", action=argparse.BooleanOptionalAction, default=True,
                        help="count floor's and defaults' instructions from exec to the first prediction")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind (with callgrind_control) is needed: apt-get install valgrind", file=sys.stderr)
        return 1
    store = args.store
    if store is None:
        store = bench.RESULTS / "cost-store"
        bench.make_store(store)
    ONCOLOGY.extend(["--store", str(store.resolve())])
    if args.min_quantum != 0.001:  # set in the server process before it starts serving
        ONCOLOGY[2] = f"import oncology.webservice.overload as o; o.MIN_QUANTUM = {args.min_quantum!r}; {ONCOLOGY[2]}"
    probability = expected_probability(store)
    report: dict[str, Any] = {"requests": args.requests, "warmup": args.warmup, "connections": args.connections,
                              "budget": args.budget, "min_quantum": args.min_quantum,
                              "load_average": os.getloadavg(), "servers": {}}
    out_dir = Path(tempfile.mkdtemp(prefix="oncology-cost-"))
    try:
        for name in args.only:
            bench.say(f"{name}: under callgrind, {args.warmup} + {args.requests} requests")
            report["servers"][name] = measure(name, args, probability, out_dir)
            bench.say(f"  {report['servers'][name]}")
        if args.cold_starts:
            bench.say(f"cold starts: {args.cold_starts} each")
            report["cold_start"] = cold_starts(args.cold_starts, probability, out_dir)
    except CostError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    print(render(report))
    bench.RESULTS.mkdir(parents=True, exist_ok=True)
    out = bench.RESULTS / f"cost-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps(report, indent=2))
    bench.say(f"wrote {out.relative_to(bench.ROOT)}")
    return 0


def render(report: dict[str, Any]) -> str:
    servers = report["servers"]
    floor = servers.get("floor", {}).get("per_request")
    lines = ["| server | instructions / request | x floor |", "| --- | --- | --- |"]
    for name, result in servers.items():
        ratio = f"{result['per_request'] / floor:.2f}" if floor else "-"
        lines.append(f"| {name} | {result['per_request']:,} | {ratio} |")
    if "floor" in servers and "defaults" in servers:
        lines.append(f"\nfloor / defaults (the share of the floor's throughput, if CPU bound): "
                     f"{servers['floor']['per_request'] / servers['defaults']['per_request']:.2f}")
    for name in ("floor", "defaults"):
        if "cold_start_instructions" in servers.get(name, {}):
            lines.append(f"cold start, {name}: {servers[name]['cold_start_instructions'] / 1e6:,.0f} M instructions "
                         "from exec to the first prediction")
    for name, cold in report.get("cold_start", {}).items():
        lines.append(f"cold start, {name}: median {cold['median_s']} s (wall clock, spawn to the first prediction; "
                     f"samples {cold['samples_s']})")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
