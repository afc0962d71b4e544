"""The gRPC floor: grpcio's asyncio server (on uvloop, as the service runs it) answering ``ModelInfer`` with a
precomputed answer of the service's shape (the three outputs of one row, raw contents), registered as the
service registers its handlers.  Whatever the service costs above it is its own work.  `grpc_v2.py --floor`
runs it beside the service; ready when it answers a ``ModelInfer``.

    .venv/bin/python benchmarks/grpc_floor.py PORT
"""

from __future__ import annotations

import asyncio
import struct
import sys
from typing import Any

import grpc
import uvloop
from grpc import aio

from oncology.webservice.proto import grpc_predict_v2_pb2 as pb

SERVICE = "inference.GRPCInferenceService"


def answer() -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(model_name="oncology", model_version="1.0.1")
    for name, datatype in (("label", "BYTES"), ("probability", "FP64"), ("decision", "BYTES")):
        response.outputs.add(name=name, datatype=datatype, shape=[1])
    benign = struct.pack("<I", 6) + b"benign"
    response.raw_output_contents.extend([benign, struct.pack("<d", 0.0344), benign])
    return response


async def serve(port: int) -> None:
    constant = answer()

    async def model_infer(request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        return constant

    handlers = {"ModelInfer": grpc.unary_unary_rpc_method_handler(
        model_infer, request_deserializer=pb.ModelInferRequest.FromString,
        response_serializer=pb.ModelInferResponse.SerializeToString)}
    server = aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    uvloop.install()
    asyncio.run(serve(int(sys.argv[1])))
