"""Drift: the statistics held to their targets on a real trained model, and ``oncology drift`` end to end
against a local store and a real S3 server (SeaweedFS)."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import typer
from drift_support import Trained, records, train_model, write_log
from typer.testing import CliRunner

from oncology.monitoring import drift_cli
from oncology.monitoring.drift import (
    PSI_EPSILON,
    DriftError,
    Reference,
    Thresholds,
    chi_square,
    compare,
    estimate_performance,
    pooled_groups,
    psi,
    reference_from,
)
from oncology_model.bundle import REFERENCE, Bundle
from oncology_model.datamodel import FEATURES
from oncology_model.registry import ModelRegistry
from oncology_model.storage import LocalStore, open_store
from support import S3, poll

RESAMPLES = 200
ROWS = 500
SEED = 8


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return train_model(str(tmp_path_factory.mktemp("training")))


def shifted(X: npt.NDArray[np.int64], columns: tuple[int, ...], rng: np.random.Generator) -> npt.NDArray[np.int64]:
    """+2 points on a random third of the rows in ``columns`` (a score cannot pass 10)."""
    out = X.copy()
    rows = rng.permutation(len(X))[: len(X) // 3]
    for j in columns:
        out[rows, j] = np.minimum(out[rows, j] + 2, 10)
    return out


def check(trained: Trained, X: npt.NDArray[np.int64]) -> dict[str, Any]:
    """What drift reports on rows ``X``, scored by the model as the service would score them."""
    p = trained.scores(X)
    reference = Reference.parse(json.loads(trained.files[REFERENCE]), "test")
    return compare(X, p, p >= trained.threshold, reference, Thresholds(), trained.threshold)


# ---- the three targets --------------------------------------------------------------------------------


def test_samples_of_the_training_distribution_raise_at_most_1_percent_false_alarms(trained: Trained) -> None:
    rng = np.random.default_rng(SEED)
    alarms = sum(
        check(trained, trained.X_train[rng.integers(0, len(trained.X_train), ROWS)])["drift"] for _ in range(RESAMPLES)
    )
    assert alarms <= RESAMPLES // 100


#: clump_thickness and bland_chromatin: the two whose scores spread widest, so a shift moves them least
HARDEST_PAIR = (FEATURES.index("clump_thickness"), FEATURES.index("bland_chromatin"))


@pytest.mark.parametrize("pair", ["hardest", "random"])
def test_two_features_shifted_by_2_points_on_a_third_of_the_rows_are_flagged_at_least_99_percent(
    trained: Trained, pair: str
) -> None:
    rng = np.random.default_rng(SEED)
    caught, named = 0, 0
    for _ in range(RESAMPLES):
        columns = HARDEST_PAIR if pair == "hardest" else tuple(int(j) for j in rng.choice(len(FEATURES), 2, replace=False))
        sample = trained.X_train[rng.integers(0, len(trained.X_train), ROWS)]
        report = check(trained, shifted(sample, columns, rng))
        caught += report["drift"]
        named += bool({FEATURES[j] for j in columns} & set(report["flagged"]))
    assert caught >= 0.99 * RESAMPLES
    assert named >= 0.99 * RESAMPLES  # and for the features that moved


def test_the_label_free_accuracy_estimate_is_within_0_03_of_the_true_accuracy_on_the_held_out_rows(trained: Trained) -> None:
    reference = Reference.parse(json.loads(trained.files[REFERENCE]), "test")
    called = trained.p_test >= trained.threshold
    estimated = estimate_performance(trained.p_test, called, reference)
    true_accuracy = float(np.mean(called == (trained.y_test == 1)))
    assert estimated["method"] == "CBPE" and "calibrated" in estimated["assumption"]
    assert abs(estimated["accuracy"] - true_accuracy) <= 0.03, (estimated, true_accuracy)


# ---- the statistics -----------------------------------------------------------------------------------


def test_psi_is_zero_for_equal_shares_finite_with_empty_bins_and_grows_with_the_shift() -> None:
    assert psi([10, 20, 70], [1, 2, 7]) == pytest.approx(0.0, abs=1e-12)
    o, r = np.array([0.5, 0.5, 0.0]), np.array([0.4, 0.4, 0.2])
    r_smoothed = r  # no empty reference bin; the observed empty bin counts as PSI_EPSILON, renormalised
    o_smoothed = np.array([0.5, 0.5, PSI_EPSILON]) / (1 + PSI_EPSILON)
    assert psi(o, r) == pytest.approx(float(np.sum((o_smoothed - r_smoothed) * np.log(o_smoothed / r_smoothed))))
    assert psi([50, 30, 20], [60, 30, 10]) < psi([30, 30, 40], [60, 30, 10])


def test_sparse_scores_are_pooled_with_their_neighbours_until_each_group_expects_5() -> None:
    assert pooled_groups([30, 1, 1, 1, 1, 1, 10, 0, 2, 1]) == [[0], [1, 2, 3, 4, 5], [6, 7, 8, 9]]  # 7-9 expect 3: they join 6
    assert pooled_groups([2, 2, 2]) == [[0, 1, 2]]
    assert chi_square([1, 1, 1], [1, 1, 1]) == (0.0, 1.0)  # one group: no test
    chi2, p = chi_square([40, 10, 0, 50], [25, 25, 0, 50])
    assert chi2 == pytest.approx((40 - 25) ** 2 / 25 + (10 - 25) ** 2 / 25)  # the empty score joins its neighbour
    assert p == pytest.approx(math.exp(-18 / 2))  # chi-square with 2 degrees of freedom: 3 groups


def test_a_flag_needs_both_a_large_psi_and_a_significant_p_value() -> None:
    rule = Thresholds(psi=0.1, alpha=0.01)
    assert rule.p_value == pytest.approx(0.001)  # Bonferroni over nine features and the prediction mix
    assert rule.flags(0.3, 1e-6)
    assert not rule.flags(0.3, 0.01)  # a large PSI on few rows: noise
    assert not rule.flags(0.05, 1e-30)  # significant on many rows, but small


def test_the_psi_rule_flags_at_its_threshold_and_above_not_just_below() -> None:
    rule = Thresholds(psi=0.1, alpha=0.01)
    significant = rule.p_value / 2
    assert not rule.flags(math.nextafter(0.1, 0.0), significant)  # just below: not flagged
    assert rule.flags(0.1, significant)  # "at or above": the threshold itself is flagged
    assert rule.flags(math.nextafter(0.1, 1.0), significant)
    assert not rule.flags(0.3, rule.p_value)  # the p-value must be below its level, not at it
    assert rule.flags(0.3, math.nextafter(rule.p_value, 0.0))


def test_a_features_measured_psi_as_the_threshold_flags_it_and_one_ulp_more_does_not(trained: Trained) -> None:
    """The rule as compare applies it to real traffic: the threshold set to a flagged feature's own PSI."""
    rng = np.random.default_rng(SEED)
    X = shifted(trained.X_train[rng.integers(0, len(trained.X_train), ROWS)], (FEATURES.index("mitoses"),), rng)
    p = trained.scores(X)
    reference = Reference.parse(json.loads(trained.files[REFERENCE]), "test")

    def flagged(threshold: float) -> bool:
        report = compare(X, p, p >= trained.threshold, reference, Thresholds(psi=threshold), trained.threshold)
        return bool(report["features"]["mitoses"]["flagged"])

    measured = check(trained, X)["features"]["mitoses"]
    assert measured["p_value"] < Thresholds().p_value  # significant: the PSI alone decides here
    assert flagged(math.nextafter(measured["psi"], 0.0))
    assert flagged(measured["psi"])
    assert not flagged(math.nextafter(measured["psi"], math.inf))


