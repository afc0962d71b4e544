"""Issue 17 on the real cluster: ``oncology drift --engine dask`` on the production overlay's Dask cluster, over
prediction logs the Service wrote to SeaweedFS, with a worker pod killed mid-run.

The scheduler and workers are the production overlay's (``deploy/k8s/overlays/production/dask.yaml``, rendered
with the overlay), with two changes, both checked: the image is the trainer image this run built and pushed, and
the workers name the scheduler by its Service's cluster IP (this cluster runs no DNS). The workers spread over the
two nodes. The drift job runs from the host against the Service's cluster IP; the S3 endpoint it sends with each
task is the second node's forwarder (``NODE2_GW``), which the host and every pod reach. As soon as a worker holds
tasks, its pod is deleted at once (no grace): the job must still finish, with the same report, figure for figure,
as the embedded DuckDB engine on the same window, and the same exit status.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import warnings
from datetime import datetime
from typing import Any

import yaml

from e2e.k8s_cluster import NODE2_GW, NODE_NAMES, Cluster
from e2e.k8s_release import ONCOLOGY, cli
from e2e.stack import REPO
from oncology_model.storage import open_store
from support import poll

PRODUCTION = REPO / "deploy" / "k8s" / "overlays" / "production"
SCHEDULER = "oncology-dask-scheduler"
WORKER = "oncology-dask-worker"
OVERLAY_SCHEDULER = f"tcp://{SCHEDULER}:8786"


def dask_manifests(cluster: Cluster, trainer_image: str) -> list[dict[str, Any]]:
    """The production overlay's Dask objects, with this run's trainer image."""
    rendered = cluster.kubectl("kustomize", str(PRODUCTION)).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d and d["metadata"]["name"].startswith("oncology-dask-")]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in docs) == [
        ("Deployment", SCHEDULER), ("Deployment", WORKER), ("Service", SCHEDULER)], docs
    for doc in docs:
        if doc["kind"] == "Deployment":
            (container,) = doc["spec"]["template"]["spec"]["containers"]
            assert container["image"].rsplit("/", 1)[1].startswith("oncology-trainer:"), container["image"]
            container["image"] = trainer_image
    return docs


def pods_of(cluster: Cluster, app: str) -> list[dict[str, Any]]:
    return [p for p in cluster.get("pods", "-l", f"app={app}")["items"] if not p["metadata"].get("deletionTimestamp")]


def workers_ready(cluster: Cluster) -> list[dict[str, Any]] | None:
    pods = pods_of(cluster, WORKER)
    ok = len(pods) == 2 and all(any(c["type"] == "Ready" and c["status"] == "True"
                                    for c in p["status"].get("conditions", [])) for p in pods)
    return pods if ok else None


def report_of(proc: subprocess.CompletedProcess[str], store: str) -> dict[str, Any]:
    m = re.search(r"(?m)^report: (s3://\S+)/(monitoring/drift/drift-\d{8}T\d{6}Z\.json)$", proc.stdout)
    assert m and m.group(1) == store, proc.stdout[-3000:] + proc.stderr[-3000:]
    report: dict[str, Any] = json.loads(open_store(store).read(m.group(2)))
    del report["created_at"]
    return report


def run_dask_drift(cluster: Cluster, figures: dict[str, Any], store: str, version: str, trainer_image: str,
                   s3_port: int, since: datetime, until: datetime) -> None:
    import distributed

    t_phase = time.monotonic()
    docs = dask_manifests(cluster, trainer_image)
    (service,) = [d for d in docs if d["kind"] == "Service"]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(service))
    ip = cluster.get("service", SCHEDULER)["spec"]["clusterIP"]
    address = f"tcp://{ip}:8786"
    for doc in docs:
        if doc["metadata"]["name"] == WORKER:
            (container,) = doc["spec"]["template"]["spec"]["containers"]
            assert container["command"].count(OVERLAY_SCHEDULER) == 1, container["command"]
            container["command"] = [address if arg == OVERLAY_SCHEDULER else arg for arg in container["command"]]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([d for d in docs if d["kind"] == "Deployment"]))
    try:
        for name in (SCHEDULER, WORKER):
            cluster.kubectl("rollout", "status", f"deployment/{name}", "--timeout=240s", timeout=260)
        for _ in range(3):  # soft spread (ScheduleAnyway): a replica that landed beside the other is moved once
            pods = poll(lambda: workers_ready(cluster), 120, "the two Dask workers are not ready")
            if sorted(p["spec"]["nodeName"] for p in pods) == sorted(NODE_NAMES):
                break
            cluster.kubectl("delete", "pod", pods[0]["metadata"]["name"], "--wait=true", timeout=120)
        else:
            raise AssertionError(f"the Dask workers do not spread over the nodes: {[p['spec']['nodeName'] for p in pods]}")
        figures["k8s dask: scheduler and 2 workers (one per node) ready (s)"] = round(time.monotonic() - t_phase, 1)

        env = {"AWS_ENDPOINT_URL": f"http://{NODE2_GW}:{s3_port}"}  # what the workers reach, sent with each task
        args = ["drift", "--model", version, "--since", since.isoformat(), "--until", until.isoformat()]
        t0 = time.monotonic()
        duck = cli(store, *args, env=env)
        figures["k8s dask: oncology drift, DuckDB engine on the host (s)"] = round(time.monotonic() - t0, 1)
        assert duck.returncode in (0, 1), duck.stdout[-3000:] + duck.stderr[-3000:]
        expected = report_of(duck, store)
        assert expected["n"] > 1000, expected["n"]

        with warnings.catch_warnings():  # the host's Python is 3.11.7, the image's 3.11.2: Dask warns, rightly harmless
            warnings.simplefilter("ignore", distributed.versions.VersionMismatchWarning)
            watcher = distributed.Client(address, timeout=30)
        with watcher:
            poll(lambda: len(watcher.scheduler_info()["workers"]) == 2, 60, "the scheduler does not see 2 workers")
            t0 = time.monotonic()
            proc = subprocess.Popen([ONCOLOGY, *args, "--engine", "dask", "--scheduler", address, "--store", store],
                                    env={**cli_env(), **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                def busy_worker() -> str | None:
                    assert proc.poll() is None, "the Dask job ended before a worker held a task"
                    busy = [w for w, keys in watcher.processing().items() if keys]
                    return busy[0] if busy else None

                victim_address = poll(busy_worker, 120, "no Dask worker got a task", interval=0.05)
                victim_ip = victim_address.removeprefix("tcp://").rsplit(":", 1)[0]
                (victim,) = [p for p in pods_of(cluster, WORKER) if p["status"].get("podIP") == victim_ip]
                cluster.kubectl("delete", "pod", victim["metadata"]["name"], "--grace-period=0", "--force",
                                "--wait=false")
                killed_mid_run = proc.poll() is None
                stdout, stderr = proc.communicate(timeout=600)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        seconds = time.monotonic() - t0
        assert killed_mid_run, "the Dask job had ended before the worker was killed"
        dask = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
        assert dask.returncode == duck.returncode, dask.stdout[-3000:] + dask.stderr[-3000:]
        got = report_of(dask, store)
        assert got == expected, (got, expected)
        assert victim["metadata"]["name"] not in {p["metadata"]["name"] for p in pods_of(cluster, WORKER)}
        figures["k8s dask: oncology drift --engine dask, a worker pod killed mid-run (s)"] = round(seconds, 1)
        figures["k8s dask: predictions in the window, log objects"] = f"{expected['n']}, {count_objects(store, since, until)}"
        poll(lambda: workers_ready(cluster), 120, "the killed worker was not replaced")
    finally:
        cluster.kubectl("delete", "deployment", SCHEDULER, WORKER, "--ignore-not-found", "--wait=false")
        cluster.kubectl("delete", "service", SCHEDULER, "--ignore-not-found")
    figures["k8s dask: the whole phase (s)"] = round(time.monotonic() - t_phase, 1)


def cli_env() -> dict[str, str]:
    import os

    return dict(os.environ)


def count_objects(store: str, since: datetime, until: datetime) -> int:
    days = {since.date().isoformat(), until.date().isoformat()}
    client = open_store(store)
    return sum(len(client.list(f"monitoring/predictions/date={day}/")) for day in days)
