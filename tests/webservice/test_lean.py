"""The service image carries no numpy, scipy, scikit-learn or plotting library: the code it runs must not
need them (the e2e tier found a V2 decoder importing numpy only once the image was built), gRPC included."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import grpc
import httpx
import pytest
from localproc import free_port

from oncology.webservice.proto import grpc_predict_v2_pb2 as pb
from oncology.webservice.proto import grpc_predict_v2_pb2_grpc as pb_grpc

from .conftest import EXAMPLE, stop_server

BLOCKED = ("numpy", "scipy", "sklearn", "pandas", "altair", "vl_convert", "duckdb", "pyarrow", "dask", "distributed")

PROGRAM = """
import sys
for name in {blocked!r}:
    sys.modules[name] = None  # importing any of them now fails, as in the image
from starlette.testclient import TestClient
import oncology.cli, oncology.webservice.server
from oncology.settings import ServeSettings
from oncology.webservice.app import create_app
import socket
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    grpc_port = s.getsockname()[1]
with TestClient(create_app(ServeSettings(store={store!r}, grpc_port=grpc_port))) as client:
    row = [5, 1, 1, 1, 2, 1, 3, 1, 1]
    assert client.post("/predict?explain=true", json=dict(zip(__import__("oncology_model").datamodel.FEATURES, row))).status_code == 200
    import json, struct
    header = json.dumps({{"inputs": [{{"name": "tumor", "shape": [1, 9], "datatype": "INT64",
                                      "parameters": {{"binary_data_size": 72}}}}],
                         "outputs": [{{"name": "probability", "parameters": {{"binary_data": True}}}}]}}).encode()
    answer = client.post("/v2/models/oncology/infer", content=header + struct.pack("<9q", *row),
                         headers={{"inference-header-content-length": str(len(header))}})
    assert answer.status_code == 200, answer.text
    assert client.get("/dashboard").status_code in (200, 404)
    import grpc  # the Open Inference Protocol over gRPC, raw contents
    from oncology.webservice.proto import grpc_predict_v2_pb2 as pb, grpc_predict_v2_pb2_grpc as pb_grpc
    request = pb.ModelInferRequest(model_name="oncology", raw_input_contents=[struct.pack("<9q", *row)])
    request.inputs.add(name="tumor", datatype="INT64", shape=[1, 9])
    with grpc.insecure_channel(f"127.0.0.1:{{grpc_port}}") as channel:
        assert [o.name for o in pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request).outputs] == [
            "label", "probability", "decision"]
print("served without", ", ".join({blocked!r}))
"""


def test_the_service_runs_without_numpy_scipy_sklearn_or_plotting(trained_store: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", PROGRAM.format(blocked=BLOCKED, store=str(trained_store))],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "served without numpy" in proc.stdout


def test_the_service_image_installs_no_query_engine() -> None:
    """The monitoring data plane (DuckDB, pyarrow, Dask) lives in the trainer image, never in the service's."""
    root = Path(__file__).resolve().parents[2] / "deploy" / "docker"
    pinned = {line.split("==")[0].strip().lower() for line in (root / "webservice" / "requirements.txt").read_text().splitlines()
              if "==" in line and not line.startswith("#")}
    engines = {"duckdb", "duckdb-ext-httpfs", "pyarrow", "dask", "distributed", "pandas"}
    assert pinned and not pinned & engines, pinned & engines
    trainer = (root / "trainer" / "requirements.txt").read_text()
    assert all(f"{name}==" in trainer for name in ("duckdb", "duckdb-ext-httpfs", "dask", "distributed"))


# ---- what a serving process holds: `oncology serve` loads no command it will never run ---------------------

#: Modules of the ``oncology`` command tree that serving never runs (Rich is for their tables, and for a
#: warning or an error; Typer for help and usage errors; pydantic-settings for the other commands' settings):
#: `oncology.entry` runs ``oncology serve`` without them.
CLI_ONLY = ("oncology.cli", "oncology.trainer", "oncology.monitoring", "oncology.release", "oncology.gate",
            "oncology.packaging", "rich", "typer", "oncology.serve_cli", "oncology.clihelp", "oncology.pipeline_settings",
            "pydantic_settings")
_IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \| +(\S+)$", re.MULTILINE)


def _imported(log: str) -> set[str]:
    """The modules that processes writing ``log`` imported (``PYTHONPROFILEIMPORTTIME``: one line for each)."""
    return set(_IMPORTED.findall(log))


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_serving_process_with_grpc_on_loads_no_command_line_only_module(serve, trained_store: Path,  # type: ignore[no-untyped-def]
                                                                          workers: str) -> None:
    """Each worker holds what it imports as long as it serves (docs/grpc.md, "Cost": the command tree is ~3 MB of
    resident memory a worker).  With ``--workers 2`` the spawned workers import the console script again."""
    grpc_port = free_port()
    env = {"ONCOLOGY_STORE": str(trained_store), "ONCOLOGY_GRPC_PORT": str(grpc_port), "ONCOLOGY_WORKERS": workers,
           "ONCOLOGY_DRAIN_SECONDS": "0", "PYTHONPROFILEIMPORTTIME": "1"}
    server = serve(env)
    for _ in range(2 * int(workers)):  # some requests reach each worker
        assert httpx.post(f"{server.url}/predict", json=EXAMPLE).status_code == 200
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        request = pb.ModelInferRequest(model_name="oncology", raw_input_contents=[struct.pack("<9q", *EXAMPLE.values())])
        request.inputs.add(name="tumor", datatype="INT64", shape=[1, 9])
        assert [o.name for o in pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request).outputs] == [
            "label", "probability", "decision"]
    stop_server(server)  # a clean stop imports nothing of them either
    assert server.proc.returncode == 0, server.logs()[-3000:]
    imported = _imported(server.logs())
    assert {"oncology.entry", "oncology.serving", "oncology.webservice.grpc", "grpc"} <= imported, sorted(imported)
    assert not {m for m in imported for prefix in CLI_ONLY if m == prefix or m.startswith(prefix + ".")}


def test_every_other_command_line_runs_the_whole_command_tree(tmp_path: Path) -> None:
    """The other side of the dispatch: ``oncology --help`` lists every command, loaded as before."""
    proc = subprocess.run([str(Path(sys.executable).parent / "oncology"), "--help"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1", "COLUMNS": "160"}, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {"oncology.cli", "oncology.release.cli", "rich"} <= _imported(proc.stderr)
    for command in ("train", "models", "serve", "monitoring", "outcomes", "release", "drift", "report"):
        assert re.search(rf"│ {command} ", proc.stdout), (command, proc.stdout)


#: grpcio-reflection's modules: ~0.8 MB of a worker that only a tool such as grpcurl uses (docs/grpc.md, "Cost").
REFLECTION_MODULES = ("grpc_reflection.v1alpha.reflection", "grpc_reflection.v1alpha.reflection_pb2")


def test_grpc_reflection_is_loaded_by_its_first_call_not_at_start_up(serve, trained_store: Path) -> None:  # type: ignore[no-untyped-def]
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    from oncology.webservice.grpc import REFLECTION_SERVICE

    assert REFLECTION_SERVICE == reflection.SERVICE_NAME
    grpc_port = free_port()
    server = serve({"ONCOLOGY_STORE": str(trained_store), "ONCOLOGY_GRPC_PORT": str(grpc_port),
                    "ONCOLOGY_DRAIN_SECONDS": "0", "PYTHONPROFILEIMPORTTIME": "1"})
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        request = pb.ModelInferRequest(model_name="oncology", raw_input_contents=[struct.pack("<9q", *EXAMPLE.values())])
        request.inputs.add(name="tumor", datatype="INT64", shape=[1, 9])
        assert len(pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request).outputs) == 3
        assert health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest()).status == (
            health_pb2.HealthCheckResponse.SERVING)
        assert not _imported(server.logs()) & set(REFLECTION_MODULES)  # served, probed: reflection not loaded
        services = ProtoReflectionDescriptorDatabase(channel).get_services()  # what grpcurl asks first
        assert sorted(services) == ["grpc.health.v1.Health", REFLECTION_SERVICE, "inference.GRPCInferenceService"]
    assert set(REFLECTION_MODULES) <= _imported(server.logs())


