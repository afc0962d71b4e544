"""gRPC ModelInfer against the REST V2 route (``POST /v2/models/oncology/infer``), on one server, in one run.

One ``oncology serve`` worker with gRPC on (``ONCOLOGY_GRPC_PORT``), pinned to one CPU; the clients run
in this process, pinned to the other:

- REST V2: `loadgen.closed` (raw keep-alive HTTP/1.1 connections); a single row as JSON, and a batch of
  1,000 rows in Triton's binary tensor data extension (INT64, little-endian), the answer's probabilities
  binary too;
- gRPC: a ``grpc.aio`` client (one channel, ``concurrency`` calls in flight), raw contents as
  ``tritonclient.grpc`` sends them; a single row, and the same 1,000 rows;
- with ``--mlserver VENV``: the same gRPC calls to MLServer (installed in its own venv, e.g. under /tmp)
  serving the same model from the same store as a custom runtime (benchmarks/mlserver/runtime.py).

Each of the four runs ``--duration`` seconds, in turn, for ``--rounds`` rounds.  Reported: answers a
second, rows a second, the server's CPU µs per answer (its CPU seconds over the answers: what the
transport costs the server, whatever the client), and gRPC / REST ratios (medians of the per-round
ratios).  Any answer that is not a success aborts the run.

    .venv/bin/python benchmarks/grpc_v2.py [--rounds 3] [--duration 3] [--concurrency 64] [--batch-concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import signal
import statistics
import struct
import sys
import time
from pathlib import Path
from typing import Any

import loadgen
import run as bench  # benchmarks/run.py: this script's folder is on sys.path
from grpc import aio

from oncology.webservice.proto import grpc_predict_v2_pb2 as pb
from oncology.webservice.proto import grpc_predict_v2_pb2_grpc as pb_grpc

ROW = tuple(bench.EXAMPLE.values())
BATCH = 1_000
V2_PATH = "/v2/models/oncology/infer"


def rest_requests(rows: int) -> bytes:
    if rows == 1:
        body = json.dumps({"inputs": [{"name": "tumor", "shape": [1, 9], "datatype": "INT64", "data": [list(ROW)]}]})
        return loadgen.raw("POST", V2_PATH, body.encode())
    data = struct.pack(f"<{rows * 9}q", *(ROW * rows))
    header = json.dumps({
        "inputs": [{"name": "tumor", "shape": [rows, 9], "datatype": "INT64", "parameters": {"binary_data_size": len(data)}}],
        "outputs": [{"name": "probability", "parameters": {"binary_data": True}}],
    }).encode()
    head = (f"POST {V2_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
            f"Inference-Header-Content-Length: {len(header)}\r\nContent-Length: {len(header) + len(data)}\r\n\r\n")
    return head.encode() + header + data


def grpc_request(rows: int) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="oncology", raw_input_contents=[struct.pack(f"<{rows * 9}q", *(ROW * rows))])
    request.inputs.add(name="tumor", datatype="INT64", shape=[rows, 9])
    if rows > 1:
        request.outputs.add(name="probability")
    return request


def run_rest(port: int, rows: int, connections: int, seconds: float) -> dict[str, float]:
    result = loadgen.closed(port, rest_requests(rows), connections, seconds)
    bad = {s: n for s, n in result.statuses().items() if s != 200}
    if bad or result.errors:
        raise bench.BenchError(f"REST V2 ({rows} rows): statuses {bad}, errors {result.errors[:3]}")
    return {"answers": len(result.answers), "seconds": result.seconds}


def run_grpc(port: int, rows: int, concurrency: int, seconds: float) -> dict[str, float]:
    request = grpc_request(rows)

    async def main() -> int:
        async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            await stub.ModelInfer(request)  # connected
            end = time.perf_counter() + seconds
            done = 0

            async def caller() -> None:
                nonlocal done
                while time.perf_counter() < end:
                    response = await stub.ModelInfer(request)
                    if not response.outputs:
                        raise bench.BenchError(f"gRPC: an answer without its outputs: {response}"[:500])
                    done += 1

            await asyncio.gather(*(caller() for _ in range(concurrency)))
            return done

    start = time.perf_counter()
    answers = asyncio.run(main())
    return {"answers": answers, "seconds": time.perf_counter() - start}


def mlserver_server(venv: Path, store: Path, cpu: int | None, grpc_port: int) -> bench.Server:
    """MLServer with the model of ``store`` as a custom runtime (benchmarks/mlserver/runtime.py); inference in
    its main process (``parallel_workers: 0``), as ours runs in one worker; its gRPC on ``grpc_port``."""
    folder = bench.RESULTS / "mlserver"
    model = folder / "oncology"
    model.mkdir(parents=True, exist_ok=True)
    http_port, metrics_port = bench.free_port(), bench.free_port()
    (folder / "settings.json").write_text(json.dumps({
        "debug": False, "parallel_workers": 0, "host": "127.0.0.1", "http_port": http_port, "grpc_port": grpc_port,
        "metrics_port": metrics_port, "metrics_dir": str(folder / "metrics")}))
    (model / "model-settings.json").write_text(json.dumps({"name": "oncology", "implementation": "runtime.OncologyRuntime"}))
    env = {**bench.clean_env(), "ONCOLOGY_BENCH_STORE": str(store),
           "PYTHONPATH": os.pathsep.join([str(bench.BENCH / "mlserver"), str(bench.ROOT / "model" / "src")])}
    return bench.Server("mlserver", [*bench.pin(cpu), str(venv / "bin" / "mlserver"), "start", str(folder)], http_port,
                        bench.raw_request("GET", "/v2/models/oncology/ready"), env, bench.LOGS / "mlserver.log")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=64, help="single-row: connections (REST) or calls in flight (gRPC)")
    parser.add_argument("--batch-concurrency", type=int, default=4)
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--set", type=bench.server_setting, action="append", default=[], metavar="ONCOLOGY_NAME=VALUE",
                        help="a setting of the server (repeatable)")
    parser.add_argument("--only", choices=["single", "batch"], help="run only these cases")
    parser.add_argument("--floor", nargs="*", metavar="SERVER",
                        help="also the gRPC floor (benchmarks/grpc_floor.py: a constant answer), single row only, on each "
                             "SERVER of grpc_floors.py (aio, aio-asyncio, sync-N, grpclib, grpclib-asyncio; "
                             "default: off; --floor alone: aio, the service's)")
    parser.add_argument("--mlserver", type=Path, metavar="VENV",
                        help="also MLServer's gRPC (a venv with mlserver installed), serving the same model")
    args = bench.parse_args(parser)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    server_cpu, client_cpu = bench.split_cpus()
    if client_cpu is not None:
        os.sched_setaffinity(0, {client_cpu})
    http_port, grpc_port = bench.free_port(), bench.free_port()
    store = bench.RESULTS / "grpc-store"
    bench.LOGS.mkdir(parents=True, exist_ok=True)
    bench.make_store(store)
    env = {**bench.clean_env(), "ONCOLOGY_STORE": str(store), "ONCOLOGY_GRPC_PORT": str(grpc_port), **dict(args.set)}
    server = bench.Server("ours", [*bench.pin(server_cpu), str(bench.PROJECT_BIN / "oncology"), "serve",
                                   "--port", str(http_port)], http_port, bench.raw_request("GET", "/readyz"), env,
                          bench.LOGS / "grpc-server.log")
    cases = {
        "rest_single": lambda: run_rest(http_port, 1, args.concurrency, args.duration),
        "grpc_single": lambda: run_grpc(grpc_port, 1, args.concurrency, args.duration),
        "rest_batch": lambda: run_rest(http_port, BATCH, args.batch_concurrency, args.duration),
        "grpc_batch": lambda: run_grpc(grpc_port, BATCH, args.batch_concurrency, args.duration),
    }
    mlserver = None
    if args.mlserver:
        ml_port = bench.free_port()
        mlserver = mlserver_server(args.mlserver, store, server_cpu, ml_port)
        cases["mlserver_single"] = lambda: run_grpc(ml_port, 1, args.concurrency, args.duration)
        cases["mlserver_batch"] = lambda: run_grpc(ml_port, BATCH, args.batch_concurrency, args.duration)
    floors: dict[str, bench.Server] = {}
    if args.floor is not None:
        import grpc_floors  # benchmarks/grpc_floors.py: the floor servers

        for name in args.floor:
            if not grpc_floors.SERVER_NAME.fullmatch(name):
                parser.error(f"--floor: unknown server {name!r}")
        if any(name.startswith("grpclib") for name in args.floor):
            grpc_floors.ensure_grpclib_venv()
        for name in args.floor or ["aio"]:
            floors[name] = floor = grpc_floors.floor_server(name, server_cpu)
            cases[f"floor:{name}_single"] = functools.partial(run_grpc, floor.port, 1, args.concurrency, args.duration)
    if args.only:
        cases = {name: case for name, case in cases.items() if name.endswith(args.only)}
    rounds: list[dict[str, dict[str, float]]] = []
    try:
        started = time.perf_counter()
        server.start()
        bench.wait_ready(server, started)
        if args.mlserver:
            started = time.perf_counter()
            mlserver.start()
            bench.wait_ready(mlserver, started, timeout=120)
            run_grpc(ml_port, 1, 1, 0.3)
        for floor in floors.values():
            floor.start()
            grpc_floors.wait_floor(floor)
            run_grpc(floor.port, 1, 1, 0.3)
        run_rest(http_port, 1, 1, 0.3)  # warm-up: connections, caches
        run_grpc(grpc_port, 1, 1, 0.3)
        for r in range(args.rounds):
            found: dict[str, dict[str, float]] = {}
            for name, case in cases.items():
                target = mlserver if name.startswith("mlserver") and mlserver is not None else server
                target = floors[name.removeprefix("floor:").removesuffix("_single")] if name.startswith("floor:") else target
                cpu = target.cpu_seconds()
                result = case()
                result["server_cpu_us"] = (target.cpu_seconds() - cpu) / result["answers"] * 1e6
                result["per_s"] = result["answers"] / result["seconds"]
                result["rows_per_s"] = result["per_s"] * (BATCH if name.endswith("batch") else 1)
                found[name] = result
                print(f"round {r + 1} {name:12} {result['per_s']:9.0f}/s  {result['rows_per_s']:10.0f} rows/s  "
                      f"server {result['server_cpu_us']:7.0f} CPU µs per answer", file=sys.stderr)
            rounds.append(found)
    finally:
        bench.stop_all()

    def median(name: str, key: str) -> float:
        return statistics.median(r[name][key] for r in rounds)

    def ratio(a: str, b: str, key: str) -> float:
        return statistics.median(r[a][key] / r[b][key] for r in rounds)

    ratios = {}
    for kind in ("single", "batch") if not args.only else (args.only,):
        ratios[f"{kind}_per_s"] = round(ratio(f"grpc_{kind}", f"rest_{kind}", "per_s"), 2)
        ratios[f"{kind}_server_cpu_per_answer"] = round(ratio(f"grpc_{kind}", f"rest_{kind}", "server_cpu_us"), 2)
    if "aio" in floors and args.only != "batch":
        ratios["single_server_cpu_per_answer_vs_floor"] = round(ratio("grpc_single", "floor:aio_single", "server_cpu_us"), 2)
    if args.mlserver and args.only != "batch":
        # MLServer's CPU per answer over each floor's: the most any service on that server could reach against
        # MLServer with a handler that costs nothing
        for name in floors:
            ratios[f"mlserver_server_cpu_per_answer_over_floor:{name}"] = round(
                ratio("mlserver_single", f"floor:{name}_single", "server_cpu_us"), 2)
    if args.mlserver:
        for kind in ("single", "batch") if not args.only else (args.only,):
            ratios[f"{kind}_per_s_vs_mlserver"] = round(ratio(f"grpc_{kind}", f"mlserver_{kind}", "per_s"), 2)
            ratios[f"{kind}_server_cpu_per_answer_vs_mlserver"] = round(
                ratio(f"grpc_{kind}", f"mlserver_{kind}", "server_cpu_us"), 2)
    report: dict[str, Any] = {
        "cases": {name: {k: round(median(name, k), 1) for k in ("per_s", "rows_per_s", "server_cpu_us")} for name in cases},
        "grpc_vs_rest": ratios,
        "server_settings": dict(args.set),
        "settings": {"rounds": args.rounds, "duration_s": args.duration, "concurrency": args.concurrency,
                     "batch_concurrency": args.batch_concurrency, "batch_rows": BATCH,
                     "server_cpu": server_cpu, "client_cpu": client_cpu, "cpu_idle": args.cpu_idle},
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
