"""The typed data model: the nine cytology features of a tumor, the prediction and the decision.

`FEATURE_DESCRIPTIONS` is the single definition of the features: their names, order and descriptions
(`SCORE_MIN`-`SCORE_MAX`: their range).  The training columns, the API schema, the OpenAPI document and the
inference-protocol metadata are all derived from it (see `FEATURES`).  `Tumor`, the pydantic model of a
tumor built on them (`oncology_model.tumor`), is loaded on first use: a serving worker, which decodes
requests without pydantic, never loads pydantic (about 10 MB of its memory).
"""

from __future__ import annotations

import numbers
import operator
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from oncology_model.tumor import Score as Score
    from oncology_model.tumor import Tumor as Tumor

SCORE_MIN: Final = 1
SCORE_MAX: Final = 10

#: The feature names in model-column order (the order of the UCI data file), each with its description.  `Tumor`
#: declares one field of each, in this order (a test holds it to them).
FEATURE_DESCRIPTIONS: Final[dict[str, str]] = {
    "clump_thickness": "Clump Thickness (1-10)",
    "uniformity_of_cell_size": "Uniformity of Cell Size (1-10)",
    "uniformity_of_cell_shape": "Uniformity of Cell Shape (1-10)",
    "marginal_adhesion": "Marginal Adhesion (1-10)",
    "single_epithelial_cell_size": "Single Epithelial Cell Size (1-10)",
    "bare_nuclei": "Bare Nuclei (1-10)",
    "bland_chromatin": "Bland Chromatin (1-10)",
    "normal_nucleoli": "Normal Nucleoli (1-10)",
    "mitoses": "Mitoses (1-10)",
}

#: The feature names in model-column order (the order of the UCI data file).
FEATURES: Final[tuple[str, ...]] = tuple(FEATURE_DESCRIPTIONS)

#: A tumor, as the documents show one.
TUMOR_EXAMPLE: Final[dict[str, int]] = {
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

#: The feature values of any object with the feature attributes (a `Tumor`, a decoded request row), in order.
row_of: Final = operator.attrgetter(*FEATURES)


def __getattr__(name: str) -> Any:
    if name in ("Tumor", "Score"):  # pydantic's, loaded on first use: a serving worker never needs them
        from oncology_model import tumor

        return getattr(tumor, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
