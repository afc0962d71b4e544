"""The model families by name, and which of them may be selected: plain data, shared by the settings
(which check the names a user asks for) and the trainer (which builds each family's candidates).

The service scores a code-free bundle (`model.json`, a `LinearScorer`): no pickle and no
scikit-learn.  Only linear families can be exported that way, so only they are selectable; the
others go through the same nested cross-validation and are reported side by side.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    name: str
    label: str
    #: whether the service can score it from a code-free bundle (and so whether it may be chosen)
    selectable: bool
    note: str


FAMILIES = (
    Family("logistic_regression", "logistic regression (L2)", True, "linear: exported as model.json"),
    Family("linear_discriminant_analysis", "linear discriminant analysis", True, "linear: exported as model.json"),
    Family(
        "gradient_boosted_trees",
        "gradient-boosted trees (HistGradientBoosting)",
        False,
        "reported, not selectable: a tree ensemble cannot be scored from the linear model.json without code",
    ),
    Family(
        "svm_rbf",
        "SVM, RBF kernel (Platt-calibrated)",
        False,
        "reported, not selectable: support vectors and a kernel cannot be scored from the linear model.json",
    ),
)
FAMILY = {f.name: f for f in FAMILIES}