def test_the_reference_holds_the_training_part_and_travels_in_the_bundle(trained: Trained) -> None:
    ref = json.loads(trained.files[REFERENCE])
    n = len(trained.y_train)
    assert ref["n"] == n and set(ref["features"]) == set(FEATURES)  # a JSON object: its keys are sorted on disk
    assert ref["features"]["mitoses"] == np.bincount(trained.X_train[:, FEATURES.index("mitoses")], minlength=11)[1:].tolist()
    assert ref["classes"] == {"benign": int(n - trained.y_train.sum()), "malignant": int(trained.y_train.sum())}
    assert sum(ref["probability"]["counts"]) == n and ref["threshold"] == trained.threshold
    assert ref["predictions"]["malignant"] == int((trained.p_train >= trained.threshold).sum())
    assert Bundle.from_files(trained.files).files[REFERENCE] == trained.files[REFERENCE]  # verified like any file


def test_a_malformed_reference_is_refused_with_what_is_wrong(trained: Trained) -> None:
    ref = json.loads(trained.files[REFERENCE])
    ref["features"]["mitoses"] = ref["features"]["mitoses"][:9]
    with pytest.raises(DriftError, match=r"models/1.0.2/reference.json: not a valid drift reference .*mitoses"):
        Reference.parse(ref, "models/1.0.2/reference.json")
    with pytest.raises(DriftError, match="whole score"):
        reference_from(trained.X_train + 0.5, trained.y_train, trained.p_train)


