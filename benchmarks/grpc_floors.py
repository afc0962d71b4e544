"""The floor of each Python gRPC server: CPU per single-row ``ModelInfer`` with an empty handler.

Each server is `grpc_floor.py` (a precomputed answer of the service's shape, the request parsed and the answer
serialized), one process pinned to one CPU; the clients run on the other CPU:

- ``aio``: grpcio's asyncio server on uvloop (the service's transport; `grpc_v2.py --floor`), and
  ``aio-asyncio`` on asyncio's own loop;
- ``sync-N``: grpcio's thread-pool server with N worker threads;
- ``grpclib``: grpclib's pure-Python server (asyncio and h2) on uvloop, and ``grpclib-asyncio``; grpclib is not a
  project dependency: it runs from ``results/grpclib-venv`` (grpclib, and protobuf and uvloop at the project's
  versions), made here when missing.

Two clients, each keeping ``--concurrency`` calls in flight on one HTTP/2 connection:

- ``grpcio``: the ``grpc.aio`` client of `grpc_v2.py` (the client of the figures in docs/grpc.md); it is slower
  than the servers, so they idle between calls and pay a wake-up for few calls;
- ``h2load`` (Debian's nghttp2-client): a C client fast enough to saturate every server; each answer's size is
  checked against the floor's answer (a gRPC error would be a trailers-only answer with no data).

The servers take turns for each client, ``--rounds`` times.  Reported: calls a second and the server's CPU µs
a call (user + system of its process, all threads, over the calls; medians of the rounds).  A failed call
aborts the run.

    .venv/bin/python benchmarks/grpc_floors.py [--rounds 3] [--duration 3] [--concurrency 64]
        [--servers aio sync-1 sync-4 grpclib ...] [--clients grpcio h2load]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import grpc_floor
import grpc_v2
import run as bench  # benchmarks/run.py: this script's folder is on sys.path
from grpc import aio

from oncology.webservice.proto import grpc_predict_v2_pb2_grpc as pb_grpc

GRPCLIB_VENV = bench.RESULTS / "grpclib-venv"
SERVERS = ("aio", "aio-asyncio", "sync-1", "sync-4", "grpclib", "grpclib-asyncio")
PATH = f"/{grpc_floor.SERVICE}/ModelInfer"
#: The servers' names: grpcio asyncio, grpcio thread pool of N threads, grpclib; the loop after the dash.
SERVER_NAME = re.compile(r"aio(-asyncio|-uvloop)?|sync-[1-9]\d*|grpclib(-asyncio|-uvloop)?")


def ensure_grpclib_venv() -> dict[str, str]:
    pins = ["grpclib", *(f"{name}=={metadata.version(name)}" for name in ("protobuf", "uvloop"))]
    return bench.ensure_venv(GRPCLIB_VENV, pins, {"grpclib", "h2", "protobuf", "uvloop"})


def floor_server(name: str, cpu: int | None) -> bench.Server:
    kind, _, variant = name.partition("-")
    port = bench.free_port()
    options = ["--server", kind]
    if kind == "sync":
        options += ["--threads", variant]
    elif variant:
        options += ["--loop", variant]
    python, env = sys.executable, bench.clean_env()
    if kind == "grpclib":
        python = str(GRPCLIB_VENV / "bin" / "python")
        env = {**env, "PYTHONPATH": str(bench.ROOT / "src")}
    argv = [*bench.pin(cpu), python, str(bench.BENCH / "grpc_floor.py"), str(port), *options]
    return bench.Server(name, argv, port, b"", env, bench.LOGS / f"grpc-floor-{name}.log")


def check_answer(port: int) -> None:
    """One call: the floor's constant answer, exactly."""
    import asyncio

    async def call() -> Any:
        async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            return await pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(grpc_v2.grpc_request(1), timeout=5)

    got = asyncio.run(call())
    if got != grpc_floor.answer():
        raise bench.BenchError(f"port {port} answered {got}, not the floor's answer")


def wait_floor(server: bench.Server, timeout: float = 30) -> None:
    deadline = time.perf_counter() + timeout
    while True:  # no HTTP probe: ready once it answers
        try:
            check_answer(server.port)
            return
        except Exception as exc:
            if time.perf_counter() > deadline or server.exited():
                raise bench.BenchError(f"{server.name} did not start ({exc!r}):\n{server.tail()}") from None
            time.sleep(0.2)


def h2load_body() -> tuple[Path, int]:
    """The request as a gRPC frame in a file, and the answer's frame size (5-byte prefix + message)."""
    message = grpc_v2.grpc_request(1).SerializeToString()
    path = bench.RESULTS / "load" / "grpc-single.bin"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" + len(message).to_bytes(4, "big") + message)
    return path, 5 + len(grpc_floor.answer().SerializeToString())


