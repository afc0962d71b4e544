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


def republish(source: Path, target: Path, referral: dict[str, float] | None = None,
              card: dict[str, object] | None = None, card_markdown: str | None = None) -> Path:
    """Copy the champion of the store at ``source`` into a new store at ``target`` (promoted), with
    exactly the referral band and card given: none of them makes a bundle as older versions wrote it."""
    import json

    from oncology_model.bundle import CARD_JSON, CARD_MD, KPIS, METADATA, MODEL, Bundle
    from oncology_model.registry import ModelRegistry
    from oncology_model.storage import LocalStore

    bundle = ModelRegistry(LocalStore(source)).load("champion")
    metadata = {k: v for k, v in json.loads(bundle.files[METADATA]).items() if k != "referral"}
    if referral is not None:
        metadata["referral"] = referral
    extra = {}
    if card is not None:
        extra[CARD_JSON] = json.dumps(card).encode()
    if card_markdown is not None:
        extra[CARD_MD] = card_markdown.encode()
    files = Bundle.assemble(bundle.version, json.loads(bundle.files[MODEL]), metadata, json.loads(bundle.files[KPIS]), extra)
    registry = ModelRegistry(LocalStore(target))
    registry.publish(files)
    registry.promote(bundle.version)
    return target
