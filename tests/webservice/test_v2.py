"""The Open Inference Protocol (V2): requests exactly as the specification writes them, and a
standard V2 client (tritonclient) against the real server."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from starlette.testclient import TestClient

from oncology_model import Classifier, Tumor
from oncology_model.datamodel import FEATURES

from .conftest import EXAMPLE, MALIGNANT, Edges, Server
from .test_app import assert_error

ROWS = [list(EXAMPLE.values()), list(MALIGNANT.values())]


def expected(store: Path, rows: list[list[int]]) -> tuple[list[str], list[float]]:
    clf = Classifier.from_uri(store)
    tumors = [Tumor(**dict(zip(FEATURES, r))) for r in rows]
    return [p.value for p in clf.predict_batch(tumors)], clf.predict_proba_batch(tumors)


def test_health_and_metadata_routes_answer_as_the_spec_writes(client: TestClient) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2/models/oncology/ready").json() == {"ready": True}
    server = client.get("/v2").json()
    assert set(server) == {"name", "version", "extensions"} and server["name"] == "oncology"
    assert "binary_tensor_data" in server["extensions"]
    meta = client.get("/v2/models/oncology").json()
    assert meta["name"] == "oncology" and meta["versions"] == ["1.0.1"] and meta["platform"]
    assert meta["inputs"] == [{"name": "tumor", "datatype": "INT64", "shape": [-1, 9], "parameters": {"features": list(FEATURES)}}]
    assert [(o["name"], o["datatype"]) for o in meta["outputs"]] == [("label", "BYTES"), ("probability", "FP64"), ("decision", "BYTES")]
    assert client.get("/v2/models/oncology/versions/1.0.1").json() == meta


def test_infer_request_in_the_spec_format(client: TestClient, trained_store: Path) -> None:
    request = {
        "id": "42",
        "inputs": [{"name": "tumor", "shape": [2, 9], "datatype": "INT64", "data": ROWS[0] + ROWS[1]}],
        "outputs": [{"name": "probability"}, {"name": "label"}],
    }
    response = client.post("/v2/models/oncology/infer", json=request)
    assert response.status_code == 200
    body = response.json()
    labels, probabilities = expected(trained_store, ROWS)
    assert body == {
        "model_name": "oncology",
        "model_version": "1.0.1",
        "id": "42",
        "outputs": [
            {"name": "probability", "shape": [2], "datatype": "FP64", "data": probabilities},
            {"name": "label", "shape": [2], "datatype": "BYTES", "data": labels},
        ],
    }


@pytest.mark.parametrize("datatype", ["FP32", "FP64", "INT32"])
def test_fp32_nested_data_and_no_outputs_field(client: TestClient, trained_store: Path, datatype: str) -> None:
    data = [[float(v) for v in r] for r in ROWS] if datatype.startswith("FP") else ROWS
    body = client.post("/v2/models/oncology/infer", json={"inputs": [{"name": "tumor", "shape": [2, 9], "datatype": datatype, "data": data}]}).json()
    labels, probabilities = expected(trained_store, ROWS)
    assert [o["name"] for o in body["outputs"]] == ["label", "probability", "decision"]
    assert body["outputs"][0]["data"] == labels and body["outputs"][1]["data"] == probabilities
    assert "id" not in body


@pytest.mark.parametrize(
    ("tensor", "where"),
    [
        ({"shape": [1, 8], "datatype": "INT64", "data": ROWS[0][:8]}, "shape"),
        ({"shape": [1, 9], "datatype": "BYTES", "data": ROWS[0]}, "datatype"),
        ({"shape": [2, 9], "datatype": "INT64", "data": ROWS[0]}, "data"),
        ({"shape": [1, 9], "datatype": "FP32", "data": [5.5] + ROWS[0][1:]}, 0),
        ({"shape": [1, 9], "datatype": "INT64", "data": ROWS[0][:8] + [11]}, 8),
        ({"shape": [1, 9], "datatype": "INT64", "data": ROWS[0][:8] + [True]}, 8),
    ],
)
def test_bad_tensors_are_422_naming_where(client: TestClient, tensor: dict, where: object) -> None:  # type: ignore[type-arg]
    body = assert_error(client.post("/v2/models/oncology/infer", json={"inputs": [{"name": "tumor", **tensor}]}), 422)
    assert body["details"][0]["loc"][:3] == ["body", "inputs", 0]
    assert where in body["details"][0]["loc"]


def test_unknown_model_version_or_output_is_refused(client: TestClient) -> None:
    request = {"inputs": [{"name": "tumor", "shape": [1, 9], "datatype": "INT64", "data": ROWS[0]}]}
    assert_error(client.post("/v2/models/other/infer", json=request), 404)
    assert_error(client.post("/v2/models/oncology/versions/9.9.9/infer", json=request), 404)
    assert client.post("/v2/models/oncology/versions/1.0.1/infer", json=request).status_code == 200
    assert_error(client.post("/v2/models/oncology/infer", json={**request, "outputs": [{"name": "nope"}]}), 422)
    assert_error(client.post("/v2/models/oncology/infer", json={"inputs": []}), 422)
    assert_error(client.get("/v2/models/other"), 404)


def test_a_standard_v2_client_works(live: Server, trained_store: Path) -> None:
    import tritonclient.http as triton

    client = triton.InferenceServerClient(live.url.removeprefix("http://"))
    try:
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("oncology")
        assert client.get_model_metadata("oncology")["inputs"][0]["shape"] == [-1, 9]
        x = np.array(ROWS, dtype=np.int64)
        tensor = triton.InferInput("tumor", list(x.shape), "INT64")
        tensor.set_data_from_numpy(x, binary_data=False)
        outputs = [triton.InferRequestedOutput(n, binary_data=False) for n in ("label", "probability")]
        result = client.infer("oncology", [tensor], outputs=outputs, request_id="7")
        labels, probabilities = expected(trained_store, ROWS)
        assert [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label")] == labels
        assert result.as_numpy("probability").tolist() == probabilities
        assert result.get_response()["id"] == "7"
    finally:
        client.close()


def _texts(values: np.ndarray) -> list[str]:  # type: ignore[type-arg]
    return [v.decode() if isinstance(v, bytes) else v for v in values.tolist()]


@pytest.mark.parametrize("dtype", ["INT64", "INT32", "FP32", "FP64"])
def test_a_standard_v2_client_works_with_its_defaults_binary_both_ways(live: Server, dtype: str) -> None:
    """tritonclient sends binary tensors by default and, naming no outputs, asks for binary outputs:
    the answers equal the JSON path's, output by output."""
    import tritonclient.http as triton

    client = triton.InferenceServerClient(live.url.removeprefix("http://"))
    try:
        x = np.array(ROWS, dtype={"INT64": np.int64, "INT32": np.int32, "FP32": np.float32, "FP64": np.float64}[dtype])
        as_json = triton.InferInput("tumor", list(x.shape), dtype)
        as_json.set_data_from_numpy(x, binary_data=False)
        reference = client.infer("oncology", [as_json],
                                 outputs=[triton.InferRequestedOutput(n, binary_data=False) for n in ("label", "probability", "decision")])
        assert all("data" in o for o in reference.get_response()["outputs"])

        binary = triton.InferInput("tumor", list(x.shape), dtype)
        binary.set_data_from_numpy(x)  # the client's default: binary_data=True
        defaults = client.infer("oncology", [binary], request_id="b1")  # no outputs named: all, binary
        response = defaults.get_response()
        assert response["id"] == "b1"
        assert [o["name"] for o in response["outputs"]] == ["label", "probability", "decision"]
        assert all("data" not in o and o["parameters"]["binary_data_size"] > 0 for o in response["outputs"])
        explicit = client.infer("oncology", [binary], outputs=[triton.InferRequestedOutput(n) for n in ("probability", "decision")])
        mixed = client.infer("oncology", [as_json], outputs=[
            triton.InferRequestedOutput("label", binary_data=True), triton.InferRequestedOutput("probability", binary_data=False)])
        assert [("data" in o) for o in mixed.get_response()["outputs"]] == [False, True]
        for result in (defaults, explicit, mixed):
            assert result.as_numpy("probability").tolist() == reference.as_numpy("probability").tolist()
        for result in (defaults, mixed):
            assert _texts(result.as_numpy("label")) == _texts(reference.as_numpy("label"))
        for result in (defaults, explicit):
            assert _texts(result.as_numpy("decision")) == _texts(reference.as_numpy("decision"))
    finally:
        client.close()


