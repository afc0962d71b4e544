"""The gRPC floor: a gRPC server answering ``ModelInfer`` with a precomputed answer of the service's shape (the
three outputs of one row, raw contents), so that whatever the service costs above it is its own work.

``--server`` picks the server (default ``aio``, the one the service runs):

- ``aio``: grpcio's asyncio server, its handlers registered as the service registers them;
- ``sync``: grpcio's thread-pool server (``grpc.server``), ``--threads`` workers, the same handlers, synchronous;
- ``grpclib``: grpclib's server (pure-Python gRPC over asyncio and h2); grpclib is not a project dependency:
  run it from a venv of its own (`grpc_floors.py` makes one) with ``src`` on ``PYTHONPATH`` for the messages.

``--loop`` is the event loop of ``aio`` and ``grpclib``: ``uvloop`` (the service's) or ``asyncio``.  Each
handler parses the request and serializes the answer, as any real handler must (grpcio through the handler's
(de)serializers, grpclib through its protobuf codec).  `grpc_v2.py --floor` and `grpc_floors.py` run it; ready
when it answers a ``ModelInfer``.

    .venv/bin/python benchmarks/grpc_floor.py PORT [--server aio|sync|grpclib] [--threads N] [--loop uvloop|asyncio]
"""

from __future__ import annotations

import argparse
import asyncio
import struct
from concurrent import futures
from typing import Any

from oncology.webservice.proto import grpc_predict_v2_pb2 as pb

SERVICE = "inference.GRPCInferenceService"


def answer() -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(model_name="oncology", model_version="1.0.1")
    for name, datatype in (("label", "BYTES"), ("probability", "FP64"), ("decision", "BYTES")):
        response.outputs.add(name=name, datatype=datatype, shape=[1])
    benign = struct.pack("<I", 6) + b"benign"
    response.raw_output_contents.extend([benign, struct.pack("<d", 0.0344), benign])
    return response


def _grpcio_handlers(model_infer: Any) -> dict[str, Any]:
    import grpc

    return {"ModelInfer": grpc.unary_unary_rpc_method_handler(
        model_infer, request_deserializer=pb.ModelInferRequest.FromString,
        response_serializer=pb.ModelInferResponse.SerializeToString)}


async def serve_aio(port: int) -> None:
    import grpc
    from grpc import aio

    constant = answer()

    async def model_infer(request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        return constant

    handlers = _grpcio_handlers(model_infer)
    server = aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def serve_sync(port: int, threads: int) -> None:
    import grpc

    constant = answer()

    def model_infer(request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        return constant

    handlers = _grpcio_handlers(model_infer)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


async def serve_grpclib(port: int) -> None:
    from grpclib.const import Cardinality, Handler
    from grpclib.server import Server

    constant = answer()

    class Inference:
        async def model_infer(self, stream: Any) -> None:
            await stream.recv_message()
            await stream.send_message(constant)

        def __mapping__(self) -> dict[str, Handler]:
            return {f"/{SERVICE}/ModelInfer": Handler(
                self.model_infer, Cardinality.UNARY_UNARY, pb.ModelInferRequest, pb.ModelInferResponse)}

    server = Server([Inference()])
    await server.start("127.0.0.1", port)
    await server.wait_closed()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--server", choices=["aio", "sync", "grpclib"], default="aio", help="(default aio)")
    parser.add_argument("--threads", type=int, default=1, help="sync: the thread pool's workers (default 1)")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop", help="aio, grpclib (default uvloop)")
    args = parser.parse_args()
    if args.server == "sync":
        serve_sync(args.port, args.threads)
        return
    if args.loop == "uvloop":
        import uvloop

        uvloop.install()
    asyncio.run(serve_aio(args.port) if args.server == "aio" else serve_grpclib(args.port))


if __name__ == "__main__":
    main()
