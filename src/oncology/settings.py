"""Typed settings, read from ``ONCOLOGY_*`` environment variables in entry points only.

Every field has a working local default, so each command runs on a laptop with no set-up.
S3 endpoint and credentials are not here: they are the standard AWS variables
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``), read by boto3.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class StoreSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ONCOLOGY_", extra="ignore")

    store: str = Field("store", description="Model store: a folder, file://... or s3://bucket/prefix.")


class GateSettings(StoreSettings):
    """The quality gate: a model below any of these held-out test figures is not published or promoted."""

    gate_min_accuracy: float = Field(0.95, ge=0, le=1, description="Minimum test accuracy.")
    gate_min_recall: float = Field(0.95, ge=0, le=1, description="Minimum test malignant recall (sensitivity).")
    gate_min_specificity: float = Field(0.90, ge=0, le=1, description="Minimum test specificity.")
    gate_min_roc_auc: float = Field(0.98, ge=0, le=1, description="Minimum test ROC AUC.")


class TrainSettings(GateSettings):
    data: str | None = Field(None, description="Raw data file (path, file:// or s3://); default: the bundled UCI copy.")
    seed: int = Field(42, description="Seed of every split and estimator: same data and seed, same model.")
    cv_folds: int = Field(10, ge=2, description="Folds of the group-aware stratified cross-validation.")
    cv_repeats: int = Field(5, ge=1, description="Repeats of the cross-validation, each with its own shuffle.")
    test_splits: int = Field(5, ge=2, description="The held-out test set is one of this many group folds (5: 20%).")
    target_recall: float = Field(
        0.98, gt=0, le=1, description="The decision threshold is the highest with this cross-validated malignant recall."
    )
    promote: bool = Field(False, description="Promote the new version to champion when it passes the gate.")
