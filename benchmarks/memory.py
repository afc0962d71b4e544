"""Resident memory of one ``oncology serve`` worker, gRPC off and on (docs/grpc.md, "Cost").

For each setting in turn, ``--rounds`` times: start ``oncology serve`` (one worker, as the console script runs
it), wait until it is ready, read ``/proc/PID/status``, send 1,000 single-row ``/predict`` requests and, with
gRPC on, 1,000 single-row ``ModelInfer`` calls (raw contents), one at a time, then read it again. Reported:
``VmRSS`` idle and after the calls, ``VmHWM`` (the peak) after them, and the resident memory split into
anonymous (the Python heap, thread stacks) and file-backed (the interpreter, extension modules) pages,
medians over the rounds. ``--modules`` also lists the top-level packages the worker imported
(``PYTHONPROFILEIMPORTTIME``) and the largest mappings from ``/proc/PID/smaps``.

    .venv/bin/python benchmarks/memory.py [--rounds 3] [--calls 1000] [--modules]
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import statistics
import struct
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import run as bench  # benchmarks/run.py: this script's folder is on sys.path

from oncology.webservice.proto import grpc_predict_v2_pb2 as pb
from oncology.webservice.proto import grpc_predict_v2_pb2_grpc as pb_grpc

FIELDS = ("VmRSS", "VmHWM", "RssAnon", "RssFile")
IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \| +(\S+)$", re.MULTILINE)


def status_mb(pid: int) -> dict[str, float]:
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in FIELDS:
            found[key] = int(value.split()[0]) / 1024
    return found


def mappings_mb(pid: int, top: int = 8) -> list[tuple[str, float]]:
    """Resident MB by mapped file (``[anon]``, ``[heap]`` for the rest), largest first."""
    rss: collections.Counter[str] = collections.Counter()
    current = "[anon]"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        parts = line.split()
        if parts and not parts[0].endswith(":"):
            current = parts[5] if len(parts) > 5 else "[anon]"
        elif parts and parts[0] == "Rss:":
            rss[current] += int(parts[1])
    return [(Path(name).name if name.startswith("/") else name, kb / 1024) for name, kb in rss.most_common(top)]


def one_round(store: Path, grpc_on: bool, calls: int, modules: bool) -> dict[str, Any]:
    port, grpc_port = bench.free_port(), bench.free_port() if grpc_on else 0
    env = {**bench.clean_env(), "ONCOLOGY_STORE": str(store), "ONCOLOGY_GRPC_PORT": str(grpc_port),
           "ONCOLOGY_DRAIN_SECONDS": "0", **({"PYTHONPROFILEIMPORTTIME": "1"} if modules else {})}
    name = f"grpc-{'on' if grpc_on else 'off'}"
    bench.LOGS.mkdir(parents=True, exist_ok=True)
    log = bench.LOGS / f"memory-{name}.log"
    log.unlink(missing_ok=True)
    server = bench.Server(name, [str(bench.PROJECT_BIN / "oncology"), "serve", "--port", str(port)], port,
                          bench.raw_request("GET", "/readyz"), env, log)
    server.start()
    try:
        bench.wait_ready(server, time.perf_counter())
        idle = status_mb(server.pid)
        body = json.dumps(bench.EXAMPLE).encode()
        predict = bench.raw_request("POST", "/predict", body)
        for _ in range(calls):
            status, answer = bench.http_call(port, predict)
            if status != 200:
                raise bench.BenchError(f"/predict answered {status}: {answer[:200]!r}")
        if grpc_on:
            request = pb.ModelInferRequest(model_name="oncology",
                                           raw_input_contents=[struct.pack("<9q", *bench.EXAMPLE.values())])
            request.inputs.add(name="tumor", datatype="INT64", shape=[1, 9])
            with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                stub = pb_grpc.GRPCInferenceServiceStub(channel)
                for _ in range(calls):
                    stub.ModelInfer(request, timeout=10)
        after = status_mb(server.pid)
        biggest = mappings_mb(server.pid)
    finally:
        server.stop()
    result: dict[str, Any] = {"idle": idle, "after": after, "mappings": biggest}
    if modules:
        imported = IMPORTED.findall(log.read_text(errors="replace"))
        result["modules"] = len(imported)
        result["packages"] = sorted({m.split(".")[0] for m in imported})
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="servers started for each setting")
    parser.add_argument("--calls", type=int, default=1_000, help="/predict requests (and ModelInfer calls) per round")
    parser.add_argument("--modules", action="store_true", help="list what the worker imported and its largest mappings")
    args = parser.parse_args()
    store = bench.RESULTS / "memory-store"
    bench.make_store(store)
    rows = []
    try:
        for grpc_on in (False, True):
            rounds = [one_round(store, grpc_on, args.calls, args.modules) for _ in range(args.rounds)]

            def med(phase: str, key: str, rounds: list[dict[str, Any]] = rounds) -> float:
                return statistics.median(r[phase][key] for r in rounds)

            rows.append(f"| gRPC {'on' if grpc_on else 'off'} | {med('idle', 'VmRSS'):.1f} | {med('after', 'VmRSS'):.1f} | "
                        f"{med('after', 'VmHWM'):.1f} | {med('after', 'RssAnon'):.1f} | {med('after', 'RssFile'):.1f} |")
            last = rounds[-1]
            bench.say(f"gRPC {'on' if grpc_on else 'off'}, largest mappings (MB): "
                      + ", ".join(f"{name} {mb:.1f}" for name, mb in last["mappings"]))
            if args.modules:
                bench.say(f"  {last['modules']} modules imported; packages: {' '.join(last['packages'])}")
    finally:
        bench.stop_all()
    print(f"\n| one worker, medians of {args.rounds} rounds, MB | VmRSS idle | VmRSS after {args.calls:,} calls | "
          "VmHWM | anonymous | file-backed |")
    print("| --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