def run_h2load(h2load: str, port: int, concurrency: int, seconds: float, cpu: int | None) -> dict[str, float]:
    body, answer_bytes = h2load_body()
    argv = [*bench.pin(cpu), h2load, "-c", "1", "-t", "1", "-m", str(concurrency), "-D", f"{seconds:g}",
            "-H", "content-type: application/grpc", "-H", "te: trailers", "-d", str(body),
            f"http://127.0.0.1:{port}{PATH}"]
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    elapsed = time.perf_counter() - start
    out = proc.stdout
    found = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored",
                      out)
    data = re.search(r"traffic: .*?, [\d.]+\w*B \((\d+)\) data", out)
    if proc.returncode != 0 or not found or not data:
        raise bench.BenchError(f"h2load failed ({proc.returncode}): {' '.join(argv)}\n{out}{proc.stderr}")
    _, _, done, succeeded, failed, errored = map(int, found.groups())
    if failed or errored or succeeded != done or done == 0 or int(data.group(1)) != done * answer_bytes:
        raise bench.BenchError(f"h2load: {done} done, {succeeded} succeeded, {failed} failed, {errored} errored, "
                               f"{data.group(1)} bytes of data for {answer_bytes} an answer:\n{out}")
    return {"answers": succeeded, "seconds": elapsed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="(default 3)")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds a point (default 3)")
    parser.add_argument("--concurrency", type=int, default=64, help="calls in flight (default 64)")
    parser.add_argument("--servers", nargs="+", default=list(SERVERS), metavar="SERVER",
                        help=f"from aio, aio-asyncio, sync-N, grpclib, grpclib-asyncio (default: {' '.join(SERVERS)})")
    parser.add_argument("--clients", nargs="+", choices=["grpcio", "h2load"], default=["grpcio", "h2load"],
                        help="(default: grpcio h2load)")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = bench.parse_args(parser)
    for name in args.servers:
        if not SERVER_NAME.fullmatch(name):
            parser.error(f"--servers: unknown server {name!r}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    h2load = shutil.which("h2load")
    if "h2load" in args.clients and not h2load:
        parser.error("h2load is missing: apt-get install -y nghttp2-client, or --clients grpcio")
    versions = {"grpcio": metadata.version("grpcio")}
    if any(name.startswith("grpclib") for name in args.servers):
        versions.update(ensure_grpclib_venv())

    server_cpu, client_cpu = bench.split_cpus()
    if client_cpu is not None:
        os.sched_setaffinity(0, {client_cpu})
    bench.LOGS.mkdir(parents=True, exist_ok=True)
    servers = {name: floor_server(name, server_cpu) for name in args.servers}
    clients = {
        "grpcio": lambda port: grpc_v2.run_grpc(port, 1, args.concurrency, args.duration),
        "h2load": lambda port: run_h2load(str(h2load), port, args.concurrency, args.duration, client_cpu),
    }
    rounds: list[dict[str, dict[str, float]]] = []
    try:
        for server in servers.values():
            server.start()
            wait_floor(server)
            grpc_v2.run_grpc(server.port, 1, 8, 0.3)  # warm-up
        for r in range(args.rounds):
            found: dict[str, dict[str, float]] = {}
            names = list(servers)
            order = names[r % len(names):] + names[: r % len(names)]
            for client in args.clients:
                for name in order:
                    server = servers[name]
                    cpu = server.cpu_seconds()
                    result = clients[client](server.port)
                    used = server.cpu_seconds() - cpu
                    if server.exited():
                        raise bench.BenchError(f"{name} died:\n{server.tail()}")
                    point = {"per_s": result["answers"] / result["seconds"], "server_cpu_us": used / result["answers"] * 1e6,
                             "server_cpu_util": used / result["seconds"], "answers": result["answers"]}
                    found[f"{client} {name}"] = point
                    print(f"round {r + 1} {client:6} {name:16} {point['per_s']:8.0f} calls/s  server "
                          f"{point['server_cpu_us']:6.0f} CPU µs a call, {point['server_cpu_util']:.0%} of a CPU",
                          file=sys.stderr)
            rounds.append(found)
    finally:
        bench.stop_all()

    points = {key: {k: round(statistics.median(r[key][k] for r in rounds), 2) for k in ("per_s", "server_cpu_us",
                                                                                       "server_cpu_util")}
              for key in rounds[0]}
    report = {"points": points, "versions": versions, "rounds": rounds,
              "settings": {"rounds": args.rounds, "duration_s": args.duration, "concurrency": args.concurrency,
                           "server_cpu": server_cpu, "client_cpu": client_cpu, "loadavg_end": os.getloadavg(),
                           "cpu_idle": args.cpu_idle}}
    print(json.dumps({"points": points, "versions": versions}, indent=2))
    print("\n| client | server | calls/s | server CPU µs a call | server CPU use |\n| --- | --- | ---: | ---: | ---: |")
    for key, p in points.items():
        client, name = key.split(" ", 1)
        print(f"| {client} | {name} | {p['per_s']:,.0f} | {p['server_cpu_us']:,.0f} | {p['server_cpu_util']:.0%} |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except bench.BenchError as exc:
        print(f"BENCH FAILED: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
