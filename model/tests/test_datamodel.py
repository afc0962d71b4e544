from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from bundle_factory import EXAMPLE
from oncology_model.datamodel import FEATURES, Prediction, Tumor


def errors(payload: object) -> list[dict[str, object]]:
    with pytest.raises(ValidationError) as info:
        Tumor.model_validate_json(json.dumps(payload))
    return info.value.errors(include_url=False)  # type: ignore[return-value]


def test_features_are_the_nine_uci_features_in_file_order() -> None:
    assert FEATURES == (
        "clump_thickness", "uniformity_of_cell_size", "uniformity_of_cell_shape", "marginal_adhesion",
        "single_epithelial_cell_size", "bare_nuclei", "bland_chromatin", "normal_nucleoli", "mitoses",
    )


def test_valid_tumor_round_trips_and_gives_its_row_in_feature_order() -> None:
    tumor = Tumor.model_validate_json(json.dumps(EXAMPLE))
    assert tumor.as_row() == tuple(EXAMPLE[f] for f in FEATURES)
    assert Tumor(**EXAMPLE) == tumor


@pytest.mark.parametrize("value", [1, 10])
def test_bounds_are_accepted(value: int) -> None:
    assert Tumor(**{**EXAMPLE, "mitoses": value}).mitoses == value


@pytest.mark.parametrize(
    ("value", "kind"),
    [(0, "greater_than_equal"), (11, "less_than_equal"), (-3, "greater_than_equal"), (3.5, "int_type"),
     (3.0, "int_type"), ("3", "int_type"), (True, "int_type"), (None, "int_type"), ([3], "int_type")],
)
def test_bad_values_are_refused_naming_the_field(value: object, kind: str) -> None:
    (error,) = errors({**EXAMPLE, "bare_nuclei": value})
    assert error["loc"] == ("bare_nuclei",)
    assert error["type"] == kind


def test_missing_and_extra_fields_are_each_named() -> None:
    payload = {k: v for k, v in EXAMPLE.items() if k != "mitoses"} | {"patient_name": "x"}
    found = {(e["type"], e["loc"]) for e in errors(payload)}
    assert found == {("missing", ("mitoses",)), ("extra_forbidden", ("patient_name",))}


def test_every_bad_field_is_reported_at_once() -> None:
    payload = {**EXAMPLE, "clump_thickness": 0, "mitoses": "x", "bare_nuclei": None}
    assert {e["loc"][0] for e in errors(payload)} == {"clump_thickness", "mitoses", "bare_nuclei"}


def test_tumor_is_immutable() -> None:
    tumor = Tumor(**EXAMPLE)
    with pytest.raises(ValidationError):
        tumor.mitoses = 2  # type: ignore[misc]


def test_prediction_values() -> None:
    assert [p.value for p in Prediction] == ["benign", "malignant"]


@pytest.mark.parametrize(("label", "expected"), [(2, Prediction.BENIGN), (4, Prediction.MALIGNANT), (np.int64(4), Prediction.MALIGNANT)])
def test_from_class(label: object, expected: Prediction) -> None:
    assert Prediction.from_class(label) is expected


@pytest.mark.parametrize(("label", "expected"), [(0, Prediction.BENIGN), (1, Prediction.MALIGNANT), (np.int64(0), Prediction.BENIGN)])
def test_from_classifier(label: object, expected: Prediction) -> None:
    assert Prediction.from_classifier(label) is expected


@pytest.mark.parametrize("bad", [3, 0, 1, 2.0, "2", True, None])
def test_from_class_refuses_anything_else_naming_the_value(bad: object) -> None:
    with pytest.raises(ValueError, match=repr(bad).replace("(", r"\(").replace(")", r"\)")):
        Prediction.from_class(bad)


@pytest.mark.parametrize("bad", [2, -1, 0.0, 1.0, "1", True, False, None])
def test_from_classifier_refuses_anything_else_naming_the_value(bad: object) -> None:
    with pytest.raises(ValueError, match=repr(bad).replace("(", r"\(").replace(")", r"\)")):
        Prediction.from_classifier(bad)


def test_tumor_declares_the_features_in_order_with_their_descriptions() -> None:
    """`FEATURE_DESCRIPTIONS` is the one definition of the features; `Tumor` (pydantic) holds to it."""
    from oncology_model.datamodel import FEATURE_DESCRIPTIONS, TUMOR_EXAMPLE

    assert tuple(Tumor.model_fields) == FEATURES == tuple(FEATURE_DESCRIPTIONS)
    assert {name: field.description for name, field in Tumor.model_fields.items()} == FEATURE_DESCRIPTIONS
    assert Tumor(**TUMOR_EXAMPLE).as_row() == tuple(TUMOR_EXAMPLE.values())


def test_the_package_and_its_classifier_load_without_pydantic_until_tumor_is_asked_for() -> None:
    import subprocess
    import sys

    program = ("import sys, oncology_model, oncology_model.classifier, oncology_model.datamodel as d\n"
               "print(sorted(m for m in sys.modules if m.startswith('pydantic')))\n"
               "from oncology_model import Tumor\n"
               "print(Tumor is d.Tumor, 'pydantic' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.split("\n")[:2] == ["[]", "True True"], done.stdout + done.stderr