# ---- oncology drift -----------------------------------------------------------------------------------

NOW = datetime.now(UTC)


def app() -> typer.Typer:
    """``oncology drift`` as the CLI registers it."""
    cli = typer.Typer()
    cli.command()(drift_cli.drift)

    @cli.callback()
    def main() -> None:
        """oncology"""

    return cli


def run(store: str, *args: str) -> Any:
    return CliRunner().invoke(app(), ["drift", "--store", store, *args])


def log(store: Any, trained: Trained, X: npt.NDArray[np.int64], version: str = "1.0.2", hours_ago: float = 1.0,
        writer: str = "test", now: datetime = NOW) -> int:
    """Log predictions of rows ``X`` by ``version`` spread over the hour before ``hours_ago`` hours before ``now``
    (default: when the module was collected)."""
    p = trained.scores(X)
    times = [now - timedelta(hours=hours_ago, seconds=float(s)) for s in np.linspace(0, 3599, len(X))]
    write_log(store, records(X, p, trained.threshold, version, times), writer=writer)
    return len(X)


def sample(trained: Trained, n: int, seed: int = SEED) -> npt.NDArray[np.int64]:
    """``n`` rows drawn from the training part (the file's own order is not random)."""
    return trained.X_train[np.random.default_rng(seed).integers(0, len(trained.X_train), n)]


def reports(store: Any) -> list[str]:
    return store.list("monitoring/drift/")  # type: ignore[no-any-return]


@pytest.fixture
def local(tmp_path: Path, trained: Trained, clean_env: None) -> LocalStore:
    store = LocalStore(tmp_path / "store")
    trained.publish(store)
    return store


def test_traffic_like_training_exits_0_and_writes_one_report(local: LocalStore, trained: Trained) -> None:
    rng = np.random.default_rng(SEED)
    n = log(local, trained, trained.X_train[rng.integers(0, len(trained.X_train), ROWS)])
    log(local, trained, sample(trained, 50, seed=1), hours_ago=24 * 8)  # before the default window of 7 days
    log(local, trained, sample(trained, 40, seed=2), version="1.0.1", writer="old")  # another version
    before = datetime.now(UTC)
    result = run(str(local.root))
    after = datetime.now(UTC)
    assert result.exit_code == 0, result.output
    (key,) = reports(local)
    assert f"report: {local.root}/{key}" in result.output and "no drift flagged" in result.output
    report = json.loads(local.read(key))
    assert set(report) == {"created_at", "model_version", "window", "n", "features", "prediction_mix", "estimated",
                           "thresholds", "flagged", "drift"}
    assert report["model_version"] == "1.0.2" and report["n"] == n and report["drift"] is False
    assert report["flagged"] == [] and set(report["features"]) == set(FEATURES)
    assert set(report["features"]["mitoses"]) == {"psi", "chi2", "p_value", "flagged"}
    assert set(report["prediction_mix"]) == {"observed", "reference", "p_value", "flagged"}
    assert report["estimated"]["method"] == "CBPE" and 0.9 < report["estimated"]["accuracy"] <= 1
    since, until = (datetime.fromisoformat(report["window"][k]) for k in ("since", "until"))
    assert until - since == timedelta(days=7) and before <= until <= after + timedelta(seconds=1)  # ends at the run
    assert key == f"monitoring/drift/drift-{datetime.fromisoformat(report['created_at']):%Y%m%dT%H%M%SZ}.json"
    assert "records of other model versions left out: 1.0.1: 40" in result.output


