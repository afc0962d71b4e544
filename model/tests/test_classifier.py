from __future__ import annotations

from pathlib import Path

import pytest

from bundle_factory import EXAMPLE, MALIGNANT_EXAMPLE, bundle_files
from oncology_model.classifier import Classifier
from oncology_model.datamodel import Prediction, Tumor
from oncology_model.errors import BundleError, NotFoundError
from oncology_model.registry import ModelRegistry
from oncology_model.storage import LocalStore


@pytest.fixture
def store(tmp_path: Path) -> Path:
    registry = ModelRegistry(LocalStore(tmp_path))
    registry.publish(bundle_files("1.0.1"))
    registry.publish(bundle_files("1.0.2", threshold=0.9))
    registry.promote("1.0.1")
    return tmp_path


def test_from_uri_loads_champion_latest_or_a_version(store: Path) -> None:
    assert Classifier.from_uri(store).version == "1.0.1"
    assert Classifier.from_uri(store, "latest").version == "1.0.2"
    assert Classifier.from_uri(f"file://{store}", "1.0.2").threshold == 0.9


def test_predictions_follow_the_threshold(store: Path) -> None:
    clf = Classifier.from_uri(store)
    benign, malignant = Tumor(**EXAMPLE), Tumor(**MALIGNANT_EXAMPLE)
    assert clf.predict(benign) is Prediction.BENIGN
    assert clf.predict(malignant) is Prediction.MALIGNANT
    assert clf.predict_proba(benign) < clf.threshold <= clf.predict_proba(malignant)
    assert clf.predict_batch([benign, malignant]) == [Prediction.BENIGN, Prediction.MALIGNANT]
    assert clf.predict_proba_batch([benign]) == [clf.predict_proba(benign)]
    assert clf.score_rows([benign.as_row()]) == [clf.predict_proba(benign)]


def test_metadata_and_kpis_are_exposed(store: Path) -> None:
    clf = Classifier.from_uri(store)
    assert clf.metadata["model"]["family"] == "logistic_regression"
    assert clf.kpis["test"]["recall"] == 0.98
    assert "1.0.1" in repr(clf)


def test_from_dir_loads_a_bundle_folder(store: Path) -> None:
    assert Classifier.from_dir(store / "models" / "1.0.2").version == "1.0.2"


def test_an_unknown_version_is_a_clear_error(store: Path) -> None:
    with pytest.raises(NotFoundError, match="9.9.9 is not published"):
        Classifier.from_uri(store, "9.9.9")


def test_a_source_checkout_carries_no_model() -> None:
    with pytest.raises(BundleError, match="carries no model"):
        Classifier()
