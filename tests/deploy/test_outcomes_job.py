"""The outcome check on Kubernetes: the production CronJob runs `oncology outcomes check` daily from the trainer
image (DuckDB is there, not in the service's image), with the drift check's store and credentials."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
from deploy.test_drift_job import VALIDATE_AGAINST, render

REPO = Path(__file__).resolve().parents[2]


def test_production_runs_the_outcome_check_daily_from_the_trainer_image() -> None:
    docs = {f"{d['kind']}/{d['metadata']['name']}": d for d in render("production")}
    cron, drift = docs["CronJob/oncology-outcomes"], docs["CronJob/oncology-drift"]
    assert cron["apiVersion"] == "batch/v1" and cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert cron["spec"]["schedule"] == "30 6 * * *"
    job = cron["spec"]["jobTemplate"]["spec"]
    (container,) = job["template"]["spec"]["containers"]
    (drifter,) = drift["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["outcomes", "check"] and container["image"] == drifter["image"]
    assert container["envFrom"] == drifter["envFrom"] and container["env"] == drifter["env"]
    # the verdicts (1 alarm, 2 nothing to check) fail the Job at once; no rerun, no second report
    (rule,) = job["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailJob" and rule["onExitCodes"] == {
        "containerName": container["name"], "operator": "In", "values": [1, 2]}
    assert container["securityContext"]["readOnlyRootFilesystem"]
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]  # DuckDB spills there
    for version in VALIDATE_AGAINST:
        kubernetes_validate.validate(cron, version, strict=True)


def test_duckdb_is_in_the_trainer_image_and_not_in_the_services() -> None:
    trainer = (REPO / "deploy/docker/trainer/requirements.txt").read_text()
    service = (REPO / "deploy/docker/webservice/requirements.txt").read_text()
    assert "duckdb==" in trainer and "duckdb-ext-httpfs==" in trainer
    assert "duckdb" not in service and "numpy" not in service


def test_production_retrains_through_the_trigger_which_never_promotes() -> None:
    """The retrain CronJob runs `oncology outcomes retrain` (alarm + cooldown + claim), not a bare `train`; its own
    verdicts (1 not published, 3 no alarm, 4 cooling down) end the Job at once, an error (2) is retried."""
    from oncology import retrain as trigger

    docs = {f"{d['kind']}/{d['metadata']['name']}": d for d in render("production")}
    cron, check = docs["CronJob/oncology-retrain"], docs["CronJob/oncology-outcomes"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid" and cron["spec"]["schedule"] == "0 7 * * *"
    job = cron["spec"]["jobTemplate"]["spec"]
    (container,) = job["template"]["spec"]["containers"]
    (checker,) = check["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["outcomes", "retrain"] and container["image"] == checker["image"]
    assert container["envFrom"] == checker["envFrom"] and container["env"] == checker["env"]
    assert not any(e["name"] == "ONCOLOGY_PROMOTE" for e in container["env"])
    (rule,) = job["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailJob" and rule["onExitCodes"]["values"] == [
        trigger.NOT_PUBLISHED, trigger.NO_ALARM, trigger.COOLING_DOWN]
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    for version in VALIDATE_AGAINST:
        kubernetes_validate.validate(cron, version, strict=True)
