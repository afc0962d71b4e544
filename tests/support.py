"""Helpers shared by the pipeline's tests (imported by name: conftest modules are not)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from oncology.settings import TrainSettings
from oncology.trainer.data import Dataset
from oncology.trainer.selection import Trace
from oncology.trainer.train import TrainingResult

#: Fast but real: nested CV with 3 outer and 3 inner folds, once, over the linear (selectable) families.
FAST = {
    "cv_folds": 3,
    "cv_repeats": 1,
    "inner_folds": 3,
    "families": ("logistic_regression", "linear_discriminant_analysis"),
}
#: FAST with every family (gradient-boosted trees and the RBF SVM too), for the trainer's own tests.
ALL_FAMILIES = ("logistic_regression", "linear_discriminant_analysis", "gradient_boosted_trees", "svm_rbf")


def fast_settings(store: Path | str, **overrides: object) -> TrainSettings:
    return TrainSettings(**{"store": str(store), **FAST, **overrides})  # type: ignore[arg-type]


def fast_env() -> dict[str, str]:
    """FAST as ``ONCOLOGY_*`` variables, for tests that run the CLI as a process."""
    return {
        f"ONCOLOGY_{k.upper()}": ",".join(map(str, v)) if isinstance(v, tuple) else str(v) for k, v in FAST.items()
    }


@dataclass
class Traced:
    """A training run with the trace of every use of rows it made."""

    dataset: Dataset
    settings: TrainSettings
    result: TrainingResult
    trace: Trace


@dataclass
class S3:
    endpoint_url: str
    access_key: str
    secret_key: str
    bucket: str

    def env(self, **overrides: str) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",  # never ask an instance-metadata address
            **overrides,
        }
