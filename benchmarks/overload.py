"""Overload: what one worker does at 4x its capacity, and under 1,000 slow connections.

On a store trained here (the fast test settings), ``oncology serve`` with one worker, twice: with the
default overload settings ("shedding") and with ``ONCOLOGY_OVERLOAD_MAX_LAG=0`` ("no shedding").  The
request is ``POST /predict/batch`` of ``--rows`` tumors (default 250: a few ms of server CPU, a 58 kB body,
so that the Python client can offer 4x what the server can do).  Load comes from
benchmarks/loadgen.py, which keeps every answer with its latency.

1. capacity: closed loop, 32 connections, ``--seconds``, against the server without shedding (at 32
   connections the shedding one may shed: 32 batches queued are more than its budget of work):
   answers per second (all must be 200), the peak the throughputs are compared with;
2. unloaded: open loop at a quarter of capacity: p50 and p99 (the baseline of the ratios);
3. overload: open loop at 4x capacity (``--times``), against each server: the shed ratio (503s), p50/p99 of the
   admitted (200) answers and of the shed ones, and the admitted p99 over the unloaded p99; a thread
   polls /readyz meanwhile (every answer must be 200).  Every 503 must carry Retry-After, every 200
   the right probabilities, no other status is accepted;
4. closed loop: ``--connections`` (default 256, 32x the capacity point's) each sending its next request
   as soon as it has its answer (the client cannot fall behind the server here), against each server;
5. many connections: ``wrk -t2 -c{--many} --timeout 2s`` on single-row ``/predict`` for ``--seconds`` against each
   server: requests answered, 503s, requests with no answer within 2 s (wrk's timeouts), p99, and the kernel's
   listen-queue overflows and drops (``TcpExt`` ListenOverflows/ListenDrops) meanwhile, which tell whether the
   unanswered ones waited in the accept queue (a SYN dropped is retried after 1 s, then 3 s) or in the worker;
6. slow connections: 1,000 connections trickling headers or bodies (one byte per 0.2 s each) while
   the client sends the unloaded rate: its p50/p99 against the unloaded ones, and the seconds until
   the server had closed every slow connection (``request_read_timeout``, 10 s by default).

Latency counts from the time a request was due (open loop), so the client's own queueing counts.
``late_starts`` counts requests the client itself sent more than 10 ms late: when it is a large
share, the client (not the server) was the limit on this machine and the figures say little.

Everything goes to ``benchmarks/results/overload-<UTC timestamp>.json`` (and the table to stdout).
Exit 1 if a server failed or an answer was wrong (a status other than 200/503, a 503 without
Retry-After, a wrong probability, a failed probe); 0 otherwise.

    .venv/bin/python benchmarks/overload.py [--seconds 5] [--rows 250]
    .venv/bin/python benchmarks/overload.py --only-many --seconds 8   # point 5 alone, against both servers
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import loadgen
import run as bench  # benchmarks/run.py: this script's folder is on sys.path

from oncology_model import FEATURES, Classifier

FAST = {"ONCOLOGY_CV_FOLDS": "3", "ONCOLOGY_CV_REPEATS": "1", "ONCOLOGY_INNER_FOLDS": "3", "ONCOLOGY_TARGET_CONFIDENCE": "0.5",
        "ONCOLOGY_FAMILIES": "logistic_regression,linear_discriminant_analysis"}
SLOW = 1_000
CAPACITY_CONNECTIONS = 32  # enough to keep the worker busy while answers travel (8 left it idle part of the time)
TIMEOUT = 60.0


def start(name: str, store: Path, extra: dict[str, str], cpu: int | None) -> bench.Server:
    port = bench.free_port()
    log = bench.RESULTS / "logs" / f"overload-{name}-{port}.log"
    server = bench.Server(name, [*bench.pin(cpu), str(bench.PROJECT_BIN / "oncology"), "serve", "--store", str(store),
                                 "--port", str(port)],
                          port, bench.raw_request("GET", "/readyz"), {**bench.clean_env(), **extra}, log)
    server.start()
    bench.wait_ready(server, time.perf_counter())
    return server


def settle(servers: dict[str, bench.Server], timeout: float = 120.0) -> None:
    """Wait until no server uses CPU any more (< 5% over 0.5 s): an overloaded server goes on working off what it
    had read after its clients left, and both share one CPU, so the next point would measure that too."""
    deadline = time.monotonic() + timeout
    for server in servers.values():
        while True:
            before = server.cpu_seconds()
            time.sleep(0.5)  # the measuring window of a CPU rate, inside a poll with a deadline
            if server.cpu_seconds() - before < 0.025:
                break
            if time.monotonic() > deadline:
                raise bench.BenchError(f"{server.name} still busy {timeout:.0f}s after its load stopped")


def check(result: loadgen.Run, expected: list[float], what: str) -> None:
    """Every answer right: 200 with the expected probabilities, or 503 with Retry-After; no request failed."""
    if result.errors:
        raise bench.BenchError(f"{what}: {len(result.errors)} requests failed, e.g. {result.errors[:3]}")
    for a in result.answers:
        if a.status == 503:
            if a.retry_after is None or not a.retry_after.isdigit():
                raise bench.BenchError(f"{what}: a 503 without Retry-After: {a.body[:200]!r}")
        elif a.status != 200:
            raise bench.BenchError(f"{what}: status {a.status}: {a.body[:200]!r}")
        elif [r["probability"] for r in json.loads(a.body)] != expected:
            raise bench.BenchError(f"{what}: wrong probabilities")


def steal_seconds() -> float:
    """CPU seconds the hypervisor took from this machine's CPUs so far (/proc/stat, all CPUs): a point's figures
    say little when much was taken during it."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()
    return int(fields[8]) / os.sysconf("SC_CLK_TCK") if len(fields) > 8 else 0.0


