"""The judge's evidence from the prediction log, the same whatever the log's layout: JSON Lines as the service
writes them, compacted Parquet after the JSON Lines were deleted (retention), and a mix of both (a late
writer's object filed into a compacted day).  The traffic is written by the service's own writer
(`PredictionLog`): answers of both arms, batch requests, shadow scores, pinned requests and failed scorings
("error" lines), so a replay over a compacted day sees every error there was."""

from __future__ import annotations

import gzip
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from oncology.monitoring.compaction import compact
from oncology.monitoring.engine.run import CorruptObjects
from oncology.monitoring.engine.settings import EngineSettings
from oncology.release import evidence
from oncology.release.judge import Arm
from oncology.webservice.predlog import PredictionLog
from oncology_model.storage import LocalStore, Store, open_store
from support import S3

CHAMPION, CANDIDATE = "1.0.1", "1.0.2"
DAY = datetime(2026, 11, 10, tzinfo=UTC)
SINCE, UNTIL = DAY, DAY + timedelta(days=1)
LATER = DAY + timedelta(days=30)  # the day is closed: compaction takes it


@dataclass
class Truth:
    """What was logged, per arm name: requests, errors, the predicted rows and the latencies of the answers."""

    arms: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, arm: str, latency: float | None, labels: list[str] = (), decisions: list[str] = ()) -> None:  # type: ignore[assignment]
        a = self.arms.setdefault(arm, {"requests": 0, "errors": 0, "malignant": 0, "benign": 0, "referred": 0,
                                       "latencies_ms": []})
        a["requests"] += 1
        if latency is None:
            a["errors"] += 1
            return
        a["latencies_ms"].append(latency)
        a["malignant"] += labels.count("malignant")
        a["benign"] += labels.count("benign")
        a["referred"] += list(decisions).count("refer")


def log_traffic(store: Store, writer: str, seed: int, start: datetime, n: int) -> Truth:
    """``n`` requests from ``start`` on, a second apart, through the service's writer: a third to the candidate
    (canary), the champion's answers scored by the candidate too (shadow), some pinned, one in seven failed,
    one in five a batch of three rows; written when the writer closes."""
    rng = np.random.default_rng(seed)
    now = [start.timestamp()]
    log = PredictionLog(store, writer, batch_rows=10_000, flush_seconds=3600, clock=lambda: now[0])
    truth = Truth()
    for i in range(n):
        now[0] = start.timestamp() + i
        request_id = f"{writer}-{i:05d}"
        arm = "candidate" if i % 3 == 0 else "pinned" if i % 11 == 0 else "champion"
        version = CANDIDATE if arm == "candidate" else CHAMPION
        latency = round(float(rng.uniform(0.1, 9.0)), 3)
        if i % 7 == 0:
            log.record_error("/predict", request_id, version, arm, latency)
            truth.add(arm, None)
            continue
        k = 3 if i % 5 == 0 else 1
        rows = [[int(v) for v in rng.integers(1, 11, 9)] for _ in range(k)]
        proba = [round(float(p), 4) for p in rng.uniform(0, 1, k)]
        labels = ["malignant" if p >= 0.5 else "benign" for p in proba]
        decisions = ["refer" if 0.4 <= p < 0.6 else label for p, label in zip(proba, labels)]
        lines = log.record("/predict", request_id, version, rows, proba, labels, decisions, arm, latency)
        truth.add(arm, latency, labels, decisions)
        if arm == "champion" and lines is not None:  # the shadow's score of the champion's answer
            shadow_latency = round(float(rng.uniform(0.1, 9.0)), 3)
            if i % 13 == 1:
                log.record_error("/predict", request_id, CANDIDATE, "shadow", shadow_latency)
                truth.add("shadow", None)
                continue
            shadow_proba = [min(1.0, round(p + float(rng.normal(0, 0.2)), 4)) if i % 4 else 0.1 for p in proba]
            shadow_proba = [max(0.0, p) for p in shadow_proba]
            shadow_labels = ["malignant" if p >= 0.5 else "benign" for p in shadow_proba]
            log.record_shadow([lines], CANDIDATE, shadow_proba, shadow_labels, shadow_labels, [shadow_latency])
            truth.add("shadow", shadow_latency, shadow_labels, shadow_labels)
    log.start()
    assert log.close(30.0) and not log.errors
    return truth


def awkward_lines(store: Store) -> None:
    """An object of the day with a line that is no record: malformed, before and after compaction."""
    store.create(f"{evidence.PREFIX}/date={DAY:%Y-%m-%d}/other-00000001.jsonl.gz",
                 gzip.compress(b'{"ts": "not a time"}\nnot json at all\n\n', mtime=0))


def figures(arm: Arm) -> dict[str, Any]:
    return {"version": arm.version, "requests": arm.requests, "errors": arm.errors, "malignant": arm.malignant,
            "benign": arm.benign, "referred": arm.referred, "latencies_ms": sorted(arm.latencies_ms)}


def evidence_of(store: Store, settings: EngineSettings | None = None) -> dict[str, Any]:
    canary = evidence.collect(store, CHAMPION, CANDIDATE, "canary", SINCE, UNTIL, settings)
    shadow = evidence.collect(store, CHAMPION, CANDIDATE, "shadow", SINCE, UNTIL, settings)
    assert shadow.paired is not None
    return {"champion": figures(canary.champion), "candidate": figures(canary.candidate),
            "shadow": figures(shadow.candidate), "shadow_champion": figures(shadow.champion),
            "paired": vars(shadow.paired), "malformed": canary.malformed}


