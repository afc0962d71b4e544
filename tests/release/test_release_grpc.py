"""A release over gRPC, as the V2 protocol's gRPC clients see it: ModelInfer is routed like the REST routes (the
hash of the ``x-routing-key`` metadata entry, else the request id), the answer names its version (``model_version``)
and its arm (trailing metadata), and the prediction log and access log carry the arm; in shadow, the candidate
scores the same rows under the same request id."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from test_service import logged, start
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from webservice.conftest import EXAMPLE, Server, free_port, running_server, stop_server

from oncology_model import FEATURES
from oncology_model.release import bucket

ROW = [EXAMPLE[f] for f in FEATURES]


class Client:
    def __init__(self, port: int) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = pb_grpc.GRPCInferenceServiceStub(self.channel)

    def infer(self, request_id: str, key: str | None = None, version: str = "") -> tuple[str, str | None]:
        """One single-row ModelInfer; the version the answer names and the arm its trailing metadata names."""
        request = pb.ModelInferRequest(model_name="oncology", model_version=version)
        tumor = request.inputs.add(name="tumor", datatype="INT64", shape=[1, len(FEATURES)])
        tumor.contents.int64_contents.extend(ROW)
        metadata = [("x-request-id", request_id), *([("x-routing-key", key)] if key else [])]
        answer, call = self.stub.ModelInfer.with_call(request, metadata=metadata, timeout=10)
        trailers = dict(call.trailing_metadata() or ())
        assert trailers.get("x-model-version", answer.model_version) == answer.model_version
        return answer.model_version, trailers.get("x-model-arm")


@pytest.fixture
def grpc_server(two_versions: Path, tmp_path: Path) -> Iterator[tuple[Server, Client]]:
    port = free_port()
    env = {"ONCOLOGY_STORE": str(two_versions), "ONCOLOGY_RELOAD_INTERVAL": "0.2", "ONCOLOGY_PREDICTION_LOG": "true",
           "ONCOLOGY_PREDICTION_LOG_FLUSH_SECONDS": "3600", "ONCOLOGY_GRPC_PORT": str(port)}
    with running_server(tmp_path, env) as server:
        client = Client(port)
        try:
            yield server, client
        finally:
            client.channel.close()


def _following(client: Client, arm: str) -> None:
    """Until the server follows the new plan (polled with a deadline): some request is answered as ``arm``."""
    import time

    deadline = time.monotonic() + 20
    n = 0
    while time.monotonic() < deadline:
        n += 1
        if client.infer(f"warmup-{n}")[1] == arm:
            return
    raise AssertionError(f"the server never answered as {arm}")


def _access_lines(server: Server) -> dict[str, dict[str, object]]:
    lines = {}
    for raw in server.logs().splitlines():
        if raw.startswith("{") and '"transport":"grpc"' in raw.replace(" ", ""):
            line = json.loads(raw)
            lines[str(line["request_id"])] = line
    return lines


def test_a_canary_routes_grpc_calls_by_their_key_and_every_answer_and_line_names_its_arm(
        grpc_server: tuple[Server, Client], two_versions: Path) -> None:
    server, client = grpc_server
    assert client.infer("before") == ("1.0.1", None)  # no release: the champion, no arm to name
    share = 0.5
    started = start(two_versions, "canary", (share,))
    _following(client, "candidate")
    answers = {f"g-{i}": client.infer(f"g-{i}") for i in range(80)}
    for request_id, answer in answers.items():
        inside = bucket(started.id, request_id) < share
        assert answer == (("1.0.2", "candidate") if inside else ("1.0.1", "champion")), request_id
    assert {arm for _, arm in answers.values()} == {"champion", "candidate"}
    # one patient's calls (routing key) stay on one version, whatever their request ids; as the REST routes send it
    key_arm = "candidate" if bucket(started.id, "patient-7") < share else "champion"
    assert {client.infer(f"k-{i}", key="patient-7")[1] for i in range(20)} == {key_arm}
    # a call naming the candidate's version is answered by it, not routed
    assert client.infer("pinned-1", version="1.0.2") == ("1.0.2", "pinned")
    stop_server(server)
    lines = {line["request_id"]: line for line in logged(two_versions)}
    access = _access_lines(server)
    for request_id, (version, arm) in answers.items():
        assert (lines[request_id]["model_version"], lines[request_id].get("arm", "champion")) == (version, arm)
        assert (access[request_id]["model_version"], access[request_id]["arm"]) == (version, arm)
    assert access["before"]["arm"] == "champion"


def test_a_shadow_scores_grpc_calls_too_the_champion_answering(grpc_server: tuple[Server, Client], two_versions: Path) -> None:
    server, client = grpc_server
    start(two_versions, "shadow", (1.0,))
    _following(client, "champion")
    ids = [f"s-{i}" for i in range(30)]
    assert {client.infer(i) for i in ids} == {("1.0.1", "champion")}
    stop_server(server)
    arms = {(str(line["request_id"]), line.get("arm", "champion"), line["model_version"]) for line in logged(two_versions)}
    for request_id in ids:
        assert (request_id, "champion", "1.0.1") in arms
        assert (request_id, "shadow", "1.0.2") in arms, request_id
