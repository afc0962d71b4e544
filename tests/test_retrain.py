"""`oncology outcomes retrain` as the retrain CronJob runs it: no alarm (3), an alarm that trains a candidate on a new
dataset version and never promotes (0), the cooldown (4), a drift alarm, and the promise of its --help."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from oncology import retrain as trigger
from oncology.monitoring.outcomes import check
from oncology.settings import OutcomeSettings
from oncology_model.registry import CHAMPION, ModelRegistry
from oncology_model.storage import LocalStore
from outcome_support import fallen_log
from support import fast_env

ONCOLOGY = str(Path(sys.executable).parent / "oncology")
GATE_OFF = {f"ONCOLOGY_GATE_MIN_{k}": "0" for k in ("ACCURACY", "RECALL", "SPECIFICITY", "ROC_AUC")}  # not tested here


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ONCOLOGY, *args], capture_output=True, text=True, timeout=600,
                          env={"PATH": str(Path(sys.executable).parent), "COLUMNS": "200", **fast_env(), **GATE_OFF, **env})


def said(done: subprocess.CompletedProcess[str]) -> str:
    return " ".join(done.stdout.split())


def test_retrain_trains_a_candidate_on_an_alarm_once_per_cooldown(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    fallen_log(store, 0.98)  # recall holds
    assert check(store, OutcomeSettings(store=str(tmp_path))).status == "ok"
    quiet = run("outcomes", "retrain", "--store", str(tmp_path))
    assert quiet.returncode == trigger.NO_ALARM == 3, quiet.stdout + quiet.stderr
    assert said(quiet).startswith("no alarm: nothing to retrain (outcome check monitoring/outcome-checks/date=")
    assert not store.list(trigger.PREFIX + "/") and not store.list("models/")

    fallen_log(store, 0.85, version="1.0.4", prefix="g")  # a newer version whose recall fell: the next check alarms
    assert check(store, OutcomeSettings(store=str(tmp_path)), datetime.now(UTC) + timedelta(seconds=1)).status == "alarm"
    first = run("outcomes", "retrain", "--store", str(tmp_path), ONCOLOGY_PROMOTE="true")  # ignored: never promotes
    assert first.returncode == 0, first.stdout + first.stderr
    assert "alarm: outcome check monitoring/outcome-checks/date=" in said(first) and "1.0.4 recall" in said(first)
    published = re.search(r"published model version (\S+) to \S+ \(candidate, not promoted; trained on dataset version "
                          r"1: 2800 case\(s\) from outcomes\)$", said(first))
    assert published, said(first)
    version = published.group(1)
    registry = ModelRegistry(store)
    assert registry.versions() == [version] and CHAMPION not in registry.state()["aliases"]
    metadata = registry.load(version).metadata
    assert metadata["data"]["dataset_version"]["version"] == "1" and metadata["data"]["dataset_version"]["outcome_cases"] == 2800
    claim = json.loads(store.read(f"{trigger.PREFIX}/00000001.json"))
    assert [a["source"] for a in claim["alarms"]] == ["outcome check"]
    result = json.loads(store.read(f"{trigger.PREFIX}/00000001.result.json"))
    assert result["status"] == "published" and result["model_version"] == version and result["dataset_version"] == "1"

    again = run("outcomes", "retrain", "--store", str(tmp_path))  # the alarm stands, but within the cooldown
    assert again.returncode == trigger.COOLING_DOWN == 4, again.stdout + again.stderr
    assert re.search(r"cooling down: retraining 1 started at \S+ \(\S+/monitoring/retrains/00000001.json, by \S+\); "
                     r"next possible at \S+$", said(again)), said(again)
    assert registry.versions() == [version] and store.list(trigger.PREFIX + "/") == [
        f"{trigger.PREFIX}/00000001.json", f"{trigger.PREFIX}/00000001.result.json"]

    # past the cooldown (none): the same outcomes give the same dataset version and the very same model
    same = run("outcomes", "retrain", "--store", str(tmp_path), "--cooldown-hours", "0")
    assert same.returncode == 0, same.stdout + same.stderr
    assert said(same).endswith(f"model version {version} already holds this very model (same dataset, same settings): "
                               "nothing published")
    assert registry.versions() == [version] and store.exists(f"{trigger.PREFIX}/00000002.result.json")


def test_a_drift_report_that_flags_drift_is_an_alarm_too(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    report = {"created_at": "2026-11-30T06:00:00+00:00", "model_version": "1.0.3", "drift": True,
              "flagged": ["bare_nuclei"], "prediction_mix": {"flagged": True}}
    store.create("monitoring/drift/drift-20261130T060000Z.json", json.dumps(report).encode())
    store.create("monitoring/drift/drift-20261129T060000Z.json", json.dumps({**report, "drift": False}).encode())
    decision = trigger.decide(store, timedelta(hours=1), datetime(2026, 11, 30, 7, tzinfo=UTC))
    assert decision.status == "go" and decision.claim is not None and decision.claim.number == 1
    (alarm,) = decision.alarms
    assert alarm.describe() == ("drift monitoring/drift/drift-20261130T060000Z.json (2026-11-30T06:00:00+00:00): "
                                "1.0.3 bare_nuclei, 1.0.3 prediction mix")
    later = trigger.decide(store, timedelta(hours=1), datetime(2026, 11, 30, 7, 59, tzinfo=UTC))
    assert later.status == "cooling_down" and later.until == datetime(2026, 11, 30, 8, tzinfo=UTC)
    assert trigger.decide(store, timedelta(hours=1), datetime(2026, 11, 30, 8, tzinfo=UTC)).status == "go"
    store.create("monitoring/drift/drift-20261130T070000Z.json", json.dumps({**report, "drift": False}).encode())
    assert trigger.decide(store, timedelta(0), datetime(2026, 12, 1, tzinfo=UTC)).status == "no_alarm"  # the newest counts


def test_retrain_help_states_every_exit_code_and_line() -> None:
    done = run("outcomes", "retrain", "--help")
    text = " ".join(done.stdout.split())
    for promise in ('0 published: "published model version X to STORE (candidate, not promoted; trained on dataset '
                    'version N: C case(s) from outcomes)"',
                    "1 trained, not published", "2 an error before any claim", '3 no alarm: "no alarm: nothing to retrain',
                    '4 cooling down: "cooling down: retraining N started at T', "ONCOLOGY_RETRAIN_COOLDOWN_HOURS; default: 168.0"):
        assert promise in text, promise
    bad = run("outcomes", "retrain", "--store", "/nonexistent/store")
    assert bad.returncode == trigger.ERROR == 2 and "no such store folder" in bad.stderr