def test_predictions_logged_in_the_second_the_run_starts_are_in_its_window(local: LocalStore, trained: Trained) -> None:
    """The window ends, exclusive and to the second, at the end of the second the run starts in: a prediction logged
    a moment before the run, in that same second, is counted (the window used to end at that second's start, and a
    drift Job started within a second of its traffic found none of it)."""
    X = sample(trained, 30, seed=5)
    for attempt in range(1, 21):  # until the run starts in the second its predictions were logged (nearly always)
        poll(lambda: datetime.now(UTC).microsecond < 300_000 or None, 2, "no early moment in a second", interval=0.01)
        stamp = datetime.now(UTC)
        write_log(local, records(X, trained.scores(X), trained.threshold, "1.0.2", [stamp] * len(X)), writer=f"w{attempt}")
        result = run(str(local.root), "--since", "30m")
        assert result.exit_code == 0, result.output
        report = json.loads(local.read(max(reports(local))))
        assert report["n"] == len(X) * attempt, (report["window"], stamp)  # every attempt's, this one's included
        if datetime.fromisoformat(report["created_at"]) == stamp.replace(microsecond=0):
            return  # the run started in the second the predictions were logged in: the edge was checked
    pytest.fail("no run started in the second its predictions were logged in, in 20 attempts")


def test_shifted_traffic_exits_1_and_names_the_features(local: LocalStore, trained: Trained) -> None:
    rng = np.random.default_rng(SEED)
    sample = trained.X_train[rng.integers(0, len(trained.X_train), ROWS)]
    columns = (FEATURES.index("mitoses"), FEATURES.index("bare_nuclei"))
    log(local, trained, shifted(sample, columns, rng))
    result = run(str(local.root))
    assert result.exit_code == 1, result.output
    (key,) = reports(local)
    report = json.loads(local.read(key))
    assert report["drift"] is True and {"mitoses", "bare_nuclei"} <= set(report["flagged"])
    assert "drift flagged: " in result.output


def test_the_window_selects_partitions_and_timestamps(local: LocalStore, trained: Trained) -> None:
    log(local, trained, sample(trained, 300, seed=1), hours_ago=48)
    # 1.5 to 2.5 hours before the run, for the window of 3 hours before it: NOW is when the module was collected,
    # minutes before this test runs under `make test` (30 of them and the last rows fell out of the window)
    log(local, trained, sample(trained, 200, seed=2), hours_ago=1.5, writer="recent", now=datetime.now(UTC))
    since, until = (NOW - timedelta(hours=50)).isoformat(), (NOW - timedelta(hours=40)).isoformat()
    result = run(str(local.root), "--since", since, "--until", until)
    assert result.exit_code == 0, result.output
    assert json.loads(local.read(reports(local)[0]))["n"] == 300
    assert run(str(local.root), "--since", "3h").exit_code == 0  # a second report, a second later
    assert sorted(json.loads(local.read(k))["n"] for k in reports(local)) == [200, 300]


def test_a_version_without_reference_json_is_a_clear_error_and_writes_nothing(local: LocalStore, trained: Trained) -> None:
    log(local, trained, trained.X_train[:100], version="1.0.1")
    result = run(str(local.root), "--model", "1.0.1")
    assert result.exit_code == 2
    assert "model version 1.0.1" in result.output and "has no reference.json" in result.output
    assert "Traceback" not in result.output and reports(local) == []


def test_no_predictions_in_the_window_exits_2_and_says_so(local: LocalStore, trained: Trained) -> None:
    log(local, trained, trained.X_train[:10], hours_ago=24 * 30)
    result = run(str(local.root))
    assert result.exit_code == 2
    assert "no predictions of model version 1.0.2 are logged" in result.output and reports(local) == []


