"""The service's own share of a gRPC call: ``ModelInfer`` on the service's handler with no transport.

In one process: the app of ``oncology serve`` with gRPC on (its model, metrics and access log, which writes to
stderr: send it to /dev/null), a single-row raw-contents request parsed from its wire bytes as the server parses
it, ``InferenceService.ModelInfer`` awaited, the answer serialized; ``--calls`` times after a warm-up. Reported:
CPU µs a call; ``--profile`` adds cProfile's top functions (which inflate the time several fold).

    .venv/bin/python benchmarks/grpc_handler.py --store STORE [--calls 20000] [--profile] 2> /dev/null
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import struct
import time
from typing import Any

import run as bench  # benchmarks/run.py: this script's folder is on sys.path

from oncology.settings import ServeSettings
from oncology.webservice.app import create_app
from oncology.webservice.grpc import _lenient
from oncology.webservice.proto import grpc_predict_v2_pb2 as pb


class _Context:
    def invocation_metadata(self) -> tuple[Any, ...]:
        return ()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    app = create_app(ServeSettings(store=args.store, grpc_port=1))  # the port is never bound here
    app.holder.load()
    service = app.router.state.grpc.service
    request = pb.ModelInferRequest(model_name="oncology", raw_input_contents=[struct.pack("<9q", *bench.EXAMPLE.values())])
    request.inputs.add(name="tumor", datatype="INT64", shape=[1, 9])
    wire, parse, context = request.SerializeToString(), _lenient(pb.ModelInferRequest), _Context()

    async def calls(n: int) -> None:
        for _ in range(n):
            answer = await service.ModelInfer(parse(wire), context)
            answer.SerializeToString()

    async def run() -> None:
        await calls(200)
        start = time.process_time()
        await calls(args.calls)
        cpu = time.process_time() - start
        print(f"ModelInfer, one row, no transport: {cpu / args.calls * 1e6:.1f} CPU µs a call ({args.calls} calls)")
        if args.profile:
            profile = cProfile.Profile()
            profile.enable()
            await calls(args.calls)
            profile.disable()
            out = io.StringIO()
            pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(20)
            print(out.getvalue())

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
