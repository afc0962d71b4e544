"""Render manifests for the local Kubernetes 1.20 cluster: PodDisruptionBudget policy/v1 -> policy/v1beta1.

The manifests are written for current Kubernetes (policy/v1, 1.21+); 1.20 serves the same object as
policy/v1beta1 only. The two agree on ``minAvailable``/``maxUnavailable`` and a non-empty ``selector``;
anything v1beta1 would read differently (an empty selector selects nothing there, every pod in v1) or
does not have (``unhealthyPodEvictionPolicy``) is refused rather than silently changed.

    kubectl kustomize deploy/k8s/overlays/local | python deploy/k8s/legacy.py | kubectl apply -f -
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

V1BETA1_FIELDS = {"minAvailable", "maxUnavailable", "selector"}


def legacy(doc: dict[str, Any]) -> dict[str, Any]:
    if doc.get("kind") != "PodDisruptionBudget" or doc.get("apiVersion") != "policy/v1":
        return doc
    name = doc.get("metadata", {}).get("name", "?")
    spec = doc.get("spec") or {}
    extra = sorted(set(spec) - V1BETA1_FIELDS)
    if extra:
        raise ValueError(f"PodDisruptionBudget {name}: spec.{extra[0]} has no policy/v1beta1 equivalent")
    selector = spec.get("selector") or {}
    if not (selector.get("matchLabels") or selector.get("matchExpressions")):
        raise ValueError(f"PodDisruptionBudget {name}: an empty selector means every pod in policy/v1 but none in v1beta1")
    return {**doc, "apiVersion": "policy/v1beta1"}


def main() -> int:
    docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
    try:
        out = [legacy(d) for d in docs]
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    yaml.safe_dump_all(out, sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
