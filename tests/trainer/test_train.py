from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from oncology.project import REPO_ROOT
from oncology.trainer import data, metrics
from oncology.trainer.pipeline import GateFailed, run_training
from oncology.trainer.train import held_out_split, train
from oncology_model.bundle import CARD_JSON, CARD_MD, KPIS, METADATA, MODEL, Bundle
from oncology_model.classifier import Classifier
from oncology_model.datamodel import FEATURES, Prediction, Tumor
from oncology_model.registry import ModelRegistry
from oncology_model.storage import LocalStore
from support import Traced, fast_settings


def test_no_sample_id_falls_on_both_sides_of_the_test_split(traced: Traced) -> None:
    ids, test_index = traced.dataset.ids, traced.result.test_index
    test_ids = set(ids[test_index])
    train_ids = set(np.delete(ids, test_index))
    assert test_ids and train_ids and not test_ids & train_ids
    assert len(test_index) == traced.result.kpis["test"]["n"] == 136


def test_the_held_out_split_is_the_one_used_before_nested_cv(dataset: data.Dataset, tmp_path: Path) -> None:
    from sklearn.model_selection import StratifiedGroupKFold

    _, expected = next(StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=42).split(dataset.X, dataset.y, dataset.ids))
    _, test_idx = held_out_split(dataset, fast_settings(tmp_path))
    assert np.array_equal(test_idx, expected)


def test_the_bundle_predicts_exactly_as_the_estimator_on_every_row(traced: Traced) -> None:
    result, dataset = traced.result, traced.dataset
    clf = Classifier(Bundle.from_files(result.files))
    expected = result.estimator.predict_proba(dataset.X)[:, 1]
    tumors = [Tumor(**dict(zip(FEATURES, map(int, row)))) for row in dataset.X]
    got = np.array(clf.predict_proba_batch(tumors))
    assert np.max(np.abs(got - expected)) < 1e-12
    labels = [Prediction.from_classifier(int(p >= clf.threshold)) for p in expected]
    assert clf.predict_batch(tumors) == labels


def test_kpis_hold_test_figures_with_intervals_and_nested_cv_mean_and_std(traced: Traced) -> None:
    kpis = traced.result.kpis
    test = kpis["test"]
    for name in metrics.KPI_NAMES:
        lo, hi = test["ci"][name]
        assert 0 <= lo <= test[name] <= hi <= 1, name
        assert name in kpis["cv"]["mean"] and name in kpis["cv"]["std"]
    cm = test["confusion_matrix"]
    assert sum(cm.values()) == test["n"]
    assert test["accuracy"] == pytest.approx((cm["tp"] + cm["tn"]) / test["n"])
    assert test["recall"] == pytest.approx(cm["tp"] / (cm["tp"] + cm["fn"]))
    cv = kpis["cv"]
    assert (cv["method"], cv["folds"], cv["repeats"], cv["inner_folds"]) == ("nested", 3, 1, 3)
    assert sum(cv["chosen"].values()) == cv["folds"] * cv["repeats"]


def test_the_test_kpis_are_the_bundles_own_answers_on_the_test_rows(traced: Traced) -> None:
    """Threshold, referral band and figures: recomputed from the published bundle alone."""
    bundle = Bundle.from_files(traced.result.files)
    rows = traced.dataset.X[traced.result.test_index]
    y = traced.dataset.y[traced.result.test_index]
    proba = np.array(bundle.scorer.proba_many(rows.tolist()))
    test = metrics.kpis(y, proba, bundle.threshold)
    for name in metrics.KPI_NAMES:
        assert traced.result.kpis["test"][name] == pytest.approx(test[name], abs=1e-12)
    assert bundle.referral is not None
    band = metrics.Band(bundle.referral.low, bundle.referral.high)
    referred = sum(bundle.referral.refers(p) for p in proba)
    effect = traced.result.kpis["referral"]["test"]
    assert effect["n_referred"] == referred
    assert effect["recall_not_referred"] == pytest.approx(metrics.referral_kpis(y, proba, band)["recall_not_referred"])


def test_every_family_is_compared_and_only_linear_ones_are_selectable(traced: Traced) -> None:
    families = {f["family"]: f for f in traced.result.kpis["families"]}
    assert set(families) == {"logistic_regression", "linear_discriminant_analysis", "gradient_boosted_trees", "svm_rbf"}
    assert {f for f, v in families.items() if v["selectable"]} == {"logistic_regression", "linear_discriminant_analysis"}
    names = {c["name"]: c["family"] for c in traced.result.metadata["training"]["candidates"]}
    for fam in families.values():
        assert 0.9 < fam["cv"]["mean"]["roc_auc"] <= 1 and fam["cv"]["std"]["roc_auc"] >= 0
        assert names[fam["final_choice"]] == fam["family"]
        assert all(names[c] == fam["family"] for c in fam["cv"]["chosen"])
    assert traced.result.metadata["model"]["family"] in {"logistic_regression", "linear_discriminant_analysis"}
    assert json.loads(traced.result.files[MODEL])["kind"] == "linear"
    for chosen in traced.result.kpis["cv"]["chosen"]:
        assert chosen.startswith(("logistic_regression", "linear_discriminant"))


def test_the_old_figures_tuned_on_their_own_folds_are_kept_for_comparison(traced: Traced) -> None:
    own = traced.result.kpis["cv_tuned_on_own_folds"]
    assert "not nested" in own["method"]
    for name in metrics.KPI_NAMES:
        assert name in own["mean"] and name in own["std"]
    assert {"low", "high", "mean", "std"} <= set(own["referral"])


