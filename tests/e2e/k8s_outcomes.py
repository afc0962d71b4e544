"""Issue 16 on the real cluster: predictions served by the Service and logged, outcomes posted through the Service,
the outcome check alarming on a population whose malignant recall has fallen, and a training Job on the new dataset
version that publishes a candidate and promotes nothing.

The simulated population, each case one request through the Service with its own ``x-request-id``, every answer
checked against the in-process model of the version that answered: rows of the UCI file the champion calls
malignant (their outcome: malignant) and benign (benign), and a new kind of malignant tumour that the champion
misses -- four feature patterns not in the UCI file (one feature at 10, the others low), which it calls benign. With
their outcomes posted (malignant), the champion's malignant recall on the labelled cases is about 0.8 instead of
0.98: ``oncology outcomes check`` must exit 1 with the recall CUSUM alarming for the champion's version.

The retraining trigger then runs as a Job (the overlay's training Job, ``deploy/k8s/job.py``, with the trainer
image of this run and the production CronJob's command, ``oncology outcomes retrain``): it reads the alarm the
check wrote, claims the retraining, writes a dataset version (the raw data plus every labelled case) and trains a
candidate on it: a new version, trained on that data, is published; the champion does not move and no release
starts. A second trigger within the cooldown trains nothing (exit 4).
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from e2e.k8s_cluster import Cluster, exchange
from e2e.k8s_release import cli
from e2e.stack import REPO
from oncology_model import Classifier
from oncology_model.datamodel import FEATURES
from oncology_model.registry import ModelRegistry
from oncology_model.storage import open_store
from support import poll

JOB = "oncology-train"
#: a new kind of malignant tumour: one feature at 10, the others low; none of these is a row of the UCI file
MISSED_PATTERNS = ([10, 1, 1, 1, 2, 1, 2, 1, 1], [1, 1, 1, 1, 2, 10, 2, 1, 1], [1, 1, 1, 1, 2, 1, 10, 1, 1],
                   [1, 1, 1, 1, 2, 1, 2, 1, 10])
CAUGHT, BENIGN, MISSED = 150, 150, 40
SEED = 16

Answers = Callable[[str, list[list[int]]], list[tuple[str, float]]]


def predict(service: Any, row: list[int], request_id: str) -> dict[str, Any]:
    status, headers, body = exchange(service.host, service.port, "POST", "/predict",
                                     json.dumps(dict(zip(FEATURES, row))).encode(), headers={"x-request-id": request_id})
    assert status == 200 and headers.get("x-request-id") == request_id, (status, headers, body[:300])
    answer: dict[str, Any] = json.loads(body)
    return answer


def post_outcomes(service: Any, records: list[dict[str, str]]) -> tuple[int, dict[str, Any]]:
    status, _, body = exchange(service.host, service.port, "POST", "/outcomes", json.dumps(records).encode(), timeout=60)
    answer: dict[str, Any] = json.loads(body)
    return status, answer


def post_until_taken(service: Any, records: list[dict[str, str]], retried: list[int]) -> tuple[int, dict[str, Any]]:
    """`post_outcomes` as a client sends outcomes: a 503 says the store could not be written now and that a retry is
    safe, so the same records again until another answer comes, within a deadline (each 503 appended to
    ``retried``); records a failed attempt wrote come back unchanged."""

    def taken() -> tuple[int, dict[str, Any]] | None:
        answered = post_outcomes(service, records)
        if answered[0] == 503:
            retried.append(503)
            return None
        return answered

    return poll(taken, 120, "POST /outcomes still answered 503 after 120 s", interval=1)


def run_outcomes(cluster: Cluster, service: Any, figures: dict[str, Any], store: str, data_uri: str,
                 answers_of: Answers, trainer_image: str, overlay: Path) -> None:
    t_phase = time.monotonic()
    registry = ModelRegistry(open_store(store))
    champion = registry.resolve("champion")
    rows = service.rows
    ours = {"malignant": [], "benign": []}  # type: dict[str, list[list[int]]]
    for row, (label, _) in zip(rows, answers_of(champion, rows)):
        ours[label].append(row)
    rng = random.Random(SEED)
    missed = [MISSED_PATTERNS[i % len(MISSED_PATTERNS)] for i in range(MISSED)]
    assert {label for label, _ in answers_of(champion, missed)} == {"benign"}, "the champion catches the new kind"
    cases = ([(r, "malignant") for r in rng.sample(ours["malignant"], CAUGHT)]
             + [(r, "benign") for r in rng.sample(ours["benign"], BENIGN)] + [(r, "malignant") for r in missed])
    rng.shuffle(cases)
    run = datetime.now(UTC).strftime("%H%M%S")
    ids = [f"case-{run}-{i:04d}" for i in range(len(cases))]

    # predictions through the Service, each checked against the champion's in-process answer
    t0 = time.monotonic()
    expected = answers_of(champion, [row for row, _ in cases])
    for request_id, (row, _), (label, p) in zip(ids, cases, expected):
        answer = predict(service, row, request_id)
        assert (answer["model_version"], answer["prediction"], answer["probability"]) == (champion, label, p), answer
    figures["k8s outcomes: predictions through the Service (n, s)"] = f"{len(cases)}, {time.monotonic() - t0:.1f}"

    # outcomes through the Service, in batches; then the same again (no-ops), and one that contradicts (refused)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    records = [{"request_id": i, "outcome": outcome, "observed_at": now, "source": "e2e-pathology"}
               for i, (_, outcome) in zip(ids, cases)]
    t0 = time.monotonic()
    retried: list[int] = []
    for start in range(0, len(records), 100):
        batch = records[start:start + 100]
        status, answer = post_until_taken(service, batch, retried)
        assert status == 200 and answer["created"] + answer["unchanged"] == len(batch), (status, answer)
        assert [r["request_id"] for r in answer["results"]] == [r["request_id"] for r in batch], answer
    figures["k8s outcomes: POST /outcomes through the Service (n, s, 503s retried)"] = (
        f"{len(records)}, {time.monotonic() - t0:.1f}, {len(retried)}")
    # the same again (no-ops) and one that contradicts (refused): a 503 is retried here too, as for the batches
    status, answer = post_until_taken(service, records[:10], retried)
    assert status == 200 and (answer["created"], answer["unchanged"]) == (0, 10), (status, answer)
    flipped = {**records[0], "outcome": "benign" if records[0]["outcome"] == "malignant" else "malignant"}
    status, answer = post_until_taken(service, [flipped], retried)
    assert status == 409, (status, answer)

    # the check: nothing to join until the replicas have flushed their logs; then an alarm on recall
    t0 = time.monotonic()
    checked: list[subprocess.CompletedProcess[str]] = []

    def alarm() -> bool:
        proc = cli(store, "outcomes", "check", timeout=300)
        checked.append(proc)
        assert proc.returncode in (1, 2), proc.stdout[-3000:] + proc.stderr[-3000:]
        joined = re.search(rf"(?m)^version {re.escape(champion)}: \d+ predictions, {len(cases)} labelled", proc.stdout)
        return proc.returncode == 1 and joined is not None

    poll(alarm, 120, lambda: checked[-1].stdout[-3000:] + checked[-1].stderr[-2000:] if checked else "", interval=2)
    out = checked[-1].stdout
    figures["k8s outcomes: oncology outcomes check until it alarmed (s)"] = round(time.monotonic() - t0, 1)
    block = out[out.index(f"version {champion}: "):]
    m = re.search(r"recall CUSUM: ALARM at labelled case (\d+)", block)
    assert m, out[-3000:]
    figures["k8s outcomes: recall CUSUM alarmed at labelled case (of n)"] = f"{m.group(1)} (of {len(cases)})"

    # the retraining trigger as a Job (the production CronJob's command, `oncology outcomes retrain`, in the overlay's
    # training Job): it reads the alarm the check wrote, claims the retraining, writes a dataset version with the
    # labelled cases and trains a candidate on it, promoting nothing
    before = set(registry.versions())
    t0 = time.monotonic()
    logs = training_job(cluster, trainer_image, overlay, ["outcomes", "retrain"])
    figures["k8s outcomes: retraining trigger as a Job: dataset version and candidate (s)"] = round(time.monotonic() - t0, 1)
    (new,) = set(registry.versions()) - before
    published = re.search(rf"published model version {re.escape(new)} to \S+ \(candidate, not promoted; trained on "
                          r"dataset version (\S+): (\d+) case\(s\) from outcomes\)", logs)
    assert published and int(published.group(2)) >= len(cases), logs[-3000:]
    trained = Classifier.from_uri(store, new)
    meta = trained.metadata["data"]["dataset_version"]
    assert (meta["version"], meta["outcome_cases"]) == (published.group(1), int(published.group(2))), meta
    # a second trigger within the cooldown trains nothing (exit 4)
    again = cli(store, "outcomes", "retrain", "--data", data_uri)
    assert again.returncode == 4 and "cooling down" in again.stdout, again.stdout[-2000:] + again.stderr[-2000:]
    assert set(registry.versions()) - before == {new}
    state = registry.state()
    assert state["aliases"].get("champion") == champion and "candidate" not in state["aliases"], state["aliases"]
    caught = sum(label == "malignant" for label, _ in answers_of(new, list(MISSED_PATTERNS)))
    figures["k8s outcomes: the new version calls the missed patterns malignant"] = f"{caught} of {len(MISSED_PATTERNS)}"
    figures["k8s outcomes: the whole phase (s)"] = round(time.monotonic() - t_phase, 1)


def training_job(cluster: Cluster, trainer_image: str, overlay: Path, args: list[str]) -> str:
    """The overlay's training Job running ``oncology ARGS`` (its settings from the overlay's ConfigMap and Secret,
    ``ONCOLOGY_PROMOTE=false``): its logs."""
    rendered = cluster.kubectl("kustomize", str(overlay)).stdout
    proc = subprocess.run([sys.executable, str(REPO / "deploy" / "k8s" / "job.py"), "--image", trainer_image],
                          input=rendered, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    (job,) = [d for d in docs if d["kind"] == "Job"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    container["args"] = args
    container.setdefault("env", []).append({"name": "ONCOLOGY_PROMOTE", "value": "false"})
    cluster.kubectl("delete", "job", JOB, "--ignore-not-found", "--wait=true")
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    status: dict[str, Any] = {}

    def done() -> bool:
        nonlocal status
        status = cluster.get("job", JOB)["status"]
        if status.get("failed"):
            logs = cluster.kubectl("logs", f"job/{JOB}", check=False)
            raise AssertionError(f"the training Job failed: {logs.stdout[-3000:]}{logs.stderr[-2000:]}")
        return bool(status.get("succeeded"))

    poll(done, 400, lambda: f"the training Job did not finish within 400 s: {status}", interval=1)
    return cluster.kubectl("logs", f"job/{JOB}").stdout
