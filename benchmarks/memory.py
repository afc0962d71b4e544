"""Resident memory of one ``oncology serve`` worker, gRPC off and on (docs/grpc.md, "Cost").

For each setting in turn, ``--rounds`` times: start ``oncology serve`` (one worker, as the console script runs
it, with outcome intake on), wait until it is ready, read ``/proc/PID/status``, send 1,000 single-row
``/predict`` requests and, with gRPC on, 1,000 single-row ``ModelInfer`` calls (raw contents), one at a time,
then what else a production worker sees once in a while (`OCCASIONAL`: refused bodies on each protocol,
``/openapi.json``, ``/docs``, a ``/metrics`` scrape, ``POST /outcomes``, and a refused ``ModelInfer``), so that
nothing loaded on first use hides its cost, then read it again. Reported:
``VmRSS`` idle and after the calls, ``VmHWM`` (the peak) after them, and the resident memory split into
anonymous (the Python heap, thread stacks) and file-backed (the interpreter, extension modules) pages,
medians over the rounds. ``--modules`` also lists the top-level packages the worker imported
(``PYTHONPROFILEIMPORTTIME``) and the largest mappings from ``/proc/PID/smaps``.

A worker's resident memory depends on how the kernel holds its libraries in the page cache, not only on its
code: on kernels that keep files in large folios (6.18 here) a fault maps a whole folio, and the folios a file
sits in depend on how it came into the page cache.  Right after ``pip install`` wrote grpcio's 17 MB
``cygrpc``, a worker maps 14.8 MB of it; once it is read back from disk, 10.5 MB (the same code, the same
calls).  ``--page-cache read`` drops the cached pages of the libraries a worker maps from the virtual
environment (`worker_libraries`) before each round (``posix_fadvise(DONTNEED)``; pages some process maps stay),
so the worker reads them from disk, as after a reboot or once the kernel reclaimed them; ``as-is`` (the default)
leaves them as they are (after ``pip install --force-reinstall --no-deps`` of their packages: as pip wrote them).

``--parts`` says where a worker's memory goes instead: a fresh interpreter imports the worker's parts in
turn (`PARTS`, in that order, each with what it pulls in that the parts before it did not), and each part's
cost is how much ``VmRSS`` grew; medians over the rounds.

    .venv/bin/python benchmarks/memory.py [--rounds 3] [--calls 1000] [--modules] [--parts]
                                          [--page-cache as-is|read]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
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

#: A worker's parts, imported in this order by ``--parts`` (``STORE``: the store's path); last, pydantic and the models
#: built on it, which a worker does not load (the other commands and the tests do).
PARTS: tuple[tuple[str, str, bool], ...] = (  # (what, the code that imports it, whether it is pydantic's or built on it)
    ("the standard library every part needs (asyncio, ssl, hashlib, logging, importlib.metadata...)",
     "import asyncio, concurrent.futures, dataclasses, datetime, email.message, hashlib, importlib.metadata, json, "
     "logging, multiprocessing, pathlib, shutil, signal, socket, ssl, tempfile, typing, uuid, zipfile", False),
    ("ServeSettings, and the settings read", "from oncology.settings import ServeSettings; ServeSettings(store=STORE)", False),
    ("oncology_model (its pydantic `Tumor` is not loaded)", "import oncology_model", False),
    ("uvicorn, uvloop, httptools", "import uvicorn, uvloop, httptools", False),
    ("Starlette", "import starlette.applications", False),
    ("prometheus_client", "import prometheus_client", False),
    ("msgspec", "import msgspec", False),
    ("the service's own modules (the reference decoders and the OpenAPI components included)",
     "import oncology.serving, oncology.webservice.server, oncology.webservice.refusals, "
     "oncology.webservice.openapi", False),
    ("grpc", "import grpc", False),
    ("grpc_health", "import grpc_health.v1.health", False),
    ("the service's gRPC module and generated messages", "import oncology.webservice.grpc", False),
    ("grpc_reflection (loaded by the first reflection call)", "import grpc_reflection.v1alpha.reflection", False),
    ("not in a worker: pydantic, its models (Tumor, OutcomeIn, ServeSettings' schema) and its first schema build",
     "import pydantic_core, pydantic; from oncology_model import Tumor; from oncology.outcomes import OutcomeIn; "
     "from oncology.serve_settings_model import model; model()", True),
)
_PARTS_PROGRAM = """
import json, sys
def rss():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS:"))
STORE = sys.argv[1]
found = [rss()]
for code in json.loads(sys.argv[2]):
    exec(code)
    found.append(rss())
