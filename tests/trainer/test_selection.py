"""Nested CV never lets a test row (or a test sample id) into any choice; planted leaks are caught."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.model_selection import StratifiedKFold

from oncology.trainer import data, metrics, selection
from oncology.trainer.train import train
from support import Traced, fast_settings

CHOICES = ("fit", "select", "threshold", "referral")


def leaks(trace: selection.Trace, groups: np.ndarray[Any, Any]) -> list[str]:
    """Every use of rows that touches its fold's test rows or test sample ids."""
    found = []
    for event in trace.events:
        train_rows, test_rows = trace.outer[event.fold]
        if overlap := np.intersect1d(event.rows, test_rows).size:
            found.append(f"{event.fold} {event.kind} {event.what}: {overlap} test rows")
        elif shared := np.intersect1d(groups[event.rows], groups[test_rows]).size:
            found.append(f"{event.fold} {event.kind} {event.what}: {shared} test sample ids")
        elif np.setdiff1d(event.rows, train_rows).size:
            found.append(f"{event.fold} {event.kind} {event.what}: rows outside the fold's training part")
    return found


def test_no_choice_ever_sees_an_outer_test_row_or_sample_id(traced: Traced) -> None:
    assert leaks(traced.trace, traced.dataset.ids) == []


def test_the_trace_covers_every_choice_of_every_outer_fold_and_the_final_model(traced: Traced) -> None:
    """The leak check is not vacuous: each fold made every kind of choice, on rows the trace holds."""
    folds = traced.settings.cv_folds * traced.settings.cv_repeats
    assert set(traced.trace.outer) == {f"outer-{k}" for k in range(folds)} | {"final"}
    kinds = Counter((e.fold, e.kind) for e in traced.trace.events)
    for fold in traced.trace.outer:
        for kind in CHOICES:
            assert kinds[fold, kind] > 0, (fold, kind)
    # per outer fold: inner folds x candidates fits, then refits on the outer training part
    n_candidates = len(traced.result.metadata["training"]["candidates"])
    assert kinds["outer-0", "fit"] >= traced.settings.inner_folds * n_candidates + 2


def test_the_outer_folds_partition_the_training_part_by_sample_id(traced: Traced) -> None:
    train_idx, test_idx = traced.trace.outer["final"]
    ids = traced.dataset.ids
    tests = [traced.trace.outer[f"outer-{k}"][1] for k in range(traced.settings.cv_folds)]
    assert np.array_equal(np.sort(np.concatenate(tests)), np.sort(train_idx))
    for k in range(traced.settings.cv_folds):
        fold_train, fold_test = traced.trace.outer[f"outer-{k}"]
        assert not set(ids[fold_train]) & set(ids[fold_test])
        assert not set(fold_test) & set(test_idx)


def _train_traced(tmp_path: Path, dataset: data.Dataset) -> selection.Trace:
    trace = selection.Trace()
    train(dataset, fast_settings(tmp_path, cv_folds=2, inner_folds=2, families=("logistic_regression",)), "1.0.1", trace=trace)
    return trace


def test_a_planted_leak_choosing_on_the_whole_training_part_is_detected(
    dataset: data.Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The classic leak: tune (family, threshold, band) on all the data, then cross-validate."""
    real = selection.choose
    whole: dict[str, Any] = {}

    def leaky(fitter: selection.Fitter, pool: Any, rows: Any, plan: Any, targets: Any, fold: str) -> Any:
        if fold == "final":
            whole["rows"] = rows
        # the outer folds are run before "final": take the training part from the outer split itself
        everything = np.union1d(rows, fitter.trace.outer[fold][1]) if fitter.trace and fold != "final" else rows
        return real(fitter, pool, everything, plan, targets, fold)

    monkeypatch.setattr(selection, "choose", leaky)
    found = leaks(_train_traced(tmp_path, dataset), dataset.ids)
    assert found and all("test rows" in f for f in found)
    assert {f.split()[1] for f in found} == set(CHOICES)


def test_a_planted_leak_splitting_without_sample_ids_is_detected(
    dataset: data.Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inner and outer folds that ignore sample ids put one id's rows on both sides."""

    def by_rows(data_: selection.Data, rows: Any, n_splits: int, seed: int) -> list[tuple[Any, Any]]:
        splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        return [(rows[a], rows[b]) for a, b in splitter.split(data_.X[rows], data_.y[rows])]

    monkeypatch.setattr(selection, "group_folds", by_rows)
    found = leaks(_train_traced(tmp_path, dataset), dataset.ids)
    assert found and any("test sample ids" in f for f in found)


def test_the_honest_run_of_the_same_small_settings_has_no_leak(dataset: data.Dataset, tmp_path: Path) -> None:
    """The control for the two planted leaks: same settings, nothing planted, nothing found."""
    assert leaks(_train_traced(tmp_path, dataset), dataset.ids) == []


def test_one_se_takes_the_simplest_candidate_within_one_standard_error() -> None:
    from oncology.trainer.families import candidates

    pool = candidates(0, ("logistic_regression",))
    rows = np.arange(3, dtype=np.int64)
    scored = [
        selection.Scored(pool[0], rows, np.zeros(3), (0.030, 0.034, 0.032)),
        selection.Scored(pool[1], rows, np.zeros(3), (0.028, 0.032, 0.030)),
        selection.Scored(pool[2], rows, np.zeros(3), (0.020, 0.021, 0.019)),
    ]
    assert selection.one_se(scored).candidate is pool[2]  # the others are more than one SE worse
    scored[2] = selection.Scored(pool[2], rows, np.zeros(3), (0.022, 0.036, 0.029))
    assert selection.one_se(scored).candidate is pool[0]  # now all are within one SE: the simplest wins


def test_the_summary_gives_each_repeats_means_in_order() -> None:
    """Two repeats of two outer folds: each repeat's mean of its own folds, the first repeat first."""

    def fold(recall: float, referred: float) -> selection.FoldResult:
        kpis = {name: 0.5 for name in metrics.KPI_NAMES} | {"recall": recall}
        referral = {name: 0.5 for name in metrics.REFERRAL_NAMES} | {"referred": referred}
        return selection.FoldResult(kpis, referral, "c", 0.3, metrics.Band(0.1, 0.3))

    found = selection.summary([fold(1.0, 0.1), fold(0.9, 0.0), fold(0.8, 0.2), fold(0.8, 0.0)], folds=2)
    assert found["by_repeat"]["recall"] == pytest.approx([0.95, 0.8])
    assert found["by_repeat"]["referred"] == pytest.approx([0.05, 0.1])
    assert found["mean"]["recall"] == pytest.approx(0.875)
    assert set(found["by_repeat"]) == {*metrics.KPI_NAMES, *metrics.REFERRAL_NAMES}