def stealing(load: Callable[..., loadgen.Run], *args: Any, **kwargs: Any) -> tuple[loadgen.Run, float]:
    """The run of ``load(*args, **kwargs)`` and the CPU seconds the hypervisor took meanwhile."""
    before = steal_seconds()
    result = load(*args, **kwargs)
    return result, steal_seconds() - before


def summary(result: loadgen.Run, baseline_p99: float | None = None, capacity: float | None = None) -> dict[str, Any]:
    ok = [a.latency for a in result.answers if a.status == 200]
    shed = [a.latency for a in result.answers if a.status == 503]
    out: dict[str, Any] = {
        "requests": len(result.answers), "seconds": round(result.seconds, 2), "late_starts": result.late_starts,
        "statuses": result.statuses(), "shed_ratio": len(shed) / max(1, len(result.answers)),
        "admitted_per_s": len(ok) / result.seconds,
        "admitted_p50_ms": 1000 * loadgen.percentile(ok, 0.5), "admitted_p99_ms": 1000 * loadgen.percentile(ok, 0.99),
        "shed_p50_ms": 1000 * loadgen.percentile(shed, 0.5), "shed_p99_ms": 1000 * loadgen.percentile(shed, 0.99),
    }
    if baseline_p99:
        out["admitted_p99_over_unloaded_p99"] = out["admitted_p99_ms"] / baseline_p99
        out["admitted_p50_over_unloaded_p99"] = out["admitted_p50_ms"] / baseline_p99
    if capacity:
        out["admitted_over_capacity"] = out["admitted_per_s"] / capacity
    return out


def probing(url: str, stop: threading.Event, seen: list[tuple[int, float]], errors: list[str]) -> None:
    try:
        with httpx.Client(timeout=30) as client:
            while not stop.wait(0.05):
                t0 = time.perf_counter()
                status = client.get(f"{url}/readyz").status_code
                seen.append((status, time.perf_counter() - t0))
    except Exception as exc:  # noqa: BLE001 - reported, fails the run
        errors.append(repr(exc))


