"""schemathesis hooks for the service's own OpenAPI document: the one rule of it that JSON Schema cannot state.

A V2 inference request's ``data`` holds exactly ``shape[0] x 9`` values (the document says so in words: no
JSON Schema keyword relates two fields' values), so a request generated from the schema alone almost never
has them agree, and the service refuses it (422), as the Open Inference Protocol requires.  This hook makes
every *positive* (schema-valid) V2 request honour that rule too: ``shape[0]`` becomes the number of rows
its data holds (flat data cut to whole rows).  Negative requests are left as generated.

The fuzz tests import it; from the command line::

    PYTHONPATH=tests SCHEMATHESIS_HOOKS=webservice.schemathesis_hooks \
        schemathesis run --checks all http://HOST:PORT/openapi.json
"""

from __future__ import annotations

from typing import Any

import schemathesis

from oncology_model.datamodel import FEATURES


def consistent_v2_shape(case: Any) -> None:
    """Set ``shape[0]`` of a positive V2 infer request to the rows its ``data`` holds."""
    if not case.path.endswith("/infer") or case.meta is None or not case.meta.generation.mode.is_positive:
        return
    body: Any = case.body
    inputs = body.get("inputs") if isinstance(body, dict) else None
    for tensor in inputs if isinstance(inputs, list) else []:
        data, shape = (tensor.get("data"), tensor.get("shape")) if isinstance(tensor, dict) else (None, None)
        if not (isinstance(data, list) and isinstance(shape, list) and len(shape) == 2):
            continue
        if any(isinstance(row, list) for row in data):  # nested: one row per item
            shape[0] = len(data)
        else:
            rows = len(data) // len(FEATURES)
            del data[rows * len(FEATURES):]
            shape[0] = rows


@schemathesis.hook
def before_call(ctx: Any, case: Any, **kwargs: Any) -> None:
    consistent_v2_shape(case)
