"""The OpenAPI 3.1 document, built from the same models that decode requests (pydantic's `Tumor` for the
REST routes, its components made at build time by `openapi_models`; the msgspec structs of `schemas` for V2), and the interactive docs page (Swagger UI served from the installed `swagger-ui-py` package, no CDN)."""

from __future__ import annotations

import copy
import functools
import importlib.util
import inspect
from pathlib import Path
from typing import Any

import msgspec

from oncology.settings import ServeSettings
from oncology.webservice import overload
from oncology.webservice.openapi_components import COMPONENTS
from oncology.webservice.schemas import (
    CSV_PATTERN,
    EXPLAIN,
    V2_INPUT,
    V2_MODEL,
    PredictionOut,
    V2InferRequest,
    V2InferResponse,
    V2Live,
    V2ModelMetadata,
    V2Ready,
    V2ServerMetadata,
)
from oncology_model.datamodel import FEATURES, TUMOR_EXAMPLE


def _swagger_ui_dir() -> Path:
    spec = importlib.util.find_spec("swagger_ui")  # located, not imported: only its static files are used
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py package is missing: pip install swagger-ui-py")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


SWAGGER_UI_DIR = _swagger_ui_dir()

DOCS_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>oncology API</title>
<link rel="stylesheet" href="/docs/static/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true});</script>
</body></html>
"""


_REF = "#/components/schemas/{name}"
#: Documented with pydantic (`openapi_models`, at build time: `COMPONENTS`): the models the REST routes validate
#: with, and the other answers' shapes.
Tumor, ErrorOut, ModelOut, ModelCardOut, Status, OutcomeIn, OutcomesOut = (
    "Tumor", "ErrorOut", "ModelOut", "ModelCardOut", "Status", "OutcomeIn", "OutcomesOut")
#: Documented from msgspec structs: the ones that encode the predictions' answers, and the ones that decode V2
#: requests (with the V2 answers' shapes beside them).
_STRUCTS: list[type[msgspec.Struct]] = [
    PredictionOut, V2InferRequest, V2InferResponse, V2ServerMetadata, V2ModelMetadata, V2Live, V2Ready,
]
_PREDICTION_EXAMPLE = {"prediction": "benign", "probability": 0.0123, "decision": "benign", "model_version": "1.0.1"}
_V2_EXAMPLE = {"id": "42", "inputs": [{"name": V2_INPUT, "shape": [1, len(FEATURES)], "datatype": "INT64",
                                      "data": [5, 1, 1, 1, 2, 1, 3, 1, 1]}]}


def _ref(model: str | type[msgspec.Struct]) -> dict[str, str]:
    return {"$ref": _REF.format(name=model if isinstance(model, str) else model.__name__)}


def _json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _errors(*codes: int) -> dict[str, Any]:
    reasons = {
        400: "The body is not valid JSON or not UTF-8 text; or (V2) it names an input the model does not have, or "
        "its binary tensor data does not match the header.",
        401: "A bearer token is required (when tokens are configured).",
        404: "No such route or model.",
        405: "Method not allowed on this route.",
        409: "A request id already has a different outcome: this one is refused and kept as a conflict record "
        "(never overwritten); `details` lists each, with both outcomes.  The batch's other records were accepted.",
        413: "The body is over the route's byte limit (from Content-Length before it is read, or as it arrives).",
        415: "The body is not of an accepted type: application/json (and text/csv for /invocations).",
        422: "The body does not match the schema (more rows than a batch may hold included), or repeats a key; "
        "`details` lists every bad field.",
        503: "No verified model is loaded yet, or the service is shutting down; for /outcomes: the store cannot be "
        "written now (send the same records again: a retry is safe).",
    }
    return {str(c): {"description": reasons[c], "content": _json_content(_ref(ErrorOut))} for c in codes}


@functools.cache
def _components(max_batch: int) -> dict[str, Any]:
    _, v2 = msgspec.json.schema_components(_STRUCTS, ref_template=_REF)
    v2 = copy.deepcopy(v2)  # it holds the structs' own JSON Schema extras: the maxima below are this document's
    for component in v2.values():  # docstrings as pydantic shows them (msgspec keeps their indentation)
        if "description" in component:
            component["description"] = inspect.cleandoc(component["description"])
    # A JSON request carries its values in `data`; only the binary extension (its own framing, which the
    # infer route's description tells) leaves it out: the document requires it.
    tensor = v2["V2Tensor"]
    (data,) = (s for s in tensor["properties"]["data"]["anyOf"] if s["type"] == "array")
    tensor["properties"]["data"] = data
    tensor["required"] = [*tensor["required"], "data"]
    # the row limit: N of [N, 9], and the values it allows (flat: N x 9 numbers; nested: N rows)
    shape = tensor["properties"]["shape"]
    shape["prefixItems"][0]["maximum"] = max_batch
    shape["items"] = False  # (msgspec writes its own `items`; after `prefixItems`, nothing more)
    flat, nested = data["anyOf"]
    flat["maxItems"], nested["maxItems"] = max_batch * len(FEATURES), max_batch
    v2["V2InferRequest"]["examples"] = [_V2_EXAMPLE]
    v2["PredictionOut"]["examples"] = [_PREDICTION_EXAMPLE]
    return {**copy.deepcopy(COMPONENTS), **v2}


def openapi_document(settings: ServeSettings) -> dict[str, Any]:
    predict_errors = (400, 401, 405, 413, 415, 422, 503)
    security: list[dict[str, list[str]]] = [{"bearer": []}] if settings.tokens() else []
    example_tumor = dict(TUMOR_EXAMPLE)

    def get(summary: str, schema: dict[str, Any], *codes: int, description: str = "") -> dict[str, Any]:
        return {"get": {"summary": summary, "description": description,
                        "responses": {"200": {"description": "OK", "content": _json_content(schema)}, **_errors(405, *codes)}}}

    def post(summary: str, body: dict[str, Any], schema: dict[str, Any], *codes: int, description: str = "",
             parameters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        operation = {"summary": summary, "description": description, "security": security,
                     "requestBody": {"required": True, "content": _json_content(body)},
                     "responses": {"200": {"description": "OK", "content": _json_content(schema)}, **_errors(*codes)}}
        if parameters:
            operation["parameters"] = parameters
        return {"post": operation}

    explain_param = {
        "name": EXPLAIN, "in": "query", "required": False, "schema": {"type": "boolean", "default": False},
        "description": "`true` adds `explanation` to each result: the baseline log-odds (the training-mean tumor's) "
        "and each feature's contribution, which add up to the malignant log-odds (exact for this linear model). "
        "Only `true` and `false` are accepted (otherwise 422).",
    }
    decision_note = (
        " Each result carries `decision`: `refer` (refer for review) when the probability falls in the model's "
        "referral band (`GET /model`), otherwise the prediction."
    )

    name_param = {"name": "model_name", "in": "path", "required": True, "schema": {"type": "string", "example": V2_MODEL}}
    version_param = {"name": "model_version", "in": "path", "required": True, "schema": {"type": "string"}}
    v2_model_paths: dict[str, Any] = {}
    for prefix, params in (("/v2/models/{model_name}", [name_param]),
                           ("/v2/models/{model_name}/versions/{model_version}", [name_param, version_param])):
        v2_model_paths[prefix] = {**get("V2 model metadata: inputs, outputs, datatypes, shapes", _ref(V2ModelMetadata), 404, 503),
                                  "parameters": params}
        v2_model_paths[f"{prefix}/ready"] = {**get("V2 model readiness", _ref(V2Ready), 404, 503), "parameters": params}
        v2_model_paths[f"{prefix}/infer"] = {
            **post("V2 inference: a [N, 9] tensor in; labels, malignant probabilities and decisions out",
                   _ref(V2InferRequest), _ref(V2InferResponse), 404, *predict_errors,
                   description="Outputs `label` (BYTES: benign/malignant), `probability` (FP64) and `decision` (BYTES: "
                   "benign/malignant/refer; refer inside the referral band), all three unless `outputs` names some. "
                   "Triton's binary tensor data extension is supported: with an `Inference-Header-Content-Length` "
                   "header the JSON is that many bytes and the input's values (little-endian, "
                   "`parameters.binary_data_size` bytes) follow it; an output asked for with `parameters.binary_data: "
                   "true` (or every output, with the request parameter `binary_data_output: true`) comes back as "
                   "application/octet-stream: the JSON header (its length in the response's "
                   "`Inference-Header-Content-Length`), then the raw values (BYTES: each prefixed with its "
                   "4-byte little-endian length)."),
            "parameters": params,
        }
        v2_model_paths[f"{prefix}/infer"]["post"]["responses"]["200"]["content"]["application/octet-stream"] = {
            "schema": {"type": "string", "format": "binary",
                       "description": "Binary outputs (Triton's extension): the JSON header, then the raw values."}}

    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "oncology",
            "version": _server_version(),
            "description": (
                "Breast-cancer tumor classification from the nine cytology features of the UCI Breast Cancer "
                "Wisconsin (Original) data, each a whole number 1-10. Every error has the `ErrorOut` shape. "
                "Prediction routes need `Authorization: Bearer <token>` when tokens are configured."
            ),
        },
        "paths": {
            "/predict": post("Predict one tumor", {**_ref(Tumor), "example": example_tumor}, _ref(PredictionOut), *predict_errors,
                             description=f"Body limit {settings.max_body_bytes} bytes." + decision_note,
                             parameters=[explain_param]),
            "/predict/batch": post(
                "Predict a batch of tumors (results in the same order)",
                {"type": "array", "items": _ref(Tumor), "maxItems": settings.max_batch},
                {"type": "array", "items": _ref(PredictionOut)}, *predict_errors,
                description=f"At most {settings.max_batch} rows and {settings.max_batch_body_bytes} bytes. "
                "A bad row makes the whole request a 422 naming the row's index and field." + decision_note,
                parameters=[explain_param],
            ),
            "/outcomes": post(
                "Record outcomes (biopsy results) of earlier predictions, once per request id",
                {"type": "array", "items": _ref(OutcomeIn), "maxItems": settings.max_batch}, _ref(OutcomesOut),
                400, 401, 404, 405, 409, 413, 415, 422, 503,
                description=f"At most {settings.max_batch} records and {settings.max_batch_body_bytes} bytes. Each "
                "names the request id of a prediction (the `X-Request-Id` of its answer), the outcome, when it was "
                "observed and its source. The same outcome again is a no-op (`unchanged`); a different outcome for a "
                "request id that has one is refused with 409 and kept as a conflict record, across replicas and "
                "restarts. A request id with no logged prediction is accepted (it may join later; the outcome "
                "check reports such orphans). A bad record makes the whole request a 422 naming its index and "
                "field, and nothing is recorded. 404 when outcome intake is off (`ONCOLOGY_OUTCOMES`)."),
            "/model": get("The served model: version, metadata, KPIs and referral band", _ref(ModelOut), 503),
            "/model/card": {"get": {
                "summary": "The served model's card",
                "description": "JSON by default: the machine-readable card and the Markdown. `Accept: text/markdown` "
                "(ranked above application/json) returns the Markdown alone. 404 for a model trained before cards existed.",
                "responses": {"200": {"description": "The card", "content": {
                    "application/json": {"schema": _ref(ModelCardOut)},
                    "text/markdown": {"schema": {"type": "string"}},
                }}, **_errors(404, 405, 503)},
            }},
            "/dashboard": {"get": {
                "summary": "The monitoring dashboard",
                "description": "The latest page that training and drift runs wrote into the store "
                "(`monitoring/report/`): KPIs and coverage across versions, the champion's curves, promotions, "
                "drift. 404 when none was written or when serving the wheel's model without a store; 503 when the "
                "store cannot be reached.",
                "responses": {"200": {"description": "A self-contained HTML page (no CDN)",
                                      "content": {"text/html": {"schema": {"type": "string"}}}},
                              **_errors(404, 405, 503)},
            }},
            "/healthz": get("Liveness: the process answers", _ref(Status)),
            "/readyz": get("Readiness: a verified model is loaded", _ref(Status), 503),
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {
                "200": {"description": "Prometheus text exposition", "content": {"text/plain": {"schema": {"type": "string"}}}},
                **_errors(405)}}},
            "/ping": get("SageMaker health check (same as /readyz)", _ref(Status), 503),
            "/invocations": {"post": {
                "summary": "SageMaker inference: one tumor, an array of tumors, or CSV rows",
                "security": security,
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": {"oneOf": [_ref(Tumor), {"type": "array", "items": _ref(Tumor), "maxItems": settings.max_batch}]}},
                    "text/csv": {"schema": {"type": "string", "pattern": CSV_PATTERN,
                                             "description": "Lines of nine comma-separated whole numbers 1-10, in feature order; "
                                             "no header; blank lines are skipped, and no lines is no results."}},
                }},
                "description": "Results as /predict's, `decision` included (no explanations here).",
                "responses": {"200": {"description": "One result for an object, an array for an array or CSV", "content": _json_content(
                    {"oneOf": [_ref(PredictionOut), {"type": "array", "items": _ref(PredictionOut)}]})}, **_errors(*predict_errors)},
            }},
            "/v2": get("V2 server metadata", _ref(V2ServerMetadata)),
            "/v2/health/live": get("V2 liveness", _ref(V2Live)),
            "/v2/health/ready": get("V2 readiness", _ref(V2Ready), 503),
            **v2_model_paths,
            "/openapi.json": {"get": {"summary": "This document", "responses": {
                "200": {"description": "OpenAPI 3.1", "content": _json_content({"type": "object"})}, **_errors(405)}}},
            "/docs": {"get": {"summary": "Interactive documentation", "responses": {
                "200": {"description": "Swagger UI", "content": {"text/html": {"schema": {"type": "string"}}}}, **_errors(405)}}},
        },
        "components": {"schemas": _components(settings.max_batch)},
    }
    overload.document(doc)  # 503 + Retry-After on every route that can be shed
    if security:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return doc


@functools.cache
def _server_version() -> str:
    from importlib import metadata

    return metadata.version("oncology")