# ---- a serving worker without pydantic: ~10 MB of its resident memory (docs/grpc.md, "Cost") ---------------------

#: What a production worker sees once in a while besides predictions, each with the status it must answer: refused
#: bodies on each protocol (REST, batch, SageMaker, V2), the document and its page, a scrape, outcomes good and bad.
OCCASIONAL = (
    ("POST", "/predict", {**EXAMPLE, "mitoses": 11, "bare_nuclei": "x"}, 422),
    ("POST", "/predict", b"{not json", 400),
    ("POST", "/predict", {**EXAMPLE, "extra": 1}, 422),
    ("POST", "/predict", [EXAMPLE], 422),
    ("POST", "/predict/batch", [EXAMPLE, {"clump_thickness": 0}], 422),
    ("POST", "/predict/batch", {"rows": 1}, 422),
    ("POST", "/invocations", {"clump_thickness": 2.5}, 422),
    ("POST", "/v2/models/oncology/infer", {"inputs": [{"name": "tumor", "shape": [1, 9], "datatype": "INT64",
                                                       "data": [5, 1, 1]}]}, 422),
    ("POST", "/v2/models/oncology/infer", {"inputs": "tumor"}, 422),
    ("GET", "/openapi.json", None, 200),
    ("GET", "/docs", None, 200),
    ("GET", "/metrics", None, 200),
    ("POST", "/outcomes", [{"request_id": "4f9c2a7e1b3d5a60", "outcome": "malignant",
                            "observed_at": "2026-12-01T09:30:00+01:00", "source": "lean-test"}], 200),
    ("POST", "/outcomes", [{"request_id": "4f9c2a7e1b3d5a60", "outcome": "maybe", "observed_at": "yesterday"},
                           {"request_id": "x", "outcome": 2, "observed_at": "2026-12-01T09:30:00", "source": "lab"}], 422),
    ("POST", "/outcomes", {"request_id": "x"}, 422),
)
PYDANTIC = ("pydantic", "pydantic_core", "pydantic_settings", "annotated_types")


def test_a_serving_worker_under_its_usual_requests_never_loads_pydantic(serve, trained_store: Path) -> None:  # type: ignore[no-untyped-def]
    grpc_port = free_port()
    server = serve({"ONCOLOGY_STORE": str(trained_store), "ONCOLOGY_GRPC_PORT": str(grpc_port),
                    "ONCOLOGY_OUTCOMES": "true", "ONCOLOGY_API_TOKENS": "t1, t2", "ONCOLOGY_RELOAD_INTERVAL": "0.5",
                    "ONCOLOGY_DRAIN_SECONDS": "0", "PYTHONPROFILEIMPORTTIME": "1"})
    headers = {"Authorization": "Bearer t2", "Content-Type": "application/json"}
    assert httpx.post(f"{server.url}/predict", json=EXAMPLE, headers=headers).status_code == 200
    for method, path, body, status in OCCASIONAL:
        content = body if isinstance(body, bytes) else None if body is None else json.dumps(body).encode()
        answer = httpx.request(method, f"{server.url}{path}", content=content, headers=headers)
        assert answer.status_code == status, (method, path, body, answer.text)
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        request = pb.ModelInferRequest(model_name="oncology", raw_input_contents=[struct.pack("<9q", *EXAMPLE.values())])
        request.inputs.add(name="tumor", datatype="INT64", shape=[1, 9])
        assert len(stub.ModelInfer(request, metadata=(("authorization", "Bearer t1"),)).outputs) == 3
        bad = pb.ModelInferRequest(model_name="oncology", raw_input_contents=[b"\0" * 8])
        bad.inputs.add(name="tumor", datatype="FP64", shape=[1, 9])
        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelInfer(bad, metadata=(("authorization", "Bearer t1"),))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    stop_server(server)
    assert server.proc.returncode == 0, server.logs()[-3000:]
    imported = _imported(server.logs())
    assert {"oncology.serving", "oncology.webservice.outcomes", "oncology.webservice.grpc"} <= imported, sorted(imported)
    assert not {m for m in imported for prefix in PYDANTIC if m == prefix or m.startswith(prefix + ".")}
