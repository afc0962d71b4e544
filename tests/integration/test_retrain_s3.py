"""Retraining triggers racing on one real S3 store (SeaweedFS): real processes started at the same instant, on an
alarm and no earlier retraining; exactly one claims the retraining (the store's conditional write) and trains, the
others stop as cooling down, and one candidate is published."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

import pytest
from racing import START_LINE, start_together

from oncology import datasets
from oncology import retrain as trigger
from oncology.monitoring.outcomes import check
from oncology.settings import OutcomeSettings
from oncology_model.registry import CHAMPION, ModelRegistry
from oncology_model.storage import open_store
from outcome_support import fallen_log
from support import S3, fast_env

pytestmark = pytest.mark.s3

ONCOLOGY = str(Path(sys.executable).parent / "oncology")
GATE_OFF = {f"ONCOLOGY_GATE_MIN_{k}": "0" for k in ("ACCURACY", "RECALL", "SPECIFICITY", "ROC_AUC")}

#: The command as the CronJob runs it, started by each racer at the line.
COMMAND = """
import json, subprocess, sys
""" + START_LINE + """
done = subprocess.run([sys.argv[1], "outcomes", "retrain", "--store", sys.argv[3]], capture_output=True, text=True)
print(json.dumps({"code": done.returncode, "out": done.stdout, "err": done.stderr[-3000:]}))
"""

#: The claim alone, in the racer's own process (its store client built before the line): the narrowest race.
DECIDE = """
import json, sys
from datetime import timedelta
from oncology import retrain
from oncology_model.storage import open_store
store = open_store(sys.argv[3])
store.list("monitoring/")  # connected
""" + START_LINE + """
decision = retrain.decide(store, timedelta(hours=1))
print(json.dumps({"status": decision.status, "claim": decision.claim.number if decision.claim else None}))
"""


def alarmed_store(s3: S3) -> str:
    uri = f"s3://{s3.bucket}/retrain-{uuid.uuid4().hex[:8]}"
    store = open_store(uri)  # the s3 fixture set this process's AWS_* variables
    fallen_log(store, 0.85)
    assert check(store, OutcomeSettings(store=uri)).status == "alarm"
    return uri


def test_two_retrain_commands_at_once_train_one_candidate(s3: S3, tmp_path: Path) -> None:
    uri = alarmed_store(s3)
    results = start_together(COMMAND, [[ONCOLOGY, str(tmp_path / "go"), uri] for _ in range(2)], tmp_path / "go",
                             env={**fast_env(), **GATE_OFF, "COLUMNS": "200"}, timeout=600)
    answers = sorted((r[0] for r in results), key=lambda a: a["code"])
    assert [a["code"] for a in answers] == [0, trigger.COOLING_DOWN], answers
    assert "published model version " in answers[0]["out"] and "(candidate, not promoted;" in answers[0]["out"]
    assert "cooling down: retraining 1 started at" in answers[1]["out"]
    store = open_store(uri)
    registry = ModelRegistry(store)
    (version,) = registry.versions()  # one candidate
    assert CHAMPION not in registry.state()["aliases"]  # never promoted
    assert sorted(store.list(trigger.PREFIX + "/")) == [f"{trigger.PREFIX}/00000001.json",
                                                        f"{trigger.PREFIX}/00000001.result.json"]
    assert json.loads(store.read(f"{trigger.PREFIX}/00000001.result.json"))["model_version"] == version
    assert datasets.versions(store) == [1]  # one dataset version


def test_six_triggers_claiming_at_the_same_instant_one_goes(s3: S3, tmp_path: Path) -> None:
    uri = alarmed_store(s3)
    results = start_together(DECIDE, [[ONCOLOGY, str(tmp_path / "go"), uri] for _ in range(6)], tmp_path / "go")
    statuses = sorted(r[0]["status"] for r in results)
    assert statuses == ["cooling_down"] * 5 + ["go"], results
    assert {r[0]["claim"] for r in results} == {1}  # the losers name the winner's claim
    assert open_store(uri).list(trigger.PREFIX + "/") == [f"{trigger.PREFIX}/00000001.json"]
