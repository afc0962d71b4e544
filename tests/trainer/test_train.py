from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from oncology.trainer import data, metrics
from oncology.trainer.pipeline import GateFailed, run_training
from oncology.trainer.train import train
from oncology_model.bundle import Bundle
from oncology_model.classifier import Classifier
from oncology_model.datamodel import FEATURES, Prediction, Tumor
from oncology_model.registry import ModelRegistry
from oncology_model.storage import LocalStore
from support import fast_settings


@pytest.fixture(scope="module")
def dataset() -> data.Dataset:
    return data.load()


@pytest.fixture(scope="module")
def result(dataset: data.Dataset, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return train(dataset, fast_settings(tmp_path_factory.mktemp("unused")), "1.0.1")


def test_no_sample_id_falls_on_both_sides_of_the_test_split(dataset: data.Dataset, result) -> None:  # type: ignore[no-untyped-def]
    test_ids = set(dataset.ids[result.test_index])
    train_ids = set(np.delete(dataset.ids, result.test_index))
    assert test_ids and train_ids and not test_ids & train_ids
    assert len(result.test_index) == result.kpis["test"]["n"]


def test_the_bundle_predicts_exactly_as_the_estimator_on_every_row(dataset: data.Dataset, result) -> None:  # type: ignore[no-untyped-def]
    clf = Classifier(Bundle.from_files(result.files))
    expected = result.estimator.predict_proba(dataset.X)[:, 1]
    tumors = [Tumor(**dict(zip(FEATURES, map(int, row)))) for row in dataset.X]
    got = np.array(clf.predict_proba_batch(tumors))
    assert np.max(np.abs(got - expected)) < 1e-12
    labels = [Prediction.from_classifier(int(p >= clf.threshold)) for p in expected]
    assert clf.predict_batch(tumors) == labels


def test_kpis_hold_test_figures_and_cv_mean_and_std_of_each(result) -> None:  # type: ignore[no-untyped-def]
    kpis = result.kpis
    for name in metrics.KPI_NAMES:
        assert 0 <= kpis["test"][name] <= 1
        assert name in kpis["cv"]["mean"] and name in kpis["cv"]["std"]
    cm = kpis["test"]["confusion_matrix"]
    assert sum(cm.values()) == kpis["test"]["n"]
    assert kpis["test"]["accuracy"] == pytest.approx((cm["tp"] + cm["tn"]) / kpis["test"]["n"])


def test_the_threshold_is_tuned_for_malignant_recall(result) -> None:  # type: ignore[no-untyped-def]
    assert result.kpis["cv"]["mean"]["recall"] >= 0.98
    assert result.kpis["threshold"] < 0.5  # favouring recall moves it below the neutral 0.5


def test_metadata_records_provenance(result) -> None:  # type: ignore[no-untyped-def]
    meta = result.metadata
    assert meta["data"]["sha256"] == data.BUNDLED_DATA_SHA256
    assert meta["features"] == list(FEATURES)
    assert meta["model"]["family"] in {"logistic_regression", "linear_discriminant_analysis"}
    assert len(meta["training"]["candidates"]) >= 2
    assert meta["created_at"].endswith("+00:00")
    assert {"python", "numpy", "scikit-learn"} <= set(meta["libraries"])
    assert len(meta["code"]["git_commit"]) >= 7


def test_same_data_and_seed_give_the_same_model_and_metrics(dataset: data.Dataset, result, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    again = train(dataset, fast_settings(tmp_path), "1.0.1")
    assert again.files["model.json"] == result.files["model.json"]
    assert again.files["kpis.json"] == result.files["kpis.json"]
    other = train(dataset, fast_settings(tmp_path, seed=7), "1.0.1")
    assert other.files["kpis.json"] != result.files["kpis.json"]


def test_recall_threshold_picks_the_highest_threshold_meeting_the_recall() -> None:
    y = np.array([1, 1, 1, 1, 0, 0])
    p = np.array([0.9, 0.8, 0.4, 0.2, 0.3, 0.1])
    assert metrics.recall_threshold(y, p, 0.75) == 0.4
    assert metrics.recall_threshold(y, p, 1.0) == 0.2


def test_a_model_failing_the_gate_is_not_published(tmp_path: Path) -> None:
    with pytest.raises(GateFailed, match="test accuracy .* < 0.999"):
        run_training(fast_settings(tmp_path, gate_min_accuracy=0.999, promote=True))
    registry = ModelRegistry(LocalStore(tmp_path))
    assert registry.versions() == [] and registry.state()["aliases"] == {}


def test_training_publishes_and_promotes(trained_store: Path) -> None:
    registry = ModelRegistry(LocalStore(trained_store))
    assert registry.versions() == ["1.0.1"]
    assert registry.resolve("champion") == "1.0.1"
    kpis = json.loads((trained_store / "models" / "1.0.1" / "kpis.json").read_text())
    assert kpis["version"] == "1.0.1"
