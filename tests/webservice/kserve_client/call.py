"""KServe's own gRPC client (``kserve.InferenceGRPCClient``, with its defaults) against a running
``oncology serve``: run by tests/webservice/test_grpc.py with the Python of a venv holding only KServe's SDK
(its copy of the protocol's messages cannot share a process with tritonclient's).

Usage: python call.py TARGET ROWS_JSON; prints one JSON object with what each call answered."""

import asyncio
import json
import sys

import grpc
import numpy as np
from kserve import InferenceGRPCClient, InferInput, InferRequest


async def main(target: str, rows: list[list[int]]) -> dict[str, object]:
    said: dict[str, object] = {}
    async with InferenceGRPCClient(target) as client:
        said["live"] = await client.is_server_live()
        said["ready"] = await client.is_server_ready()
        said["model_ready"] = await client.is_model_ready("oncology")
        for binary in (True, False):  # raw_input_contents, then typed int64_contents
            tumor = InferInput("tumor", [len(rows), len(rows[0])], "INT64")
            tumor.set_data_from_numpy(np.array(rows, dtype=np.int64), binary_data=binary)
            answer = await client.infer(InferRequest("oncology", [tumor], request_id=f"kserve-{binary}"))
            said["raw" if binary else "typed"] = {
                "model_version": answer.model_version,
                "outputs": {o.name: [v.decode() if isinstance(v, bytes) else v for v in o.as_numpy().tolist()]
                            for o in answer.outputs},
            }
        bad = InferInput("tumor", [1, len(rows[0]) - 1], "INT64")
        bad.set_data_from_numpy(np.array([rows[0][:-1]], dtype=np.int64), binary_data=True)
        try:
            await client.infer(InferRequest("oncology", [bad]))
        except grpc.aio.AioRpcError as exc:
            said["bad_shape"] = [exc.code().name, exc.details()]
        try:
            await client.infer(InferRequest("no-such-model", [bad]))
        except grpc.aio.AioRpcError as exc:
            said["unknown_model"] = [exc.code().name, exc.details()]
    return said


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], json.loads(sys.argv[2])))))
