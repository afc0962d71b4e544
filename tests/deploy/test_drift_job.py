"""The drift check on Kubernetes: the production CronJob, and `make drift-job` (rendered offline: a stand-in
kubectl renders with the real kustomize and records what would be applied); and how `make train-job` and
`make drift-job` wait for their Job (`deploy/k8s/wait_job.sh`)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

from support import make_env

REPO = Path(__file__).resolve().parents[2]
VALIDATE_AGAINST = ("1.30.0", "1.34.0")

#: kubectl: `kustomize` is the real one; `apply -f -` keeps what it was given; `get job` answers $JOB_STATE.
KUBECTL_STUB = """#!/bin/sh
here="$(dirname "$0")"
echo "$*" >> "$here/calls"
case "$1" in --context=*) shift;; esac
case "$1 $2" in
  "config current-context") echo "error: current-context is not set" >&2; exit 1;;
  "kustomize "*) exec "$REAL_KUBECTL" "$@";;
  "apply -f") cat > "$here/applied.yaml";;
  "get job") printf '%s' "$JOB_STATE";;
  "logs job/oncology-drift") echo "report: s3://oncology/pipeline/monitoring/drift/drift-20261202T060000Z.json";;
  "logs job/oncology-train") echo "published model version 1.0.9";;
esac
exit 0
"""


def render(overlay: str) -> list[dict[str, Any]]:
    out = subprocess.run(["kubectl", "kustomize", str(REPO / "deploy/k8s/overlays" / overlay)],
                         capture_output=True, text=True, check=True, timeout=60)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def make_drift_job(tmp_path: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess[str], list[str], list[dict[str, Any]]]:
    return make_job(tmp_path, "drift-job", *args, **env)


def make_job(tmp_path: Path, target: str, *args: str, **env: str) -> tuple[subprocess.CompletedProcess[str], list[str], list[dict[str, Any]]]:
    stub = tmp_path / "kubectl"
    stub.write_text(KUBECTL_STUB)
    stub.chmod(0o755)
    real = shutil.which("kubectl")
    assert real, "kubectl renders the overlays"
    proc = subprocess.run(
        ["make", "--no-print-directory", "-C", str(REPO), target, f"KUBECTL={stub}", *args],
        env=make_env(**{"HOME": str(tmp_path), "REAL_KUBECTL": real, "JOB_STATE": "Complete", **env}),
        capture_output=True, text=True, timeout=120,
    )
    calls = (tmp_path / "calls").read_text().splitlines() if (tmp_path / "calls").exists() else []
    applied = tmp_path / "applied.yaml"
    docs = [d for d in yaml.safe_load_all(applied.read_text()) if d] if applied.exists() else []
    return proc, calls, docs


def test_production_runs_drift_daily_from_the_trainer_image_with_the_retraining_settings() -> None:
    docs = {f"{d['kind']}/{d['metadata']['name']}": d for d in render("production")}
    cron, retrain = docs["CronJob/oncology-drift"], docs["CronJob/oncology-retrain"]
    assert cron["apiVersion"] == "batch/v1" and cron["spec"]["concurrencyPolicy"] == "Forbid"
    job = cron["spec"]["jobTemplate"]["spec"]
    (container,) = job["template"]["spec"]["containers"]
    (retrainer,) = retrain["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["drift"] and container["image"] == retrainer["image"]
    assert container["envFrom"] == retrainer["envFrom"] and container["env"] == retrainer["env"]
    # the verdicts (1 drift, 2 nothing to check) fail the Job at once, for the alert; no rerun, no second report
    (rule,) = job["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailJob" and rule["onExitCodes"] == {
        "containerName": container["name"], "operator": "In", "values": [1, 2]}
    for version in VALIDATE_AGAINST:
        kubernetes_validate.validate(cron, version, strict=True)


def test_make_drift_job_applies_the_overlays_training_job_running_drift_and_waits(tmp_path: Path) -> None:
    proc, calls, docs = make_drift_job(tmp_path, "VERSION=1.0.2", "DRIFT_ARGS=--since 30d",
                                       KUBECONFIG=str(tmp_path / "kubeconfig"))
    assert proc.returncode == 0, proc.stderr
    assert calls[0] == "delete job oncology-drift --ignore-not-found --wait=true"
    assert "logs job/oncology-drift" in calls and "report: s3://" in proc.stdout
    (job,) = [d for d in docs if d["kind"] == "Job"]
    assert job["metadata"]["name"] == "oncology-drift" and job["spec"]["backoffLimit"] == 0
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["drift", "--since", "30d"]
    assert container["image"] == "127.0.0.1:5000/oncology-trainer:1.0.2"
    assert pod["hostNetwork"] is True  # the local overlay's patch: SeaweedFS on the host's 127.0.0.1
    # the settings and credentials it refers to are applied with it
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("ConfigMap", container["envFrom"][0]["configMapRef"]["name"]) in names
    assert {("Secret", e["valueFrom"]["secretKeyRef"]["name"]) for e in container["env"]} <= names
    for doc in docs:
        for version in VALIDATE_AGAINST:
            kubernetes_validate.validate(doc, version, strict=True)


def test_make_drift_job_fails_when_the_job_fails_and_shows_its_output(tmp_path: Path) -> None:
    proc, calls, _ = make_drift_job(tmp_path, "VERSION=1.0.2", KUBECONFIG=str(tmp_path / "kubeconfig"),
                                    JOB_STATE="Failed")
    assert proc.returncode != 0
    assert "report: s3://" in proc.stdout and "the drift Job failed: drift flagged (exit 1)" in proc.stderr


def test_without_a_chosen_cluster_it_refuses_and_changes_nothing(tmp_path: Path) -> None:
    proc, calls, docs = make_drift_job(tmp_path, "VERSION=1.0.2")
    assert proc.returncode != 0 and docs == []
    assert "make drift-job acts on a Kubernetes cluster and none is chosen" in proc.stderr
    assert calls == ["config current-context"]  # it only asked which cluster


def test_an_alias_is_not_an_image_tag(tmp_path: Path) -> None:
    proc, calls, docs = make_drift_job(tmp_path, "VERSION=champion", KUBECONFIG=str(tmp_path / "kubeconfig"))
    assert proc.returncode != 0 and calls == [] and "make drift-job needs VERSION=<image tag>" in proc.stderr


def test_make_train_job_prints_the_version_the_job_published(tmp_path: Path) -> None:
    proc, calls, docs = make_job(tmp_path, "train-job", "VERSION=1.0.2", KUBECONFIG=str(tmp_path / "kubeconfig"))
    assert proc.returncode == 0, proc.stderr
    assert calls[0] == "delete job oncology-train --ignore-not-found --wait=true"
    assert proc.stdout.splitlines()[-1] == "published model version 1.0.9"
    (job,) = [d for d in docs if d["kind"] == "Job"]
    assert job["metadata"]["name"] == "oncology-train"


def test_make_train_job_stops_waiting_as_soon_as_the_job_fails(tmp_path: Path) -> None:
    """A failed training Job ends the wait at once with its output, not after JOB_TIMEOUT (kubectl 1.20's `wait` for
    the complete condition sat out the whole timeout: 10 minutes by default)."""
    proc, calls, _ = make_job(tmp_path, "train-job", "VERSION=1.0.2", "JOB_TIMEOUT=600s",
                              KUBECONFIG=str(tmp_path / "kubeconfig"), JOB_STATE="Failed")
    assert proc.returncode != 0
    assert "the training Job failed; see its output above" in proc.stderr
    assert "published model version 1.0.9" in proc.stdout  # its logs
    assert [c for c in calls if c.startswith("get job")] == ["get job oncology-train -o jsonpath={.status.conditions[*].type}"]


def test_a_job_that_does_not_finish_in_time_ends_the_wait_with_its_last_lines(tmp_path: Path) -> None:
    proc, calls, _ = make_job(tmp_path, "train-job", "VERSION=1.0.2", "JOB_TIMEOUT=0",
                              KUBECONFIG=str(tmp_path / "kubeconfig"), JOB_STATE="")
    assert proc.returncode != 0
    assert "the Job oncology-train did not finish in 0 s" in proc.stderr
    assert "published model version 1.0.9" in proc.stderr  # its last lines, on standard error
    assert "logs job/oncology-train --tail=50" in calls
