"""deploy/k8s/legacy.py: the policy/v1beta1 rendering for the local Kubernetes 1.20 cluster (applied there by
the e2e tier); refusals name the budget and the field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
LEGACY = REPO / "deploy" / "k8s" / "legacy.py"


def run(text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(LEGACY)], input=text, capture_output=True, text=True, timeout=60)


def test_the_local_overlay_changes_only_the_budgets_api_version() -> None:
    rendered = subprocess.run(["kubectl", "kustomize", str(REPO / "deploy/k8s/overlays/local")], capture_output=True,
                              text=True, check=True, timeout=60).stdout
    proc = run(rendered)
    assert proc.returncode == 0, proc.stderr
    before = [d for d in yaml.safe_load_all(rendered) if d]
    after = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert len(after) == len(before)
    changed = [(b, a) for b, a in zip(before, after) if a != b]
    ((b, a),) = changed
    assert (b["kind"], b["apiVersion"], a["apiVersion"]) == ("PodDisruptionBudget", "policy/v1", "policy/v1beta1")
    assert {**a, "apiVersion": "policy/v1"} == b


def pdb(spec: dict[str, object]) -> str:
    return yaml.safe_dump({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "web"},
                           "spec": spec})


def test_fields_1_20_lacks_or_reads_otherwise_are_refused_by_name() -> None:
    proc = run(pdb({"minAvailable": 1, "selector": {"matchLabels": {"app": "x"}}, "unhealthyPodEvictionPolicy": "AlwaysAllow"}))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == "error: PodDisruptionBudget web: spec.unhealthyPodEvictionPolicy has no policy/v1beta1 equivalent"
    proc = run(pdb({"minAvailable": 1, "selector": {}}))
    assert proc.returncode == 2 and "PodDisruptionBudget web: an empty selector" in proc.stderr and proc.stdout == ""
