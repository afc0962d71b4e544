"""The memory benchmark (benchmarks/memory.py) measures what a production worker holds: its workload reaches
everything a worker loads on first use (refused bodies on each protocol, the OpenAPI document and its page, a
scrape, outcome intake), answered as the service answers them; and ``--page-cache read`` finds the libraries a
worker maps and drops them from the page cache without changing them (docs/grpc.md, "Cost")."""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

import grpc
import httpx
import pytest
from localproc import free_port

from oncology.webservice.proto import grpc_predict_v2_pb2 as pb
from oncology.webservice.proto import grpc_predict_v2_pb2_grpc as pb_grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import memory  # noqa: E402  (benchmarks/memory.py)


def test_the_workload_reaches_what_a_worker_loads_on_first_use() -> None:
    requests = {(method, path, status) for method, path, _, status in memory.OCCASIONAL}
    refused = {path for method, path, status in requests if method == "POST" and status in (400, 422)}
    assert {"/predict", "/predict/batch", "/v2/models/oncology/infer", "/outcomes"} <= refused, refused
    assert {("GET", "/openapi.json", 200), ("GET", "/docs", 200), ("GET", "/metrics", 200),
            ("POST", "/outcomes", 200)} <= requests, requests


def test_the_service_answers_the_workload_as_the_benchmark_expects(serve, trained_store: Path,  # type: ignore[no-untyped-def]
                                                                   tmp_path: Path) -> None:
    grpc_port = free_port()
    server = serve({"ONCOLOGY_STORE": str(trained_store), "ONCOLOGY_GRPC_PORT": str(grpc_port), "ONCOLOGY_OUTCOMES": "true",
                    "ONCOLOGY_OUTCOMES_STORE": str(tmp_path / "outcomes"), "ONCOLOGY_DRAIN_SECONDS": "0"})
    for method, path, body, expected in memory.OCCASIONAL:
        answer = httpx.request(method, server.url + path, content=body,
                               headers={"Content-Type": "application/json"} if body else {})
        assert answer.status_code == expected, (method, path, answer.text[:500])
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        with pytest.raises(grpc.RpcError) as refused:
            pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(memory.bad_model_infer(), timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
        good = pb.ModelInferRequest(model_name="oncology", raw_input_contents=[struct.pack("<9q", *range(1, 10))])
        good.inputs.add(name="tumor", datatype="INT64", shape=[1, 9])
        assert len(pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(good, timeout=10).outputs) == 3


def test_the_worker_libraries_are_the_extension_modules_it_maps() -> None:
    names = {path.name.split(".")[0] for path in memory.worker_libraries()}
    assert {"cygrpc", "loop"} <= names, names  # grpcio, uvloop
    assert "_pydantic_core" not in names  # a worker loads no pydantic (docs/grpc.md, "Cost")
    assert all(path.is_relative_to(Path(sys.prefix).resolve()) for path in memory.worker_libraries())


def test_dropping_a_library_from_the_page_cache_changes_nothing_of_it(tmp_path: Path) -> None:
    library = tmp_path / "_fake.cpython-311-x86_64-linux-gnu.so"
    content = bytes(range(256)) * 1_000
    library.write_bytes(content)
    os.sync()  # pages are dropped only once on disk
    before = library.stat()
    memory.drop_page_cache([library])
    after = library.stat()
    assert library.read_bytes() == content
    assert (after.st_ino, after.st_mode, after.st_mtime_ns) == (before.st_ino, before.st_mode, before.st_mtime_ns)
