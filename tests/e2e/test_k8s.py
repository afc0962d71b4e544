"""Issue 5 on a real Kubernetes cluster: the local overlay applied, training as a Job against SeaweedFS,
deployments and rollbacks under load with no failed request, releases that never become ready, and a
teardown that leaves nothing behind.

The cluster is ``infra/k8s``'s Kubernetes 1.20 (built from Debian's source; ``build.sh`` caches the
binaries), started by ``up.sh`` on the e2e stack's own dockerd and stopped by ``down.sh`` at the end,
whatever happened (``e2e/k8s_cluster.py``). The registry and SeaweedFS are the run's own, on free ports
(a developer's infrastructure may hold 5000 and 8333): the manifests applied are the local overlay's with
those addresses -- a kustomization on top of it that sets the images' registry and tag and the trainer's
``AWS_ENDPOINT_URL``, and nothing else (checked) -- and ``make train-job``/``deploy``/``rollback`` run as
they are, with ``REGISTRY=`` and ``OVERLAY=``. SeaweedFS runs with the credentials of the overlay's Secret.

Versions: the tier's ``published`` 1.0.1 is the bootstrap: the store of record in SeaweedFS starts with it
and the overlay deploys its images. The overlay's Job trains 1.0.2; ``make train-job`` trains the same data
with the same settings, so it publishes nothing and names its twin 1.0.2 (the first version deployed); a
training with another seed gives 1.0.3 (the second). Their wheels are taken off the shared
index at the end: the tier's other tests expect it to hold 1.0.1 alone.

Phase 10 (issue 18: canary and shadow releases judged on live traffic) lives in ``e2e/k8s_release.py``, phase 11
(issue 17: drift on the production overlay's Dask cluster, a worker killed mid-run) in ``e2e/k8s_dask.py``, phase 12
(issue 16: outcomes through the Service, the outcome check's alarm, training on the new dataset version) in
``e2e/k8s_outcomes.py``.
While developing them, ``ONCOLOGY_E2E_K8S_QUICK=1`` skips the long phases 3 to 9 (rollouts, the release chain,
never-ready releases, drift job, disruptions, node loss, training on a dying node); the default runs them all.

Traffic goes from the host to the Service's ClusterIP (kube-proxy's iptables rules), each request on a new
connection: kube-proxy balances connections, so a kept-alive connection would pin one pod.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from e2e.conftest import Published
from e2e.k8s_cluster import NODE_NAMES, Answer, Cluster, Load, Retry, kubectl_binary, request, running_cluster
from e2e.k8s_dask import run_dask_drift
from e2e.k8s_outcomes import run_outcomes
from e2e.k8s_release import run_releases
from e2e.stack import BASE_IMAGE, DATA, PUBLISH, REPO, Stack, dataset_rows
from oncology.trainer.pipeline import run_training
from oncology.webservice.predlog import PredictionLog
from oncology_model import Classifier
from oncology_model.datamodel import FEATURES
from oncology_model.registry import ModelRegistry
from oncology_model.storage import open_store
from support import fast_settings, poll

pytestmark = pytest.mark.e2e

LOCAL_OVERLAY = REPO / "deploy" / "k8s" / "overlays" / "local"
APP = "oncology-webservice"
JOB = "oncology-train"
#: the load: requests a second (in all, from 4 threads), and what a rollout must see at least
RATE = 200.0
MIN_REQUESTS_DURING_ROLLOUT = 500
#: how long `make deploy` waits for a release that never becomes ready
BAD_ROLLOUT_TIMEOUT = 15

#: The entrypoint of a release that is live but never ready: the real `oncology serve`, put into its draining
#: state (readiness off, still answering) before the kubelet first probes it. See test step 5.
NEVER_READY_ENTRYPOINT = '''\
import os, signal, subprocess, sys, time, urllib.request

server = subprocess.Popen(["/opt/oncology/bin/oncology", *sys.argv[1:]],
                          env={**os.environ, "ONCOLOGY_DRAIN_SECONDS": "3600"})
signal.signal(signal.SIGTERM, lambda *_: server.send_signal(signal.SIGTERM))  # a second one stops it at once
url = "http://127.0.0.1:%s/healthz" % os.environ.get("ONCOLOGY_PORT", "8080")
while server.poll() is None:
    try:
        urllib.request.urlopen(url, timeout=1).close()
        break
    except OSError:
        time.sleep(0.01)
server.send_signal(signal.SIGTERM)  # at its first /healthz 200: readiness off for the next hour
sys.exit(server.wait())
'''


# ---- manifests -----------------------------------------------------------------------------------


def render(path: Path) -> list[dict[str, Any]]:
    proc = subprocess.run([kubectl_binary(), "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def for_1_20(path: Path) -> str:
    """The overlay as the 1.20 cluster takes it: ``kubectl kustomize | deploy/k8s/legacy.py`` (policy/v1beta1)."""
    rendered = subprocess.run([kubectl_binary(), "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    proc = subprocess.run([sys.executable, str(REPO / "deploy" / "k8s" / "legacy.py")], input=rendered.stdout,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    named = re.compile(rf"{name}(-[a-z0-9]{{10}})?")  # a generator's hash suffix
    (doc,) = [d for d in docs if d["kind"] == kind and named.fullmatch(d["metadata"]["name"])]
    return doc


def secret_values(docs: list[dict[str, Any]], name: str) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in find(docs, "Secret", name)["data"].items()}


def run_overlay(dest: Path, registry: str, tag: str, s3_endpoint: str) -> Path:
    """A kustomization on top of the local overlay that sets the run's registry, image tag and S3 endpoint."""
    local = yaml.safe_load((LOCAL_OVERLAY / "kustomization.yaml").read_text())
    dest.mkdir(parents=True)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(LOCAL_OVERLAY, dest)],  # kustomize refuses absolute paths
        "images": [{"name": image["newName"], "newName": f"{registry}/{image['newName'].split('/', 1)[1]}",
                    "newTag": tag} for image in local["images"]],
        "configMapGenerator": [{"name": "oncology-trainer", "behavior": "merge",
                                "literals": [f"AWS_ENDPOINT_URL={s3_endpoint}"]}],
    }
    (dest / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
    return dest


def _normalized(docs: list[dict[str, Any]]) -> str:
    text = yaml.safe_dump_all(docs, sort_keys=True)
    return re.sub(r"\b(oncology-(?:trainer|webservice|s3))-[a-z0-9]{10}\b", r"\1-HASH", text)  # generator hashes


# ---- the cluster's objects -----------------------------------------------------------------------


def live_pods(cluster: Cluster) -> list[dict[str, Any]]:
    return [p for p in cluster.get("pods", "-l", f"app={APP}")["items"] if not p["metadata"].get("deletionTimestamp")]


def ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


def image_of(pod_or_template: dict[str, Any]) -> str:
    (container,) = pod_or_template["spec"]["containers"]
    return str(container["image"])


def why_it_exited(cluster: Cluster, pod: str) -> str:
    """What the pod says of its containers' exits now: their termination messages and logs (this and the
    previous container's)."""
    seen = ""
    got = cluster.kubectl("get", "pod", pod, "-o", "json", check=False)
    statuses = json.loads(got.stdout).get("status", {}).get("containerStatuses", []) if got.returncode == 0 else []
    for status in statuses:
        for state in (status.get("lastState", {}), status.get("state", {})):
            seen += state.get("terminated", {}).get("message", "")
    for flag in ("--previous", None):
        log = cluster.kubectl("logs", pod, *([flag] if flag else []), check=False)
        seen += log.stdout + log.stderr
    return seen


def wait_job(cluster: Cluster, timeout: float = 300) -> str:
    """Until the training Job succeeds (its logs), or fail at its first failed pod or after ``timeout``."""
    def succeeded() -> bool:
        status = cluster.get("job", JOB)["status"]
        if status.get("succeeded"):
            return True
        if status.get("failed"):
            logs = cluster.kubectl("logs", f"job/{JOB}", check=False)
            pytest.fail(f"the training Job failed:\n{logs.stdout[-3000:]}{logs.stderr[-2000:]}")
        return False

    poll(succeeded, timeout, f"the training Job did not finish within {timeout:.0f}s", interval=1)
    return cluster.kubectl("logs", f"job/{JOB}").stdout


def assert_clean_deployment(cluster: Cluster, image: str, digest: str | None = None, *, gone: bool = False,
                            timeout: float = 90) -> None:
    """2/2 ready on ``image`` (pulled from the registry by ``digest``), every other ReplicaSet at 0; with ``gone``,
    also no other pod left, not even one still terminating (old pods drain for ONCOLOGY_DRAIN_SECONDS)."""
    pods: list[Any] = []

    def settled() -> bool:
        nonlocal pods
        pods = cluster.get("pods", "-l", f"app={APP}")["items"]
        if not gone:
            pods = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        return len(pods) == 2 and all(not p["metadata"].get("deletionTimestamp") and ready(p) for p in pods)

    def summary() -> list[tuple[Any, ...]]:
        return [(p["metadata"]["name"], image_of(p), ready(p), p["metadata"].get("deletionTimestamp")) for p in pods]

    poll(settled, timeout, lambda: f"not 2 ready pods and nothing else after {timeout:.0f}s: {summary()}")
    assert {image_of(p) for p in pods} == {image}, summary()
    if digest is not None:
        for pod in pods:
            (status,) = pod["status"]["containerStatuses"]
            assert status["imageID"].endswith(f"@{digest}"), status["imageID"]
    deployment = cluster.get("deployment", APP)
    assert image_of(deployment["spec"]["template"]) == image
    status = deployment["status"]
    assert (status.get("replicas"), status.get("readyReplicas"), status.get("updatedReplicas"),
            status.get("availableReplicas"), status.get("unavailableReplicas")) == (2, 2, 2, 2, None), status
    active = [rs for rs in cluster.get("replicasets", "-l", f"app={APP}")["items"] if rs["spec"]["replicas"] > 0]
    assert [image_of(rs["spec"]["template"]) for rs in active] == [image]


def assert_no_container_runs(stack: Stack, cluster: Cluster, pod: str, timeout: float = 30) -> None:
    """No container of that pod runs on either node any more (dockershim labels each with its pod's name)."""
    ids: list[str] = []

    def none_left() -> bool:
        nonlocal ids
        ids = stack.docker("ps", "-q", "--filter", f"label=io.kubernetes.pod.name={pod}").stdout.split()
        ids += cluster.node2_docker("ps", "-q", "--filter", f"label=io.kubernetes.pod.name={pod}").stdout.split()
        return not ids

    poll(none_left, timeout, lambda: f"containers {ids} of pod {pod} still run after {timeout:.0f}s")


def endpoint_ips(cluster: Cluster) -> tuple[set[str], set[str]]:
    """(ready, not ready) addresses of the Service."""
    subsets = cluster.get("endpoints", APP).get("subsets") or []
    ips = {a["ip"] for s in subsets for a in s.get("addresses", [])}
    waiting = {a["ip"] for s in subsets for a in s.get("notReadyAddresses", [])}
    return ips, waiting


# ---- models, images ------------------------------------------------------------------------------


def in_process_answers(store: str, version: str, rows: list[list[int]]) -> list[tuple[str, float]]:
    """``Classifier`` of that version from the store, in this process: (prediction, probability) per row."""
    clf = Classifier.from_uri(store, version)
    assert clf.version == version
    return [(clf.label(p).value, p) for p in clf.score_rows(rows)]


def grpc_answers(svc: dict[str, Any], rows: list[list[int]]) -> list[tuple[str, float, str]]:
    """The Open Inference Protocol over gRPC through the Service's ``grpc`` port (tritonclient with its
    defaults: raw contents): (label, probability, model version) per row, in one call."""
    import numpy as np
    import tritonclient.grpc as tg

    (port,) = [p["port"] for p in svc["ports"] if p["name"] == "grpc"]
    client = tg.InferenceServerClient(f"{svc['clusterIP']}:{port}")
    try:
        deadline = time.monotonic() + 30
        while not client.is_server_ready():  # the HTTP readiness probe passed: this is at once, or nearly
            assert time.monotonic() < deadline, "gRPC never ready through the Service"
            time.sleep(0.2)
        tumor = tg.InferInput("tumor", [len(rows), len(FEATURES)], "INT64")
        tumor.set_data_from_numpy(np.asarray(rows, dtype=np.int64))
        result = client.infer("oncology", [tumor])
    finally:
        client.close()
    version = result.get_response().model_version
    return [(label.decode(), p, version)
            for label, p in zip(result.as_numpy("label"), result.as_numpy("probability").tolist())]


def publish_webservice(stack: Stack, aws: dict[str, str], store: str, version: str) -> tuple[str, str]:
    """``deploy/publish.py`` for the web-service image of ``version`` of ``store``: (tag, digest). The local
    image is removed afterwards, so that the kubelet pulls it from the registry."""
    proc = subprocess.run(
        [sys.executable, str(PUBLISH), "--registry", stack.registry, "--base-image", BASE_IMAGE,
         "--version", version, "--store", store, "--image", "webservice"],
        env={**stack.env, **aws}, capture_output=True, text=True, timeout=1800, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (line,) = proc.stdout.split()
    tag, _, digest = line.partition("@")
    assert tag == f"{stack.registry}/{APP}:{version}" and digest.startswith("sha256:")
    stack.docker("image", "rm", tag)
    return tag, digest


def build_release(stack: Stack, context: Path, tag: str, dockerfile: str, files: dict[str, str] | None = None) -> str:
    """A small image built on a published one and pushed; the local copy removed. Its digest."""
    context.mkdir(parents=True)
    (context / "Dockerfile").write_text(dockerfile)
    for name, text in (files or {}).items():
        (context / name).write_text(text)
    stack.docker("build", "--quiet", "-t", tag, str(context), timeout=300)
    pushed = stack.docker("push", tag, timeout=300).stdout
    digest = re.search(r"digest: (sha256:[0-9a-f]{64})", pushed)
    assert digest, pushed
    stack.docker("image", "rm", tag)
    return digest.group(1)


# ---- the Service under load ----------------------------------------------------------------------


@dataclass
class Service:
    host: str
    port: int
    rows: list[list[int]]

    def predict(self, row: int) -> dict[str, Any]:
        body = json.dumps(dict(zip(FEATURES, self.rows[row]))).encode()
        status, body = request(self.host, self.port, "POST", "/predict", body)
        assert status == 200, body
        answer: dict[str, Any] = json.loads(body)
        return answer

    def wait_serving(self, version: str, timeout: float = 30) -> None:
        """Until 30 answers in a row (each on a new connection) come from ``version``."""
        streak, seen = 0, Counter[str]()

        def thirty_in_a_row() -> bool:
            nonlocal streak
            got = self.predict(streak % len(self.rows))["model_version"]
            seen[got] += 1
            streak = streak + 1 if got == version else 0
            return streak >= 30

        poll(thirty_in_a_row, timeout, lambda: f"not {version} alone within {timeout:.0f}s: {seen}", interval=0)


@dataclass
class Change:
    """One `make` target run while the load ran."""

    proc: subprocess.CompletedProcess[str]
    seconds: float
    load: Load
    started: float
    finished: float
    settled: bool

    @property
    def output(self) -> str:
        return f"{self.proc.stdout[-3000:]}\n{self.proc.stderr[-3000:]}"

    def during(self) -> list[Answer]:
        return [a for a in self.load.answers if self.started <= a.sent <= self.finished]

    def failed(self) -> str:
        failures = self.load.failures()
        return f"{len(failures)} of {len(self.load.answers)} requests failed, e.g. {failures[:5]}"


def under_load(cluster: Cluster, service: Service, expected: dict[str, list[tuple[str, float]]], target: str,
               serving_after: str | None, **variables: str) -> Change:
    """``make TARGET`` while the load runs; then, if ``serving_after``, until only that version answers."""
    rows = [dict(zip(FEATURES, row)) for row in service.rows]
    with Load(service.host, service.port, rows, expected, rate=RATE) as load:
        assert load.wait_for(lambda answers: len(answers) >= 100, 30), "the Service did not answer before the change"
        started = time.monotonic()
        proc = cluster.make(target, **variables)
        finished = time.monotonic()
        settled = True
        if serving_after is not None:
            settled = load.wait_for(
                lambda answers: len(answers) > 300 and all(a.version == serving_after for a in answers[-150:]), 30)
        time.sleep(1)
    assert load.exhausted is None, f"the load loop hit its bound ({load.exhausted})"
    return Change(proc, finished - started, load, started, finished, settled)


def withdraw_wheels(stack: Stack, versions: list[str]) -> None:
    """Take the wheels this test uploaded off the tier's shared index again (pypiserver's ``remove_pkg``): the
    other tests of the session expect it to hold the one wheel that ``published`` uploaded."""
    auth = (stack.env["ONCOLOGY_PYPI_USER"], stack.password)
    for version in versions:
        form = {":action": "remove_pkg", "name": "oncology_model", "version": version}  # the name as in the file's
        answer = httpx.post(stack.env["ONCOLOGY_PYPI_URL"], data=form, auth=auth, timeout=30)
        assert answer.status_code in (200, 404), answer.text  # 404: the upload never happened
    page = httpx.get(stack.env["ONCOLOGY_PYPI_URL"].rstrip("/") + "/simple/oncology-model/", auth=auth, timeout=30)
    assert not [v for v in versions if f"oncology_model-{v}-" in page.text], page.text


# ---- drift on the cluster -----------------------------------------------------------------------


#: the drift test's traffic: rows drawn (seeded) from the complete rows; the shifted batch adds 2 points
#: (at most 10) to mitoses and bare_nuclei on a third of its rows, as tests/monitoring/test_drift.py does
DRIFT_ROWS = 500
DRIFT_SEED = 8
DRIFT_SHIFTED = ("mitoses", "bare_nuclei")


def log_service_answers(service: Service, store: str, rows: list[list[int]], hours_ago: float) -> str:
    """POST ``rows`` to the Service (``/predict/batch``) and keep every answer in the store's prediction log,
    through the service's own writer (`PredictionLog`), stamped ``hours_ago`` hours ago. The model version."""
    status, body = request(service.host, service.port, "POST", "/predict/batch",
                           json.dumps([dict(zip(FEATURES, r)) for r in rows]).encode(), timeout=60)
    assert status == 200, body[:500]
    answers = json.loads(body)
    (version,) = {a["model_version"] for a in answers}
    writer = PredictionLog(open_store(store), f"e2e-drift-{uuid.uuid4().hex[:8]}", batch_rows=len(rows),
                           clock=lambda: time.time() - hours_ago * 3600).start()
    writer.record("/predict/batch", uuid.uuid4().hex, version, rows, [a["probability"] for a in answers],
                  [a["prediction"] for a in answers], [a["decision"] for a in answers])
    assert writer.close(timeout=60), (writer.dropped, writer.errors)
    assert writer.written == len(rows) and writer.errors == []
    return str(version)


def _drift_job(cluster: Cluster, service: Service, figures: dict[str, Any], store: str, serving: str,
               trainer_tag: str, registry: str, overlay: Path) -> None:
    """Issue 8: ``make drift-job`` on the real cluster. Quiet traffic logged two hours ago -> exit 0, the report
    printed and written; traffic with two shifted features logged now -> non-zero exit, drift flagged, naming
    them. Each run looks at its own window (``DRIFT_ARGS``)."""
    rng = random.Random(DRIFT_SEED)
    quiet = [list(service.rows[rng.randrange(len(service.rows))]) for _ in range(DRIFT_ROWS)]
    shifted = [list(row) for row in quiet]
    for i in rng.sample(range(len(shifted)), len(shifted) // 3):
        for name in DRIFT_SHIFTED:
            j = FEATURES.index(name)
            shifted[i][j] = min(shifted[i][j] + 2, 10)
    client = open_store(store)
    before = set(client.list("monitoring/drift/"))

    assert log_service_answers(service, store, quiet, hours_ago=2) == serving
    t0 = time.monotonic()
    calm = cluster.make("drift-job", VERSION=trainer_tag, REGISTRY=registry, OVERLAY=str(overlay),
                        DRIFT_ARGS=f"--model {serving} --since 3h --until 1h")
    figures["k8s: make drift-job, 500 quiet predictions (s)"] = round(time.monotonic() - t0, 1)
    out = calm.stdout + calm.stderr
    assert calm.returncode == 0, out[-4000:]
    assert f"drift of model {serving}: {DRIFT_ROWS} predictions" in calm.stdout, out[-4000:]
    assert "no drift flagged" in calm.stdout and "drift flagged:" not in out, out[-4000:]
    m = re.search(r"(?m)^report: (s3://\S+)/(monitoring/drift/drift-\d{8}T\d{6}Z\.json)$", calm.stdout)
    assert m and m.group(1) == store, calm.stdout[-4000:]
    report = json.loads(client.read(m.group(2)))  # written to the store of record, as printed
    assert (report["model_version"], report["n"], report["drift"], report["flagged"]) == (serving, DRIFT_ROWS, False, [])
    assert set(client.list("monitoring/drift/")) - before == {m.group(2)}

    assert log_service_answers(service, store, shifted, hours_ago=0) == serving
    t0 = time.monotonic()
    drifted = cluster.make("drift-job", VERSION=trainer_tag, REGISTRY=registry, OVERLAY=str(overlay),
                           DRIFT_ARGS=f"--model {serving} --since 30m")
    figures["k8s: make drift-job, 500 shifted predictions (s)"] = round(time.monotonic() - t0, 1)
    out = drifted.stdout + drifted.stderr
    assert drifted.returncode != 0, out[-4000:]
    assert f"drift of model {serving}: {DRIFT_ROWS} predictions" in drifted.stdout, out[-4000:]
    flagged = re.search(r"(?m)^drift flagged: (.+)$", drifted.stdout)  # the pod's stderr, in kubectl logs
    assert flagged and set(DRIFT_SHIFTED) <= set(flagged.group(1).split(", ")), out[-4000:]
    assert "the drift Job failed: drift flagged" in drifted.stderr, out[-4000:]
    (new,) = set(client.list("monitoring/drift/")) - before - {m.group(2)}
    report = json.loads(client.read(new))
    assert report["drift"] is True and set(DRIFT_SHIFTED) <= set(report["flagged"]) and report["n"] == DRIFT_ROWS
    assert f"report: {store}/{new}" in drifted.stdout
    cluster.kubectl("delete", "job", "oncology-drift", "--wait=true")


# ---- voluntary disruptions ------------------------------------------------------------------------


def evict(cluster: Cluster, pod: str) -> subprocess.CompletedProcess[str]:
    """POST the pod's eviction subresource (what ``kubectl drain`` does): the API server checks the
    PodDisruptionBudget and answers 429 when the eviction would break it."""
    body = {"apiVersion": "policy/v1beta1", "kind": "Eviction", "metadata": {"name": pod, "namespace": "default"}}
    return cluster.kubectl("create", "--raw", f"/api/v1/namespaces/default/pods/{pod}/eviction", "-f", "-",
                           input=json.dumps(body), check=False)


def refused_by_budget(proc: subprocess.CompletedProcess[str]) -> bool:
    return proc.returncode != 0 and "disruption budget" in proc.stderr


def _disruptions(cluster: Cluster, service: Service, expected: dict[str, list[tuple[str, float]]],
                 figures: dict[str, Any], image: str, digest: str) -> None:
    """Issue 9: ``kubectl delete pod`` of a serving pod, then both pods evicted one by one through the eviction
    API, each under load with every answer checked: no request may fail."""
    rows = [dict(zip(FEATURES, row)) for row in service.rows]
    # (a) a serving pod deleted
    with Load(service.host, service.port, rows, expected, rate=RATE) as load:
        assert load.wait_for(lambda answers: len(answers) >= 100, 30), "the Service did not answer before the change"
        victim = live_pods(cluster)[0]["metadata"]["name"]
        cluster.kubectl("delete", "pod", victim, "--wait=true", timeout=120)
        assert_clean_deployment(cluster, image, digest)
        assert victim not in {p["metadata"]["name"] for p in live_pods(cluster)}
        n = len(load.answers)
        assert load.wait_for(lambda answers: len(answers) >= n + 100, 30)  # and the two new pods answer
    assert load.exhausted is None, f"the load loop hit its bound ({load.exhausted})"
    assert load.failures() == [], f"kubectl delete pod: {len(load.failures())} of {len(load.answers)} failed: {load.failures()[:5]}"
    figures["k8s: kubectl delete pod under load: failed/total"] = f"0/{len(load.answers)}"

    # (b) every pod evicted, one at a time: the budget refuses the second while the first's replacement is not ready
    with Load(service.host, service.port, rows, expected, rate=RATE) as load:
        assert load.wait_for(lambda answers: len(answers) >= 100, 30), "the Service did not answer before the change"
        first, second = sorted(p["metadata"]["name"] for p in live_pods(cluster))
        # the budget allows one disruption once the disruption controller has counted both pods healthy: its status
        # follows the pods (a) replaced a moment ago, and an eviction before it has is refused (429) like the second
        budget: dict[str, Any] = {}

        def one_allowed() -> bool:
            nonlocal budget
            budget = cluster.get("pdb", APP).get("status", {})
            return budget.get("currentHealthy") == 2 and budget.get("disruptionsAllowed") == 1

        poll(one_allowed, 60, lambda: f"the budget does not allow one disruption of 2 healthy pods: {budget}")
        t0 = time.monotonic()
        proc = evict(cluster, first)
        assert proc.returncode == 0, proc.stderr
        refused = evict(cluster, second)  # at once: one pod is already going, minAvailable 1
        assert refused_by_budget(refused), (refused.returncode, refused.stderr)
        refusals = 1

        def allowed() -> subprocess.CompletedProcess[str] | None:
            nonlocal refusals
            if refused_by_budget(answer := evict(cluster, second)):
                refusals += 1
                return None
            return answer

        proc = poll(allowed, 120, "the second eviction was refused for 120 s")
        assert proc.returncode == 0, proc.stderr
        figures["k8s: both pods evicted one by one: second eviction allowed after (s), refusals"] = (
            f"{time.monotonic() - t0:.1f}, {refusals}")
        assert_clean_deployment(cluster, image, digest, timeout=120)
        assert not {first, second} & {p["metadata"]["name"] for p in live_pods(cluster)}
        n = len(load.answers)
        assert load.wait_for(lambda answers: len(answers) >= n + 100, 30)
    assert load.exhausted is None, f"the load loop hit its bound ({load.exhausted})"
    assert load.failures() == [], f"evictions: {len(load.failures())} of {len(load.answers)} failed: {load.failures()[:5]}"
    figures["k8s: eviction of both pods one by one under load: failed/total"] = f"0/{len(load.answers)}"


# ---- losing a node ---------------------------------------------------------------------------------

NODE1, NODE2 = NODE_NAMES


def nodes_of(pods: list[dict[str, Any]]) -> list[str]:
    return sorted(p["spec"].get("nodeName") or "" for p in pods)


def node_sh(cluster: Cluster, action: str) -> str:
    """``infra/k8s/node.sh kill|start``: the second node stopped at once (SIGKILL to its kubelet, kube-proxy,
    dockerd, containerd, shims and containers), or started again (until Ready)."""
    proc = subprocess.run([str(REPO / "infra" / "k8s" / "node.sh"), action], env=cluster.env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr


def spread_again(cluster: Cluster, image: str, digest: str) -> None:
    """Until the two replicas run on the two nodes: while both are on one node, one of them is deleted (its
    replacement goes where the topology spread constraint prefers: the other node)."""
    assert_clean_deployment(cluster, image, digest, gone=True, timeout=150)
    for _ in range(3):
        pods = live_pods(cluster)
        if nodes_of(pods) == [NODE1, NODE2]:
            return
        cluster.kubectl("delete", "pod", pods[0]["metadata"]["name"], "--wait=true", timeout=120)
        assert_clean_deployment(cluster, image, digest, gone=True, timeout=150)
    pytest.fail(f"the replicas do not spread over the two nodes: {nodes_of(live_pods(cluster))}")


def back_on(cluster: Cluster, node: str) -> bool:
    """The Deployment at its 2 ready replicas, both live pods on ``node``."""
    pods = live_pods(cluster)
    status = cluster.get("deployment", APP)["status"]
    return nodes_of(pods) == [node, node] and all(ready(p) for p in pods) and status.get("readyReplicas") == 2


def _loss(cluster: Cluster, service: Service, expected: dict[str, list[tuple[str, float]]],
          retry: Retry | None) -> tuple[Load, float, float]:
    """The second node killed under load: (load, seconds until the Deployment is 2/2 on the first node,
    seconds from the kill to the last failed request or 0)."""
    rows = [dict(zip(FEATURES, row)) for row in service.rows]
    with Load(service.host, service.port, rows, expected, rate=RATE, max_seconds=300, timeout=5, retry=retry) as load:
        assert load.wait_for(lambda answers: len(answers) >= 100, 30), "the Service did not answer before the loss"
        t_kill = time.monotonic()
        node_sh(cluster, "kill")
        poll(lambda: back_on(cluster, NODE1), 180,
             lambda: f"not 2/2 on {NODE1} within 180 s: {nodes_of(live_pods(cluster))}")
        back = time.monotonic() - t_kill
        n = len(load.answers)
        assert load.wait_for(lambda answers: len(answers) >= n + 300, 60), "the Service stopped answering"
    assert load.exhausted is None, f"the load loop hit its bound ({load.exhausted})"
    failed = load.failures()
    assert all(a.error and "differs" not in a.error and "model_version" not in a.error for a in failed), failed[:5]
    last = max((a.done for a in failed), default=t_kill) - t_kill
    after = [a for a in load.answers if a.sent > t_kill + last]
    assert after and all(a.error is None for a in after)
    return load, back, last


def _node_loss(cluster: Cluster, service: Service, expected: dict[str, list[tuple[str, float]]],
               figures: dict[str, Any], image: str, digest: str) -> None:
    """Issue 11: the two replicas on the two nodes; a drain under load fails nothing and brings the replica up on
    the other node; an abrupt loss of the node (kubelet and containers at once) is measured, then fails nothing
    for clients with the retry policy (`Retry`)."""
    spread_again(cluster, image, digest)
    figures["k8s: the two replicas' nodes"] = ", ".join(nodes_of(live_pods(cluster)))

    # (a) drain
    rows = [dict(zip(FEATURES, row)) for row in service.rows]
    with Load(service.host, service.port, rows, expected, rate=RATE) as load:
        assert load.wait_for(lambda answers: len(answers) >= 100, 30), "the Service did not answer before the drain"
        t0 = time.monotonic()
        drain = cluster.kubectl("drain", NODE2, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=180s",
                                timeout=200, check=False)
        assert drain.returncode == 0, drain.stderr
        poll(lambda: back_on(cluster, NODE1), 120, lambda: nodes_of(live_pods(cluster)))
        figures["k8s: kubectl drain of the second node under load: 2/2 on the first after (s)"] = round(
            time.monotonic() - t0, 1)
        n = len(load.answers)
        assert load.wait_for(lambda answers: len(answers) >= n + 100, 30)
    assert load.exhausted is None, f"the load loop hit its bound ({load.exhausted})"
    assert load.failures() == [], f"drain: {len(load.failures())} of {len(load.answers)} failed: {load.failures()[:5]}"
    figures["k8s: kubectl drain under load: failed/total"] = f"0/{len(load.answers)}"
    assert_clean_deployment(cluster, image, digest)
    cluster.kubectl("uncordon", NODE2)

    # (b) abrupt loss, clients without retries: measured
    spread_again(cluster, image, digest)
    load, back, last = _loss(cluster, service, expected, retry=None)
    figures["k8s: node lost at once, no retries: failed/total"] = f"{len(load.failures())}/{len(load.answers)}"
    figures["k8s: node lost at once: last failed request after (s)"] = round(last, 1)
    figures["k8s: node lost at once: 2/2 on the surviving node after (s)"] = round(back, 1)
    ready_again = node_sh(cluster, "start")
    if m := re.search(r"Ready again after ([\d.]+)s", ready_again):
        figures["k8s: node.sh start: the second node Ready again (s)"] = float(m.group(1))

    # (c) abrupt loss, clients with the retry policy: nothing fails
    spread_again(cluster, image, digest)
    policy = Retry()
    load, back, last = _loss(cluster, service, expected, retry=policy)
    assert load.failures() == [], f"{len(load.failures())} of {len(load.answers)} failed with retries: {load.failures()[:5]}"
    figures["k8s: node lost at once, with retries: failed/total"] = f"0/{len(load.answers)}"
    figures["k8s: node lost at once, with retries: requests retried, most attempts"] = (
        f"{sum(a.attempts > 1 for a in load.answers)}, {max(a.attempts for a in load.answers)}")
    figures["k8s: node lost at once, with retries: 2/2 on the surviving node after (s)"] = round(back, 1)
    node_sh(cluster, "start")
    spread_again(cluster, image, digest)


def _training_on_a_dying_node(cluster: Cluster, figures: dict[str, Any], store: str, trainer_tag: str, registry: str,
                              overlay: Path) -> None:
    """Issue 11: the training Job's pod runs on the second node, which dies while it trains; the Job's pod is
    replaced on the first node, the Job completes, and exactly one new complete version is in the store."""
    before = set(ModelRegistry(open_store(store)).versions())
    rendered = cluster.kubectl("kustomize", str(overlay)).stdout
    job_proc = subprocess.run([sys.executable, str(REPO / "deploy" / "k8s" / "job.py"), "--image",
                               f"{registry}/oncology-trainer:{trainer_tag}"], input=rendered, capture_output=True,
                              text=True, timeout=60)
    assert job_proc.returncode == 0, job_proc.stderr
    docs = [d for d in yaml.safe_load_all(job_proc.stdout) if d]
    (job,) = [d for d in docs if d["kind"] == "Job"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    container.setdefault("env", []).append({"name": "ONCOLOGY_SEED", "value": "11"})  # a model not in the store yet
    cluster.kubectl("delete", "job", JOB, "--ignore-not-found", "--wait=true")
    cluster.kubectl("cordon", NODE1)  # so that its first pod goes to the second node
    try:
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
        pods: list[Any] = []

        def running_pods() -> list[Any]:
            nonlocal pods
            pods = cluster.get("pods", "-l", f"job-name={JOB}")["items"]
            return [p for p in pods if p["status"].get("phase") == "Running"]

        running = poll(running_pods, 120, lambda: [(p["metadata"]["name"], p["status"].get("phase")) for p in pods],
                       interval=0.2)
    finally:
        cluster.kubectl("uncordon", NODE1)
    (first,) = running
    assert first["spec"]["nodeName"] == NODE2
    t0 = time.monotonic()
    node_sh(cluster, "kill")  # while it trains
    status: dict[str, Any] = {}

    def completed() -> bool:
        nonlocal status
        status = cluster.get("job", JOB)["status"]
        assert not status.get("failed"), status
        return bool(status.get("succeeded"))

    poll(completed, 300, lambda: f"the Job did not complete within 300 s: {status}", interval=1)
    figures["k8s: training Job whose node died: complete after (s)"] = round(time.monotonic() - t0, 1)
    pods = cluster.get("pods", "-l", f"job-name={JOB}")["items"]
    done = [p for p in pods if p["status"].get("phase") == "Succeeded"]
    assert [p["spec"]["nodeName"] for p in done] == [NODE1], [(p["metadata"]["name"], p["spec"].get("nodeName")) for p in pods]
    assert first["metadata"]["name"] not in {p["metadata"]["name"] for p in done}
    # the replacement's logs (`kubectl logs job/...` may pick the dead pod, whose kubelet does not answer)
    logs = cluster.kubectl("logs", done[0]["metadata"]["name"]).stdout
    new = set(ModelRegistry(open_store(store)).versions()) - before
    assert len(new) == 1, f"new versions: {sorted(new)}"
    (version,) = new
    # the replacement published it, or (had the first finished before its node died) named it as its twin
    said = re.search(rf"published model version {re.escape(version)} to|version {re.escape(version)} in \S+ already "
                     "holds this very model", logs)
    assert said, logs[-2000:]
    assert Classifier.from_uri(store, version).version == version  # complete: loads and verifies
    figures["k8s: training Job whose node died: versions published"] = f"1 ({version})"
    node_sh(cluster, "start")


#: the release chain's own test step, real but bounded: the gate's and the chain's tests (this test is an e2e one,
#: which `make test` never collects, so the chain cannot run it again)
RELEASE_TESTS = "-k 'test_gate or test_release'"


def _the_release_chain(cluster: Cluster, service: Service, figures: dict[str, Any], tmp_path: Path, store: str,
                       version: str, aws: dict[str, str], expected: dict[str, list[tuple[str, float]]]) -> None:
    """``make release VERSION=<version>`` for real: test -> upload.monitoring -> publish -> deploy, with this
    run's store, registry, index and cluster; every step's effect checked. The environment is the one a user's
    shell has (the cluster's, the store's credentials): the chain must not depend on anything else."""
    coverage = tmp_path / "release-coverage"
    args = ["make", "--no-print-directory", "-C", str(REPO), "release", f"VERSION={version}", f"STORE={store}",
            f"REGISTRY={cluster.env['ONCOLOGY_REGISTRY']}", f"KUBECTL={cluster.kubectl_bin}",
            f"COVERAGE_DIR={coverage}", f"PYTEST_ARGS={RELEASE_TESTS}"]
    t0 = time.monotonic()
    proc = subprocess.run(args, env={**cluster.env, **aws}, capture_output=True, text=True, timeout=1800)
    figures["k8s: make release VERSION=... (test, upload.monitoring, publish, deploy) (s)"] = round(
        time.monotonic() - t0, 1)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    # each step ran, in order: the tests passed, the monitoring data went up, the images were pushed, rolled out
    steps = [output.find(needle) for needle in (
        " passed", "oncology monitoring upload", "deploy/publish.py", "set image")]
    assert -1 not in steps and steps == sorted(steps), output[-6000:]
    assert (coverage / "test-coverage.json").is_file() and (coverage / "unittest-coverage.json").is_file()
    monitoring = open_store(store)
    for key in (f"monitoring/kpis/test-kpis-{version}.json", f"monitoring/coverage/test/test-coverage-{version}.json"):
        assert monitoring.exists(key), f"make release wrote no {key}"
    pods = [p for p in cluster.get("pods", "-l", f"app={APP}")["items"] if not p["metadata"].get("deletionTimestamp")]
    assert {image_of(p) for p in pods if ready(p)} == {f"{cluster.env['ONCOLOGY_REGISTRY']}/{APP}:{version}"}
    service.wait_serving(version, timeout=60)
    label, p = expected[version][0]
    answer = service.predict(0)
    assert (answer["prediction"], answer["probability"], answer["model_version"]) == (label, p, version)


# ---- the test ------------------------------------------------------------------------------------


def test_issue_5_on_a_real_cluster(stack: Stack, published: Published, figures: dict[str, Any], tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import seaweedfs as weed  # infra/seaweedfs.py, the project's own start/stop
    from localproc import free_port

    t_test = time.monotonic()
    local = render(LOCAL_OVERLAY)
    trainer_settings = find(local, "ConfigMap", "oncology-trainer")["data"]
    store, data_uri = trainer_settings["ONCOLOGY_STORE"], trainer_settings["ONCOLOGY_DATA"]
    credentials = secret_values(local, "oncology-s3")

    # SeaweedFS with the development credentials of the overlay's Secret, on a free port
    s3 = weed.start(tmp_path / "seaweedfs", s3_port=free_port(), access_key=credentials["access-key-id"],
                    secret_key=credentials["secret-access-key"])
    uploaded: list[str] = []  # wheels this test puts on the shared index
    try:
        aws = {"AWS_ENDPOINT_URL": s3.endpoint_url, "AWS_ACCESS_KEY_ID": credentials["access-key-id"],
               "AWS_SECRET_ACCESS_KEY": credentials["secret-access-key"], "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_EC2_METADATA_DISABLED": "true"}
        for key, value in aws.items():
            monkeypatch.setenv(key, value)
        client = s3.client()
        for uri in (store, data_uri):
            bucket = uri.removeprefix("s3://").split("/", 1)[0]
            if bucket not in [b["Name"] for b in client.list_buckets().get("Buckets", [])]:
                client.create_bucket(Bucket=bucket)
        bucket, key = data_uri.removeprefix("s3://").split("/", 1)
        client.put_object(Bucket=bucket, Key=key, Body=DATA.read_bytes())  # the raw data, at the overlay's key
        # the store of record starts where the tier's publishing left off: 1.0.1, whose images the overlay deploys
        bootstrap = ModelRegistry(open_store(published.store))
        registry = ModelRegistry(open_store(store))
        registry.publish(bootstrap.store.read_dir(f"models/{published.version}"))
        registry.promote(published.version)

        overlay = run_overlay(tmp_path / "overlay", stack.registry, published.version, s3.endpoint_url)
        expected = _normalized(local).replace(trainer_settings["AWS_ENDPOINT_URL"], s3.endpoint_url)
        for image in ("oncology-webservice", "oncology-trainer"):
            ours = f"{stack.registry}/{image}:{published.version}"
            expected = expected.replace(f"127.0.0.1:5000/{image}:latest", ours)
        assert _normalized(render(overlay)) == expected, "the applied manifests are not the local overlay's"

        with running_cluster(stack.env, ports=(s3.s3_port,)) as cluster:
            figures["k8s: build.sh, binaries cached (s)"] = round(cluster.build_seconds, 2)
            figures["k8s: up.sh to node Ready, cached binaries (s)"] = round(cluster.up_seconds, 1)
            _the_pipeline(cluster, stack, published, figures, tmp_path, store, data_uri, overlay, aws, uploaded)
        figures["k8s: down.sh (s)"] = round(cluster.down_seconds, 1)
        # 6. nothing left behind: process, pod container, mount, KUBE-* rule, node address, sysctl, port, folder
        assert cluster.left_behind == []
    finally:
        try:
            s3.stop()
        finally:
            withdraw_wheels(stack, uploaded)
    figures["k8s: the whole test (s)"] = round(time.monotonic() - t_test)


def _the_pipeline(cluster: Cluster, stack: Stack, published: Published, figures: dict[str, Any], tmp_path: Path,
                  store: str, data_uri: str, overlay: Path, aws: dict[str, str], uploaded: list[str]) -> None:
    registry = stack.registry
    complete, _ = dataset_rows()

    # ---- 1. the local overlay on the 1.20 cluster, and training as a Job ------------------------------
    dry = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=for_1_20(LOCAL_OVERLAY), check=False)
    assert dry.returncode == 0, dry.stderr
    # 2 ConfigMaps, Secret, Service, Deployment, PodDisruptionBudget, Job
    assert dry.stdout.count("(server dry run)") == 7, dry.stdout
    made = cluster.kubectl("get", "configmaps,secrets,services,deployments,jobs,pdb", "-o", "name").stdout.split()
    assert [name for name in made if "oncology" in name] == [], "the dry run created objects"

    cluster.kubectl("apply", "-f", "-", input=for_1_20(overlay))
    assert cluster.get("pdb", APP)["apiVersion"] == "policy/v1beta1"
    cluster.kubectl("rollout", "status", f"deployment/{APP}", "--timeout=180s", timeout=200)
    assert_clean_deployment(cluster, f"{registry}/{APP}:{published.version}", published.digests["webservice"])
    logs = wait_job(cluster)  # the overlay's own Job trains as soon as it is applied
    assert re.search(rf"published model version 1\.0\.2 to {re.escape(store)}", logs), logs[-3000:]

    t0 = time.monotonic()
    job = cluster.make("train-job", VERSION=published.version, REGISTRY=registry, OVERLAY=str(overlay))
    figures["k8s: make train-job (s)"] = round(time.monotonic() - t0, 1)
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    last = job.stdout.strip().splitlines()[-1]
    m = re.fullmatch(r"published model version (\S+)|version (\S+) in \S+ already holds this very model", last)
    assert m, job.stdout[-3000:]
    first = m.group(1) or m.group(2)
    assert first == "1.0.2" and m.group(2), last  # the same data and settings as the overlay's Job: its twin
    assert f"data {data_uri}" in job.stdout  # the Job read the raw data from SeaweedFS
    pod_spec = cluster.get("job", JOB)["spec"]["template"]["spec"]
    assert pod_spec["hostNetwork"] is True
    assert image_of({"spec": pod_spec}) == f"{registry}/oncology-trainer:{published.version}"
    listing = subprocess.run(
        [str(Path(sys.executable).parent / "oncology"), "models", "list", "--store", store],
        env={**aws, "PATH": "/usr/bin:/bin", "COLUMNS": "200"}, capture_output=True, text=True, timeout=120,
    )
    assert listing.returncode == 0, listing.stderr
    (row,) = [line for line in listing.stdout.splitlines() if f" {first} " in line]
    assert "champion" in row
    trained = Classifier.from_uri(store, first)
    assert trained.metadata["data"]["uri"] == data_uri
    assert trained.metadata["data"]["sha256"] == hashlib.sha256(DATA.read_bytes()).hexdigest()

    # ---- 2. the first version, published and deployed ------------------------------------------------
    uploaded.append(first)
    tag1, digest1 = publish_webservice(stack, aws, store, first)
    t0 = time.monotonic()
    deploy = cluster.make("deploy", VERSION=first, REGISTRY=registry)
    figures["k8s: make deploy, first version (s)"] = round(time.monotonic() - t0, 1)
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    assert_clean_deployment(cluster, tag1, digest1)
    svc = cluster.get("service", APP)["spec"]
    service = Service(svc["clusterIP"], svc["ports"][0]["port"], complete)  # from the host, through kube-proxy
    service.wait_serving(first)
    expected = {first: in_process_answers(store, first, complete)}
    rows = json.dumps([dict(zip(FEATURES, r)) for r in complete]).encode()
    status, body = request(service.host, service.port, "POST", "/predict/batch", rows, timeout=60)
    assert status == 200, body[:500]
    assert [(a["prediction"], a["probability"], a["model_version"]) for a in json.loads(body)] == [
        (label, p, first) for label, p in expected[first]]
    for i in range(0, len(complete), 7):  # a sample, one request (and connection) each: both pods answer
        label, p = expected[first][i]
        answer = service.predict(i)
        assert {k: answer[k] for k in ("prediction", "probability", "model_version")} == {
            "prediction": label, "probability": p, "model_version": first}
        assert answer["decision"] in {label, "refer"}
    status, body = request(service.host, service.port, "GET", "/readyz")
    assert status == 200 and json.loads(body)["model_version"] == first
    assert grpc_answers(svc, complete) == [(label, p, first) for label, p in expected[first]]

    if os.environ.get("ONCOLOGY_E2E_K8S_QUICK") == "1":  # developing the later phases only (module docstring)
        figures["k8s: phases 3-9 skipped (ONCOLOGY_E2E_K8S_QUICK=1)"] = True
    else:
        _phases_3_to_9(cluster, stack, published, figures, tmp_path, store, data_uri, overlay, aws, uploaded, service,
                       expected, first, tag1, digest1)

    # ---- 10. issue 18: canary and shadow releases judged on live traffic, under load ----------------------------
    s3_port = int(aws["AWS_ENDPOINT_URL"].rsplit(":", 1)[1])
    since = datetime.now(UTC)
    run_releases(cluster, service, figures, store, data_uri, first, lambda v: in_process_answers(store, v, complete), s3_port)

    # ---- 11. issue 17: drift on the production overlay's Dask cluster over those logs, a worker killed mid-run ------
    run_dask_drift(cluster, figures, store, first, f"{registry}/oncology-trainer:{published.version}", s3_port, since,
                   datetime.now(UTC))

    # ---- 12. issue 16: outcomes through the Service, the check alarms, a training Job on the new dataset version --
    run_outcomes(cluster, service, figures, store, data_uri, lambda v, rows: in_process_answers(store, v, rows),
                 f"{registry}/oncology-trainer:{published.version}", overlay)


def _phases_3_to_9(cluster: Cluster, stack: Stack, published: Published, figures: dict[str, Any], tmp_path: Path,
                   store: str, data_uri: str, overlay: Path, aws: dict[str, str], uploaded: list[str],
                   service: Service, expected: dict[str, list[tuple[str, float]]], first: str, tag1: str,
                   digest1: str) -> None:
    registry = stack.registry
    complete = service.rows
    # ---- 3. a second version (another seed), rolled out under load ------------------------------------
    second = run_training(fast_settings(store, data=data_uri, seed=7, promote=True)).version
    assert second == "1.0.3"
    uploaded.append(second)
    tag2, digest2 = publish_webservice(stack, aws, store, second)
    expected[second] = in_process_answers(store, second, complete)
    rollout = under_load(cluster, service, expected, "deploy", second, VERSION=second, REGISTRY=registry)
    assert rollout.proc.returncode == 0, rollout.output
    assert rollout.load.failures() == [], rollout.failed()
    during = rollout.during()
    figures["k8s: make deploy under load, set image to 2/2 ready (s)"] = round(rollout.seconds, 1)
    figures["k8s: make deploy under load: requests during the rollout, failed"] = f"{len(during)}, 0"
    figures["k8s: make deploy under load: last old answer after it (s)"] = round(
        max(a.sent for a in rollout.load.answers if a.version == first) - rollout.finished, 2)
    assert len(during) >= MIN_REQUESTS_DURING_ROLLOUT, f"{len(during)} requests during the rollout"
    assert rollout.settled, Counter(a.version for a in rollout.load.answers[-300:])
    in_order = sorted(rollout.load.answers, key=lambda a: a.sent)
    assert in_order[0].version == first and in_order[-1].version == second
    assert first in {a.version for a in during}
    assert_clean_deployment(cluster, tag2, digest2)

    # ---- 4. rollback: the first version answers again ------------------------------------------------
    back = under_load(cluster, service, expected, "rollback-deployment", first)
    assert back.proc.returncode == 0, back.output
    assert back.load.failures() == [], back.failed()
    assert back.settled, Counter(a.version for a in back.load.answers[-300:])
    figures["k8s: make rollback under load (s)"] = round(back.seconds, 1)
    figures["k8s: make rollback under load: requests during it, failed"] = f"{len(back.during())}, 0"
    assert_clean_deployment(cluster, tag1, digest1)
    status, body = request(service.host, service.port, "GET", "/model")
    assert status == 200 and json.loads(body)["version"] == first

    # ---- 4b. the release chain as the README documents it: make release VERSION=... ---------------------
    _the_release_chain(cluster, service, figures, tmp_path, store, second, aws, expected)
    back = under_load(cluster, service, expected, "rollback-deployment", first)
    assert back.proc.returncode == 0, back.output
    assert back.load.failures() == [], back.failed()
    assert_clean_deployment(cluster, tag1, digest1)

    # ---- 5. releases that never become ready ----------------------------------------------------------
    # (a) "no-model": the first version's image with a model store where nothing was ever promoted (the
    #     pod's empty /tmp). The service loads and verifies its model before it opens its port (uvicorn
    #     runs the start-up first), and exits when it cannot: never live nor ready; CrashLoopBackOff.
    # (b) "never-ready": live, never ready. The service's only such state is draining after SIGTERM
    #     (readiness off, still answering). The second version's image, under an entrypoint that sends
    #     the real server SIGTERM at its first /healthz 200 with a one-hour drain, before the kubelet's
    #     first probe. A request routed to it would be answered, naming the second version: the load
    #     here accepts only the first.
    releases = {
        "no-model": (first, "FROM {base}\nENV ONCOLOGY_STORE=/tmp\n", {}),
        "never-ready": (second, "FROM {base}\nCOPY entrypoint.py /opt/never-ready/entrypoint.py\n"
                                'ENTRYPOINT ["/opt/oncology/bin/python", "/opt/never-ready/entrypoint.py"]\n',
                        {"entrypoint.py": NEVER_READY_ENTRYPOINT}),
    }
    only_first = {first: expected[first]}
    for name, (base_version, dockerfile, files) in releases.items():
        version = f"{base_version}-{name}"
        tag = f"{registry}/{APP}:{version}"
        build_release(stack, tmp_path / name, tag, dockerfile.format(base=f"{registry}/{APP}:{base_version}"), files)
        bad = under_load(cluster, service, only_first, "deploy", None, VERSION=version, REGISTRY=registry,
                         ROLLOUT_TIMEOUT=f"{BAD_ROLLOUT_TIMEOUT}s")
        assert bad.proc.returncode != 0, bad.output
        assert "timed out" in bad.proc.stderr, bad.output
        assert bad.seconds >= BAD_ROLLOUT_TIMEOUT  # it waited for the whole timeout before giving up
        assert bad.load.failures() == [], bad.failed()
        figures[f"k8s: make deploy of a never-ready release ({name}): fails after (s)"] = round(bad.seconds, 1)
        figures[f"k8s: make deploy of a never-ready release ({name}): requests, failed"] = (
            f"{len(bad.load.answers)}, 0")

        pods = live_pods(cluster)
        stuck = [p for p in pods if image_of(p) == tag]
        good = [p for p in pods if image_of(p) == tag1]
        assert len(stuck) == 1 and len(good) == 2 and all(ready(p) for p in good), [
            (p["metadata"]["name"], image_of(p), ready(p)) for p in pods]
        (pod,) = stuck
        (container,) = pod["status"]["containerStatuses"]
        assert not container["ready"]
        ips, _ = endpoint_ips(cluster)
        assert ips == {p["status"]["podIP"] for p in good}  # the Service sends nothing to it
        if name == "no-model":
            exited = container.get("lastState", {}).get("terminated") or container["state"].get("terminated")
            assert exited or container["state"].get("waiting", {}).get("reason") == "CrashLoopBackOff", container
            # why it exits: the termination message (FallbackToLogsOnError) or its logs; the kubelet may
            # have removed the dead container of a crash-looping pod, so ask again until one of them says
            seen: list[str] = []

            def says_why(name: str = pod["metadata"]["name"], seen: list[str] = seen) -> bool:
                seen.append(why_it_exited(cluster, name))
                return "alias 'champion' is not set" in "".join(seen)

            def shown(seen: list[str] = seen) -> str:
                return "".join(seen)[-2000:]

            poll(says_why, 60, shown, interval=1)
        else:
            assert container["restartCount"] == 0 and container["started"] is True and "running" in container["state"]
            ip = pod["status"]["podIP"]  # the pod itself, from the host
            assert request(ip, 8080, "GET", "/healthz")[0] == 200  # live ...
            status, body = request(ip, 8080, "GET", "/readyz")
            assert status == 503 and b"shutting down" in body, body  # ... never ready ...
            status, body = request(ip, 8080, "POST", "/predict", json.dumps(dict(zip(FEATURES, complete[0]))).encode())
            assert status == 200 and json.loads(body)["model_version"] == second  # ... and it would answer

        undo = under_load(cluster, service, only_first, "rollback-deployment", first)
        assert undo.proc.returncode == 0, undo.output
        assert undo.load.failures() == [], undo.failed()
        figures[f"k8s: make rollback from the never-ready release ({name}) (s)"] = round(undo.seconds, 1)
        assert_clean_deployment(cluster, tag1, digest1)
        assert_no_container_runs(stack, cluster, pod["metadata"]["name"])

    # Nothing of either release is left: the kubelet 1.20 removes a deleted pod's object only once every
    # container of the pod is removed, which for these pods its container GC (once a minute) may have to do.
    t0 = time.monotonic()
    assert_clean_deployment(cluster, tag1, digest1, gone=True, timeout=150)
    figures["k8s: never-ready releases: their pods gone after the last rollback (s)"] = round(time.monotonic() - t0, 1)

    # ---- 6. make drift-job on the cluster, over predictions the Service answered ----------------------
    _drift_job(cluster, service, figures, store, first, published.version, registry, overlay)

    # ---- 7. voluntary disruptions under load: a serving pod deleted; every pod evicted, one by one --------
    _disruptions(cluster, service, only_first, figures, tag1, digest1)

    # ---- 8. losing a node under load: drained; then lost at once, without and with retries ----------------
    _node_loss(cluster, service, only_first, figures, tag1, digest1)

    # ---- 9. training on a node that dies -------------------------------------------------------------------
    _training_on_a_dying_node(cluster, figures, store, published.version, registry, overlay)
