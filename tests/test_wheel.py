"""The oncology-model wheel as its users get it: built, installed alone in a fresh venv, predicting."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import venv
from pathlib import Path

import pytest

from oncology.packaging import build_model_wheel
from oncology_model import Classifier, Tumor
from oncology_model.datamodel import FEATURES
from support import republish

pytestmark = pytest.mark.slow

PROBE = """
import dataclasses, json, sys, importlib.util
from oncology_model import Classifier, Tumor
from oncology_model.classifier import carries_a_model
clf = Classifier()
rows = json.loads(sys.argv[1])
tumors = [Tumor.model_validate(r) for r in rows]
print(json.dumps({
    "version": clf.version,
    "probabilities": clf.predict_proba_batch(tumors),
    "labels": [p.value for p in clf.predict_batch(tumors)],
    "decisions": [d.value for d in clf.predict_decision_batch(tumors)],
    "referral": dataclasses.astuple(clf.referral) if clf.referral else None,
    "explanations": [dataclasses.asdict(clf.explain(t)) for t in tumors],
    "card": clf.card,
    "card_markdown": clf.card_markdown,
    "carries_a_model": carries_a_model(),
    "absent": [m for m in ("sklearn", "pandas", "numpy", "boto3", "oncology") if importlib.util.find_spec(m) is None],
}))
"""


def with_band_and_card(trained_store: Path, tmp_path: Path) -> Path:
    """The trained store if its champion carries a referral band and a card; else the same model with them added."""
    clf = Classifier.from_uri(trained_store)
    if clf.referral is not None and clf.card is not None and clf.card_markdown is not None:
        return trained_store
    t = clf.threshold
    card = {"model": "oncology", "version": clf.version, "intended_use": "decision support"}
    return republish(trained_store, tmp_path / "store", {"low": t / 2, "high": (1 + t) / 2}, card, "# Model card\n\u00b5m\n")


def test_the_wheel_installs_alone_and_predicts_like_the_store(trained_store: Path, tmp_path: Path) -> None:
    store = with_band_and_card(trained_store, tmp_path)
    wheel = build_model_wheel(str(store), "champion", tmp_path / "dist")
    assert wheel.name == "oncology_model-1.0.1-py3-none-any.whl"

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "--quiet", str(wheel)], check=True, timeout=600)

    rows = [dict(zip(FEATURES, r)) for r in ((5, 1, 1, 1, 2, 1, 3, 1, 1), (8, 10, 10, 8, 7, 10, 9, 7, 1), (3, 3, 2, 3, 2, 4, 4, 1, 1))]
    proc = subprocess.run([python, "-c", PROBE, json.dumps(rows)], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)

    expected = Classifier.from_uri(store, "champion")
    tumors = [Tumor(**r) for r in rows]
    assert got["version"] == "1.0.1"
    assert got["carries_a_model"] is True  # so `oncology serve` without a store serves it (a checkout: ./store)
    assert got["probabilities"] == expected.predict_proba_batch(tumors)
    assert got["labels"] == [p.value for p in expected.predict_batch(tumors)]
    assert set(got["absent"]) == {"sklearn", "pandas", "numpy", "boto3", "oncology"}
    # the referral band, the decisions, the explanations and the card travel in the wheel
    assert expected.referral is not None and got["referral"] == [expected.referral.low, expected.referral.high]
    assert got["decisions"] == [d.value for d in expected.predict_decision_batch(tumors)]
    assert got["explanations"] == [dataclasses.asdict(expected.explain(t)) for t in tumors]
    assert expected.card is not None and got["card"] == expected.card
    assert expected.card_markdown is not None and got["card_markdown"] == expected.card_markdown
