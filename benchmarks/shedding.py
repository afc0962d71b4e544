"""What load shedding costs while nothing is overloaded, in wall-clock throughput (issue 20: on/off within 5%).

Two ``oncology serve --workers 1`` at once: one with its defaults (shedding on, budget 0.05 s), one with
``ONCOLOGY_OVERLOAD_MAX_LAG=0`` (never sheds, takes no turns), everything else default (metrics and the access
log on). As ``benchmarks/predlog.py --http`` does, and for the same reason (this machine's speed swings from one
second to the next, so servers taking turns measure the machine as much as the feature), both run side by side
on the same server CPU, each in its own cgroup with equal ``cpu.shares``, each loaded by its own wrk at c=64 on
``/predict`` from the client CPU; their throughput ratio is the ratio of their costs per request. Every answer
must be a 200 with the model's answer: a shed request (503) makes the run invalid, not a figure.

    .venv/bin/python benchmarks/shedding.py [--rounds 10] [--duration 3]

Writes ``benchmarks/results/shedding-<UTC time>.json``. Needs root for the cgroups (cgroup v1's cpu controller).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import run as bench  # benchmarks/run.py: this script's folder is on sys.path
from predlog import in_cgroup, make_cgroup, remove_cgroup, side_by_side_point

SERVERS = {"off": {"ONCOLOGY_OVERLOAD_MAX_LAG": "0"}, "on": {}}  # "on": the defaults


def measure(rounds: int, duration: int, warmup: int) -> dict[str, Any]:
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, client_cpu = bench.split_cpus()
    wrk_bin = bench.ensure_wrk()
    bench.RESULTS.mkdir(parents=True, exist_ok=True)
    bench.LOGS.mkdir(parents=True, exist_ok=True)
    store = bench.RESULTS / "store"
    bench.make_store(store)
    script = bench.wrk_script("single", json.dumps(bench.EXAMPLE).encode())
    cgroups: dict[str, Path | None] = {name: make_cgroup(f"oncology-shedding-{name}-{os.getpid()}") for name in SERVERS}
    servers: dict[str, bench.Server] = {}
    points: dict[str, list[dict[str, Any]]] = {name: [] for name in SERVERS}
    try:
        if None in cgroups.values():
            raise bench.BenchError("cannot make cpu cgroups (not root, or no cgroup v1 cpu controller): side by side "
                                   "is the only fair comparison on this machine")
        for name, extra in SERVERS.items():
            port = bench.free_port()
            servers[name] = bench.Server(
                f"shedding-{name}",
                [*in_cgroup(cgroups[name]), *bench.pin(server_cpu), str(bench.PROJECT_BIN / "oncology"), "serve",
                 "--store", str(store), "--host", bench.HOST, "--port", str(port), "--workers", "1"],
                port, bench.raw_request("GET", "/readyz"), {**bench.clean_env(), **extra},
                bench.LOGS / f"shedding-{name}.log",
            )
        if client_cpu is not None:
            os.sched_setaffinity(0, {client_cpu})
        for server in servers.values():
            server.start()
            bench.wait_ready(server, time.perf_counter())
        if warmup:
            side_by_side_point(wrk_bin, servers, script, warmup, client_cpu)
        for r in range(rounds):
            result = side_by_side_point(wrk_bin, servers, script, duration, client_cpu)
            bench.say(f"round {r + 1}/{rounds}, side by side: off {result['off']['rps']:,.0f} req/s, "
                      f"on {result['on']['rps']:,.0f} req/s, on/off {result['on']['rps'] / result['off']['rps']:.3f}")
            for name in SERVERS:
                points[name].append(result[name])
    finally:
        bench.stop_all()
        for folder in cgroups.values():
            remove_cgroup(folder)
        if client_cpu is not None:
            os.sched_setaffinity(0, set(cpus))
    ratios = [on["rps"] / off["rps"] for off, on in zip(points["off"], points["on"])]
    cpu_ratios = [on["server_cpu_us_per_req"] / off["server_cpu_us_per_req"] for off, on in zip(points["off"], points["on"])]
    return {
        "single_c64": {name: bench.summarize_load(v) for name, v in points.items()},
        "rps_ratios": ratios,
        "rps_ratio_on_vs_off": bench.median(ratios),
        "rps_ratio_quartiles": statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios,
        "cpu_us_ratio_on_vs_off": bench.median(cpu_ratios),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="measured side-by-side rounds")
    parser.add_argument("--duration", type=int, default=3, help="seconds a round")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of warm-up, side by side, not counted")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = measure(args.rounds, args.duration, args.warmup)
    off, on = result["single_c64"]["off"], result["single_c64"]["on"]
    cost = 1 - result["rps_ratio_on_vs_off"]
    print(f"/predict c=64, side by side: shedding off {off['rps']:,.0f} req/s ({off['server_cpu_us_per_req']:.1f} µs), "
          f"on (the defaults) {on['rps']:,.0f} req/s ({on['server_cpu_us_per_req']:.1f} µs): on/off "
          f"{result['rps_ratio_on_vs_off']:.3f} (median of {len(result['rps_ratios'])} rounds, quartiles "
          f"{' - '.join(f'{q:.3f}' for q in result['rps_ratio_quartiles'][::2])}), CPU per request on/off "
          f"{result['cpu_us_ratio_on_vs_off']:.3f}: shedding costs {cost:.1%} (target <= 5%: "
          f"{'met' if cost <= 0.05 else 'NOT met'})")
    out = bench.RESULTS / f"shedding-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"written to {out.relative_to(bench.ROOT)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except bench.BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
