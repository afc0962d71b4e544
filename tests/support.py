"""Helpers shared by the pipeline's tests (imported by name: conftest modules are not)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from oncology.settings import TrainSettings

#: Fast but real: 5-fold CV once instead of 10-fold five times.
FAST = {"cv_folds": 5, "cv_repeats": 1}


def fast_settings(store: Path | str, **overrides: object) -> TrainSettings:
    return TrainSettings(**{"store": str(store), **FAST, **overrides})  # type: ignore[arg-type]


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
