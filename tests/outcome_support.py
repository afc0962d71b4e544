"""Building a store with a prediction log and outcomes as the service writes them, for the outcome tests."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from oncology.outcomes import OutcomeBook, OutcomeIn, Stored, data_key
from oncology_model.datamodel import FEATURES
from oncology_model.storage import LocalStore, Store

T0 = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Logged:
    request_id: str
    version: str
    ts: datetime
    probability: float
    threshold: float = 0.5
    decision: str | None = None
    arm: str | None = None  # as the service: none outside a release

    @property
    def prediction(self) -> str:
        return "malignant" if self.probability >= self.threshold else "benign"

    def line(self) -> dict[str, object]:
        return {"ts": self.ts.isoformat(timespec="milliseconds"), "request_id": self.request_id,
                "model_version": self.version, "route": "/predict", "inputs": dict.fromkeys(FEATURES, 1),
                "probability": self.probability, "prediction": self.prediction,
                "decision": self.decision or self.prediction} | ({"arm": self.arm} if self.arm else {})


def write_log(store: Store, predictions: Iterable[Logged], writer: str = "w") -> None:
    """The predictions as the prediction log files them: gzip JSON Lines per UTC date."""
    by_date: dict[str, list[Logged]] = {}
    for p in predictions:
        by_date.setdefault(p.ts.strftime("%Y-%m-%d"), []).append(p)
    for date, rows in by_date.items():
        body = "".join(json.dumps(r.line()) + "\n" for r in rows).encode()
        store.create(f"monitoring/predictions/date={date}/{writer}-{len(rows):08d}.jsonl.gz", gzip.compress(body))


def post(store: Store, outcomes: Sequence[tuple[str, str, datetime]], source: str = "lab") -> None:
    """Through `OutcomeBook`, as the service and the import record them (a claim per request id)."""
    OutcomeBook(store).record([OutcomeIn(request_id=r, outcome=o, observed_at=t, source=source)  # type: ignore[arg-type]
                               for r, o, t in outcomes])


def write_outcomes(store: Store, outcomes: Sequence[tuple[str, str, datetime]], received: datetime | None = None) -> None:
    """Straight into the outcome data files, as `OutcomeBook` writes them but without a claim per request id:
    for simulations of thousands of cases (the join reads the data files only)."""
    received = received or datetime(2026, 1, 1, tzinfo=UTC)
    by_date: dict[str, list[bytes]] = {}
    for i, (r, o, t) in enumerate(outcomes):
        stored = Stored(r, o, t.astimezone(UTC).isoformat(timespec="milliseconds"), "lab",
                        (received + timedelta(seconds=i)).isoformat(timespec="milliseconds"))
        by_date.setdefault(stored.observed_at[:10], []).append(stored.encode() + b"\n")
    for date, lines in by_date.items():
        content = b"".join(lines)
        store.create(data_key(date, content), content)


def simulated(store_dir: Path, n: int, seed: int, *, version: str = "1.0.1", prevalence: float = 0.35,
              recall: float = 0.95, specificity: float = 0.95, verify_malignant: float = 1.0,
              verify_benign: float = 1.0, days: int = 90) -> tuple[Store, dict[str, float]]:
    """A store with ``n`` logged predictions of a classifier with known recall and specificity (its truth drawn
    at ``prevalence``), and outcomes for a share of each predicted class; and the realized truth."""
    rng = np.random.default_rng(seed)
    truth = rng.random(n) < prevalence
    predicted = np.where(truth, rng.random(n) < recall, rng.random(n) >= specificity)
    probability = np.where(predicted, rng.uniform(0.5, 1.0, n), rng.uniform(0.0, 0.5, n))
    verified = rng.random(n) < np.where(predicted, verify_malignant, verify_benign)
    store = LocalStore(store_dir)
    logged = [Logged(f"{version}-{seed}-{i}", version, T0 + timedelta(minutes=int(i * days * 1440 / n)), float(probability[i]))
              for i in range(n)]
    write_log(store, logged)
    write_outcomes(store, [(p.request_id, "malignant" if truth[i] else "benign", p.ts + timedelta(days=3))
                 for i, p in enumerate(logged) if verified[i]])
    real = {"recall": float((predicted & truth).sum() / truth.sum()),
            "specificity": float((~predicted & ~truth).sum() / (~truth).sum())}
    return store, real


def fallen_log(store: Store, recall_after: float, version: str = "1.0.3", prefix: str = "f") -> None:
    """A version whose recall is 0.98 for 300 malignant cases, then ``recall_after``; every case verified (1,400,
    request ids ``<prefix><i>``)."""
    rng = np.random.default_rng(5)
    logged, outcomes = [], []
    for i in range(1400):
        malignant = i % 2 == 0
        recall = 0.98 if i < 600 else recall_after
        hit = rng.random() < (recall if malignant else 0.04)
        p = Logged(f"{prefix}{i}", version, T0 + timedelta(hours=i), 0.8 if hit else 0.2)
        logged.append(p)
        outcomes.append((p.request_id, "malignant" if malignant else "benign", p.ts + timedelta(days=2)))
    write_log(store, logged, writer=prefix)
    write_outcomes(store, outcomes)
