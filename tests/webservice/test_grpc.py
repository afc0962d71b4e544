"""The Open Inference Protocol over gRPC, as its standard client (`tritonclient.grpc`, with its defaults)
and the protocol's own messages see it, against the real `oncology serve` process."""

from __future__ import annotations

import base64
import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as tg
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from oncology.trainer.pipeline import run_training
from oncology_model import FEATURES
from oncology_model.registry import ModelRegistry
from oncology_model.storage import LocalStore, open_store
from support import fast_settings

from .conftest import EXAMPLE, MALIGNANT, Edges, Server, dataset_rows, free_port, running_server

INFER = "/inference.GRPCInferenceService/ModelInfer"
ROW = [EXAMPLE[f] for f in FEATURES]
HEALTH_SERVING = health_pb2.HealthCheckResponse.SERVING


class Grpc:
    """A server process with its gRPC port, and a channel to it."""

    def __init__(self, server: Server, port: int) -> None:
        self.server = server
        self.target = f"127.0.0.1:{port}"
        self.client = tg.InferenceServerClient(self.target)
        self.channel = grpc.insecure_channel(self.target)
        self.stub = pb_grpc.GRPCInferenceServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def close(self) -> None:
        self.client.close()
        self.channel.close()


def grpc_env(store: Path | str, **more: str) -> tuple[dict[str, str], int]:
    port = free_port()
    return {"ONCOLOGY_STORE": str(store), "ONCOLOGY_GRPC_PORT": str(port), **more}, port


@pytest.fixture(scope="module")
def live_grpc(banded_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Grpc]:
    """One real server (the model with a referral band) with gRPC on, for the read-only tests of this module."""
    env, port = grpc_env(banded_store)
    with running_server(tmp_path_factory.mktemp("grpc"), env) as server:
        g = Grpc(server, port)
        try:
            yield g
        finally:
            g.close()


def tensor(rows: Any, datatype: str = "INT64") -> tg.InferInput:
    array = np.asarray(rows, dtype={"INT64": np.int64, "INT32": np.int32, "FP32": np.float32, "FP64": np.float64}[datatype])
    tumor = tg.InferInput("tumor", list(array.shape), datatype)
    tumor.set_data_from_numpy(array)  # tritonclient's way: raw_input_contents
    return tumor


def typed_request(rows: list[list[Any]], datatype: str = "INT64", **fields: Any) -> pb.ModelInferRequest:
    """A request with typed contents (the protocol's other form), built from the standard client's messages."""
    request = pb.ModelInferRequest(model_name="oncology", **fields)
    tumor = request.inputs.add(name="tumor", datatype=datatype, shape=[len(rows), len(FEATURES)])
    field = {"INT64": "int64_contents", "INT32": "int_contents", "FP32": "fp32_contents", "FP64": "fp64_contents"}[datatype]
    getattr(tumor.contents, field).extend([v for row in rows for v in row])
    return request


def v2_rest(server: Server, rows: list[list[int]]) -> dict[str, Any]:
    body = {"inputs": [{"name": "tumor", "shape": [len(rows), len(FEATURES)], "datatype": "INT64", "data": rows}]}
    answer = httpx.post(f"{server.url}/v2/models/oncology/infer", json=body)
    assert answer.status_code == 200, answer.text
    return {o["name"]: o["data"] for o in answer.json()["outputs"]} | {"model_version": answer.json()["model_version"]}


def code_of(call: Any) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code(), exc.details()
    return grpc.StatusCode.OK, ""


# ---- answers --------------------------------------------------------------------------------------------


def test_tritonclient_raw_contents_answer_as_the_rest_v2_route_referrals_included(live_grpc: Grpc, edges: Edges) -> None:
    rows = [[r[f] for f in FEATURES] for r in edges.rows] + [list(r) for r in dataset_rows()]
    result = live_grpc.client.infer("oncology", [tensor(rows)], request_id="abc-1")
    rest = v2_rest(live_grpc.server, rows)
    labels = [v.decode() for v in result.as_numpy("label")]
    decisions = [v.decode() for v in result.as_numpy("decision")]
    assert labels == rest["label"] and decisions == rest["decision"]
    assert result.as_numpy("probability").tolist() == rest["probability"]  # the same float64, bit for bit
    assert list(zip(labels, decisions))[: len(edges.expected)] == edges.expected  # the band's refer decisions
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == ("oncology", rest["model_version"], "abc-1")
    assert [o.shape for o in response.outputs] == [[len(rows)]] * 3
    assert len(response.raw_output_contents) == 3  # a raw request gets raw outputs, as Triton answers


