"""The evidence of a release: the two arms' requests in one window, read from the prediction log.

The service logs every request it scored (``monitoring/predictions/date=YYYY-MM-DD/*.jsonl.gz``, see
`oncology.webservice.predlog`), each line with its model version, its arm and the model's scoring
time; a request the model failed is one ``"prediction": "error"`` line.  For a window
``[since, until)``:

- canary: the champion arm is the champion version's ``champion`` lines, the candidate arm the
  candidate version's ``candidate`` lines;
- shadow: the champion arm is the champion's answers, the candidate arm the candidate's ``shadow``
  scores; both of one request (same request id, rows in the same order) make the pairs whose
  disagreements are counted, the costly direction (candidate benign, champion malignant) apart;
- ``pinned`` lines (a client that named its version) belong to no arm.

A line that is not a record and a file that cannot be read are skipped and counted, never fatal.
"""

from __future__ import annotations

import gzip
import json
import logging
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from oncology.release.judge import Arm, Paired
from oncology.release.metrics import Reading
from oncology_model.storage import Store

PREFIX: Final = "monitoring/predictions"
log = logging.getLogger(__name__)


@dataclass
class Window:
    """The two arms of a window, and what was skipped."""

    champion: Arm
    candidate: Arm
    paired: Paired | None
    files: int = 0
    malformed: int = 0
    unreadable: list[str] = field(default_factory=list)


@dataclass
class LoggedRequest:
    version: str
    arm: str
    latency_ms: float
    error: bool = False
    predictions: list[str] = field(default_factory=list)
    decisions: list[str] = field(default_factory=list)


def _keys(store: Store, since: datetime, until: datetime) -> list[str]:
    """The log's objects that may hold records of the window (a writer files a batch under the day it flushed)."""
    keys: list[str] = []
    day = (since - timedelta(days=1)).date()
    while day <= until.date():
        keys += store.list(f"{PREFIX}/date={day:%Y-%m-%d}/")
        day += timedelta(days=1)
    return [k for k in keys if k.endswith(".jsonl.gz")]


def read_requests(store: Store, since: datetime, until: datetime,
                  versions: set[str]) -> tuple[dict[tuple[str, str], LoggedRequest], int, int, list[str]]:
    """The requests of ``versions`` logged in ``[since, until)``, by (request id, arm); files, malformed lines and
    unreadable files."""
    requests: dict[tuple[str, str], LoggedRequest] = {}
    malformed = 0
    unreadable: list[str] = []
    keys = _keys(store, since, until)
    for key in keys:
        try:
            text = gzip.decompress(store.read(key))
        except (OSError, EOFError, zlib.error) as exc:
            unreadable.append(key)
            log.warning("prediction log %s cannot be read (%s): skipped", key, exc)
            continue
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                ts = datetime.fromisoformat(obj["ts"])
                version, arm, request_id = obj["model_version"], obj.get("arm", "champion"), obj["request_id"]
                prediction, decision = obj["prediction"], obj["decision"]
                latency = float(obj.get("latency_ms") or 0.0)
            except (ValueError, KeyError, TypeError):
                malformed += 1
                continue
            if ts.tzinfo is None or not since <= ts < until or version not in versions:
                continue
            entry = requests.get((request_id, arm))
            if entry is None:
                entry = requests[(request_id, arm)] = LoggedRequest(version, arm, latency)
            if prediction == "error":
                entry.error = True
            else:
                entry.predictions.append(prediction)
                entry.decisions.append(decision)
    return requests, len(keys), malformed, unreadable


def arm_of(version: str, requests: list[LoggedRequest]) -> Arm:
    """The arm's figures from its requests."""
    arm = Arm(version)
    for r in requests:
        arm.requests += 1
        if r.error:
            arm.errors += 1
            continue
        arm.latencies_ms.append(r.latency_ms)
        malignant = r.predictions.count("malignant")
        arm.malignant += malignant
        arm.benign += len(r.predictions) - malignant
        arm.referred += r.decisions.count("refer")
    return arm


def collect(store: Store, champion: str, candidate: str, mode: str, since: datetime, until: datetime) -> Window:
    """The window's evidence for a release of ``candidate`` against ``champion`` in ``mode`` (canary or shadow)."""
    requests, files, malformed, unreadable = read_requests(store, since, until, {champion, candidate})
    by_arm: dict[str, list[LoggedRequest]] = defaultdict(list)
    for r in requests.values():
        by_arm[r.arm].append(r)
    champion_requests = [r for r in by_arm["champion"] if r.version == champion]
    paired = None
    if mode == "shadow":
        shadows = [r for r in by_arm["shadow"] if r.version == candidate]
        paired = Paired()
        for (request_id, arm), r in requests.items():
            if arm != "shadow" or r.version != candidate or r.error:
                continue
            answer = requests.get((request_id, "champion"))
            if answer is None or answer.error or answer.version != champion:
                continue
            costly_here = False
            for mine, theirs in zip(r.predictions, answer.predictions):
                paired.rows += 1
                if mine != theirs:
                    paired.disagree += 1
                    if mine == "benign" and theirs == "malignant":
                        paired.costly += 1
                        costly_here = True
            if costly_here:
                paired.costly_ids.append(request_id)
        paired.costly_ids.sort()
        candidate_arm = arm_of(candidate, shadows)
    else:
        candidate_arm = arm_of(candidate, [r for r in by_arm["candidate"] if r.version == candidate])
    return Window(arm_of(champion, champion_requests), candidate_arm, paired, files, malformed, unreadable)


def apply_metrics(window: Window, reading: Reading, champion: str, candidate: str, mode: str) -> None:
    """Each arm's requests, errors and scoring times from the replicas' metrics instead of the log (which keeps
    the prediction mix, the referral share and the shadow's pairs); the log's request count is kept beside."""
    for arm, version, name in ((window.champion, champion, "champion"),
                               (window.candidate, candidate, "shadow" if mode == "shadow" else "candidate")):
        counted = reading.arm(version, name)
        arm.logged_requests = arm.requests
        arm.requests, arm.errors = round(counted.requests), round(counted.errors)
        arm.latencies_ms = []
        arm.latency_buckets = [(bound * 1000, count) for bound, count in counted.cumulative()]


def describe(window: Window, since: datetime, until: datetime) -> dict[str, Any]:
    """The window as the evidence records it."""
    return {"from": since.isoformat(timespec="seconds"), "to": until.isoformat(timespec="seconds"),
            "log_files": window.files, "malformed_lines": window.malformed, "unreadable_files": len(window.unreadable)}
