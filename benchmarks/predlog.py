"""The cost of the prediction log (issue 8): in process always, and over HTTP once the log is wired in.

In process (no HTTP), on one CPU (the benchmark's server CPU when there are two or more):

- ``record()``: CPU µs per call for one single-row prediction (what the request path pays);
- the writer: CPU µs per single-row prediction to serialise, gzip and write it (``Store.create`` on a
  local folder, fsync included) in batches of ``batch_rows``: what the writer thread takes from the
  same CPU when the server is pinned to one, as ``make bench`` does;
- their sum against the service's own CPU cost of a /predict request (``--request-us``, by default
  read from the newest ``benchmarks/results/bench-*.json``, ours at c=64): the expected drop of
  single-row throughput on a saturated worker.

``--http``: ``oncology serve --workers 1`` twice, prediction log off and on (to a local folder), each
loaded with wrk at c=64 on /predict; reports req/s and server CPU µs/request of each and the ratio
(target: on >= 0.90 of off); then p50 and p99 at c=8 of each alone, in turns (`alone`).  It checks that the log is really on
(``oncology_prediction_log_written_total`` grows) and, after SIGTERM, that the store holds one record
per prediction the server counted.  It reuses ``benchmarks/run.py``'s helpers (wrk, pinning, servers).

How the two are compared matters more than how long: on this machine the same server's throughput
swings by 2x from one second to the next (the host's CPU speed, not steal time), so servers taking
turns measure the machine as much as the log (ratios of 0.67 to 1.09 for one build).  By default
(``side by side``) both servers run *at the same time* on the same server CPU, each in its own
cgroup with equal ``cpu.shares`` (so the log's writer thread gets no extra share of the CPU as a
thread of its own would), each loaded by its own wrk at c=64 from the client CPU.  Each then gets
half of the same CPU at the same moments, and their throughput ratio is the ratio of their costs
per request: exactly the drop a saturated worker sees.  ``--alternate`` takes turns instead (the
old way; also where cgroups cannot be made, e.g. not root).

    .venv/bin/python benchmarks/predlog.py [--calls 200000] [--http [--rounds 10 --duration 3] [--alternate]]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import run as bench  # benchmarks/run.py: this script's folder is on sys.path

from oncology.webservice.predlog import PredictionLog
from oncology_model.storage import open_store

ROW = tuple(bench.EXAMPLE.values())
T = TypeVar("T")


def _best_cpu_us(fn: Any, per: int, repeats: int) -> float:
    """The best of ``repeats`` runs of ``fn``, in this thread's CPU µs per unit (``per`` units a run)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.thread_time()
        fn()
        best = min(best, time.thread_time() - start)
    return best / per * 1e6