def test_with_no_predictions_logged_at_all_it_names_the_setting_that_turns_the_log_on(
    local: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from oncology.settings import ServeSettings

    result = run(str(local.root))  # right after `make run`: a trained store, a service that logs nothing
    assert result.exit_code == 2 and reports(local) == []
    named = re.findall(r"started with (ONCOLOGY_[A-Z_]+)=true", " ".join(result.output.split()))
    assert named == ["ONCOLOGY_PREDICTION_LOG"], result.output
    assert ServeSettings().prediction_log is False  # off by default ...
    monkeypatch.setenv(named[0], "true")
    assert ServeSettings(store=str(local.root)).prediction_log is True  # ... and the named variable turns it on


def test_the_table_and_the_dashboard_show_the_prediction_mix_its_psi_and_readable_p_values(
    local: LocalStore, trained: Trained
) -> None:
    from oncology.monitoring.report import mix_psi, p_value_text
    from oncology.webservice.dashboard import latest_report

    rng = np.random.default_rng(SEED)
    sample = trained.X_train[rng.integers(0, len(trained.X_train), ROWS)]
    log(local, trained, shifted(sample, (FEATURES.index("mitoses"),), rng))  # one tiny p-value among large ones
    result = CliRunner().invoke(app(), ["drift", "--store", str(local.root)], env={"COLUMNS": "200"})
    assert result.exit_code == 1, result.output
    report = json.loads(local.read(reports(local)[0]))
    assert report["features"]["mitoses"]["p_value"] < 1e-4
    mix = report["prediction_mix"]
    value = psi([mix["observed"]["benign"], mix["observed"]["malignant"]],
                [mix["reference"]["benign"], mix["reference"]["malignant"]])
    assert mix_psi(mix) == pytest.approx(value)
    (row,) = [line for line in result.output.splitlines() if "prediction mix (" in line]
    assert f"{mix['observed']['malignant']:.3f}" in row and f"{mix['reference']['malignant']:.3f}" in row
    assert f"{value:.4f}" in row  # the mix's PSI, in the PSI column
    cells = {c[0]: c for c in ([x.strip() for x in line.split("│")[1:-1]] for line in result.output.splitlines())
             if len(c) == 5}
    for name, f in report["features"].items():  # each p-value readable: 1.2e-05, not 0.000
        assert cells[name][3] == p_value_text(f["p_value"]) and (f["p_value"] >= 5e-4 or "e-" in cells[name][3])
    assert re.search(r"rule: flagged when psi >= 0\.1 and p_value < alpha / 10", " ".join(result.output.split()))

    found = latest_report(local)  # the dashboard the run wrote, as GET /dashboard serves it
    assert found is not None
    page = found[1].decode()
    shown = re.search(r'<p id="drift-mix">(.*?)</p>', page)
    assert shown is not None and "–" not in shown.group(1), shown
    assert (f"malignant share {mix['observed']['malignant']:.3f} against {mix['reference']['malignant']:.3f} in "
            f"training (PSI {value:.4f}, p-value ") in shown.group(1)
    assert ("not flagged" if not mix["flagged"] else "flagged") in shown.group(1)


def test_p_values_are_written_so_that_small_ones_stay_readable() -> None:
    from oncology.monitoring.report import p_value_text

    assert p_value_text(0.6) == "0.600"
    assert p_value_text(0.001) == "0.001"
    assert p_value_text(1.23e-5) == "1.2e-05"
    assert p_value_text(0.0) == "< 1e-300"  # underflowed
    assert p_value_text(None) == "–"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "last tuesday"], "'last tuesday' is not a time"),
        (["--since", "1h", "--until", "2h"], "the window is empty"),
        (["--model", "9.9.9"], "model version 9.9.9 is not published"),
    ],
)
def test_bad_options_exit_2_with_one_line(local: LocalStore, args: list[str], message: str) -> None:
    result = run(str(local.root), *args)
    assert result.exit_code == 2 and message in result.output, result.output


def test_a_missing_store_folder_exits_2(tmp_path: Path, clean_env: None) -> None:
    result = run(str(tmp_path / "nowhere"))
    assert result.exit_code == 2 and "no such store folder" in result.output


def test_malformed_lines_are_skipped_and_counted(local: LocalStore, trained: Trained) -> None:
    import gzip

    n = log(local, trained, sample(trained, 300))
    day = (NOW - timedelta(hours=1)).strftime("%Y-%m-%d")
    local.create(f"monitoring/predictions/date={day}/bad-000000.jsonl.gz", gzip.compress(b'{"ts": 1}\nnot json\n'))
    local.create(f"monitoring/predictions/date={day}/cut-000000.jsonl.gz", gzip.compress(b"{}\n")[:15])
    result = run(str(local.root))
    assert result.exit_code == 0, result.output
    assert json.loads(local.read(reports(local)[0]))["n"] == n
    assert "2 malformed log line(s) skipped" in result.output and "1 unreadable log file(s) skipped" in result.output


def test_an_object_cut_short_is_refused_by_name_with_on_corrupt_refuse(local: LocalStore, trained: Trained) -> None:
    import gzip

    log(local, trained, sample(trained, 300))
    day = (NOW - timedelta(hours=1)).strftime("%Y-%m-%d")
    key = f"monitoring/predictions/date={day}/cut-000000.jsonl.gz"
    local.create(key, gzip.compress(b"".join(b'{"n": %d}\n' % k for k in range(2000)))[:600])
    result = run(str(local.root), "--on-corrupt", "refuse")
    assert result.exit_code == 2 and key in result.output and "cannot be read whole" in result.output, result.output
    assert reports(local) == []
    skipped = run(str(local.root))  # the default: skipped, and named
    assert skipped.exit_code == 0 and "1 unreadable log file(s) skipped: " + key in skipped.output, skipped.output
    # as a user runs it (a process, where the library's own warning reached stderr too): named once, with the cause
    done = subprocess.run([str(Path(sys.executable).parent / "oncology"), "drift", "--store", str(local.root)],
                          capture_output=True, text=True, timeout=120, env={"PATH": str(Path(sys.executable).parent)})
    assert done.returncode == 0, done.stderr
    stderr = " ".join(done.stderr.split())
    assert stderr.count(key) == 1 and f"1 unreadable log file(s) skipped: {key} (EOFError: " in stderr, done.stderr
    assert run(str(local.root), "--engine", "spark").exit_code == 2