def test_the_threshold_favours_malignant_recall(traced: Traced) -> None:
    assert traced.result.kpis["threshold"] < 0.5  # favouring recall moves it below the neutral 0.5
    table = traced.result.kpis["threshold_table"]
    assert [r["threshold"] for r in table] == sorted(r["threshold"] for r in table)
    assert [r["threshold"] for r in table if r["chosen"]] == [traced.result.kpis["threshold"]]
    recalls = [r["cv"]["recall"] for r in table]
    assert recalls == sorted(recalls, reverse=True)  # a higher threshold never finds more cancers


def test_metadata_records_provenance_and_the_referral_band(traced: Traced) -> None:
    meta = traced.result.metadata
    assert meta["data"]["sha256"] == data.BUNDLED_DATA_SHA256
    assert meta["data"]["class_counts"] == {"benign": 444, "malignant": 239}
    assert meta["data"]["rows_with_missing_values_excluded"] == 16 and meta["data"]["provenance"]["licence"]
    assert meta["features"] == list(FEATURES)
    assert len(meta["training"]["candidates"]) == 9
    assert meta["created_at"].endswith("+00:00")
    assert {"python", "numpy", "scikit-learn"} <= set(meta["libraries"])
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert meta["code"]["git_commit"].removesuffix("-dirty") == head.stdout.strip()  # this checkout's commit
    ref = meta["referral"]
    assert 0 <= ref["low"] < meta["threshold"] == ref["high"] <= 1 and "inner" in ref["rule"]
    rank, settings = meta["threshold_rank"], traced.settings
    assert rank["k"] == metrics.threshold_rank(rank["n"], settings.target_recall, settings.target_confidence)
    assert rank["confidence"] == metrics.miss_rate_confidence(rank["k"], rank["n"], settings.target_recall)
    assert rank["confidence"] >= settings.target_confidence == rank["confidence_asked"]
    # every malignant case of the training part is in the inner out-of-fold probabilities the rule ranks
    assert rank["n"] == int(np.sum(traced.dataset.y[np.setdiff1d(np.arange(len(traced.dataset.y)), traced.result.test_index)] == 1))
    assert f"{rank['confidence']:.1%}" in meta["threshold_rule"]
    assert (ref["low"], ref["high"]) == (traced.result.kpis["referral"]["low"], traced.result.kpis["referral"]["high"])


def _normalised(files: dict[str, bytes], created_at: str) -> dict[str, bytes]:
    return {name: files[name].replace(created_at.encode(), b"<created_at>") for name in (MODEL, METADATA, KPIS, CARD_MD, CARD_JSON)}


def test_the_whole_run_is_deterministic(traced: Traced, tmp_path: Path) -> None:
    """Two runs: byte-identical model, KPIs, metadata and card, but for the creation time."""
    again = train(traced.dataset, traced.settings, "1.0.1")
    first = _normalised(traced.result.files, traced.result.metadata["created_at"])
    second = _normalised(again.files, again.metadata["created_at"])
    for name in first:
        assert first[name] == second[name], name
    assert b"<created_at>" in first[METADATA] and b"<created_at>" in first[CARD_MD]


def test_another_seed_gives_other_folds_and_figures(traced: Traced) -> None:
    other = train(traced.dataset, traced.settings.model_copy(update={"seed": 7}), "1.0.1")
    assert other.files[KPIS] != traced.result.files[KPIS]


def test_held_out_rows_never_reach_a_choice(traced: Traced) -> None:
    """Scramble every held-out row's features: the model, threshold, referral band and CV figures stay
    exactly the same; only the test figures change.  (Labels cannot be scrambled: the stratified split
    itself reads them.)"""
    ds, test_index = traced.dataset, traced.result.test_index
    X = ds.X.copy()
    X[test_index] = np.random.default_rng(0).integers(1, 11, size=(len(test_index), X.shape[1]))
    scrambled = train(dataclasses.replace(ds, X=X), traced.settings, "1.0.1")
    assert np.array_equal(scrambled.test_index, test_index)
    assert scrambled.files[MODEL] == traced.result.files[MODEL]
    assert scrambled.metadata["threshold"] == traced.result.metadata["threshold"]
    assert scrambled.metadata["referral"] == traced.result.metadata["referral"]
    assert scrambled.metadata["training"]["candidates"] == traced.result.metadata["training"]["candidates"]
    for key in ("cv", "families", "cv_tuned_on_own_folds"):
        if key == "families":
            assert [f["cv"] for f in scrambled.kpis[key]] == [f["cv"] for f in traced.result.kpis[key]]
        else:
            assert scrambled.kpis[key] == traced.result.kpis[key], key
    assert scrambled.kpis["test"]["roc_auc"] != traced.result.kpis["test"]["roc_auc"]


def test_a_model_failing_the_gate_is_not_published(tmp_path: Path) -> None:
    with pytest.raises(GateFailed, match="test accuracy .* < 0.999"):
        run_training(fast_settings(tmp_path, gate_min_accuracy=0.999, promote=True))
    registry = ModelRegistry(LocalStore(tmp_path))
    assert registry.versions() == [] and registry.state()["aliases"] == {}


def test_training_publishes_and_promotes_with_its_card(trained_store: Path) -> None:
    registry = ModelRegistry(LocalStore(trained_store))
    assert registry.versions() == ["1.0.1"]
    assert registry.resolve("champion") == "1.0.1"
    kpis = json.loads((trained_store / "models" / "1.0.1" / "kpis.json").read_text())
    assert kpis["version"] == "1.0.1"
    bundle = registry.load("champion")
    assert bundle.card is not None and bundle.card["version"] == "1.0.1"
    assert bundle.card_markdown is not None and bundle.card_markdown.startswith("# Model card: oncology 1.0.1")
    assert bundle.referral is not None
