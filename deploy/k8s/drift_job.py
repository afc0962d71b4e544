"""Turn the training Job that `deploy/k8s/job.py` renders into a one-off drift Job: `make drift-job`.

The production overlay runs drift as the CronJob `oncology-drift`; a cluster without batch/v1 CronJob (the
local 1.20 one) runs it once as this Job.  It is the training Job of the same overlay (same image, ConfigMap,
Secret, security settings and the overlay's patches, such as the local host network) running
`oncology drift` instead of `oncology train`, with no retries: its exit code is the verdict (0 no drift,
1 drift flagged, 2 nothing could be checked), and a rerun would only write another report.

    kubectl kustomize OVERLAY | python deploy/k8s/job.py --image IMAGE | python deploy/k8s/drift_job.py
"""

from __future__ import annotations

import argparse
import shlex
import sys

import yaml

TRAIN_JOB = "oncology-train"
DRIFT_JOB = "oncology-drift"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--args", default="", help="extra arguments of oncology drift, e.g. '--since 30d'")
    parser.add_argument("--deadline", type=int, default=600, help="activeDeadlineSeconds of the Job")
    args = parser.parse_args()
    docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
    jobs = [d for d in docs if d["kind"] == "Job" and d["metadata"]["name"] == TRAIN_JOB]
    if not jobs:
        print(f"error: no Job {TRAIN_JOB} on stdin (pipe deploy/k8s/job.py's output in)", file=sys.stderr)
        return 2
    job = jobs[0]
    job["metadata"]["name"] = DRIFT_JOB
    for labels in (job["metadata"].setdefault("labels", {}), job["spec"]["template"]["metadata"].setdefault("labels", {})):
        labels["app"] = DRIFT_JOB
    spec = job["spec"]
    spec["backoffLimit"] = 0
    spec["activeDeadlineSeconds"] = args.deadline
    (container,) = spec["template"]["spec"]["containers"]
    container["args"] = ["drift", *shlex.split(args.args)]
    yaml.safe_dump_all(docs, sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
