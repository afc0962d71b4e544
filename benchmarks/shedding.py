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
import signal
import sys
import time
from typing import Any

import run as bench  # benchmarks/run.py: this script's folder is on sys.path
from predlog import pair, ratios

SERVERS = {"off": {"ONCOLOGY_OVERLOAD_MAX_LAG": "0"}, "on": {}}  # "on": the defaults


def measure(rounds: int, duration: int, warmup: int) -> dict[str, Any]:
    points, alternate, _ = pair("shedding", SERVERS, rounds, duration, warmup)
    if alternate:
        raise bench.BenchError("cannot make cpu cgroups (not root, or no cgroup v1 cpu controller): side by side "
                               "is the only fair comparison on this machine")
    return ratios(points)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="measured side-by-side rounds")
    parser.add_argument("--duration", type=int, default=3, help="seconds a round")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of warm-up, side by side, not counted")
    args = bench.parse_args(parser)
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
    result["cpu_idle"] = args.cpu_idle
    out.write_text(json.dumps(result, indent=2))
    print(f"written to {out.relative_to(bench.ROOT)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except bench.BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
