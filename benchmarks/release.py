"""The cost of a release on the service (issue 18): canary at 50% and shadow at 100% against the
champion alone, the prediction log on in all three.

Three ``oncology serve --workers 1`` processes, each on its own store holding the same trained model
as champion 1.0.1 and candidate 1.0.2: one with no release, one with a canary release at 50%, one
with a shadow release at 100%.  As in ``benchmarks/predlog.py`` (whose reasons apply), they run
*side by side*: at the same time, on the same server CPU, each in its own cgroup with equal
``cpu.shares``, each loaded by its own wrk from the client CPU; the ratio of their throughputs is
the ratio of their costs per request.  Points: c=64 (throughput; target: each release keeps at
least 0.90 of the champion's) and c=8 (p99; target: within 1.2x of the champion's).  Every answer
must be a 2xx; after the run the canary server must have answered from both versions and the
shadow server's candidate must have scored requests (or the figures are not of a release).

    .venv/bin/python benchmarks/release.py [--rounds 5 --duration 3]

``--in-process`` measures the model's side of a request instead, with no HTTP: ``Core.score`` of one row (as
``/predict`` calls it: routed, counted, logged, the prediction log on and written at the end), on an event loop
that turns after every ``--per-turn`` requests (a loaded server answers several requests a turn; the shadow's pass
runs once a turn).  Per request: CPU time (median of ``--rounds`` runs, the three servers' runs taking turns), or
with ``--instructions`` the instructions counted by Valgrind's callgrind (the difference of two runs of different
lengths: start-up cancels out; a loaded machine cannot move it).

    .venv/bin/python benchmarks/release.py --in-process [--per-turn 1] [--requests 20000]
    .venv/bin/python benchmarks/release.py --in-process --instructions [--per-turn 8] [--requests 2000]

``--asgi`` (with ``--in-process``) drives the whole application instead: one-row ``POST /predict`` requests through
`overload.Shedder` and the app (``create_app``: routing, headers, metrics, access log and prediction log, as
served), with no socket and no HTTP parsing; what the HTTP server does with the answer's two extra headers is left
out.

    .venv/bin/python benchmarks/release.py --in-process --asgi --instructions [--per-turn 8] [--requests 2000]

``--parts`` (with ``--in-process``) times the shadow's parts instead, in a run of the champion's server and one of
the shadow's: each call of the pass and of its steps on the event loop (wall time, the event loop's thread: nothing
else runs on it), and the prediction log's thread's encoding and writing (that thread's CPU time), per request
measured; the timing adds ~0.1 us a call.  Time, not instructions: the interpreter runs some instructions far slower than others (C maps of
`attrgetter`s counted fewer bytecodes and took longer than the comprehensions they replaced).

    .venv/bin/python benchmarks/release.py --in-process --asgi --parts [--per-turn 8] [--requests 8000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import predlog  # benchmarks/predlog.py: its cgroup helpers
import run as bench  # benchmarks/run.py: this script's folder is on sys.path

NAMES = ("champion", "canary", "shadow")


def make_stores(base: Path) -> dict[str, Path]:
    """Three stores, each with the trained champion 1.0.1 and the same model again as 1.0.2; a release in two."""
    from oncology.release import plan
    from oncology.settings import GateSettings
    from oncology_model.bundle import KPIS, METADATA, MODEL, Bundle
    from oncology_model.registry import ModelRegistry
    from oncology_model.storage import LocalStore

    trained = base / "trained"
    bench.make_store(trained)
    bundle = ModelRegistry(LocalStore(trained)).load("champion")
    model, kpis = json.loads(bundle.files[MODEL]), json.loads(bundle.files[KPIS])
    metadata = json.loads(bundle.files[METADATA])
    stores = {}
    for name in NAMES:
        store = base / f"store-{name}"
        shutil.rmtree(store, ignore_errors=True)
        registry = ModelRegistry(LocalStore(store))
        for version in ("1.0.1", "1.0.2"):
            registry.publish(Bundle.assemble(version, model, {**metadata, "version": version}, kpis))
        registry.promote("1.0.1")
        if name != "champion":
            plan.start(registry, "1.0.2", "canary" if name == "canary" else "shadow", (0.5,) if name == "canary" else (1.0,),
                       GateSettings(store=str(store)))
        stores[name] = store
    return stores


def side_by_side(wrk_bin: str, servers: dict[str, bench.Server], script: Path, connections: int, seconds: int,
                 client_cpu: int | None) -> dict[str, dict[str, Any]]:
    before = {name: server.cpu_seconds() for name, server in servers.items()}
    with ThreadPoolExecutor(len(servers)) as pool:
        futures = {name: pool.submit(bench.wrk, wrk_bin, f"http://{bench.HOST}:{server.port}/predict", script,
                                     connections, seconds, client_cpu) for name, server in servers.items()}
        results = {name: future.result() for name, future in futures.items()}
    for name, result in results.items():
        bench.check_clean(result, f"{name}, c={connections}, side by side", servers[name])
        bench.add_server_cpu(result, servers[name].cpu_seconds() - before[name])
    return results


def measure(rounds: int, duration: int, warmup: int) -> dict[str, Any]:
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, client_cpu = bench.split_cpus()
    wrk_bin = bench.ensure_wrk()
    bench.RESULTS.mkdir(parents=True, exist_ok=True)
    bench.LOGS.mkdir(parents=True, exist_ok=True)
    base = bench.RESULTS / "release"
    base.mkdir(parents=True, exist_ok=True)
    stores = make_stores(base)
    script = bench.wrk_script("single", json.dumps(bench.EXAMPLE).encode())
    cgroups = {name: predlog.make_cgroup(f"oncology-release-{name}-{os.getpid()}") for name in NAMES}
    if None in cgroups.values():
        for folder in cgroups.values():
            predlog.remove_cgroup(folder)
        raise bench.BenchError(f"cannot make cgroups under {predlog.CGROUP_CPU} (not root?): side by side needs them")
    servers: dict[str, bench.Server] = {}
    for name in NAMES:
        port = bench.free_port()
        log_store = base / f"predlog-{name}"
        shutil.rmtree(log_store, ignore_errors=True)
        env = {"ONCOLOGY_OVERLOAD_MAX_LAG": "0", "ONCOLOGY_PREDICTION_LOG": "true",
               "ONCOLOGY_PREDICTION_LOG_STORE": str(log_store)}
        servers[name] = bench.Server(
            f"release-{name}",
            [*predlog.in_cgroup(cgroups[name]), *bench.pin(server_cpu), str(bench.PROJECT_BIN / "oncology"), "serve",
             "--store", str(stores[name]), "--host", bench.HOST, "--port", str(port), "--workers", "1"],
            port, bench.raw_request("GET", "/readyz"), {**bench.clean_env(), **env}, bench.LOGS / f"release-{name}.log",
        )
    points: dict[int, dict[str, list[dict[str, Any]]]] = {c: {n: [] for n in NAMES} for c in (64, 8)}
    try:
        if client_cpu is not None:
            os.sched_setaffinity(0, {client_cpu})
        for server in servers.values():
            server.start()
            bench.wait_ready(server, time.perf_counter())
        if warmup:
            side_by_side(wrk_bin, servers, script, 64, warmup, client_cpu)
        for r in range(rounds):
            for connections in (64, 8):
                result = side_by_side(wrk_bin, servers, script, connections, duration, client_cpu)
                for name in NAMES:
                    points[connections][name].append(result[name])
                bench.say(f"round {r + 1}/{rounds}, c={connections}: " + ", ".join(
                    f"{n} {result[n]['rps']:,.0f} req/s p99 {result[n]['p99_ms']:.1f} ms" for n in NAMES))
        arms = {name: {line.split("{", 1)[1].split("}", 1)[0]: float(line.rsplit(" ", 1)[1])
                       for line in bench.http_call(servers[name].port, bench.raw_request("GET", "/metrics"))[1].decode()
                       .splitlines() if line.startswith("oncology_arm_requests_total{")} for name in NAMES}
    finally:
        bench.stop_all()
        for folder in cgroups.values():
            predlog.remove_cgroup(folder)
        if client_cpu is not None:
            os.sched_setaffinity(0, set(cpus))
    if not any('arm="candidate"' in k for k in arms["canary"]) or not any('arm="shadow"' in k for k in arms["shadow"]):
        raise bench.BenchError(f"the releases did not route as planned: {arms}")
    report: dict[str, Any] = {"arms": arms}
    for name in ("canary", "shadow"):
        rps = [b["rps"] / a["rps"] for a, b in zip(points[64]["champion"], points[64][name])]
        p99 = [b["p99_ms"] / a["p99_ms"] for a, b in zip(points[8]["champion"], points[8][name])]
        report[name] = {"rps_ratio_c64": bench.median(rps), "rps_ratios_c64": rps,
                        "p99_ratio_c8": bench.median(p99), "p99_ratios_c8": p99,
                        "meets": bench.median(rps) >= 0.90 and bench.median(p99) <= 1.2}
    report["summary"] = {c: {n: bench.summarize_load(v) for n, v in by_name.items()} for c, by_name in points.items()}
    return report


def in_process_cpu(name: str, store: Path, requests: int, per_turn: int, warmup: int) -> float:
    """CPU seconds (this process, every thread: the prediction log's writer too) per one-row request of ``Core.score``
    on the server ``name``'s store, the prediction log on; ``warmup`` requests first, not counted."""
    import asyncio

    from oncology.settings import ServeSettings
    from oncology.webservice import schemas
    from oncology.webservice.core import Core
    from oncology.webservice.metrics import Metrics
    from oncology.webservice.model import ModelHolder
    from oncology.webservice.predlog import from_settings
    from oncology_model.datamodel import FEATURES

    row = [bench.EXAMPLE[feature] for feature in FEATURES]
    with tempfile.TemporaryDirectory(prefix="oncology-release-log-") as log_store:
        settings = ServeSettings(store=str(store), prediction_log=True, prediction_log_store=log_store)
        metrics = Metrics()
        holder = ModelHolder(settings)
        holder.load()
        if (holder.release is None) != (name == "champion"):
            raise bench.BenchError(f"{name}: the store's release was not loaded")
        prediction_log = from_settings(settings, metrics)
        assert prediction_log is not None
        prediction_log.start()
        core = Core(settings, holder, metrics, prediction_log)

        async def serve(first: int, n: int) -> None:
            for start in range(first, first + n, per_turn):
                for i in range(start, min(start + per_turn, first + n)):
                    request_id = f"req-{i:09d}"
                    chosen = core.route(core.classifier(), request_id)
                    (result,) = core.results("/predict", request_id, chosen.classifier, [row], False, chosen.arm,
                                             chosen.shadow)
                    schemas.encode(result)
                await asyncio.sleep(0)  # the turn ends: the shadow's pass and the metrics' flush run
            await asyncio.sleep(0)

        asyncio.run(serve(0, warmup))
        before = time.process_time()
        asyncio.run(serve(warmup, requests))
        lines = (warmup + requests) * (2 if name == "shadow" else 1)  # the shadow's and the champion's
        if not prediction_log.close(60) or prediction_log.written != lines:
            raise bench.BenchError(f"{name}: the prediction log did not write every line: {prediction_log.dropped}")
        return (time.process_time() - before) / requests



def in_process_asgi_cpu(name: str, store: Path, requests: int, per_turn: int, warmup: int) -> float:
    """`in_process_cpu` through the whole application: one-row ``POST /predict`` requests handed to
    `overload.Shedder` around ``create_app`` (load shedding off, access log to /dev/null, prediction log on), its
    lifespan started and ended (the prediction log written at the end, checked)."""
    import asyncio

    from oncology.settings import ServeSettings
    from oncology.webservice import overload
    from oncology.webservice.accesslog import AccessLog
    from oncology.webservice.app import create_app

    body = json.dumps(bench.EXAMPLE).encode()
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
             "server": ("127.0.0.1", 8080), "client": ("127.0.0.1", 5555), "scheme": "http", "method": "POST",
             "root_path": "", "path": "/predict", "raw_path": b"/predict", "query_string": b"",
             "headers": [(b"host", b"127.0.0.1:8080"), (b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())]}
    with tempfile.TemporaryDirectory(prefix="oncology-release-log-") as log_store, open(os.devnull, "wb") as devnull:
        settings = ServeSettings(store=str(store), prediction_log=True, prediction_log_store=log_store,
                                 overload_max_lag=0, reload_interval=0)
        app = create_app(settings, access_log=AccessLog(devnull))
        shedder = overload.Shedder(app, settings, app.metrics)
        statuses: list[int] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        async def serve(n: int) -> None:
            for start in range(0, n, per_turn):
                for _ in range(min(per_turn, n - start)):
                    await shedder({**scope, "state": {}}, receive, send)  # type: ignore[arg-type]
                await asyncio.sleep(0)  # the turn ends: the shadow's pass and the metrics' flush run
            await asyncio.sleep(0)

        async def run() -> float:
            events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            answers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            await events.put({"type": "lifespan.startup"})
            lifespan = asyncio.create_task(shedder({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                                                   events.get, answers.put))  # type: ignore[arg-type]
            if (await answers.get())["type"] != "lifespan.startup.complete":
                raise bench.BenchError(f"{name}: the application did not start")
            if (app.holder.release is None) != (name == "champion"):
                raise bench.BenchError(f"{name}: the store's release was not loaded")
            await serve(warmup)
            before = time.process_time()
            await serve(requests)
            seconds = time.process_time() - before
            await events.put({"type": "lifespan.shutdown"})  # the shadow's last pass, the prediction log written
            await answers.get()
            await lifespan
            return seconds

        seconds = asyncio.run(run())
        if statuses.count(200) != warmup + requests:
            raise bench.BenchError(f"{name}: {len(statuses) - statuses.count(200)} answers were not 200")
        written = app.metrics.prediction_log_written._value.get()
        if written != (warmup + requests) * (2 if name == "shadow" else 1):
            raise bench.BenchError(f"{name}: the prediction log wrote {written:.0f} lines")
        return seconds / requests

def shadow_parts(name: str, store: Path, requests: int, per_turn: int, asgi: bool) -> dict[str, float]:
    """Microseconds a request of the shadow's parts (see ``--parts``), in one run of the server ``name``."""
    from oncology.webservice import core, metrics, predlog, routing

    spent: dict[str, float] = {}

    def timed(owner: Any, part: str, clock: Any) -> None:
        function = getattr(owner, part)

        def timing(*args: Any, **kwargs: Any) -> Any:
            start = clock()
            try:
                return function(*args, **kwargs)
            finally:
                spent[part] = spent.get(part, 0.0) + clock() - start
        setattr(owner, part, timing)

    parts = ((routing.ShadowScorer, "flush"), (core.Core, "_count_answers"), (core.Core, "_score_shadow_lines"),
             (core, "_verdicts"), (metrics.Metrics, "count_arm_alike"), (predlog.PredictionLog, "record_shadow_lines"))
    writer = ("_serialise", "_write_queued")  # the log's own thread: its CPU time
    plain = [(owner, part, getattr(owner, part)) for owner, part in parts]
    plain += [(predlog.PredictionLog, part, getattr(predlog.PredictionLog, part)) for part in writer]
    try:
        for owner, part in parts:
            timed(owner, part, time.perf_counter)
        for part in writer:
            timed(predlog.PredictionLog, part, time.thread_time)
        warmup = 2000
        cpu = (in_process_asgi_cpu if asgi else in_process_cpu)(name, store, requests, per_turn, warmup)
    finally:
        for owner, part, function in plain:
            setattr(owner, part, function)
    return {"cpu_us": cpu * 1e6, **{part: seconds / (warmup + requests) * 1e6 for part, seconds in spent.items()}}


def in_process(args: argparse.Namespace) -> dict[str, Any]:
    """The model's side of a request, per server: CPU microseconds (or instructions) per request."""
    base = bench.RESULTS / "release-in-process"
    base.mkdir(parents=True, exist_ok=True)
    stores = make_stores(base)
    report: dict[str, Any] = {"per_turn": args.per_turn, "requests": args.requests, "asgi": args.asgi}
    if args.parts:
        report["parts_us"] = {name: shadow_parts(name, stores[name], args.requests, args.per_turn, args.asgi)
                              for name in ("champion", "shadow")}
        return report
    if not args.instructions:
        runs: dict[str, list[float]] = {name: [] for name in NAMES}
        for _ in range(args.rounds):
            for name in NAMES:
                measure_one = in_process_asgi_cpu if args.asgi else in_process_cpu
                runs[name].append(measure_one(name, stores[name], args.requests, args.per_turn, 2000) * 1e6)
        report["cpu_us"] = {name: bench.median(v) for name, v in runs.items()}
        report["cpu_us_runs"] = runs
        return report
    if shutil.which("valgrind") is None:
        raise bench.BenchError("--instructions needs valgrind (Debian package)")
    counted: dict[str, float] = {}
    for name in NAMES:
        totals = []
        for n in (args.requests // 4, args.requests):
            with tempfile.TemporaryDirectory(prefix="oncology-release-cg-") as folder:
                out = Path(folder) / "callgrind.out"
                bench.run(["valgrind", "--tool=callgrind", "--dump-instr=no", f"--callgrind-out-file={out}",
                           sys.executable, __file__, "--in-process-child", name, str(stores[name]), str(n),
                           str(args.per_turn), "asgi" if args.asgi else "core"], f"callgrind, {name}, {n} requests",
                          env=bench.clean_env())
                totals.append(next(int(line.split()[1]) for line in out.read_text().splitlines()
                                   if line.startswith("summary:")))
        counted[name] = (totals[1] - totals[0]) / (args.requests - args.requests // 4)
        bench.say(f"{name}: {counted[name]:,.0f} instructions a request")
    report["instructions"] = counted
    return report


def main() -> int:
    if len(sys.argv) == 7 and sys.argv[1] == "--in-process-child":  # one measured run, under callgrind
        _, _, name, store, n, per_turn, what = sys.argv
        (in_process_asgi_cpu if what == "asgi" else in_process_cpu)(name, Path(store), int(n), int(per_turn), 500)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--in-process", action="store_true", help="the model's side of a request, no HTTP (above)")
    parser.add_argument("--per-turn", type=int, default=1, help="--in-process: requests per turn of the event loop")
    parser.add_argument("--requests", type=int, default=20000, help="--in-process: requests measured per run")
    parser.add_argument("--instructions", action="store_true", help="--in-process: count instructions (callgrind)")
    parser.add_argument("--asgi", action="store_true",
                        help="--in-process: through the whole application (ASGI), not Core.score alone")
    parser.add_argument("--parts", action="store_true", help="--in-process: time the shadow's parts (above)")
    args = bench.parse_args(parser)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.in_process:
        report = in_process(args)
        for name, parts in report.get("parts_us", {}).items():
            print(f"{name}, per one-row request, {args.per_turn} a turn, in us: " + ", ".join(
                f"{part} {value:.3f}" for part, value in parts.items()))
        for what, unit in (("cpu_us", "us of CPU"), ("instructions", "instructions")):
            if what in report:
                figures = report[what]
                print(f"per one-row request, {args.per_turn} a turn: " + ", ".join(
                    f"{name} {figures[name]:,.1f} {unit}" for name in NAMES)
                      + f"; shadow {figures['shadow'] / figures['champion']:.2f}x, canary "
                        f"{figures['canary'] / figures['champion']:.2f}x the champion alone")
        out = bench.RESULTS / f"release-in-process-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
        report["cpu_idle"] = args.cpu_idle
        out.write_text(json.dumps(report, indent=2, default=str))
        print(f"written to {out.relative_to(bench.ROOT)}")
        return 0
    report = measure(args.rounds, args.duration, args.warmup)
    for name in ("canary", "shadow"):
        r = report[name]
        print(f"{name}: throughput at c=64 {r['rps_ratio_c64']:.3f} of the champion alone (target >= 0.90), "
              f"p99 at c=8 {r['p99_ratio_c8']:.2f}x (target <= 1.2x): {'met' if r['meets'] else 'NOT met'}")
    report["cpu_idle"] = args.cpu_idle
    out = bench.RESULTS / f"release-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.write_text(json.dumps(report, indent=2, default=str))
    print(f"written to {out.relative_to(bench.ROOT)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except bench.BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
