"""The service image carries no numpy, scipy, scikit-learn or plotting library: the code it runs must not
need them (the e2e tier found a V2 decoder importing numpy only once the image was built), gRPC included."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