def slow_connections(port: int, stop: threading.Event, state: dict[str, Any]) -> None:
    """``SLOW`` connections trickling one byte per 0.2 s; notes when the server has closed them all."""
    socks: dict[int, socket.socket] = {}
    try:
        for i in range(SLOW):
            s = socket.create_connection((bench.HOST, port))
            s.setblocking(False)
            head = b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            s.sendall(head + (b"Content-Length: 100000\r\n\r\n{" if i % 2 else b"X-Slow: "))
            socks[s.fileno()] = s
        state["opened_at"] = time.monotonic()
        while socks and not stop.is_set():
            poller = select.poll()
            for fd, s in socks.items():
                with contextlib.suppress(OSError):  # a closed one is found by the poll below
                    s.send(b" " if fd % 2 else b"a")
                poller.register(fd, select.POLLIN)
            for fd, _ in poller.poll(0):
                socks.pop(fd).close()
            stop.wait(0.2)
        if not socks:
            state["all_closed_after_s"] = time.monotonic() - state["opened_at"]
    except Exception as exc:  # noqa: BLE001
        state["error"] = repr(exc)
    finally:
        state["left_open"] = len(socks)
        for s in socks.values():
            s.close()


def listen_drops() -> dict[str, int]:
    """The kernel's counts of connections the listen queues overflowed or dropped (all sockets of the machine)."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    counts: dict[str, int] = {}
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            counts = dict(zip(names.split()[1:], map(int, values.split()[1:])))
    return {k: counts.get(k, 0) for k in ("ListenOverflows", "ListenDrops")}


def many_connections(wrk_bin: str, port: int, connections: int, seconds: float, cpu: int | None) -> dict[str, Any]:
    """``wrk -t2 -c{connections} --timeout 2s`` on single-row /predict: answered, 503s, unanswered within 2 s, p99."""
    script = bench.wrk_script("overload-many", json.dumps(bench.EXAMPLE).encode())
    before = listen_drops()
    argv = [*bench.pin(cpu), wrk_bin, "-t2", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "2s",
            "--latency", "-s", str(script), f"http://{bench.HOST}:{port}/predict"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise bench.BenchError(f"wrk failed ({proc.returncode}): {' '.join(argv)}\n{proc.stdout}{proc.stderr}")
    raw = json.loads(line.removeprefix("WRK_JSON "))
    after = listen_drops()
    return {"connections": connections, "requests": int(raw["requests"]), "rps": raw["requests"] / (raw["duration_us"] / 1e6),
            "non_2xx": int(raw["status"]), "unanswered_2s": int(raw["timeout"]),
            "socket_errors": {k: int(raw[k]) for k in ("connect", "read", "write")},
            "p50_ms": raw["p50_us"] / 1000, "p99_ms": raw["p99_us"] / 1000, "max_ms": raw["max_us"] / 1000,
            **{k: after[k] - before[k] for k in after}}


def many_table(connections: int, points: dict[str, dict[str, Any]]) -> str:
    lines = [f"| {connections} connections, wrk -t2 --timeout 2s, /predict | answered req/s | 503 | no answer in 2 s | p50 ms | "
             "p99 ms | listen overflows / drops |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, p in points.items():
        lines.append(f"| {name} | {p['rps']:.0f} | {p['non_2xx']} | {p['unanswered_2s']} of {p['requests']} | {p['p50_ms']:.1f} | "
                     f"{p['p99_ms']:.1f} | {p['ListenOverflows']} / {p['ListenDrops']} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds of each load point (default 5)")
    parser.add_argument("--rows", type=int, default=250, help="tumors per batch request (default 250)")
    parser.add_argument("--times", type=float, default=4.0, help="the open loop's rate, in capacities (default 4)")
    parser.add_argument("--connections", type=int, default=256, help="connections of the closed-loop point (default 256)")
    parser.add_argument("--many", type=int, default=1024, help="connections of the many-connections point (default 1024)")
    parser.add_argument("--only-many", action="store_true",
                        help="run the many-connections point alone (no capacity, overload, closed-loop or slow points; default: off)")
    parser.add_argument("--set", type=bench.server_setting, action="append", default=[], metavar="ONCOLOGY_NAME=VALUE",
                        help="a setting for the shedding server (repeatable), e.g. ONCOLOGY_OVERLOAD_MAX_LAG=0.1")
    args = bench.parse_args(parser)  # (the CPUs' state recorded by machine_info)
    work = Path(tempfile.mkdtemp(prefix="oncology-overload-"))
    (bench.RESULTS / "logs").mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, client_cpu = bench.split_cpus()
    try:
        store = work / "store"
        bench.say(f"training a model into {store}")
        bench.run([str(bench.PROJECT_BIN / "oncology"), "train", "--store", str(store), "--promote"], "oncology train",
                  env={**bench.clean_env(), **FAST})
        tumors = [dict(zip(FEATURES, (1 + (i + j) % 10 for j in range(len(FEATURES))))) for i in range(args.rows)]
        expected = Classifier.from_uri(store).score_rows([tuple(t.values()) for t in tumors])
        request = loadgen.raw("POST", "/predict/batch", json.dumps(tumors).encode())
        report: dict[str, Any] = {"rows": args.rows, "seconds": args.seconds, "times_capacity": args.times, "settings": dict(args.set), "machine": bench.machine_info(None, None)}

        # the servers on one CPU, this client (load, probes, slow connections) on another, as make bench does
        servers = {"shedding": start("shedding", store, dict(args.set), server_cpu),
                   "no shedding": start("noshed", store, {"ONCOLOGY_OVERLOAD_MAX_LAG": "0"}, server_cpu)}
        if client_cpu is not None:
            os.sched_setaffinity(0, {client_cpu})
        if args.only_many:
            report["many_connections"] = {}
            for name, server in servers.items():
                settle(servers)
                report["many_connections"][name] = point = many_connections(bench.ensure_wrk(), server.port, args.many,
                                                                            args.seconds, client_cpu)
                bench.say(f"{args.many} connections on /predict, {name}: {json.dumps(point)}")
            out = bench.RESULTS / f"overload-many-{stamp}.json"
            out.write_text(json.dumps(report, indent=2))
            print(many_table(args.many, report["many_connections"]))
            bench.say(f"report: {out}")
            return 0
        # the worker's peak: the server that never sheds, kept busy (every answer must be a 200)
        cap, report["capacity_steal_s"] = stealing(
            loadgen.closed, servers["no shedding"].port, request, CAPACITY_CONNECTIONS, args.seconds)
        check(cap, expected, "capacity")
        if set(cap.statuses()) != {200}:
            raise bench.BenchError(f"capacity: answers other than 200: {cap.statuses()}")
        capacity = len(cap.answers) / cap.seconds
        report["capacity_per_s"] = capacity
        report["capacity_statuses"] = cap.statuses()
        bench.say(f"capacity: {capacity:.0f} requests/s ({cap.statuses()})")
        settle(servers)
        unloaded, stolen = stealing(loadgen.open_loop, servers["shedding"].port, request, capacity / 4, args.seconds)
        check(unloaded, expected, "unloaded")
        base = summary(unloaded)
        base["steal_s"] = stolen
        report["unloaded"] = base
        bench.say(f"unloaded (capacity/4): p50 {base['admitted_p50_ms']:.2f} ms, p99 {base['admitted_p99_ms']:.2f} ms")

        report["overload"] = {}
        for name, server in servers.items():
            stop, probes, probe_errors = threading.Event(), [], []  # type: ignore[var-annotated]
            prober = threading.Thread(target=probing, args=(f"http://{bench.HOST}:{server.port}", stop, probes, probe_errors))
            prober.start()
            try:
                settle(servers)
                result, stolen = stealing(loadgen.open_loop, server.port, request, args.times * capacity, args.seconds,
                                          max_connections=512)
            finally:
                stop.set()
                prober.join()
            check(result, expected, f"{args.times:g}x capacity, {name}")
            if probe_errors or {s for s, _ in probes} - {200}:
                raise bench.BenchError(f"{name}: /readyz failed under overload: {probe_errors[:3]} {probes[:5]}")
            point = summary(result, base["admitted_p99_ms"], capacity)
            point["steal_s"] = stolen
            point["readyz_probes"] = len(probes)
            point["readyz_p99_ms"] = 1000 * loadgen.percentile([t for _, t in probes], 0.99)
            report["overload"][name] = point
            bench.say(f"{args.times:g}x capacity, {name}: {json.dumps(point)}")

        report["closed_loop"] = {}  # many connections, each sending as soon as it has its answer
        for name, server in servers.items():
            settle(servers)
            result, stolen = stealing(loadgen.closed, server.port, request, args.connections, args.seconds)
            check(result, expected, f"{args.connections} connections, {name}")
            report["closed_loop"][name] = point = summary(result, base["admitted_p99_ms"], capacity)
            point["steal_s"] = stolen
            bench.say(f"{args.connections} connections, {name}: {json.dumps(point)}")

        report["many_connections"] = {}
        wrk_bin = bench.ensure_wrk()
        for name, server in servers.items():
            settle(servers)
            report["many_connections"][name] = point = many_connections(wrk_bin, server.port, args.many, args.seconds,
                                                                        client_cpu)
            bench.say(f"{args.many} connections on /predict, {name}: {json.dumps(point)}")

        server = servers["shedding"]
        stop, state = threading.Event(), {}  # type: ignore[var-annotated]
        trickler = threading.Thread(target=slow_connections, args=(server.port, stop, state))
        trickler.start()
        try:
            deadline = time.monotonic() + TIMEOUT
            while "opened_at" not in state and "error" not in state and time.monotonic() < deadline:
                time.sleep(0.01)
            settle(servers)
            during = loadgen.open_loop(server.port, request, capacity / 4, args.seconds)
            while trickler.is_alive() and time.monotonic() < deadline and "all_closed_after_s" not in state:
                time.sleep(0.1)
        finally:
            stop.set()
            trickler.join()
        check(during, expected, "slow connections")
        slow = summary(during, base["admitted_p99_ms"])
        slow.update({k: v for k, v in state.items() if k != "opened_at"})
        report["slow_connections"] = slow
        bench.say(f"{SLOW} slow connections: {json.dumps(slow)}")
        if "error" in state or state.get("left_open"):
            raise bench.BenchError(f"slow connections: {state}")
        for s in servers.values():
            if s.exited():
                raise bench.BenchError(f"{s.name} died:\n{s.tail()}")

        out = bench.RESULTS / f"overload-{stamp}.json"
        out.write_text(json.dumps(report, indent=2))
        shed, noshed = report["overload"]["shedding"], report["overload"]["no shedding"]
        print(f"\ncapacity {capacity:.0f} req/s of {args.rows}-row batches; unloaded p50 {base['admitted_p50_ms']:.2f} ms, "
              f"p99 {base['admitted_p99_ms']:.2f} ms (CPU s stolen by the hypervisor: {report['capacity_steal_s']:.1f} "
              f"and {base['steal_s']:.1f} during them)\n")
        print(f"| at {args.times:g}x capacity | shed | admitted req/s | of capacity | admitted p50 ms | admitted p99 ms | p99 / unloaded p99 | 503 p99 ms | client late starts | CPU s stolen |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for name, p in (("shedding (default)", shed), ("no shedding", noshed)):
            print(f"| {name} | {p['shed_ratio']:.0%} | {p['admitted_per_s']:.0f} | {p['admitted_over_capacity']:.2f} | {p['admitted_p50_ms']:.1f} | "
                  f"{p['admitted_p99_ms']:.1f} | {p['admitted_p99_over_unloaded_p99']:.1f}x | {p['shed_p99_ms']:.1f} | "
                  f"{p['late_starts']}/{p['requests']} | {p['steal_s']:.1f} |")
        print(f"\n| {args.connections} connections, closed loop | shed | admitted req/s | of capacity | admitted p50 ms | admitted p99 ms | p99 / unloaded p99 | CPU s stolen |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for name, p in report["closed_loop"].items():
            print(f"| {name} | {p['shed_ratio']:.0%} | {p['admitted_per_s']:.0f} | {p['admitted_over_capacity']:.2f} | {p['admitted_p50_ms']:.1f} | "
                  f"{p['admitted_p99_ms']:.1f} | {p['admitted_p99_over_unloaded_p99']:.1f}x | {p['steal_s']:.1f} |")
        print("\n" + many_table(args.many, report["many_connections"]))
        print(f"\n{SLOW} slow connections: normal client p50 {slow['admitted_p50_ms']:.2f} ms, p99 {slow['admitted_p99_ms']:.2f} ms "
              f"({slow['admitted_p99_over_unloaded_p99']:.1f}x unloaded), all closed by the server after "
              f"{slow.get('all_closed_after_s', float('nan')):.1f} s")
        bench.say(f"report: {out}")
        return 0
    except bench.BenchError as exc:
        bench.say(f"overload benchmark failed: {exc}")
        return 1
    finally:
        bench.stop_all()
        os.sched_setaffinity(0, set(cpus))
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
