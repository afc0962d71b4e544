"""Soak: steady load for a long run while the champion changes every few seconds (hot reload).

``oncology serve`` (one worker, the default settings, reload checks every second) on a store with two
trained versions; a client (benchmarks/loadgen.py) sends ``--rate`` requests per second (open loop), or
keeps ``--connections`` requests in flight (closed loop: the worker saturated), to /predict, cycling
through a few tumors, for ``--duration`` seconds; every ``--promote-every`` seconds
the other version is promoted (``ModelRegistry.promote``), so the service hot-reloads the champion
all run long.  Every answer is checked: status 200, a known ``model_version``, and exactly that
version's probability for that tumor (computed in process from the same bundles); the one other
answer accepted is the documented overload answer (503 with Retry-After), counted per minute and
reported (the worker sheds when the work queued ahead of a request exceeds its budget).

It reports, from /proc of the server process: RSS at the end of the first minute and at the end
(growth), its peak, open descriptors (min/max/end); and per minute the latency p50/p99 of the
answers, with the drift (last minute's p99 / first minute's).  It writes the whole report as JSON to
``benchmarks/results/soak-<UTC timestamp>.json`` and exits 1 if any answer was wrong, any request
failed or the server died; 0 otherwise.

    .venv/bin/python benchmarks/soak.py [--duration 600] [--rate 200 | --connections 64] [--promote-every 10]

The server runs on one CPU and this client on another where the machine has two.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import loadgen
import run as bench  # benchmarks/run.py: this script's folder is on sys.path

from oncology_model import FEATURES, Classifier
from oncology_model.registry import ModelRegistry
from oncology_model.storage import LocalStore

FAST = {"ONCOLOGY_CV_FOLDS": "3", "ONCOLOGY_CV_REPEATS": "1", "ONCOLOGY_INNER_FOLDS": "3", "ONCOLOGY_TARGET_CONFIDENCE": "0.5",
        "ONCOLOGY_FAMILIES": "logistic_regression,linear_discriminant_analysis"}
TUMORS = [bench.EXAMPLE, {**dict.fromkeys(bench.EXAMPLE, 10), "mitoses": 1}, dict.fromkeys(bench.EXAMPLE, 4)]
WINDOW = 10.0  # seconds of load per loadgen run; /proc is sampled between and during them


def train_two(store: Path) -> list[str]:
    """Two versions (seeds 42 and 7) in ``store``, the first the champion."""
    env = {**bench.clean_env(), **FAST}
    oncology = str(bench.PROJECT_BIN / "oncology")
    bench.run([oncology, "train", "--store", str(store), "--promote"], "oncology train (seed 42)", env=env)
    bench.run([oncology, "train", "--store", str(store)], "oncology train (seed 7)", env={**env, "ONCOLOGY_SEED": "7"})
    versions = sorted(p.name for p in (store / "models").iterdir())
    if len(versions) != 2:
        raise bench.BenchError(f"expected two versions in {store}, found {versions}")
    return versions


def proc_sample(pid: int) -> dict[str, float]:
    mem = bench.memory_kb(pid)
    return {"t": time.monotonic(), "rss_kb": mem["VmRSS"], "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def shed_by_reason(port: int) -> dict[str, float]:
    """The server's own count of shed requests, by reason (``oncology_http_shed_total``)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {m[1]: float(m[2]) for m in re.finditer(r'^oncology_http_shed_total\{reason="(\w+)"\} (\S+)$', text, re.M)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load (default 600)")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second (default 200)")
    parser.add_argument("--connections", type=int, help="closed loop with this many connections instead of --rate")
    parser.add_argument("--set", type=bench.server_setting, action="append", default=[], metavar="ONCOLOGY_NAME=VALUE",
                        help="a setting for the server (repeatable), e.g. ONCOLOGY_OVERLOAD_MAX_LAG=0.1")
    parser.add_argument("--promote-every", type=float, default=10.0, help="seconds between promotions (default 10)")
    args = bench.parse_args(parser)
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, client_cpu = bench.split_cpus()

    work = Path(tempfile.mkdtemp(prefix="oncology-soak-"))
    bench.RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    log = bench.RESULTS / "logs" / f"soak-{stamp}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        store = work / "store"
        bench.say(f"training two versions into {store}")
        versions = train_two(store)
        rows = [tuple(t[f] for f in FEATURES) for t in TUMORS]
        expected = {v: Classifier.from_uri(store, v).score_rows(rows) for v in versions}
        bodies = [json.dumps(t).encode() for t in TUMORS]
        requests = [loadgen.raw("POST", "/predict", b) for b in bodies]

        port = bench.free_port()
        env = {**bench.clean_env(), "ONCOLOGY_RELOAD_INTERVAL": "1", **dict(args.set)}
        server = bench.Server("soak", [*bench.pin(server_cpu), str(bench.PROJECT_BIN / "oncology"), "serve", "--store", str(store), "--port", str(port)],
                              port, bench.raw_request("GET", "/readyz"), env, log)
        server.start()
        bench.wait_ready(server, time.perf_counter())
        if client_cpu is not None:
            os.sched_setaffinity(0, {client_cpu})
        registry = ModelRegistry(LocalStore(store))
        samples: list[dict[str, float]] = [proc_sample(server.pid)]
        promotions: list[str] = []
        stop = threading.Event()
        side_errors: list[str] = []

        def side() -> None:  # promotions and /proc samples, beside the load
            try:
                next_promotion = time.monotonic() + args.promote_every
                while not stop.wait(1.0):
                    samples.append(proc_sample(server.pid))
                    if time.monotonic() >= next_promotion:
                        target = versions[(len(promotions) + 1) % 2]
                        registry.promote(target)
                        promotions.append(target)
                        next_promotion += args.promote_every
            except Exception as exc:  # noqa: BLE001 - reported, fails the run
                side_errors.append(repr(exc))

        thread = threading.Thread(target=side)
        thread.start()
        minutes: list[dict[str, Any]] = []
        wrong: list[str] = []
        errors: list[str] = []
        seen_versions: list[str] = []
        total = sent = shed_now = shed_total = 0
        start = time.monotonic()
        latencies: list[float] = []
        try:
            while time.monotonic() - start < args.duration and not side_errors:
                window = min(WINDOW, args.duration - (time.monotonic() - start))
                offset = sent

                def nth(i: int, offset: int = offset) -> bytes:
                    return requests[(offset + i) % len(requests)]

                if args.connections:
                    result = loadgen.closed(port, nth, args.connections, window)
                    sent += result.sent
                else:
                    result = loadgen.open_loop(port, nth, args.rate, window)
                    sent += int(args.rate * window)
                errors += result.errors
                for answer in result.answers:
                    total += 1
                    latencies.append(answer.latency)
                    if answer.status == 503 and answer.retry_after is not None and b"overloaded" in answer.body:
                        shed_now += 1  # the documented overload answer: counted and reported, not an error
                        continue
                    if answer.status != 200:
                        wrong.append(f"status {answer.status}: {answer.body[:200]!r}")
                        continue
                    got = json.loads(answer.body)
                    version = got.get("model_version")
                    if version not in expected:
                        wrong.append(f"unknown version {version}")
                        continue
                    want = expected[version][(offset + answer.index) % len(requests)]
                    if got["probability"] != want:
                        wrong.append(f"request {offset + answer.index}: probability {got['probability']}, {version} gives {want}")
                    if not seen_versions or seen_versions[-1] != version:
                        seen_versions.append(version)
                if server.exited():
                    raise bench.BenchError(f"the server died:\n{server.tail()}")
                elapsed = time.monotonic() - start
                if len(latencies) and (elapsed >= 60 * (len(minutes) + 1) or elapsed >= args.duration):
                    minutes.append({"minute": len(minutes) + 1, "requests": len(latencies), "shed": shed_now,
                                    "p50_ms": 1000 * loadgen.percentile(latencies, 0.5),
                                    "p99_ms": 1000 * loadgen.percentile(latencies, 0.99)})
                    bench.say(f"minute {len(minutes)}: {minutes[-1]} rss {samples[-1]['rss_kb']} kB, fds {samples[-1]['fds']}")
                    latencies = []
                    shed_total += shed_now
                    shed_now = 0
        finally:
            stop.set()
            thread.join()
            samples.append(proc_sample(server.pid))
            shed_reasons = shed_by_reason(port) if not server.exited() else {}
            server.stop()

        first_minute = [s for s in samples if s["t"] - start <= 60] or samples[:1]
        report = {
            "duration_s": round(time.monotonic() - start, 1), "promote_every_s": args.promote_every, "settings": dict(args.set),
            **({"connections": args.connections} if args.connections else {"rate": args.rate}),
            "requests": total, "shed_503": shed_total + shed_now, "shed_by_reason": shed_reasons, "wrong_answers": len(wrong), "wrong_examples": wrong[:10],
            "request_errors": len(errors), "error_examples": errors[:10], "side_errors": side_errors,
            "promotions": len(promotions), "version_switches_seen": len(seen_versions) - 1,
            "rss_kb_after_first_minute": first_minute[-1]["rss_kb"], "rss_kb_end": samples[-1]["rss_kb"],
            "rss_kb_peak": max(s["rss_kb"] for s in samples),
            "rss_growth_kb_after_first_minute": samples[-1]["rss_kb"] - first_minute[-1]["rss_kb"],
            "fds_min": min(s["fds"] for s in samples), "fds_max": max(s["fds"] for s in samples), "fds_end": samples[-1]["fds"],
            "minutes": minutes,
            "p99_drift": minutes[-1]["p99_ms"] / minutes[0]["p99_ms"] if minutes else None,
            "p50_drift": minutes[-1]["p50_ms"] / minutes[0]["p50_ms"] if minutes else None,
        }
        out = bench.RESULTS / f"soak-{stamp}.json"
        report["cpu_idle"] = args.cpu_idle
        out.write_text(json.dumps(report, indent=2))
        print(json.dumps({k: v for k, v in report.items() if k != "minutes"}, indent=2))
        print("| minute | requests | shed (503) | p50 ms | p99 ms |\n| --- | --- | --- | --- | --- |")
        for m in minutes:
            print(f"| {m['minute']} | {m['requests']} | {m['shed']} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} |")
        bench.say(f"report: {out}")
        ok = not wrong and not errors and not side_errors and report["version_switches_seen"] > 0
        bench.say("PASS: every answer right" if ok else "FAIL: see wrong_answers / request_errors / side_errors")
        return 0 if ok else 1
    except bench.BenchError as exc:
        bench.say(f"soak failed: {exc}")
        return 1
    finally:
        bench.stop_all()
        os.sched_setaffinity(0, set(cpus))
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