print(json.dumps(found))
"""
#: What a worker sees once in a while besides predictions: (method, path, body, the status it must answer).
OCCASIONAL: tuple[tuple[str, str, bytes, int], ...] = (
    ("POST", "/predict", json.dumps({**bench.EXAMPLE, "mitoses": 11, "bare_nuclei": "x"}).encode(), 422),
    ("POST", "/predict", b"{not json", 400),
    ("POST", "/predict/batch", json.dumps([bench.EXAMPLE, {"clump_thickness": 0}]).encode(), 422),
    ("POST", "/v2/models/oncology/infer", json.dumps({"inputs": [{"name": "tumor", "shape": [1, 9], "datatype": "INT64",
                                                                  "data": [5, 1, 1]}]}).encode(), 422),
    ("POST", "/v2/models/oncology/infer", json.dumps({"inputs": "tumor"}).encode(), 422),
    ("GET", "/openapi.json", b"", 200),
    ("GET", "/docs", b"", 200),
    ("GET", "/metrics", b"", 200),
    ("POST", "/outcomes", json.dumps([{"request_id": "4f9c2a7e1b3d5a60", "outcome": "malignant",
                                       "observed_at": "2026-12-01T09:30:00+01:00", "source": "memory-bench"}]).encode(), 200),
    ("POST", "/outcomes", json.dumps([{"request_id": "4f9c2a7e1b3d5a60", "outcome": "maybe"}]).encode(), 422),
)


def bad_model_infer() -> pb.ModelInferRequest:
    """A ``ModelInfer`` request the service refuses (INVALID_ARGUMENT): 8 bytes of FP64 for a [1, 9] tensor."""
    bad = pb.ModelInferRequest(model_name="oncology", raw_input_contents=[b"\0" * 8])
    bad.inputs.add(name="tumor", datatype="FP64", shape=[1, 9])
    return bad


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


#: What a worker with gRPC on imports (`worker_libraries`: the shared libraries that maps).
_WORKER_IMPORTS = "import oncology.serving, oncology.webservice.server, oncology.webservice.grpc, uvloop, httptools"


def worker_libraries() -> list[Path]:
    """The shared libraries of the virtual environment that a worker with gRPC on maps (its extension modules)."""
    done = bench.run([sys.executable, "-c", f"{_WORKER_IMPORTS}; print(open('/proc/self/maps').read())"],
                     "the worker's imports", env=bench.clean_env())
    environment = Path(sys.prefix).resolve()
    found = {Path(fields[5]) for fields in map(str.split, done.stdout.splitlines()) if len(fields) > 5}
    return sorted(path for path in found if path.is_relative_to(environment) and ".so" in path.name)


def drop_page_cache(libraries: list[Path]) -> None:
    """Drop the cached pages of ``libraries`` that no process maps: the next process reads them from disk."""
    for path in libraries:
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(descriptor)


def one_round(store: Path, grpc_on: bool, calls: int, modules: bool) -> dict[str, Any]:
    port, grpc_port = bench.free_port(), bench.free_port() if grpc_on else 0
    env = {**bench.clean_env(), "ONCOLOGY_STORE": str(store), "ONCOLOGY_GRPC_PORT": str(grpc_port),
           "ONCOLOGY_DRAIN_SECONDS": "0", "ONCOLOGY_OUTCOMES": "true", **({"PYTHONPROFILEIMPORTTIME": "1"} if modules else {})}
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
                try:
                    stub.ModelInfer(bad_model_infer(), timeout=10)
                except grpc.RpcError as exc:
                    if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
                        raise bench.BenchError(f"a bad ModelInfer answered {exc.code()}: {exc.details()}") from None
                else:
                    raise bench.BenchError("a bad ModelInfer was answered")
        for method, path, payload, expected in OCCASIONAL:
            status, answer = bench.http_call(port, bench.raw_request(method, path, payload))
            if status != expected:
                raise bench.BenchError(f"{method} {path} answered {status}, not {expected}: {answer[:200]!r}")
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


def parts_mb(store: Path) -> list[float]:
    """``VmRSS`` of a fresh interpreter (started as ``oncology serve`` is), then after each of `PARTS` in turn."""
    done = bench.run([sys.executable, "-c", _PARTS_PROGRAM, str(store), json.dumps([code for _, code, _ in PARTS])],
                     "the parts' imports", env=bench.clean_env())
    found: list[float] = json.loads(done.stdout)
    return found


def report_parts(store: Path, rounds: int) -> None:
    runs = [parts_mb(store) for _ in range(rounds)]
    fresh = statistics.median(r[0] for r in runs)
    print(f"\n| a worker's parts, imported in turn (medians of {rounds} rounds) | VmRSS grows by, MB |")
    print("| --- | --- |")
    print(f"| a fresh interpreter | {fresh:.1f} |")
    for i, (label, _, _) in enumerate(PARTS, start=1):
        print(f"| {label} | {statistics.median(r[i] - r[i - 1] for r in runs):.1f} |")
    pydantic = [i for i, (_, _, of_pydantic) in enumerate(PARTS, start=1) if of_pydantic]
    print(f"| (pydantic's part, which a worker does not load) | "
          f"{statistics.median(sum(r[i] - r[i - 1] for i in pydantic) for r in runs):.1f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="servers started for each setting")
    parser.add_argument("--calls", type=int, default=1_000, help="/predict requests (and ModelInfer calls) per round")
    parser.add_argument("--modules", action="store_true", help="list what the worker imported and its largest mappings")
    parser.add_argument("--parts", action="store_true", help="where a worker's memory goes, part by part (no server)")
    parser.add_argument("--page-cache", choices=("as-is", "read"), default="as-is",
                        help="the state of the worker's libraries in the page cache before each round (module docstring)")
    args = parser.parse_args()
    store = bench.RESULTS / "memory-store"
    bench.make_store(store)
    if args.parts:
        report_parts(store, args.rounds)
        return 0
    libraries = worker_libraries() if args.page_cache == "read" else []
    if libraries:
        bench.say(f"page cache before each round: {args.page_cache} ({len(libraries)} libraries: "
                  + ", ".join(path.name.split(".")[0] for path in libraries) + ")")
    rows = []
    try:
        for grpc_on in (False, True):
            rounds = []
            for _ in range(args.rounds):
                drop_page_cache(libraries)
                rounds.append(one_round(store, grpc_on, args.calls, args.modules))

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
    print(f"\n| one worker, medians of {args.rounds} rounds, page cache {args.page_cache}, MB | VmRSS idle | VmRSS after {args.calls:,} calls | "
          "VmHWM | anonymous | file-backed |")
    print("| --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
