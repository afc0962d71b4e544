"""The typed data model: the nine cytology features of a tumor, the prediction and the decision.

`Tumor` is the single definition of the features: their names, order, ranges and
descriptions.  The training columns, the API schema, the OpenAPI document and the
inference-protocol metadata are all derived from it (see `FEATURES`).
"""

from __future__ import annotations

import numbers
import operator
from enum import StrEnum
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field

SCORE_MIN: Final = 1
SCORE_MAX: Final = 10

#: A cytology score: a whole number from 1 to 10.  Strict: 3.5, "3", true and null are refused.
Score = Annotated[int, Field(strict=True, ge=SCORE_MIN, le=SCORE_MAX)]


class Tumor(BaseModel):
    """The nine cytology features of a fine-needle aspirate, each scored 1-10 by a clinician."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        json_schema_extra={
            "examples": [
                {
                    "clump_thickness": 5,
                    "uniformity_of_cell_size": 1,
                    "uniformity_of_cell_shape": 1,
                    "marginal_adhesion": 1,
                    "single_epithelial_cell_size": 2,
                    "bare_nuclei": 1,
                    "bland_chromatin": 3,
                    "normal_nucleoli": 1,
                    "mitoses": 1,
                }
            ]
        },
    )

    clump_thickness: Score = Field(description="Clump Thickness (1-10)")
    uniformity_of_cell_size: Score = Field(description="Uniformity of Cell Size (1-10)")
    uniformity_of_cell_shape: Score = Field(description="Uniformity of Cell Shape (1-10)")
    marginal_adhesion: Score = Field(description="Marginal Adhesion (1-10)")
    single_epithelial_cell_size: Score = Field(description="Single Epithelial Cell Size (1-10)")
    bare_nuclei: Score = Field(description="Bare Nuclei (1-10)")
    bland_chromatin: Score = Field(description="Bland Chromatin (1-10)")
    normal_nucleoli: Score = Field(description="Normal Nucleoli (1-10)")
    mitoses: Score = Field(description="Mitoses (1-10)")

    def as_row(self) -> tuple[int, ...]:
        """The feature values in `FEATURES` order."""
        return row_of(self)  # type: ignore[no-any-return,unused-ignore]


#: The feature names in model-column order (the order of the UCI data file).
FEATURES: Final[tuple[str, ...]] = tuple(Tumor.model_fields)

#: The feature values of any object with the feature attributes (a `Tumor`, a decoded request row), in order.
row_of: Final = operator.attrgetter(*FEATURES)


class Prediction(StrEnum):
    """The predicted class of a tumor."""

    BENIGN = "benign"
    MALIGNANT = "malignant"

    @classmethod
    def from_class(cls, value: object) -> Prediction:
        """From the dataset's class label: 2 is benign, 4 is malignant."""
        return _lookup(value, {2: cls.BENIGN, 4: cls.MALIGNANT}, "class label (2 = benign, 4 = malignant)")

    @classmethod
    def from_classifier(cls, value: object) -> Prediction:
        """From a classifier's output: 0 is benign, 1 is malignant."""
        return _lookup(value, {0: cls.BENIGN, 1: cls.MALIGNANT}, "classifier output (0 = benign, 1 = malignant)")


class Decision(StrEnum):
    """What to do with a tumor: the prediction, or a referral when the model is unsure.

    A malignant probability inside the model's referral band is ``refer`` (refer for review by a
    pathologist); outside it the decision is the thresholded `Prediction`.  A model without a
    band never refers.
    """

    BENIGN = "benign"
    MALIGNANT = "malignant"
    REFER = "refer"


def _lookup(value: object, table: dict[int, Prediction], what: str) -> Prediction:
    # bool is an int subclass, and 2.0 == 2: accept integers only, so that a wrong type is an error
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and int(value) in table:
        return table[int(value)]
    raise ValueError(f"invalid {what}: {value!r}")