def expected(truth: Truth) -> dict[str, Any]:
    arms = {name: {**figures(Arm(version)), **a, "latencies_ms": sorted(a["latencies_ms"])}
            for name, version, a in (("champion", CHAMPION, truth.arms["champion"]),
                                      ("candidate", CANDIDATE, truth.arms["candidate"]),
                                      ("shadow", CANDIDATE, truth.arms["shadow"]))}
    return {**arms, "shadow_champion": arms["champion"]}


def layouts(make: Any) -> tuple[Store, Store, Truth]:
    """Two stores with the same log: one left as JSON Lines, one compacted with its JSON Lines deleted."""
    jsonl, parquet = make("jsonl"), make("parquet")
    truth = log_traffic(jsonl, "a", 1, DAY + timedelta(hours=1), 300)
    log_traffic(jsonl, "b", 2, DAY + timedelta(hours=9), 200)
    awkward_lines(jsonl)
    log_traffic(parquet, "a", 1, DAY + timedelta(hours=1), 300)
    log_traffic(parquet, "b", 2, DAY + timedelta(hours=9), 200)
    awkward_lines(parquet)
    return jsonl, parquet, truth


def check_layouts(jsonl: Store, parquet: Store) -> None:
    before = evidence_of(jsonl)
    compact(parquet, LATER, retain_jsonl_days=0)
    assert parquet.list(f"{evidence.PREFIX}/") == []  # the JSON Lines are gone: only Parquet is left
    after = evidence_of(parquet)
    assert after == before
    # a mix: a late writer files an object into the compacted day; it is read as JSON Lines, once
    for store in (jsonl, parquet):
        log_traffic(store, "late", 3, DAY + timedelta(hours=20), 60)
    mixed, plain = evidence_of(parquet), evidence_of(jsonl)
    assert mixed == plain
    assert mixed["champion"]["requests"] > before["champion"]["requests"]


def test_the_evidence_counts_every_logged_request_and_error(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    truth = log_traffic(store, "a", 1, DAY + timedelta(hours=1), 300)
    awkward_lines(store)
    found = evidence_of(store)
    assert {k: found[k] for k in ("champion", "candidate", "shadow", "shadow_champion")} == expected(truth)
    assert found["champion"]["errors"] > 5 and found["shadow"]["errors"] > 2 and found["candidate"]["errors"] > 5
    assert found["paired"]["rows"] > 100 and found["paired"]["costly"] > 0
    assert found["malformed"] == 2  # the two lines that are no record; the error lines are not malformed


def test_the_evidence_is_the_same_from_json_lines_from_parquet_and_from_a_mix(tmp_path: Path) -> None:
    jsonl, parquet, _ = layouts(lambda name: LocalStore(tmp_path / name))
    check_layouts(jsonl, parquet)


@pytest.mark.s3
def test_the_evidence_is_the_same_from_json_lines_and_parquet_in_s3(s3: S3) -> None:
    prefix = uuid.uuid4().hex[:8]
    jsonl, parquet, _ = layouts(lambda name: open_store(f"s3://{s3.bucket}/{prefix}-{name}"))
    check_layouts(jsonl, parquet)


def test_a_corrupt_object_is_named_or_skipped_per_the_setting(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    truth = log_traffic(store, "a", 1, DAY + timedelta(hours=1), 100)
    good = evidence_of(store)
    (key,) = store.list(f"{evidence.PREFIX}/")
    cut = LocalStore(tmp_path / "cut")
    shutil.copytree(store.root, cut.root, dirs_exist_ok=True)
    (cut.root / key).write_bytes((store.root / key).read_bytes()[:-40])  # a writer that died mid-object
    with pytest.raises(CorruptObjects, match=key.replace(".", r"\.")):
        evidence.collect(cut, CHAMPION, CANDIDATE, "canary", SINCE, UNTIL, EngineSettings(on_corrupt="refuse"))
    skipped = evidence.collect(cut, CHAMPION, CANDIDATE, "canary", SINCE, UNTIL, EngineSettings(on_corrupt="skip"))
    assert skipped.unreadable == [key] and skipped.champion.requests == 0  # never a part of an object
    assert good["champion"]["requests"] == truth.arms["champion"]["requests"]


def test_a_batchs_shadow_rows_pair_with_the_champions_by_their_inputs_in_any_order(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    log = PredictionLog(store, "w", clock=lambda: (DAY + timedelta(hours=2)).timestamp())
    a, b = [1] * 9, [2] * 9
    lines = log.record("/predict", "r1", CHAMPION, [a, b], [0.9, 0.1], ["malignant", "benign"], None, "champion", 1.0)
    assert lines is not None
    # the shadow's rows in the other order: row b called malignant, row a benign (the costly direction)
    log.record_shadow([[lines[1], lines[0]]], CANDIDATE, [0.8, 0.2], ["malignant", "benign"], ["malignant", "benign"],
                      [1.0])
    log.start()
    assert log.close(30.0) and not log.errors
    for store_now in ("jsonl", "parquet"):
        if store_now == "parquet":
            compact(store, LATER, retain_jsonl_days=0)
        paired = evidence.collect(store, CHAMPION, CANDIDATE, "shadow", SINCE, UNTIL).paired
        assert paired is not None and vars(paired) == {"rows": 2, "disagree": 2, "costly": 1, "costly_ids": ["r1"]}
