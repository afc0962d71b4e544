"""Helpers of the drift tests and benchmark: a prediction-log writer (the shared record format, exactly; the
service's own writer replaces it) and a store with a trained model whose versions do and do not carry
``reference.json``."""

from __future__ import annotations

import gzip
import json
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from oncology.monitoring.drift import reference_from
from oncology.monitoring.prediction_log import partition
from oncology_model.bundle import KPIS, MANIFEST, METADATA, MODEL, REFERENCE, Bundle
from oncology_model.datamodel import FEATURES
from oncology_model.registry import ModelRegistry
from oncology_model.storage import Store


def record(ts: datetime, row: Sequence[int], probability: float, threshold: float, version: str) -> dict[str, Any]:
    """One prediction-log record, as the service writes it."""
    label = "malignant" if probability >= threshold else "benign"
    return {
        "ts": ts.isoformat(timespec="milliseconds"),
        "request_id": uuid.uuid4().hex,
        "model_version": version,
        "route": "/predict",
        "inputs": {name: int(v) for name, v in zip(FEATURES, row)},
        "probability": float(probability),
        "prediction": label,
        "decision": label,
    }


def write_log(store: Store, records: Iterable[dict[str, Any]], writer: str = "test", per_file: int = 1000) -> list[str]:
    """Write records into their ``date=`` partitions as gzip JSON Lines files of at most ``per_file`` records."""
    by_day: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_day[partition(datetime.fromisoformat(r["ts"]))].append(r)
    keys = []
    for prefix, day in sorted(by_day.items()):
        for seq, start in enumerate(range(0, len(day), per_file)):
            lines = "".join(json.dumps(r) + "\n" for r in day[start:start + per_file]).encode()
            key = f"{prefix}{writer}-{seq:06d}.jsonl.gz"
            store.create(key, gzip.compress(lines, mtime=0))
            keys.append(key)
    return keys


def records(
    X: npt.NDArray[np.int64], proba: npt.NDArray[np.float64], threshold: float, version: str, times: Sequence[datetime]
) -> list[dict[str, Any]]:
    return [record(t, row, p, threshold, version) for t, row, p in zip(times, X.tolist(), proba.tolist())]


def reassemble(files: dict[str, bytes], version: str, reference: dict[str, Any] | None) -> dict[str, bytes]:
    """The same model as bundle ``version``, with ``reference`` as its reference.json (None: without one)."""
    model, metadata, kpis = (json.loads(files[name]) for name in (MODEL, METADATA, KPIS))
    metadata["version"] = kpis["version"] = version
    extra = {k: v for k, v in files.items() if k not in {MODEL, METADATA, KPIS, MANIFEST, REFERENCE}}
    if reference is not None:
        extra[REFERENCE] = json.dumps(reference).encode()
    return Bundle.assemble(version, model, metadata, kpis, extra=extra)


@dataclass
class Trained:
    """A real model (fast settings) and its data: training and held-out test rows with probabilities."""

    files: dict[str, bytes]  # the trained bundle, reference.json added if the trainer does not write one yet
    bundle: Bundle
    X_train: npt.NDArray[np.int64]
    y_train: npt.NDArray[np.int64]
    p_train: npt.NDArray[np.float64]
    X_test: npt.NDArray[np.int64]
    y_test: npt.NDArray[np.int64]
    p_test: npt.NDArray[np.float64]

    @property
    def threshold(self) -> float:
        return self.bundle.threshold

    def scores(self, X: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        return np.array(self.bundle.scorer.proba_many(X.tolist()))

    def publish(self, store: Store) -> None:
        """1.0.1 without reference.json (an old version), 1.0.2 with it, champion."""
        registry = ModelRegistry(store)
        registry.publish(reassemble(self.files, "1.0.1", None))
        registry.publish(reassemble(self.files, "1.0.2", json.loads(self.files[REFERENCE])))
        registry.promote("1.0.2")


def train_model(store_dir: str) -> Trained:
    from oncology.trainer import data
    from oncology.trainer.train import train
    from support import fast_settings

    dataset = data.load()
    result = train(dataset, fast_settings(store_dir), "1.0.1")
    test = np.sort(result.test_index)
    rows = np.setdiff1d(np.arange(len(dataset)), test)
    files = dict(result.files)
    bundle = Bundle.from_files(files)
    proba = np.array(bundle.scorer.proba_many(dataset.X.tolist()))
    X = dataset.X.astype(np.int64)
    if REFERENCE not in files:  # until the trainer writes it: exactly what it will write
        files = reassemble(files, bundle.version, reference_from(X[rows], dataset.y[rows], proba[rows], bundle.threshold))
        bundle = Bundle.from_files(files)
    return Trained(files, bundle, X[rows], dataset.y[rows], proba[rows], X[test], dataset.y[test], proba[test])