def test_the_dask_engine_writes_the_same_report(local: LocalStore, trained: Trained, dask_scheduler: str) -> None:
    rng = np.random.default_rng(SEED)
    log(local, trained, shifted(sample(trained, ROWS), (FEATURES.index("mitoses"),), rng))
    log(local, trained, sample(trained, 40, seed=2), version="1.0.1", writer="old")
    embedded = run(str(local.root))
    (key,) = reports(local)
    first = json.loads(local.read(key))
    # Removed before the second run: two runs of the same second write byte-identical reports, which
    # `Store.create` keeps as one object, so only an empty folder shows that the Dask run wrote its own.
    (local.root / key).unlink()
    distributed = run(str(local.root), "--engine", "dask", "--scheduler", dask_scheduler)
    assert embedded.exit_code == distributed.exit_code == 1, distributed.output
    (key,) = reports(local)
    second = json.loads(local.read(key))
    for report in (first, second):
        del report["created_at"], report["window"]  # "now" moved between the two runs
    assert first == second and first["n"] == ROWS
    assert "records of other model versions left out: 1.0.1: 40" in distributed.output


def test_an_unreachable_scheduler_is_one_line_naming_it_exit_2_within_the_timeout(local: LocalStore, trained: Trained) -> None:
    import os
    import socket
    import time

    log(local, trained, sample(trained, 50))
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    env = {**os.environ, "ONCOLOGY_SCHEDULER_TIMEOUT": "2"}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "oncology.monitoring.drift_cli", "--store", str(local.root),
                           "--engine", "dask", "--scheduler", address], capture_output=True, text=True, timeout=300, env=env)
    elapsed = time.monotonic() - started
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach the Dask scheduler " + address), proc.stderr
    assert "within 2 s (ONCOLOGY_SCHEDULER_TIMEOUT)" in lines[0], lines[0]
    assert elapsed < 30, elapsed  # Dask's own default waits 30 s; the setting's 2 s (and start-up) is well under
    assert reports(local) == []


def test_runs_as_a_process_with_the_exit_code_of_its_verdict(local: LocalStore, trained: Trained) -> None:
    rng = np.random.default_rng(SEED)
    sample = trained.X_train[rng.integers(0, len(trained.X_train), ROWS)]
    log(local, trained, shifted(sample, (FEATURES.index("mitoses"), FEATURES.index("normal_nucleoli")), rng))
    proc = subprocess.run(
        [sys.executable, "-m", "oncology.monitoring.drift_cli", "--store", str(local.root)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert "drift flagged" in proc.stderr and "report: " in proc.stdout


def test_the_command_module_imports_without_numpy_or_scipy() -> None:
    """oncology.cli registers the command at import, and the web service image (no numpy, no scipy) imports it."""
    code = "import sys, oncology.monitoring.drift_cli; print(sorted({'numpy', 'scipy'} & set(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert proc.stdout.strip() == "[]"


@pytest.mark.s3
def test_against_s3_a_report_is_written_once_and_an_old_version_is_refused(s3: S3, trained: Trained, clean_env: None) -> None:
    uri = f"s3://{s3.bucket}/drift-{NOW:%H%M%S%f}"
    store = open_store(uri)
    trained.publish(store)
    rng = np.random.default_rng(SEED)
    n = log(store, trained, trained.X_train[rng.integers(0, len(trained.X_train), ROWS)])
    result = run(uri)
    assert result.exit_code == 0, result.output
    (key,) = reports(store)
    report = json.loads(store.read(key))
    assert report["n"] == n and report["model_version"] == ModelRegistry(store).resolve("champion")
    old = run(uri, "--model", "1.0.1")
    assert old.exit_code == 2 and "has no reference.json" in old.output
    assert reports(store) == [key]
