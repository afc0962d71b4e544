"""Helpers shared by the pipeline's tests (imported by name: conftest modules are not)."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from oncology.settings import TrainSettings
from oncology.trainer.data import Dataset
from oncology.trainer.selection import Trace
from oncology.trainer.train import TrainingResult

REPO = Path(__file__).resolve().parents[1]

#: make's own variables: a make that runs the tests passes its command line down through them.
_MAKE_OWN = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "MAKE_TERMOUT", "MAKE_TERMERR"}


def makefile_variables() -> set[str]:
    """Every variable the Makefile takes from its environment: those it defaults with ``?=``, and KUBECONFIG."""
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([A-Z][A-Z0-9_]*)\s*\?=", text, flags=re.MULTILINE)) | {"KUBECONFIG"}


def make_env(**overrides: str) -> dict[str, str]:
    """The environment for a ``make`` a test runs: the caller's, without make's own variables, without any variable
    the Makefile reads, and without the ``ONCOLOGY_*`` settings its recipes would pass on, so that
    ``VERSION=1.0.3 pytest ...`` or the tests run by ``make release VERSION=1.0.3`` test what a bare run does;
    ``overrides`` then set what the test means to set."""
    dropped = _MAKE_OWN | makefile_variables()
    env = {k: v for k, v in os.environ.items() if k not in dropped and not k.startswith("ONCOLOGY_")}
    return {**env, **overrides}


#: Fast but real: nested CV with 3 outer and 3 inner folds, once, over the linear (selectable) families.
FAST = {
    "cv_folds": 3,
    "cv_repeats": 1,
    "inner_folds": 3,
    # 3 outer folds leave ~127 malignant cases in each inner pool, too few for the 2nd lowest at the default 80%:
    # the lowest alone (k = 1) would set the threshold, one outlier's, and the nested accuracy would sit at the gate.
    # At 50% the 2nd lowest sets it, as in the default run (5 outer folds, ~153 cases, 80%).
    "target_confidence": 0.5,
    "families": ("logistic_regression", "linear_discriminant_analysis"),
}
#: FAST with every family (gradient-boosted trees and the RBF SVM too), for the trainer's own tests.
ALL_FAMILIES = ("logistic_regression", "linear_discriminant_analysis", "gradient_boosted_trees", "svm_rbf")


T = TypeVar("T")


def poll(condition: Callable[[], T | None], timeout: float, failure: str | Callable[[], object], interval: float = 0.5) -> T:
    """Call ``condition`` every ``interval`` seconds until it returns something truthy, and return that;
    after ``timeout`` seconds fail the test (AssertionError) with ``failure``, or with what it returns
    (the state worth showing).  The one deadline poll of the tests: no fixed sleep stands in for one."""
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(failure if isinstance(failure, str) else failure())
        time.sleep(interval)
    return found


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


def copy_versions(source: Path, target: Any, candidates: dict[str, float | None]) -> Any:
    """``target`` with the champion of ``source`` published and promoted as 1.0.1, and one version per entry of
    ``candidates`` (version: decision threshold, None for the champion's own): the same trained model, so that a
    candidate differs only where its threshold makes it."""
    import json

    from oncology_model.bundle import KPIS, METADATA, MODEL, Bundle
    from oncology_model.registry import ModelRegistry
    from oncology_model.storage import LocalStore

    bundle = ModelRegistry(LocalStore(source)).load("champion")
    registry = ModelRegistry(target)
    model, kpis = json.loads(bundle.files[MODEL]), json.loads(bundle.files[KPIS])
    metadata = json.loads(bundle.files[METADATA])
    registry.publish(Bundle.assemble("1.0.1", model, metadata, kpis))
    registry.promote("1.0.1")
    for version, threshold in candidates.items():
        changed: dict[str, Any] = {**metadata, "version": version}
        if threshold is not None:
            changed = {k: v for k, v in changed.items() if k != "referral"}
            changed["threshold"] = threshold
        registry.publish(Bundle.assemble(version, model, changed, kpis))
    return registry