def test_binary_tensors_on_the_wire(client: TestClient, trained_store: Path) -> None:
    """The framing itself: JSON header, then little-endian values; BYTES elements length-prefixed."""
    import struct

    header = b'{"inputs": [{"name": "tumor", "shape": [2, 9], "datatype": "INT64", "parameters": {"binary_data_size": 144}}],' \
             b' "outputs": [{"name": "label", "parameters": {"binary_data": true}}, {"name": "probability", "parameters": {"binary_data": true}}]}'
    raw = np.array(ROWS, dtype="<i8").tobytes()
    response = client.post("/v2/models/oncology/infer", content=header + raw,
                           headers={"inference-header-content-length": str(len(header)), "content-type": "application/octet-stream"})
    assert response.status_code == 200, response.text
    size = int(response.headers["inference-header-content-length"])
    head, tail = __import__("json").loads(response.content[:size]), response.content[size:]
    labels, probabilities = expected(trained_store, ROWS)
    words = b"".join(struct.pack("<I", len(w)) + w.encode() for w in labels)
    assert [o["parameters"]["binary_data_size"] for o in head["outputs"]] == [len(words), 16]
    assert tail == words + np.array(probabilities, dtype="<f8").tobytes()
    for bad_length in ("999999", "-1", "x"):  # outside the body, or not a number
        assert_error(client.post("/v2/models/oncology/infer", content=header + raw,
                                 headers={"inference-header-content-length": bad_length}), 400)
    assert_error(client.post("/v2/models/oncology/infer", content=header + raw[:-1],  # short of binary_data_size
                             headers={"inference-header-content-length": str(len(header))}), 400)


