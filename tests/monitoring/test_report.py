"""The dashboard: built from a real store, loaded in a real headless Chromium."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import typer
from report_store import HOSTILE_CARD, coverage, drift, publish
from report_store import test_predictions as report_store_predictions
from typer.testing import CliRunner

from oncology.monitoring import report
from oncology.monitoring.report_cli import report as report_command
from oncology.webservice.dashboard import latest_report
from oncology_model.bundle import dump_json
from oncology_model.registry import ALIASES_KEY, ModelRegistry
from oncology_model.storage import LocalStore, Store

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "build" / "test-artifacts"
VERSIONS = ("1.0.1", "1.0.2", "1.0.3", "1.0.4")
#: Every chart the full store's page draws, by its container's name.
CHARTS = ("kpi-accuracy", "kpi-recall", "kpi-specificity", "kpi-roc_auc", "kpi-brier", "coverage", "confusion", "roc",
          "calibration", "timeline", "drift", "outcomes")


def _spread_history(store: Store) -> None:
    """Alias moves a day apart (the registry stamps them with the real clock, all within a second here)."""
    state = json.loads(store.read(ALIASES_KEY))
    for day, move in enumerate(state["history"], start=1):
        move["at"] = f"2026-11-{day * 3:02d}T09:30:00+00:00"
    store.write(ALIASES_KEY, dump_json(state))


@pytest.fixture(scope="module")
def full_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """Four versions: old and new kpis.json formats, two with evaluation.json, coverage for three (one of
    them the unit tests only); promotions and a rollback (champion 1.0.2); two drift runs."""
    store = LocalStore(tmp_path_factory.mktemp("dashboard-store"))
    publish(store, "1.0.1", 1, new_format=False, evaluation=False)
    publish(store, "1.0.2", 2, new_format=False, evaluation=True, card=HOSTILE_CARD)
    publish(store, "1.0.3", 3, new_format=True, evaluation=True)
    publish(store, "1.0.4", 4, new_format=True, evaluation=False)
    for version, unit, whole in (("1.0.2", 81.5, 90.1), ("1.0.3", 83.0, 91.7)):
        coverage(store, "unittest", version, unit)
        coverage(store, "test", version, whole)
    coverage(store, "unittest", "1.0.4", 84.2)
    registry = ModelRegistry(store)
    for version in ("1.0.1", "1.0.2", "1.0.4"):
        registry.promote(version)
    registry.rollback()
    _spread_history(store)
    drift(store, "20261120T080000Z", drift=False, flagged=[], model_version="1.0.1")
    drift(store, "20261201T120000Z")  # the newest: drift in bare_nuclei
    outcome_check(store)
    return store


def outcome_check(store: Store) -> None:
    """Logged predictions of 1.0.2 and their outcomes over three months, and a real `oncology outcomes check`."""
    from datetime import timedelta

    import numpy as np

    from oncology.monitoring.outcomes import check
    from oncology.settings import OutcomeSettings
    from outcome_support import T0, Logged, write_log, write_outcomes

    rng = np.random.default_rng(8)
    logged = [Logged(f"o{i}", "1.0.2", T0 + timedelta(hours=3 * i), float(rng.random())) for i in range(600)]
    write_log(store, logged)
    write_outcomes(store, [(p.request_id, "malignant" if rng.random() < p.probability else "benign",
                            p.ts + timedelta(days=10)) for p in logged])
    check(store, OutcomeSettings(store=store.uri))


def _load(browser: Any, page_file: Path) -> dict[str, Any]:
    """Open the page; wait until every chart has rendered or failed.  What the browser saw."""
    url = page_file.as_uri()
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    seen: dict[str, Any] = {"errors": [], "requests": [], "page": page, "url": url}
    # any warning counts: Vega reports a chart it had to correct (a conflicting scale, say) only as a warning
    page.on("console", lambda msg: seen["errors"].append(f"{msg.type}: {msg.text}") if msg.type in ("error", "warning") else None)
    page.on("pageerror", lambda exc: seen["errors"].append(str(exc)))
    page.on("request", lambda request: seen["requests"].append(request.url))
    page.goto(url, wait_until="load")
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-chart]')].every(el => el.dataset.rendered)", timeout=120_000
    )
    seen["rendered"] = page.eval_on_selector_all("[data-chart]", "els => Object.fromEntries(els.map(e => [e.dataset.chart, e.dataset.rendered]))")
    return seen


def test_the_page_renders_every_chart_offline_in_chromium(full_store: Store, browser: Any, tmp_path: Path) -> None:
    key = report.write_report(full_store)
    found = latest_report(full_store)  # what GET /dashboard serves
    assert found is not None and found[0] == key
    page_file = tmp_path / "dashboard.html"
    page_file.write_bytes(found[1])

    seen = _load(browser, page_file)
    page = seen["page"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

    assert [u for u in seen["requests"] if u != seen["url"]] == []  # no CDN, no network: the file alone
    assert seen["errors"] == []
    assert seen["rendered"] == dict.fromkeys(CHARTS, "true")
    for name in CHARTS:  # each chart drew its own SVG with marks in it
        assert page.locator(f"#chart-{name} svg").count() == 1, name
        assert page.locator(f"#chart-{name} svg .mark-symbol path, #chart-{name} svg .mark-rect path, "
                            f"#chart-{name} svg .mark-line path, #chart-{name} svg .mark-rule line").count() > 0, name
    for name in ("kpi-accuracy", "kpi-brier", "coverage"):  # the version axis names every version
        labels = page.locator(f"#chart-{name} svg text").all_text_contents()
        assert set(VERSIONS) <= set(labels), (name, labels)
    timeline = page.locator("#chart-timeline svg text").all_text_contents()
    assert {"1.0.1", "1.0.2", "1.0.4"} <= set(timeline)
    assert any(re.fullmatch(r"2026-11-\d\d \d\d:00", label) for label in timeline)  # dated ticks (UTC)
    assert page.locator("#champion-version").text_content() == "1.0.2"
    assert "1.0.2" in page.locator("#chart-confusion svg").text_content()
    history = page.locator("#history-table tr").all_text_contents()
    assert len(history) == 5 and "rollback" in history[1]
    assert page.locator("#drift-verdict").text_content() == "drift"
    assert "drift-20261201T120000Z.json" in page.locator("#drift").text_content()
    assert page.locator("#drift-table tr.flagged").all_text_contents()[0].startswith("bare_nuclei")
    from oncology.monitoring.drift import psi

    mix_psi = psi([0.6, 0.4], [0.65, 0.35])
    assert page.locator("#drift-mix").text_content() == (
        f"Prediction mix: malignant share 0.400 against 0.350 in training (PSI {mix_psi:.4f}, p-value 1.2e-05): "
        "not flagged."
    )
    assert page.locator("#drift-mix-row td").all_text_contents() == ["prediction mix", f"{mix_psi:.4f}", "–", "1.2e-05", "no"]
    assert page.locator("#drift-rule").text_content().startswith("Rule: flagged when psi >= 0.1 and p_value < alpha / 10")
    # the calibration chart: equal-count bins, each labelled with its count
    bins = report.calibration_bins(*report_store_predictions(136, seed=2)[:2])
    assert len(bins) == 6 and {b["n"] for b in bins} <= {22, 23}
    assert page.locator("#chart-calibration svg g.mark-text.role-mark text").all_text_contents() == [str(b["n"]) for b in bins]
    assert "6 equal-count bins of 22-23 cases" in page.locator("#chart-calibration svg").text_content()
    # the model card as a page: headings and tables, its markup inert, no local path, nothing fetched
    assert page.locator("#card-text h1").text_content() == "Model card: oncology 1.0.2"
    assert page.locator("#card-text table tr").count() == 3
    assert page.evaluate("window.pwned") is None
    card = page.locator("#card-text").text_content()
    assert "<script>" in card and "/home/trainer" not in card and "/srv/private" not in card
    assert "breast-cancer-wisconsin.data" in card and "other.data" in card
    assert page.locator("#card-text a[href^='javascript']").count() == 0 and page.locator("#card-text img").count() == 0
    assert "4 versions ·" in page.locator("header .meta").text_content()
    assert page.locator("#outcomes-table tr").count() == 1 + 3  # three months of 1.0.2
    assert "1.0.2" in page.locator("#chart-outcomes svg").text_content()
    assert "600 labelled cases" in page.locator("#outcomes").text_content()
    page.close()


def test_versions_without_evaluation_or_coverage_are_shown_without_those_charts(browser: Any, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    publish(store, "1.0.1", 1, new_format=False, evaluation=False)
    publish(store, "1.0.2", 2, new_format=True, evaluation=True)
    ModelRegistry(store).promote("1.0.1")  # the champion predates evaluation.json
    page_file = tmp_path / "dashboard.html"
    page_file.write_text(report.build_report(store))

    seen = _load(browser, page_file)
    page = seen["page"]
    assert seen["errors"] == []
    assert seen["rendered"] == dict.fromkeys(("kpi-accuracy", "kpi-recall", "kpi-specificity", "kpi-roc_auc",
                                              "kpi-brier", "timeline"), "true")
    assert "without its held-out predictions" in page.locator("#curves-note").text_content()
    assert page.locator("#confusion-table tr").count() == 3  # from kpis.json instead
    assert page.locator("#drift-none").text_content() == "No drift run yet."
    assert "No outcome check yet" in page.locator("#outcomes-none").text_content()
    assert "No coverage report" in page.locator("#coverage").text_content()
    assert set(VERSIONS[:2]) <= set(page.locator("#chart-kpi-accuracy svg text").all_text_contents())
    page.close()


def test_an_empty_store_gives_a_page_that_says_so(tmp_path: Path) -> None:
    page = report.build_report(LocalStore(tmp_path))
    assert "No champion yet" in page and "No drift run yet." in page and "No promotion yet." in page


# ---- the figures behind the charts -------------------------------------------------------------------


def test_roc_points_confusion_and_calibration_of_a_small_example() -> None:
    y = [0, 0, 1, 1, 0, 1]
    proba = [0.1, 0.4, 0.35, 0.8, 0.8, 0.95]
    points = report.roc_points(y, proba)
    assert [(p["fpr"], p["tpr"]) for p in points] == [
        (0, 0), (0, 1 / 3), (1 / 3, 2 / 3), (2 / 3, 2 / 3), (2 / 3, 1), (1, 1)  # the tie at 0.8 moves together
    ]
    assert report.roc_auc(points) == pytest.approx(13 / 18)  # as sklearn.metrics.roc_auc_score of the same data
    assert report.roc_points([1, 1], [0.2, 0.9]) == []  # one class: no curve
    assert report.confusion(y, proba, 0.4) == {"tn": 1, "fp": 2, "fn": 1, "tp": 2}  # 0.4 itself is malignant
    bins = report.calibration_bins(y, proba, bins=2)  # equal-count: the three lowest probabilities, the three highest
    assert bins == [
        {"bin": 0, "low": 0.1, "high": 0.4, "predicted": pytest.approx(0.85 / 3), "observed": pytest.approx(1 / 3), "n": 3},
        {"bin": 1, "low": 0.8, "high": 0.95, "predicted": pytest.approx(2.55 / 3), "observed": pytest.approx(2 / 3), "n": 3},
    ]
    assert report.calibration_bins([1], [1.0], bins=10) == [
        {"bin": 0, "low": 1.0, "high": 1.0, "predicted": 1.0, "observed": 1.0, "n": 1}  # never more bins than cases
    ]
    assert report.calibration_bins([], []) == []


@pytest.mark.parametrize(("n", "bins", "sizes"), [(136, 6, {22, 23}), (30, 2, {15}), (10, 2, {5}), (1000, 10, {100})])
def test_calibration_bins_hold_equal_counts_enough_cases_each_and_rise(n: int, bins: int, sizes: set[int]) -> None:
    y, proba, _ = report_store_predictions(n, seed=5)
    found = report.calibration_bins(y, proba)
    assert len(found) == bins and {b["n"] for b in found} == sizes and sum(b["n"] for b in found) == n
    assert all(a["high"] <= b["low"] for a, b in zip(found, found[1:]))  # each bin above the one before
    assert all(b["low"] <= b["predicted"] <= b["high"] for b in found)


def test_evaluation_from_gives_plain_json_and_refuses_inconsistent_input() -> None:
    import numpy as np

    value = report.evaluation_from(np.array([0, 1]), np.array([0.25, 0.75]), np.array([1000025, 1002945]))
    assert value == {"test": {"y": [0, 1], "proba": [0.25, 0.75], "ids": [1000025, 1002945]}}
    assert json.loads(report.evaluation_file([0, 1], [0.25, 0.75], ["a", "b"])) == {
        "test": {"y": [0, 1], "proba": [0.25, 0.75], "ids": ["a", "b"]}
    }
    with pytest.raises(ValueError, match="differ in length"):
        report.evaluation_from([0, 1], [0.5], [1, 2])
    with pytest.raises(ValueError, match="0 .benign. or 1"):
        report.evaluation_from([0, 2], [0.5, 0.5], [1, 2])
    with pytest.raises(ValueError, match="within \\[0, 1\\]"):
        report.evaluation_from([0, 1], [0.5, float("nan")], [1, 2])


def test_kpi_rows_carry_the_cv_spread_and_the_test_ci_when_there_is_one() -> None:
    old = report.VersionInfo("1.0.1", kpis={"test": {"accuracy": 0.97}, "cv": {"mean": {"accuracy": 0.96}, "std": {"accuracy": 0.02}}})
    new = report.VersionInfo("1.0.2", kpis={"test": {"accuracy": 0.98, "ci": {"accuracy": [0.95, 0.99]}},
                                            "cv": {"mean": {"accuracy": 0.97}, "std": {"accuracy": 0.01}}})
    rows = report.kpi_rows([old, new], "accuracy")
    by = {(r["version"], r["series"].split(" ")[0]): r for r in rows}
    assert by[("1.0.1", "held-out")]["low"] is None  # no CI in the old format: no bar
    assert by[("1.0.2", "held-out")]["low"] == 0.95 and by[("1.0.2", "held-out")]["high"] == 0.99
    assert by[("1.0.1", "CV")]["low"] == pytest.approx(0.94) and by[("1.0.1", "CV")]["high"] == pytest.approx(0.98)


def test_interval_bars_stay_within_0_and_1() -> None:
    near_one = report.VersionInfo("1.0.3", kpis={"test": {"recall": 1.0, "ci": {"recall": [0.93, 1.0]}},
                                                 "cv": {"mean": {"recall": 0.99}, "std": {"recall": 0.02}}})
    near_zero = report.VersionInfo("1.0.4", kpis={"test": {"brier": 0.01, "ci": {"brier": [-0.002, 0.03]}},
                                                  "cv": {"mean": {"brier": 0.02}, "std": {"brier": 0.03}}})
    recall = {r["series"].split(" ")[0]: r for r in report.kpi_rows([near_one], "recall")}
    assert recall["CV"]["high"] == 1.0 and recall["CV"]["low"] == pytest.approx(0.97)  # 0.99 + 0.02 is not 1.01
    assert recall["CV"]["value"] == 0.99 and recall["CV"]["std"] == 0.02  # the figures themselves are untouched
    brier = {r["series"].split(" ")[0]: r for r in report.kpi_rows([near_zero], "brier")}
    assert brier["CV"]["low"] == 0.0 and brier["held-out"]["low"] == 0.0


# ---- in the store, and on the command line ----------------------------------------------------------


def test_reports_are_written_once_each_and_the_newest_is_served(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    publish(store, "1.0.1", 1, new_format=True, evaluation=True)
    moment = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
    first = report.write_report(store, now=moment)
    ModelRegistry(store).promote("1.0.1")  # the second page differs: the champion
    second = report.write_report(store, now=moment)  # same second: the next free name, nothing replaced
    assert first == "monitoring/report/report-20261201T120000Z.html"
    assert second == "monitoring/report/report-20261201T120001Z.html"
    assert "champion 1.0.1" not in store.read(first).decode() and "champion 1.0.1" in store.read(second).decode()
    assert latest_report(store) == (second, store.read(second))


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command("report")(report_command)  # as the lead registers it in oncology.cli

    @app.callback()
    def main() -> None:
        """oncology"""

    return app


def test_the_command_writes_the_page_and_fails_in_one_line_on_a_missing_store(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    publish(store, "1.0.1", 1, new_format=True, evaluation=True)
    out = tmp_path / "out" / "dashboard.html"
    result = CliRunner().invoke(_cli(), ["report", "--store", str(store.root), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text().startswith("<!DOCTYPE html>") and re.search(r"wrote .*dashboard\.html", result.output)

    missing = tmp_path / "no-such-store"
    result = CliRunner().invoke(_cli(), ["report", "--store", str(missing), "--out", str(tmp_path / "x.html")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"error: {missing}: no such store folder (a mistyped --store or ONCOLOGY_STORE?)"]
    assert not (tmp_path / "x.html").exists()


def test_the_page_shows_the_champions_model_card_rendered_without_local_paths(trained_store: Path) -> None:
    card = (trained_store / "models" / "1.0.1" / "card.md").read_text()
    page = report.build_report(LocalStore(trained_store))
    shown = re.search(r'<div class="scroll" id="card-text">(.*?)</div></details>', page, flags=re.S)
    assert shown is not None and "Model card of 1.0.1" in page
    html = shown.group(1)
    assert "<h1>Model card: oncology 1.0.1</h1>" in html and "<h2>Intended use</h2>" in html
    tables = sum(1 for line in card.splitlines() if line.startswith("| ---"))  # a delimiter row per table
    assert tables > 5 and html.count("<table>") == tables
    assert "| --- |" not in html and "<script" not in html
    repo = str(Path(__file__).resolve().parents[2])
    assert repo not in page and "breast-cancer-wisconsin.data" in html  # the data file by its name alone


def test_a_card_renders_its_markup_as_text_and_cuts_local_paths() -> None:
    html = report.card_html(HOSTILE_CARD)
    assert "<script>" not in html and "&lt;script&gt;" in html  # shown, not run
    assert "<img" not in html and 'href="javascript' not in html
    assert "/home/trainer" not in html and "file:///srv" not in html and "- File:" not in html  # rendered as a list
    assert "<li>File: breast-cancer-wisconsin.data (sha256 abc)</li>" in html


def test_one_version_is_one_version(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    publish(store, "1.0.1", 1, new_format=True, evaluation=True)
    page = report.build_report(store)
    assert " · 1 version · " in page and "1 versions" not in page


def test_a_champion_without_a_card_is_said_so(tmp_path: Path, trained_store: Path) -> None:
    from oncology_model.bundle import CARD_JSON, CARD_MD, MANIFEST, make_manifest

    source = trained_store / "models" / "1.0.1"
    files = {p.name: p.read_bytes() for p in source.iterdir() if p.name not in {CARD_MD, CARD_JSON, MANIFEST}}
    registry = ModelRegistry(LocalStore(tmp_path))
    registry.publish({**files, MANIFEST: make_manifest("1.0.1", files)})
    registry.promote("1.0.1")
    page = report.build_report(LocalStore(tmp_path))
    assert 'id="card-none"' in page and "1.0.1 has no model card" in page and 'id="card-text"' not in page
