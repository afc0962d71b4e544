"""Property-based fuzzing of the whole API from its own OpenAPI document, against the real server:
no 5xx, and every response conforms to the documented status codes, content types and schemas.
Bounded: a fixed number of examples per operation."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from oncology.settings import ServeSettings
from oncology.webservice.openapi import openapi_document

from .conftest import Server

schema = schemathesis.openapi.from_dict(openapi_document(ServeSettings()))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection]


@schema.exclude(path_regex="^/docs").parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi_document(case: schemathesis.Case, live: Server) -> None:
    response = case.call(base_url=live.url, timeout=10)
    case.validate_response(response, checks=CHECKS)


@schema.include(path_regex="^/(predict|model)").parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_decisions_explanations_and_the_card_conform_to_the_document(case: schemathesis.Case, live_banded: Server) -> None:
    """The same against a model with a referral band and a card (`refer` answers, `GET /model/card` 200s)."""
    response = case.call(base_url=live_banded.url, timeout=10)
    case.validate_response(response, checks=CHECKS)