@pytest.mark.parametrize("datatype", ["INT64", "INT32", "FP32", "FP64"])
def test_every_input_datatype_typed_and_raw_gives_the_same_answer(live_grpc: Grpc, datatype: str) -> None:
    rows = [ROW, [MALIGNANT[f] for f in FEATURES]]
    raw = live_grpc.client.infer("oncology", [tensor(rows, datatype)])
    typed = live_grpc.stub.ModelInfer(typed_request(rows, datatype))
    assert not typed.raw_output_contents  # a typed request gets typed outputs
    # (not read through tg.InferResult: tritonclient 2.73 fails on typed BYTES outputs under numpy 2, and
    # Triton itself always answers raw)
    label, probability, decision = typed.outputs
    assert [o.name for o in typed.outputs] == ["label", "probability", "decision"]
    assert list(label.contents.bytes_contents) == raw.as_numpy("label").tolist() == [b"benign", b"malignant"]
    assert list(decision.contents.bytes_contents) == raw.as_numpy("decision").tolist()
    assert list(probability.contents.fp64_contents) == raw.as_numpy("probability").tolist()


def test_requested_outputs_only_and_an_empty_batch(live_grpc: Grpc) -> None:
    wanted = [tg.InferRequestedOutput("probability")]
    result = live_grpc.client.infer("oncology", [tensor([ROW])], outputs=wanted)
    assert [o.name for o in result.get_response().outputs] == ["probability"]
    empty = live_grpc.stub.ModelInfer(typed_request([]))
    assert [(o.name, list(o.shape)) for o in empty.outputs] == [("label", [0]), ("probability", [0]), ("decision", [0])]


