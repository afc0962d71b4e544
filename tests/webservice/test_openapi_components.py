"""The OpenAPI document's components made from pydantic models are committed (a serving worker loads no pydantic:
docs/grpc.md, "Cost"): they are what the models give today, byte for byte."""

from __future__ import annotations

from oncology.settings import ServeSettings
from oncology.webservice import openapi_components, openapi_models
from oncology.webservice.openapi import openapi_document


def test_the_committed_components_are_what_the_models_give() -> None:
    """After changing `Tumor`, `OutcomeIn` or an answer's model: ``python -m oncology.webservice.openapi_models``."""
    assert openapi_models.TARGET.read_text(encoding="utf-8") == openapi_models.module_text()
    assert openapi_models.components() == openapi_components.COMPONENTS


def test_the_document_shows_each_model_s_component() -> None:
    components = openapi_document(ServeSettings(store="x"))["components"]["schemas"]
    for model in openapi_models.MODELS:
        assert components[model.__name__] == openapi_models.components()[model.__name__]
    assert components["Tumor"]["required"] == list(components["Tumor"]["properties"])
