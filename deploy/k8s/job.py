"""Render the training Job of an overlay for one trainer image: `make train-job` pipes this to kubectl.

Reads `kubectl kustomize OVERLAY` output on stdin and writes the Job `oncology-train` with its
container's image set, plus the ConfigMaps and Secrets it references (applying the whole overlay
would also roll the web service back to the overlay's image).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import yaml


def referenced(pod: dict[str, Any]) -> set[tuple[str, str]]:
    found = set()
    for container in pod["containers"]:
        for source in container.get("envFrom", []):
            for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                if key in source:
                    found.add((kind, source[key]["name"]))
        for env in container.get("env", []):
            ref = env.get("valueFrom", {})
            for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                if key in ref:
                    found.add((kind, ref[key]["name"]))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--job", default="oncology-train")
    parser.add_argument("--image", required=True, help="the trainer image, e.g. 127.0.0.1:5000/oncology-trainer:1.0.2")
    args = parser.parse_args()
    docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
    jobs = [d for d in docs if d["kind"] == "Job" and d["metadata"]["name"] == args.job]
    if not jobs:
        print(f"error: the overlay has no Job {args.job}", file=sys.stderr)
        return 2
    job = jobs[0]
    pod = job["spec"]["template"]["spec"]
    for container in pod["containers"]:
        container["image"] = args.image
    wanted = referenced(pod)
    out = [d for d in docs if (d["kind"], d["metadata"]["name"]) in wanted] + [job]
    yaml.safe_dump_all(out, sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