def test_metadata_and_readiness_rpcs_say_what_the_rest_routes_say(live_grpc: Grpc) -> None:
    client, url = live_grpc.client, live_grpc.server.url
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("oncology")
    model = httpx.get(f"{url}/v2/models/oncology").json()
    assert client.is_model_ready("oncology", model["versions"][0])
    meta = client.get_model_metadata("oncology", as_json=True)
    assert (meta["name"], meta["versions"], meta["platform"]) == (model["name"], model["versions"], model["platform"])
    assert [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in meta["inputs"] + meta["outputs"]] == [
        (t["name"], t["datatype"], t["shape"]) for t in model["inputs"] + model["outputs"]]
    server = client.get_server_metadata(as_json=True)
    assert (server["name"], server["version"]) == ("oncology", httpx.get(f"{url}/v2").json()["version"])
    answer = live_grpc.health.Check(health_pb2.HealthCheckRequest(service=""))
    assert answer.status == HEALTH_SERVING
    answer = live_grpc.health.Check(health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService"))
    assert answer.status == HEALTH_SERVING


def test_the_committed_code_is_what_make_proto_generates(tmp_path: Path) -> None:
    proto = Path(__file__).resolve().parents[2] / "src" / "oncology" / "webservice" / "proto"
    copy = tmp_path / "oncology" / "webservice" / "proto"
    copy.mkdir(parents=True)
    for name in ("grpc_predict_v2.proto", "generate.sh"):
        shutil.copy2(proto / name, copy / name)
    subprocess.run([str(copy / "generate.sh")], env={**os.environ, "PYTHON": sys.executable}, check=True)
    generated = sorted(p.name for p in copy.glob("*_pb2*"))
    assert generated == ["grpc_predict_v2_pb2.py", "grpc_predict_v2_pb2.pyi", "grpc_predict_v2_pb2_grpc.py"]
    for name in generated:
        assert (copy / name).read_text() == (proto / name).read_text(), f"{name}: run make proto"


# ---- errors: a status code and a message naming the field --------------------------------------------------


def _raw(request: pb.ModelInferRequest, data: bytes) -> pb.ModelInferRequest:
    request.inputs[0].ClearField("contents")
    request.raw_input_contents.append(data)
    return request


ROW_BYTES = np.asarray([ROW], dtype=np.int64).tobytes()
INVALID = grpc.StatusCode.INVALID_ARGUMENT
CASES: list[tuple[str, Any, grpc.StatusCode, str]] = [
    ("no input", lambda: pb.ModelInferRequest(model_name="oncology"), INVALID, "inputs: expected exactly one"),
    ("wrong name", lambda: _rename(typed_request([ROW]), "x"), INVALID, "inputs[0].name"),
    ("two inputs", lambda: _twice(typed_request([ROW])), INVALID, "inputs: expected exactly one input tensor"),
    ("datatype", lambda: _retype(typed_request([ROW]), "BYTES"), INVALID, "inputs[0].datatype: 'BYTES'"),
    ("shape rank", lambda: _reshape(typed_request([ROW]), [9]), INVALID, "inputs[0].shape must be [N, 9], got [9]"),
    ("shape width", lambda: _reshape(typed_request([ROW]), [1, 8]), INVALID, "inputs[0].shape must be [N, 9]"),
    ("negative rows", lambda: _reshape(typed_request([ROW]), [-1, 9]), INVALID, "inputs[0].shape"),
    ("too few values", lambda: _reshape(typed_request([ROW]), [2, 9]), INVALID,
     "inputs[0].contents.int64_contents: 9 values, but shape [2, 9] needs 18"),
    ("contents of another type", lambda: _retype(typed_request([ROW]), "FP64"), INVALID,
     "inputs[0].contents.int64_contents: datatype FP64 takes its values in inputs[0].contents.fp64_contents"),
    ("out of range", lambda: typed_request([[*ROW[:8], 11]]), INVALID,
     "inputs[0].contents.int64_contents[8]: mitoses of row 0 is 11, not a whole number 1-10"),
    ("not whole", lambda: typed_request([[2.5, *ROW[1:]]], "FP64"), INVALID,
     "inputs[0].contents.fp64_contents[0]: clump_thickness of row 0 is 2.5"),
    ("nan", lambda: typed_request([[float("nan"), *ROW[1:]]], "FP32"), INVALID, "inputs[0].contents.fp32_contents[0]"),
    ("raw size", lambda: _raw(typed_request([ROW]), ROW_BYTES[:-1]), INVALID,
     "raw_input_contents[0]: 71 bytes, but shape [1, 9] of INT64 needs 72"),
    ("raw and typed", lambda: _both(typed_request([ROW])), INVALID, "inputs[0].contents: give the values either"),
    ("raw twice", lambda: _raw(_raw(typed_request([ROW]), ROW_BYTES), ROW_BYTES), INVALID,
     "raw_input_contents: 2 entries for the 1 input"),
    ("raw out of range", lambda: _raw(typed_request([ROW]), np.asarray([[0] * 9], dtype=np.int64).tobytes()), INVALID,
     "raw_input_contents[0][0]: clump_thickness of row 0 is 0"),
    ("unknown output", lambda: _want(typed_request([ROW]), "label", "colour"), INVALID, "outputs[1].name: unknown output 'colour'"),
    ("unknown model", lambda: _model(typed_request([ROW]), "other", ""), grpc.StatusCode.NOT_FOUND,
     "model 'other' is not served here"),
    ("unknown version", lambda: _model(typed_request([ROW]), "oncology", "9.9.9"), grpc.StatusCode.NOT_FOUND,
     "model 'oncology' version '9.9.9' is not served here"),
    ("over max_batch", lambda: _reshape(typed_request([]), [10_001, 9]), grpc.StatusCode.RESOURCE_EXHAUSTED,
     "inputs[0].shape: 10001 rows; at most 10000"),
    ("huge shape", lambda: _reshape(typed_request([]), [2**62, 9]), grpc.StatusCode.RESOURCE_EXHAUSTED, "rows; at most"),
    ("over max_batch_body_bytes", lambda: _raw(typed_request([]), bytes(9 << 20)), grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
]


def _rename(r: pb.ModelInferRequest, name: str) -> pb.ModelInferRequest:
    r.inputs[0].name = name
    return r


def _twice(r: pb.ModelInferRequest) -> pb.ModelInferRequest:
    r.inputs.append(r.inputs[0])
    return r


def _retype(r: pb.ModelInferRequest, datatype: str) -> pb.ModelInferRequest:
    r.inputs[0].datatype = datatype
    return r


def _reshape(r: pb.ModelInferRequest, shape: list[int]) -> pb.ModelInferRequest:
    del r.inputs[0].shape[:]
    r.inputs[0].shape.extend(shape)
    return r


def _both(r: pb.ModelInferRequest) -> pb.ModelInferRequest:
    r.raw_input_contents.append(ROW_BYTES)
    return r


def _want(r: pb.ModelInferRequest, *names: str) -> pb.ModelInferRequest:
    for name in names:
        r.outputs.add(name=name)
    return r


def _model(r: pb.ModelInferRequest, name: str, version: str) -> pb.ModelInferRequest:
    r.model_name, r.model_version = name, version
    return r


@pytest.mark.parametrize(("case", "build", "code", "message"), CASES, ids=[c[0] for c in CASES])
def test_a_bad_request_is_a_status_code_naming_the_field(
    live_grpc: Grpc, case: str, build: Any, code: grpc.StatusCode, message: str
) -> None:
    got, details = code_of(lambda: live_grpc.stub.ModelInfer(build()))
    assert got == code, details
    assert message in details
    assert live_grpc.stub.ModelInfer(typed_request([ROW])).model_name == "oncology"  # still serving


def test_the_standard_client_sees_the_same_codes(live_grpc: Grpc) -> None:
    with pytest.raises(tg.InferenceServerException) as caught:
        live_grpc.client.infer("oncology", [tensor([[0] * 9])])
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT" and "clump_thickness of row 0" in caught.value.message()
    with pytest.raises(tg.InferenceServerException) as caught:
        live_grpc.client.get_model_metadata("resnet")
    assert caught.value.status() == "StatusCode.NOT_FOUND"


def test_a_frame_that_is_not_a_message_is_invalid_argument_and_the_server_goes_on(live_grpc: Grpc) -> None:
    send_bytes = live_grpc.channel.unary_unary(INFER, request_serializer=None, response_deserializer=None)
    for garbage in (b"\xff\xff\xff", b"\x0a\xff\xff\xff\xff\x0f", b"\x2a\x05\x0a\x03", bytes(range(256))):
        got, details = code_of(lambda garbage=garbage: send_bytes(garbage))
        assert got == grpc.StatusCode.INVALID_ARGUMENT, details
        assert "not a valid inference.ModelInferRequest message" in details
    assert live_grpc.client.is_server_live()


# ---- server reflection: a client with no .proto (as grpcurl) -------------------------------------------------


def _reflected_infer(target: str, rows: list[list[int]]) -> tuple[list[str], Any]:
    """What grpcurl does: list the services, resolve ModelInfer's messages from the server's descriptors,
    build the request from them (not from any generated code) and call it."""
    from google.protobuf import descriptor_pool, json_format, message_factory
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    with grpc.insecure_channel(target) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = sorted(database.get_services())
        pool = descriptor_pool.DescriptorPool(database)
        method = pool.FindServiceByName("inference.GRPCInferenceService").methods_by_name["ModelInfer"]
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        request = json_format.ParseDict({
            "model_name": "oncology",
            "inputs": [{"name": "tumor", "datatype": "INT64", "shape": [len(rows), len(FEATURES)],
                        "contents": {"int64_contents": [v for row in rows for v in row]}}],
        }, request_class())
        call = channel.unary_unary(INFER, request_serializer=request_class.SerializeToString,
                                   response_deserializer=response_class.FromString)
        return services, json_format.MessageToDict(call(request, timeout=10))


def test_reflection_lets_a_client_without_the_proto_list_and_call_the_services(live_grpc: Grpc) -> None:
    malignant = [MALIGNANT[f] for f in FEATURES]
    services, answer = _reflected_infer(live_grpc.target, [ROW, malignant])
    assert services == ["grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                        "inference.GRPCInferenceService"]
    outputs = {o["name"]: o["contents"] for o in answer["outputs"]}
    typed = live_grpc.client.infer("oncology", [tensor([ROW, malignant])])
    assert [base64.b64decode(label) for label in outputs["label"]["bytesContents"]] == [b"benign", b"malignant"]
    assert typed.as_numpy("label").tolist() == [b"benign", b"malignant"]
    assert outputs["probability"]["fp64Contents"] == typed.as_numpy("probability").tolist()


def test_reflection_off_is_unimplemented_and_inference_goes_on(trained_store: Path, tmp_path: Path) -> None:
    env, port = grpc_env(trained_store, ONCOLOGY_GRPC_REFLECTION="false")
    with running_server(tmp_path, env) as server:
        g = Grpc(server, port)
        try:
            with pytest.raises(grpc.RpcError) as caught:
                _reflected_infer(g.target, [ROW])
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]
            assert g.client.infer("oncology", [tensor([ROW])]).as_numpy("label").tolist() == [b"benign"]
        finally:
            g.close()


# ---- KServe's client (InferenceGRPCClient), in a venv of its own ----------------------------------------------

KSERVE = Path(__file__).parent / "kserve_client"


@pytest.fixture(scope="session")
def kserve_python() -> Path:
    """The Python of a venv holding KServe's SDK (kserve_client/requirements.txt), made with uv once and
    kept in .venv/kserve-client until the requirements change."""
    import fcntl

    venv = Path(sys.prefix) / "kserve-client"
    want = (KSERVE / "requirements.txt").read_text()
    with open(Path(sys.prefix) / "kserve-client.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp = venv / "requirements.txt"
        if not (stamp.is_file() and stamp.read_text() == want):
            shutil.rmtree(venv, ignore_errors=True)
            uv = str(Path(sys.executable).parent / "uv")
            subprocess.run([uv, "venv", "-q", "-p", sys.executable, str(venv)], check=True, timeout=300)
            subprocess.run([uv, "pip", "install", "-q", "--no-deps", "-r", str(KSERVE / "requirements.txt")],
                           env={**os.environ, "VIRTUAL_ENV": str(venv)}, check=True, timeout=900)
            stamp.write_text(want)
    return venv / "bin" / "python"


def test_kserves_client_gets_the_rest_v2_answers_raw_and_typed_and_the_codes(
        live_grpc: Grpc, kserve_python: Path) -> None:
    rows = [ROW, [MALIGNANT[f] for f in FEATURES]]
    proc = subprocess.run([str(kserve_python), str(KSERVE / "call.py"), live_grpc.target, json.dumps(rows)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = json.loads(proc.stdout)
    assert (said["live"], said["ready"], said["model_ready"]) == (True, True, True)
    rest = v2_rest(live_grpc.server, rows)
    assert set(rest["label"]) == {"benign", "malignant"}  # both classes, as the rows were chosen
    version = rest.pop("model_version")
    for contents in ("raw", "typed"):
        assert said[contents] == {"model_version": version, "outputs": rest}, contents
    code, message = said["bad_shape"]
    assert code == "INVALID_ARGUMENT" and "shape" in message, message
    code, message = said["unknown_model"]
    assert code == "NOT_FOUND" and "no-such-model" in message, message


# ---- the same auth, metrics, prediction log, hot reload and drain as REST ---------------------------------


def test_a_token_is_required_in_the_metadata_when_tokens_are_on(trained_store: Path, tmp_path: Path) -> None:
    env, port = grpc_env(trained_store, ONCOLOGY_API_TOKENS="s3cret,other")
    with running_server(tmp_path, env) as server:
        g = Grpc(server, port)
        try:
            for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "s3cret"}):
                with pytest.raises(tg.InferenceServerException) as caught:
                    g.client.infer("oncology", [tensor([ROW])], headers=headers)
                assert caught.value.status() == "StatusCode.UNAUTHENTICATED", headers
                assert "authorization: Bearer <token>" in caught.value.message()
            answer = g.client.infer("oncology", [tensor([ROW])], headers={"authorization": "Bearer other"})
            assert answer.as_numpy("label").tolist() == [b"benign"]
            assert g.client.is_model_ready("oncology")  # metadata and health stay open, as over REST
        finally:
            g.close()


def test_calls_are_counted_by_method_and_code_and_predictions_logged_with_the_rest(
    trained_store: Path, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    env, port = grpc_env(trained_store, ONCOLOGY_PREDICTION_LOG="true", ONCOLOGY_PREDICTION_LOG_STORE=str(logs))
    with running_server(tmp_path, env) as server:
        g = Grpc(server, port)
        try:
            g.client.infer("oncology", [tensor([ROW, ROW, [MALIGNANT[f] for f in FEATURES]])], request_id="r1",
                           headers={"x-request-id": "grpc-1"})
            g.stub.ModelInfer(typed_request([ROW]), metadata=(("x-request-id", "grpc-2"),))
            assert code_of(lambda: g.stub.ModelInfer(typed_request([[0] * 9])))[0] == INVALID
            assert httpx.post(f"{server.url}/predict", json=EXAMPLE, headers={"x-request-id": "http-1"}).status_code == 200
            metrics = httpx.get(f"{server.url}/metrics").text
        finally:
            g.close()
    assert 'oncology_grpc_requests_total{code="OK",method="ModelInfer"} 2.0' in metrics
    assert 'oncology_grpc_requests_total{code="INVALID_ARGUMENT",method="ModelInfer"} 1.0' in metrics
    assert 'oncology_grpc_request_duration_seconds_count{code="OK",method="ModelInfer"} 2.0' in metrics
    assert 'oncology_predictions_total{prediction="benign"} 4.0' in metrics  # 3 over gRPC, 1 over HTTP
    assert 'oncology_predictions_total{prediction="malignant"} 1.0' in metrics
    store = open_store(str(logs))  # the server has stopped: everything is written
    records = [json.loads(line) for key in store.list("monitoring/predictions/")
               for line in gzip.decompress(store.read(key)).splitlines()]
    by_request = sorted((r["request_id"], r["route"]) for r in records)
    assert by_request == [("grpc-1", INFER), ("grpc-1", INFER), ("grpc-1", INFER), ("grpc-2", INFER),
                          ("http-1", "/predict")]
    access = [json.loads(line) for line in server.logs().splitlines()
              if line.startswith("{") and '"oncology.access"' in line and '"grpc"' in line]
    assert [(a["route"], a["grpc_status"], a["status"]) for a in access if a["route"] == INFER] == [
        (INFER, "OK", 200), (INFER, "OK", 200), (INFER, "INVALID_ARGUMENT", 400)]


def test_a_promotion_reaches_grpc_answers_without_a_restart(trained_store: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(trained_store, store)
    run_training(fast_settings(store, seed=7))  # 1.0.2, not promoted
    env, port = grpc_env(store, ONCOLOGY_RELOAD_INTERVAL="0.1")
    del env["ONCOLOGY_GRPC_PORT"]  # the command line's option instead
    with running_server(tmp_path, env, "--grpc-port", str(port)) as server:
        assert f"gRPC (Open Inference Protocol): 127.0.0.1:{port}" in server.logs()
        g = Grpc(server, port)
        try:
            assert g.client.infer("oncology", [tensor([ROW])]).get_response().model_version == "1.0.1"
            ModelRegistry(LocalStore(store)).promote("1.0.2")
            deadline = time.monotonic() + 20
            while g.client.infer("oncology", [tensor([ROW])]).get_response().model_version != "1.0.2":
                assert time.monotonic() < deadline, "gRPC never answered with the promoted model"
                time.sleep(0.05)
            assert g.client.is_model_ready("oncology", "1.0.2") and not _ready(g, "1.0.1")
        finally:
            g.close()


def _ready(g: Grpc, version: str) -> bool:
    try:
        return bool(g.client.is_model_ready("oncology", version))
    except tg.InferenceServerException as exc:
        assert exc.status() == "StatusCode.NOT_FOUND"
        return False


def test_before_a_model_loads_inference_is_unavailable_and_health_not_serving(serve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    port, s3_port = free_port(), free_port()  # nothing listens on s3_port: the store is down
    server = serve({"ONCOLOGY_STORE": "s3://down/store", "ONCOLOGY_GRPC_PORT": str(port),
                    "AWS_ENDPOINT_URL": f"http://127.0.0.1:{s3_port}", "AWS_ACCESS_KEY_ID": "k",
                    "AWS_SECRET_ACCESS_KEY": "s", "AWS_DEFAULT_REGION": "us-east-1"}, wait=False)
    g = Grpc(server, port)
    try:
        deadline = time.monotonic() + 30
        while code_of(lambda: g.stub.ServerLive(pb.ServerLiveRequest()))[0] != grpc.StatusCode.OK:
            assert server.proc.poll() is None and time.monotonic() < deadline, server.logs()[-2000:]
            time.sleep(0.05)
        assert g.stub.ServerReady(pb.ServerReadyRequest()).ready is False
        assert g.stub.ModelReady(pb.ModelReadyRequest(name="oncology")).ready is False
        got, details = code_of(lambda: g.stub.ModelInfer(typed_request([ROW])))
        assert got == grpc.StatusCode.UNAVAILABLE and "no verified model is loaded yet" in details
        assert g.health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        g.close()


def test_a_grpc_port_in_use_stops_the_start_with_an_error_naming_it(serve, trained_store: Path) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = serve({"ONCOLOGY_STORE": str(trained_store), "ONCOLOGY_GRPC_PORT": str(port)}, wait=False)
        assert server.proc.wait(timeout=60) == 2  # as for a taken HTTP port: one line, before anything serves
    assert server.logs().strip().splitlines() == [
        f"error: cannot listen for gRPC on 127.0.0.1:{port}: Address already in use: another process is listening "
        "there; stop it, or choose another port with --grpc-port or ONCOLOGY_GRPC_PORT"], server.logs()


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_drains_grpc_with_http_then_exits_0(serve, trained_store: Path, workers: int) -> None:  # type: ignore[no-untyped-def]
    env, port = grpc_env(trained_store, ONCOLOGY_DRAIN_SECONDS="2")
    server = serve(env, "--workers", str(workers))
    seen: list[grpc.StatusCode] = []
    details: list[str] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def load() -> None:  # its own channel: calls all through the drain and past the close
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.GRPCInferenceServiceStub(channel)
                deadline = time.monotonic() + 60  # a hang guard
                while not stop.is_set() and time.monotonic() < deadline:
                    got = code_of(lambda: stub.ModelInfer(typed_request([ROW] * 100), timeout=10))
                    seen.append(got[0])
                    if got[0] != grpc.StatusCode.OK:
                        details.append(got[1])
        except BaseException as exc:
            failures.append(exc)

    g = Grpc(server, port)
    threads = [threading.Thread(target=load) for _ in range(2)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while len(seen) < 20:
            assert time.monotonic() < deadline and not failures, failures
            time.sleep(0.01)
        server.proc.send_signal(signal.SIGTERM)
        while g.health.Check(health_pb2.HealthCheckRequest()).status == HEALTH_SERVING:  # draining: not serving ...
            assert time.monotonic() < deadline, "health never turned NOT_SERVING"
            time.sleep(0.02)
        answered = len(seen)
        assert g.client.infer("oncology", [tensor([ROW])]).get_response().model_version == "1.0.1"  # ... yet answering
        assert server.proc.wait(timeout=30) == 0, server.logs()[-3000:]
    finally:
        stop.set()
        for t in threads:
            t.join()
        g.close()
    assert failures == []
    assert len(seen) > answered
    assert seen[:answered].count(grpc.StatusCode.OK) == answered
    # Refused once closed (UNAVAILABLE); a call that reached the server at the very moment it stopped may be
    # CANCELLED by gRPC's core, unprocessed: received, not yet handed to the service (as a connection in the
    # listen backlog of a closing HTTP listener is reset).  Never one that the service began: every call
    # the server logged was answered OK to its client.
    assert set(seen) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}, set(details)
    logged = [json.loads(line) for line in server.logs().splitlines() if line.startswith("{") and f'"{INFER}"' in line]
    assert [a["grpc_status"] for a in logged] == ["OK"] * len(logged)
    assert len(logged) == seen.count(grpc.StatusCode.OK) + 1  # + the call of the main thread
    assert "Traceback" not in server.logs(), server.logs()[-3000:]


# ---- fuzzing the message fields ------------------------------------------------------------------------------

SAFE = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.RESOURCE_EXHAUSTED}
_INT64 = st.integers(-(2**63), 2**63 - 1)
_CONTENTS = {
    "bool_contents": st.booleans(), "int_contents": st.integers(-(2**31), 2**31 - 1), "int64_contents": _INT64,
    "uint_contents": st.integers(0, 2**32 - 1), "uint64_contents": st.integers(0, 2**64 - 1),
    "fp32_contents": st.floats(width=32), "fp64_contents": st.floats(), "bytes_contents": st.binary(max_size=8),
}


_MOSTLY = st.integers(0, 4).map(bool)  # True 4 times in 5
_TYPED = {"INT64": "int64_contents", "INT32": "int_contents", "FP32": "fp32_contents", "FP64": "fp64_contents"}


@st.composite
def infer_requests(draw: st.DrawFn) -> pb.ModelInferRequest:
    """Requests from nearly valid (the right name, datatype and shape, odd values) to anything at all."""
    near = draw(st.booleans())
    request = pb.ModelInferRequest(
        model_name=draw(st.sampled_from(["oncology"]) if near else st.one_of(st.just("oncology"), st.text(max_size=8))),
        model_version="" if near else draw(st.sampled_from(["", "1.0.1", "9"])),
        id=draw(st.text(max_size=8)),
    )
    for _ in range(draw(st.integers(1, 1) if near else st.integers(0, 3))):
        valid_type = near and draw(_MOSTLY)  # near: each field is right 4 times in 5, so one is often wrong alone
        tensor = request.inputs.add(
            name="tumor" if near and draw(_MOSTLY) else draw(st.sampled_from(["tumor", "", "x"])),
            datatype=draw(st.sampled_from(["INT64", "INT32", "FP32", "FP64"] if valid_type else
                                          ["INT64", "INT32", "FP32", "FP64", "BYTES", "BOOL", "UINT8", "FP16", "", "int64"])),
        )
        rows = draw(st.integers(0, 4))
        tensor.shape.extend([rows, 9] if near and draw(_MOSTLY) else draw(st.lists(_INT64, max_size=4)))
        if near or draw(st.booleans()):  # typed contents in one or more fields
            fields = draw(st.lists(st.sampled_from(sorted(_CONTENTS)), min_size=1, max_size=2, unique=True))
            if near and draw(_MOSTLY):
                fields = [_TYPED.get(tensor.datatype, "bytes_contents")]
            for field in fields:
                size = rows * 9 if near and draw(_MOSTLY) else draw(st.integers(0, 40))
                values = _CONTENTS[field]
                if near and field.startswith(("int", "fp")):  # mostly scores, some just out of range
                    kind = float if field.startswith("fp") else int
                    scores = st.integers(1, 10).map(kind)
                    values = scores if draw(st.booleans()) else st.one_of(scores, st.integers(-1, 12).map(kind), values)
                getattr(tensor.contents, field).extend(draw(st.lists(values, min_size=size, max_size=size)))
        if draw(st.booleans()):
            key = draw(st.text(max_size=4))
            tensor.parameters[key].int64_param = draw(_INT64)
    if draw(st.booleans()) and not (near and request.inputs[0].HasField("contents")):  # raw, of any length
        for _ in range(draw(st.integers(1, 2))):
            request.raw_input_contents.append(draw(st.binary(min_size=0, max_size=400)))
    names = ["label", "probability", "decision"] + ([] if near and draw(_MOSTLY) else ["", "x"])
    for name in draw(st.lists(st.sampled_from(names), max_size=3)):
        request.outputs.add(name=name)
    return request


@given(request=infer_requests())
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
def test_fuzzed_requests_get_a_client_error_or_an_answer_never_an_internal_error(
    live_grpc: Grpc, request: pb.ModelInferRequest
) -> None:
    try:
        response = live_grpc.stub.ModelInfer(request, timeout=10)
    except grpc.RpcError as exc:
        assert exc.code() in SAFE, (exc.code(), exc.details())
        assert exc.details(), exc.code()  # a message a client can act on
        event(exc.code().name)
        return
    event("OK")
    rows = request.inputs[0].shape[0]
    assert [list(o.shape) for o in response.outputs] == [[rows]] * len(response.outputs)


@given(frame=st.binary(max_size=300))
@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
def test_fuzzed_frames_never_give_an_internal_error(live_grpc: Grpc, frame: bytes) -> None:
    send_bytes = live_grpc.channel.unary_unary(INFER, request_serializer=None, response_deserializer=None)
    got, details = code_of(lambda: send_bytes(frame, timeout=10))
    assert got in SAFE, (got, details)


def test_after_the_fuzzing_the_server_still_answers_and_logged_no_unhandled_error(live_grpc: Grpc) -> None:
    assert live_grpc.client.infer("oncology", [tensor([ROW])]).as_numpy("label").tolist() == [b"benign"]
    assert httpx.post(f"{live_grpc.server.url}/predict", json=EXAMPLE).status_code == 200
    assert live_grpc.server.proc.poll() is None
    assert "unhandled error" not in live_grpc.server.logs() and "Traceback" not in live_grpc.server.logs()
