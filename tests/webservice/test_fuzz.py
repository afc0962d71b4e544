"""Property-based fuzzing of the whole API from its own OpenAPI document, against the real server,
with every check schemathesis has: no 5xx; responses conform to the documented status codes,
content types and schemas; a request the document calls valid is accepted and one it calls
invalid is refused.  Bounded: a fixed number of examples per operation."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import CheckFunction
from schemathesis.specs.openapi.checks import positive_data_acceptance

from oncology.settings import ServeSettings
from oncology.webservice.openapi import openapi_document

from .conftest import Server

#: Every check runs with its defaults, but for one documented answer: a batch over `maxItems` is
#: refused with 413 (the row limit, as the byte limit), which schemathesis does not list by default.
CONFIG = schemathesis.Config.from_dict({"checks": {"negative_data_rejection": {"expected-statuses": [
    "400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]}}})
schema = schemathesis.openapi.from_dict(openapi_document(ServeSettings()), config=CONFIG)


def excluded(case: schemathesis.Case) -> list[CheckFunction]:
    """The one check left out, on the one operation where JSON Schema cannot say it: a V2 request's
    `data` must hold shape[0] x 9 values, which no schema keyword relates, so the document accepts
    requests the protocol refuses (everything else of V2 is checked, negative data included)."""
    return [positive_data_acceptance] if case.path.endswith("/infer") else []


@schema.exclude(path_regex="^/docs").parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi_document(case: schemathesis.Case, live: Server) -> None:
    response = case.call(base_url=live.url, timeout=10)
    case.validate_response(response, excluded_checks=excluded(case))  # every check, positive and negative data included


@schema.include(path_regex="^/(predict|model)").parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_decisions_explanations_and_the_card_conform_to_the_document(case: schemathesis.Case, live_banded: Server) -> None:
    """The same against a model with a referral band and a card (`refer` answers, `GET /model/card` 200s)."""
    response = case.call(base_url=live_banded.url, timeout=10)
    case.validate_response(response, excluded_checks=excluded(case))