def test_an_input_not_named_tumor_is_refused_as_triton_does(client: TestClient) -> None:
    request = {"inputs": [{"name": "INPUT0", "shape": [1, 9], "datatype": "INT64", "data": ROWS[0]}]}
    body = assert_error(client.post("/v2/models/oncology/infer", json=request), 400)
    assert "INPUT0" in body["error"] and body["details"][0]["loc"] == ["body", "inputs", 0, "name"]


def test_a_standard_v2_client_gets_the_decision(live_banded: Server, edges: Edges) -> None:
    import tritonclient.http as triton

    client = triton.InferenceServerClient(live_banded.url.removeprefix("http://"))
    try:
        outputs = {o["name"]: o["datatype"] for o in client.get_model_metadata("oncology")["outputs"]}
        assert outputs["decision"] == "BYTES"
        x = np.array([list(r.values()) for r in edges.rows], dtype=np.int64)
        tensor = triton.InferInput("tumor", list(x.shape), "INT64")
        tensor.set_data_from_numpy(x, binary_data=False)
        wanted = [triton.InferRequestedOutput("decision", binary_data=False)]
        result = client.infer("oncology", [tensor], outputs=wanted)
        decoded = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("decision")]
        assert decoded == [decision for _, decision in edges.expected]
        assert [o["name"] for o in result.get_response()["outputs"]] == ["decision"]
        everything = client.infer("oncology", [tensor])  # no outputs named: all three
        assert [o["name"] for o in everything.get_response()["outputs"]] == ["label", "probability", "decision"]
    finally:
        client.close()


def test_the_documented_v2_request_is_the_one_the_service_accepts(client: TestClient) -> None:
    """The document's V2 request schema, read as a client reads it: every datatype and output name it
    lists is accepted, a value outside its lists is refused, its required fields are required, and
    its example is answered."""
    components = client.get("/openapi.json").json()["components"]["schemas"]
    request, tensor = components["V2InferRequest"], components["V2Tensor"]
    output = components["V2RequestedOutput"]["properties"]["name"]

    def infer(body: dict) -> int:  # type: ignore[type-arg]
        return client.post("/v2/models/oncology/infer", json=body).status_code

    def tensor_of(**fields: object) -> dict:  # type: ignore[type-arg]
        return {"name": tensor["properties"]["name"]["const"], "shape": [1, 9], "datatype": "INT64", "data": ROWS[0],
                **fields}

    assert [infer(example) for example in request["examples"]] == [200] * len(request["examples"])
    for datatype in tensor["properties"]["datatype"]["enum"]:
        assert infer({"inputs": [tensor_of(datatype=datatype)]}) == 200, datatype
    assert infer({"inputs": [tensor_of(datatype="UINT8")]}) == 422
    assert infer({"inputs": [tensor_of(name="tumour")]}) == 400
    for name in output["enum"]:
        assert infer({"inputs": [tensor_of()], "outputs": [{"name": name}]}) == 200, name
    assert infer({"inputs": [tensor_of()], "outputs": [{"name": "score"}]}) == 422
    assert request["required"] == ["inputs"] and request["properties"]["inputs"]["minItems"] == 1
    assert infer({"inputs": []}) == 422
    assert infer({"inputs": [tensor_of(), tensor_of()]}) == 422
    for field in tensor["required"]:
        assert infer({"inputs": [{k: v for k, v in tensor_of().items() if k != field}]}) in (400, 422), field