def inprocess(calls: int, batch_rows: int, repeats: int) -> dict[str, float]:
    folder = Path(tempfile.mkdtemp(prefix="predlog-bench-"))
    try:
        store = open_store(folder)
        rows, probabilities, labels = [ROW], [0.0344], ["benign"]
        ids = [os.urandom(8).hex() for _ in range(calls)]  # random, as the service makes them: gzip's real ratio

        def noop(*_: object) -> None:
            pass

        def fresh() -> PredictionLog:  # never started: the writer's work is timed apart, in this thread
            return PredictionLog(store, "bench", max_buffered=calls + 1, batch_rows=batch_rows, flush_seconds=3600)

        def recording(log: PredictionLog) -> None:
            record = log.record
            for request_id in ids:  # new lists every call, as the service passes them: what record() keeps alive counts
                record("/predict", request_id, "1.0.1", [ROW], [0.0344], ["benign"], ["benign"])

        def lists_only() -> None:  # the same loop without record(): subtracted
            for request_id in ids:
                noop("/predict", request_id, "1.0.1", [ROW], [0.0344], ["benign"], ["benign"])

        logs: list[PredictionLog] = []

        def record_run() -> None:
            logs.append(fresh())
            recording(logs[-1])

        record_us = _best_cpu_us(record_run, calls, repeats)
        empty = _best_cpu_us(lists_only, calls, repeats)  # the loop and its lists alone

        full = fresh()
        drop_log = PredictionLog(store, "bench", max_buffered=1, batch_rows=batch_rows, flush_seconds=3600)
        drop_log.record("/predict", "x", "1.0.1", rows, probabilities, labels)
        dropping_us = _best_cpu_us(lambda: recording(drop_log), calls, repeats)  # the buffer full: dropped

        written = 0

        def write_run() -> None:
            nonlocal written
            recording(full)
            start = full.written
            full._write_queued(everything=True)  # the writer thread's work, here, to time it alone
            written = full.written - start

        total = _best_cpu_us(write_run, calls, repeats)
        objects = store.list("monitoring/")
        size = sum(len(store.read(k)) for k in objects[:5]) / max(1, min(5, len(objects)))
        lines = gzip.decompress(store.read(objects[0])).count(b"\n")
        return {
            "record_us": record_us - empty,
            "record_dropping_us": dropping_us - empty,
            "writer_us": total - record_us,  # serialise + gzip + Store.create, per prediction
            "rows_per_object": lines,
            "object_kb": size / 1e3,
            "written_per_run": written,
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def newest_request_us() -> float | None:
    """ours /predict at c=64, server CPU µs per request, from the newest make bench result."""
    results = sorted(bench.RESULTS.glob("bench-*.json"))
    for path in reversed(results):
        try:
            return float(json.loads(path.read_text())["single"]["ours"]["64"]["server_cpu_us_per_req"])
        except (KeyError, ValueError, OSError):
            continue
    return None


def _metric(port: int, name: str) -> float:
    status, body = bench.http_call(port, bench.raw_request("GET", "/metrics"))
    if status != 200:
        raise bench.BenchError(f"/metrics answered {status}")
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


CGROUP_CPU = Path("/sys/fs/cgroup/cpu")  # cgroup v1's cpu controller, as on this machine


def make_cgroup(name: str) -> Path | None:
    """A cpu cgroup with the default share (1024), or None when cgroups cannot be made here."""
    folder = CGROUP_CPU / name
    try:
        folder.mkdir(exist_ok=True)
        (folder / "cpu.shares").write_text("1024")
    except OSError:
        return None
    return folder


def in_cgroup(folder: Path | None) -> list[str]:
    """A command prefix that moves the process (and so its later threads and children) into ``folder``."""
    if folder is None:
        return []
    return ["sh", "-c", f'echo $$ > {folder}/cgroup.procs && exec "$@"', "in-cgroup"]


def remove_cgroup(folder: Path | None) -> None:
    if folder is not None:
        for _ in range(50):  # empty once the server's processes are reaped
            try:
                folder.rmdir()
                return
            except OSError:
                time.sleep(0.1)


def side_by_side_point(wrk_bin: str, servers: dict[str, bench.Server], script: Path, seconds: int,
                       client_cpu: int | None) -> dict[str, dict[str, Any]]:
    """Both servers loaded at once (c=64 each), each with its CPU time over the same interval."""
    before = {name: server.cpu_seconds() for name, server in servers.items()}
    with ThreadPoolExecutor(len(servers)) as pool:
        futures = {name: pool.submit(bench.wrk, wrk_bin, f"http://{bench.HOST}:{server.port}/predict", script, 64,
                                     seconds, client_cpu) for name, server in servers.items()}
        results = {name: future.result() for name, future in futures.items()}
    for name, result in results.items():
        used = servers[name].cpu_seconds() - before[name]
        bench.check_clean(result, f"prediction log {name}, c=64, side by side", servers[name])
        bench.add_server_cpu(result, used)
    return results


#: Rounds of the c=8 latency point (`alone`), after the side-by-side rounds.
P99_ROUNDS = 3


def pair(tag: str, settings: dict[str, dict[str, str]], rounds: int, duration: int, warmup: int,
         alternate: bool = False, before_stop: Callable[[dict[str, bench.Server]], T] | None = None,
         ) -> tuple[dict[str, list[dict[str, Any]]], bool, T | None]:
    """Two ``oncology serve --workers 1`` (``settings``: name -> its settings), loaded by wrk at c=64 on /predict,
    side by side in cgroups (see above) or, with ``alternate`` or where cgroups cannot be made, taking turns.
    Returns each one's rounds, whether they took turns, and what ``before_stop`` found while they still ran."""
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, client_cpu = bench.split_cpus()
    wrk_bin = bench.ensure_wrk()
    bench.RESULTS.mkdir(parents=True, exist_ok=True)
    bench.LOGS.mkdir(parents=True, exist_ok=True)
    store = bench.RESULTS / "store"
    bench.make_store(store)
    script = bench.wrk_script("single", json.dumps(bench.EXAMPLE).encode())
    first, second = settings
    servers: dict[str, bench.Server] = {}
    cgroups: dict[str, Path | None] = {}
    if not alternate:
        cgroups = {name: make_cgroup(f"oncology-{tag}-{name}-{os.getpid()}") for name in settings}
        if None in cgroups.values():
            bench.say(f"cannot make cgroups under {CGROUP_CPU} (not root?): taking turns instead (--alternate)")
            for folder in cgroups.values():
                remove_cgroup(folder)
            cgroups, alternate = {}, True
    for name, extra in settings.items():
        port = bench.free_port()
        servers[name] = bench.Server(
            f"{tag}-{name}",
            [*in_cgroup(cgroups.get(name)), *bench.pin(server_cpu), str(bench.PROJECT_BIN / "oncology"), "serve", "--store", str(store),
             "--host", bench.HOST, "--port", str(port), "--workers", "1"],
            port, bench.raw_request("GET", "/readyz"), {**bench.clean_env(), **extra}, bench.LOGS / f"{tag}-{name}.log",
        )
    points: dict[str, list[dict[str, Any]]] = {name: [] for name in settings}
    found = None
    try:
        if client_cpu is not None:
            os.sched_setaffinity(0, {client_cpu})
        for server in servers.values():
            server.start()
            bench.wait_ready(server, time.perf_counter())
        if not alternate and warmup:
            side_by_side_point(wrk_bin, servers, script, warmup, client_cpu)
        for r in range(rounds):
            if alternate:
                order = [first, second] if r % 2 == 0 else [second, first]
                bench.say(f"round {r + 1}/{rounds}: {', '.join(order)}")
                for name in order:
                    points[name].append(bench.measure_point(wrk_bin, servers[name], "/predict", script, 64, duration,
                                                            warmup, client_cpu, f"{tag} {name}, c=64"))
            else:
                result = side_by_side_point(wrk_bin, servers, script, duration, client_cpu)
                bench.say(f"round {r + 1}/{rounds}, side by side: {first} {result[first]['rps']:,.0f} req/s, "
                          f"{second} {result[second]['rps']:,.0f} req/s, {second}/{first} "
                          f"{result[second]['rps'] / result[first]['rps']:.3f}")
                for name in settings:
                    points[name].append(result[name])
        if before_stop is not None:
            found = before_stop(servers)
    finally:
        bench.stop_all()
        for folder in cgroups.values():
            remove_cgroup(folder)
        if client_cpu is not None:
            os.sched_setaffinity(0, set(cpus))
    return points, alternate, found


def alone(wrk_bin: str, servers: dict[str, bench.Server], script: Path, connections: int, seconds: int,
          client_cpu: int | None, round_: int) -> dict[str, dict[str, Any]]:
    """Each server loaded alone in turn (the others idle; the order rotated by ``round_``): the latency a request
    sees.  Side by side, every server always runnable on one CPU, a request's p99 is the wait while the others hold
    the CPU (a time slice: p50 0.2 ms, p99 11-15 ms in `release.py`), which compares the scheduler's slices."""
    names = list(servers)
    results = {}
    for name in names[round_ % len(names):] + names[:round_ % len(names)]:
        server = servers[name]
        before = server.cpu_seconds()
        result = bench.wrk(wrk_bin, f"http://{bench.HOST}:{server.port}/predict", script, connections, seconds, client_cpu)
        bench.check_clean(result, f"{name}, c={connections}, alone", server)
        bench.add_server_cpu(result, server.cpu_seconds() - before)
        results[name] = result
    return results


def ratios(points: dict[str, list[dict[str, Any]]], off: str = "off", on: str = "on") -> dict[str, Any]:
    """``on`` against ``off``: the per-round throughput ratios, their median and quartiles, the CPU a request's."""
    rps = [b["rps"] / a["rps"] for a, b in zip(points[off], points[on])]
    return {
        "single_c64": {name: bench.summarize_load(v) for name, v in points.items()},
        "rps_ratios": rps,  # one per round
        "rps_ratio_quartiles": statistics.quantiles(rps, n=4) if len(rps) > 1 else rps,
        "rps_ratio_on_vs_off": bench.median(rps),
        "cpu_us_ratio_on_vs_off": bench.median(
            [b["server_cpu_us_per_req"] / a["server_cpu_us_per_req"] for a, b in zip(points[off], points[on])]),
    }


def http(rounds: int, duration: int, warmup: int, alternate: bool = False) -> dict[str, Any]:
    log_store = bench.RESULTS / "predlog-store"
    shutil.rmtree(log_store, ignore_errors=True)

    def written(servers: dict[str, bench.Server]) -> dict[str, Any]:
        _, client_cpu = bench.split_cpus()
        wrk_bin, script = bench.ensure_wrk(), bench.wrk_script("single", json.dumps(bench.EXAMPLE).encode())
        latency: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
        for r in range(P99_ROUNDS):  # p99 at c=8, each server alone in turn (`alone`)
            for name, result in alone(wrk_bin, servers, script, 8, duration, client_cpu, r).items():
                latency[name].append(result)
            bench.say(f"round {r + 1}/{P99_ROUNDS}, c=8 alone: " + ", ".join(
                f"{n} p50 {v[-1]['p50_ms']:.3f} p99 {v[-1]['p99_ms']:.3f} ms" for n, v in latency.items()))
        on = servers["on"]
        found = {"written": _metric(on.port, "oncology_prediction_log_written_total"),
                 "dropped": _metric(on.port, "oncology_prediction_log_dropped_total"),
                 "predictions": _metric(on.port, "oncology_predictions_total")}
        if found["written"] + found["dropped"] == 0:
            raise bench.BenchError("the 'on' server wrote no prediction log: is the log wired into the app yet?")
        on.stop()  # SIGTERM: the rest of the buffer is flushed
        return {**found, "latency": latency}

    # shedding off in both: each server has half a CPU (side by side), whose scheduling gaps a worker can take
    # for overload; what is measured is the cost of the log at saturation, every request answered
    points, alternate, found = pair("predlog", {"off": {"ONCOLOGY_OVERLOAD_MAX_LAG": "0"},
                                                "on": {"ONCOLOGY_OVERLOAD_MAX_LAG": "0", "ONCOLOGY_PREDICTION_LOG": "true",
                                                       "ONCOLOGY_PREDICTION_LOG_STORE": str(log_store)}},
                                    rounds, duration, warmup, alternate, written)
    assert found is not None
    records = sum(gzip.decompress(p.read_bytes()).count(b"\n") for p in log_store.rglob("*.jsonl.gz"))
    latency = found["latency"]
    p99 = [b["p99_ms"] / a["p99_ms"] for a, b in zip(latency["off"], latency["on"])]
    return {"mode": "alternate" if alternate else "side by side", **ratios(points),
            "c8_alone": {name: bench.summarize_load(v) for name, v in latency.items()},
            "p99_ratios_c8_alone": p99, "p99_ratio_c8_alone_on_vs_off": bench.median(p99),
            "predictions": found["predictions"], "records_in_store": records, "dropped": found["dropped"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200_000, help="record() calls per timed run")
    parser.add_argument("--batch-rows", type=int, default=5_000, help="predictions per object (the default setting)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--request-us", type=float, help="the service's CPU µs per /predict (default: newest make bench)")
    parser.add_argument("--http", action="store_true", help="also wrk at c=64, log off vs on (needs the log wired in)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--duration", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--alternate", action="store_true", help="take turns instead of side by side (see above)")
    args = bench.parse_args(parser)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        os.sched_setaffinity(0, {cpus[0]})  # as the server is pinned in make bench
    try:
        cost = inprocess(args.calls, args.batch_rows, args.repeats)
    finally:
        os.sched_setaffinity(0, set(cpus))
    request_us = args.request_us or newest_request_us()
    print(f"record(), one single-row prediction:   {cost['record_us']:.2f} CPU µs per call (request path)")
    print(f"record(), buffer full (dropped):       {cost['record_dropping_us']:.2f} CPU µs per call")
    print(f"writer: serialise + gzip + create:     {cost['writer_us']:.2f} CPU µs per prediction "
          f"({cost['rows_per_object']} per object, {cost['object_kb']:.0f} kB gzip)")
    extra = cost["record_us"] + cost["writer_us"]
    report: dict[str, Any] = {"inprocess": cost, "extra_cpu_us_per_prediction": extra}
    if request_us:
        drop = extra / (request_us + extra)
        report["request_cpu_us"] = request_us
        report["expected_single_row_drop"] = drop
        print(f"total {extra:.2f} µs against {request_us:.1f} µs per /predict request: expected throughput drop on a "
              f"saturated worker {drop:.1%} (target <= 10%)")
    else:
        print(f"total {extra:.2f} µs per prediction (give --request-us, or run make bench once, for the expected drop)")
    if args.http:
        result = http(args.rounds, args.duration, args.warmup, args.alternate)
        report["http"] = result
        off, on = result["single_c64"]["off"], result["single_c64"]["on"]
        print(f"HTTP /predict c=64: off {off['rps']:,.0f} req/s ({off['server_cpu_us_per_req']:.1f} µs), "
              f"on {on['rps']:,.0f} req/s ({on['server_cpu_us_per_req']:.1f} µs), {result['mode']}: on/off "
              f"{result['rps_ratio_on_vs_off']:.3f} (median of {len(result['rps_ratios'])} rounds, quartiles "
              f"{' - '.join(f'{q:.3f}' for q in result['rps_ratio_quartiles'][::2])}; target >= 0.90); {result['records_in_store']:.0f} records in the store for "
              f"{result['predictions']:.0f} predictions, {result['dropped']:.0f} dropped")
        off, on = result["c8_alone"]["off"], result["c8_alone"]["on"]
        print(f"HTTP /predict c=8, each alone in turn: p50 / p99 off {off['p50_ms']:.3f} / {off['p99_ms']:.3f} ms, "
              f"on {on['p50_ms']:.3f} / {on['p99_ms']:.3f} ms: p99 on/off {result['p99_ratio_c8_alone_on_vs_off']:.2f}x "
              f"(median of {len(result['p99_ratios_c8_alone'])} rounds)")
    out = bench.RESULTS / f"predlog-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    report["cpu_idle"] = args.cpu_idle
    out.write_text(json.dumps(report, indent=2))
    print(f"written to {out.relative_to(bench.ROOT)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except bench.BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
