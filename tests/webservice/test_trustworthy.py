"""Trustworthy predictions over HTTP: the referral decision on every prediction route, explanations
(`?explain=true`), the model card (`GET /model/card`), and models written before any of them."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from oncology_model import Classifier, Tumor
from oncology_model.datamodel import FEATURES

from .conftest import CARD, CARD_MARKDOWN, EXAMPLE, MALIGNANT, Edges, dataset_rows
from .test_app import assert_error

# ---- the decision, on every route ------------------------------------------------------------------


def _csv(rows: list[dict[str, int]]) -> str:
    return "".join(",".join(str(r[f]) for f in FEATURES) + "\n" for r in rows)


def _v2(client: TestClient, rows: list[dict[str, int]], outputs: list[str] | None = None) -> dict[str, Any]:
    request: dict[str, Any] = {
        "inputs": [{"name": "tumor", "shape": [len(rows), 9], "datatype": "INT64", "data": [list(r.values()) for r in rows]}]
    }
    if outputs is not None:
        request["outputs"] = [{"name": name} for name in outputs]
    response = client.post("/v2/models/oncology/infer", json=request)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def answers(client: TestClient, route: str, rows: list[dict[str, int]]) -> list[tuple[str, str]]:
    """(prediction, decision) of each row, as one route answers them."""
    if route == "/predict":
        results = [client.post("/predict", json=r).json() for r in rows]
    elif route == "/predict/batch":
        results = client.post("/predict/batch", json=rows).json()
    elif route == "/invocations object":
        results = [client.post("/invocations", json=r).json() for r in rows]
    elif route == "/invocations array":
        results = client.post("/invocations", json=rows).json()
    elif route == "/invocations csv":
        results = client.post("/invocations", content=_csv(rows), headers={"content-type": "text/csv"}).json()
    else:
        outputs = {o["name"]: o["data"] for o in _v2(client, rows)["outputs"]}
        return list(zip(outputs["label"], outputs["decision"]))
    return [(r["prediction"], r["decision"]) for r in results]


ROUTES = ["/predict", "/predict/batch", "/invocations object", "/invocations array", "/invocations csv", "v2"]


@pytest.mark.parametrize("route", ROUTES)
def test_every_route_refers_from_low_up_to_but_not_including_high(banded: TestClient, edges: Edges, route: str) -> None:
    # below low: benign; p == low: refer; inside, on either side of the threshold: refer; p == high: malignant
    assert answers(banded, route, edges.rows) == edges.expected


@pytest.mark.parametrize("route", ROUTES)
def test_a_model_without_a_band_decides_as_it_predicts(old: TestClient, route: str) -> None:
    rows = [dict(zip(FEATURES, r)) for r in dataset_rows()[:: 7 if route in ("/predict", "/invocations object") else 1]]
    got = answers(old, route, rows)
    assert {d for _, d in got} == {"benign", "malignant"}
    assert all(prediction == decision for prediction, decision in got)


def test_the_decision_is_the_classifiers_on_every_row(banded: TestClient, banded_store: Path) -> None:
    clf = Classifier.from_uri(banded_store)
    rows = dataset_rows()
    body = banded.post("/predict/batch", json=[dict(zip(FEATURES, r)) for r in rows]).json()
    tumors = [Tumor(**dict(zip(FEATURES, r))) for r in rows]
    assert [r["decision"] for r in body] == [d.value for d in clf.predict_decision_batch(tumors)]
    assert {r["decision"] for r in body} == {"benign", "malignant", "refer"}


def test_v2_returns_the_decision_by_default_and_when_asked(banded: TestClient, edges: Edges) -> None:
    default = _v2(banded, edges.rows)["outputs"]
    assert [(o["name"], o["datatype"], o["shape"]) for o in default] == [
        ("label", "BYTES", [5]), ("probability", "FP64", [5]), ("decision", "BYTES", [5])]
    only = _v2(banded, edges.rows, ["decision"])["outputs"]
    assert only == [{"name": "decision", "shape": [5], "datatype": "BYTES", "data": [d for _, d in edges.expected]}]
    meta = banded.get("/v2/models/oncology").json()
    assert {"name": "decision", "datatype": "BYTES", "shape": [-1]} in meta["outputs"]


def test_model_route_shows_the_band_or_null(banded: TestClient, old: TestClient, edges: Edges) -> None:
    assert banded.get("/model").json()["referral"] == {"low": edges.low, "high": edges.high}
    assert old.get("/model").json()["referral"] is None


def test_referrals_are_counted(banded: TestClient, edges: Edges) -> None:
    banded.post("/predict/batch", json=edges.rows)
    banded.post("/predict", json=edges.rows[1])
    text = banded.get("/metrics").text
    assert "oncology_referrals_total 4.0" in text  # 3 of the batch, 1 single


# ---- explanations ----------------------------------------------------------------------------------


def test_explanations_add_up_to_the_log_odds_on_every_row(banded: TestClient, banded_store: Path) -> None:
    clf = Classifier.from_uri(banded_store)
    rows = [dict(zip(FEATURES, r)) for r in dataset_rows()]
    plain = banded.post("/predict/batch", json=rows).json()
    explained = banded.post("/predict/batch?explain=true", json=rows).json()
    assert len(explained) == len(rows) == 683
    for row, without, result in zip(rows, plain, explained):
        e = result.pop("explanation")
        assert result == without  # explaining changes nothing else, the probability to the last bit
        assert list(e) == ["baseline", "contributions", "log_odds"] and list(e["contributions"]) == list(FEATURES)
        assert abs(e["baseline"] + math.fsum(e["contributions"].values()) - e["log_odds"]) < 1e-9
        p = result["probability"]
        assert abs(1 / (1 + math.exp(-e["log_odds"])) - p) < 1e-12
        if 1e-6 < p < 1 - 1e-6:  # beyond, 1 - p keeps too few digits for logit(p) to be a 1e-9 reference
            assert abs(e["log_odds"] - (math.log(p) - math.log1p(-p))) < 1e-9
        assert e["baseline"] == clf.explain(Tumor(**row)).baseline


def test_explain_on_a_single_row_matches_the_classifier(banded: TestClient, banded_store: Path) -> None:
    clf = Classifier.from_uri(banded_store)
    for payload in (EXAMPLE, MALIGNANT):
        body = banded.post("/predict?explain=true", json=payload).json()
        expected = clf.explain(Tumor(**payload))
        assert body["explanation"] == {
            "baseline": expected.baseline, "contributions": expected.contributions, "log_odds": expected.log_odds}
        assert body["probability"] == expected.probability == clf.predict_proba(Tumor(**payload))
        assert body == banded.post("/predict/batch?explain=true", json=[payload]).json()[0]


@pytest.mark.parametrize("route", ["/predict", "/predict/batch"])
@pytest.mark.parametrize("query", ["", "?explain=false", "?other=1", "?explain=false&other=true"])
def test_explanations_are_off_unless_asked(banded: TestClient, route: str, query: str) -> None:
    payload = EXAMPLE if route == "/predict" else [EXAMPLE, MALIGNANT]
    body = banded.post(route + query, json=payload).json()
    assert body == banded.post(route, json=payload).json()
    for result in body if isinstance(body, list) else [body]:
        assert set(result) == {"prediction", "probability", "decision", "model_version"}


@pytest.mark.parametrize("route", ["/predict", "/predict/batch"])
@pytest.mark.parametrize("query", ["explain=yes", "explain=1", "explain=True", "explain=", "explain", "explain=true&explain=false"])
def test_an_invalid_explain_is_a_422_naming_the_query_parameter(banded: TestClient, route: str, query: str) -> None:
    payload = EXAMPLE if route == "/predict" else [EXAMPLE]
    body = assert_error(banded.post(f"{route}?{query}", json=payload), 422)
    assert "explain" in body["error"]
    assert [d["loc"] for d in body["details"]] == [["query", "explain"]]


def test_explain_does_not_hide_body_errors(banded: TestClient) -> None:
    body = assert_error(banded.post("/predict?explain=true", json={**EXAMPLE, "mitoses": 11}), 422)
    assert [d["loc"] for d in body["details"]] == [["body", "mitoses"]]


# ---- the model card --------------------------------------------------------------------------------


def test_the_card_is_served_as_json_by_default(banded: TestClient) -> None:
    response = banded.get("/model/card")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert response.json() == {"version": "1.0.1", "card": CARD, "markdown": CARD_MARKDOWN}


@pytest.mark.parametrize(
    ("accept", "markdown"),
    [("text/markdown", True), ("text/markdown, application/json;q=0.9", True), ("text/*", True),
     ("application/json", False), ("*/*", False), ("application/json, text/markdown", False),
     ("text/markdown;q=0.5, application/json", False), ("text/html", False)],
)
def test_the_card_follows_the_accept_header(banded: TestClient, accept: str, markdown: bool) -> None:
    response = banded.get("/model/card", headers={"accept": accept})
    assert response.status_code == 200
    if markdown:
        assert response.headers["content-type"] == "text/markdown; charset=utf-8"
        assert response.text == CARD_MARKDOWN
    else:
        assert response.json()["card"] == CARD


def test_a_model_without_a_card_is_a_404_that_says_so(old: TestClient) -> None:
    for accept in ("application/json", "text/markdown"):
        body = assert_error(old.get("/model/card", headers={"accept": accept}), 404)
        assert "1.0.1 has no model card" in body["error"]


def test_a_card_without_its_markdown_is_json_only(trained_store: Path, tmp_path: Path) -> None:
    from oncology.settings import ServeSettings
    from oncology.webservice.app import create_app
    from support import republish

    store = republish(trained_store, tmp_path, card=CARD)
    with TestClient(create_app(ServeSettings(store=str(store)))) as client:
        assert client.get("/model/card").json() == {"version": "1.0.1", "card": CARD, "markdown": None}
        body = assert_error(client.get("/model/card", headers={"accept": "text/markdown"}), 404)
        assert "no Markdown card" in body["error"]


# ---- the OpenAPI document --------------------------------------------------------------------------


def test_openapi_describes_decision_explanations_band_and_card(banded: TestClient) -> None:
    doc = banded.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    prediction = schemas["PredictionOut"]
    assert "decision" in prediction["required"] and "explanation" not in prediction["required"]
    assert schemas["Decision"]["enum"] == ["benign", "malignant", "refer"]
    explanation = schemas["Explanation"]
    assert set(explanation["required"]) == {"baseline", "contributions", "log_odds"}
    assert "training-mean tumor" in explanation["properties"]["baseline"]["description"]
    contributions = schemas["Contributions"]
    assert list(contributions["properties"]) == list(FEATURES) and contributions["additionalProperties"] is False
    for route in ("/predict", "/predict/batch"):
        (param,) = doc["paths"][route]["post"]["parameters"]
        assert (param["name"], param["in"], param["schema"]) == ("explain", "query", {"type": "boolean", "default": False})
    card = doc["paths"]["/model/card"]["get"]["responses"]
    assert set(card["200"]["content"]) == {"application/json", "text/markdown"} and "404" in card
    assert set(schemas["ModelCardOut"]["properties"]) == {"version", "card", "markdown"}
    assert "referral" in schemas["ModelOut"]["properties"]
    assert "decision" in doc["paths"]["/v2/models/{model_name}/infer"]["post"]["description"]
