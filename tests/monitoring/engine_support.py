"""A prediction log with every awkward case the engines must agree on, and the old Python reader's figures."""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from drift_support import record, write_log

from oncology.monitoring import prediction_log
from oncology.monitoring.drift import Observed
from oncology.monitoring.engine.run import LoggedCounts
from oncology_model.storage import Store

EDGES = [float(e) for e in np.round(np.linspace(0.0, 1.0, 21), 12)]
THRESHOLD = 0.5
VERSION = "1.0.2"
DAY = datetime(2026, 11, 20, tzinfo=UTC)
SINCE, UNTIL = DAY, DAY + timedelta(days=5)


@dataclass
class Expected:
    """The Python reader's figures (`prediction_log.read`, the path before the engine) as the engine reports them."""

    observed: Observed
    other_versions: dict[str, int]
    malformed: int
    unreadable: list[str]


def rows(rng: np.random.Generator, n: int, day: datetime, version: str = VERSION, start_hour: float = 1.0) -> list[dict[str, Any]]:
    X = rng.integers(1, 11, size=(n, 9))
    p = rng.random(n)
    p[: min(n, 6)] = [0.0, 0.05, 0.15, 0.35, 1.0, 0.7][: min(n, 6)]  # on the edges of the bins, and both ends
    return [record(day + timedelta(hours=start_hour, seconds=3.7 * k), X[k].tolist(), float(p[k]), THRESHOLD, version)
            for k in range(n)]


def awkward_log(store: Store, seed: int = 5) -> dict[str, str]:
    """Writes the log; returns the keys of the objects that cannot be read whole, by what is wrong."""
    rng = np.random.default_rng(seed)
    day = lambda k: DAY + timedelta(days=k)  # noqa: E731
    write_log(store, rows(rng, 400, day(0)), writer="a")
    write_log(store, rows(rng, 250, day(0), start_hour=5), writer="b", per_file=100)  # two writers, one day
    write_log(store, rows(rng, 1, day(1)), writer="one")  # a partition with one line
    write_log(store, rows(rng, 120, day(2), version="9.9.9"), writer="other")  # an unknown version
    write_log(store, rows(rng, 30, day(2), version="1.0.1"), writer="old")
    write_log(store, rows(rng, 80, day(-1), start_hour=23.5), writer="early")  # half before the window
    write_log(store, rows(rng, 60, day(6)), writer="late")  # after the window: not read
    part = prediction_log.partition(day(3))
    store.create(f"{part}empty-000000.jsonl.gz", gzip.compress(b""))  # an empty object in an otherwise empty day
    odd = rows(rng, 5, day(2), start_hour=9)
    odd[0]["model_version"] = None  # a null version
    del odd[1]["model_version"]
    odd[2]["probability"] = "0.4"
    odd[3]["inputs"]["mitoses"] = 11
    failed = {"ts": odd[4]["ts"], "request_id": "failed-1", "model_version": VERSION, "route": "/predict",
              "inputs": None, "probability": None, "prediction": "error", "decision": "error", "latency_ms": 1.5}
    # the service's record of a failed scoring (neither a prediction nor malformed), and one without a time (malformed)
    lines = [json.dumps(r) for r in odd] + ["not json", "", "[1, 2]", '{"ts": 1}', json.dumps(failed),
                                            json.dumps({**failed, "ts": None})]
    store.create(f"{prediction_log.partition(day(2))}odd-000000.jsonl.gz", gzip.compress("\n".join(lines).encode()))
    whole = gzip.compress("".join(json.dumps(r) + "\n" for r in rows(rng, 300, day(1))).encode())
    cut = f"{prediction_log.partition(day(1))}cut-000000.jsonl.gz"
    store.create(cut, whole[: len(whole) * 2 // 3])  # a writer that died mid-object
    tiny = f"{prediction_log.partition(day(1))}tiny-000000.jsonl.gz"
    store.create(tiny, gzip.compress(b"{}\n")[:15])
    garbage = f"{prediction_log.partition(day(2))}garbage-000000.jsonl.gz"
    store.create(garbage, b"not gzip at all: DuckDB refuses it outright")
    return {cut: "cut short", tiny: "cut short", garbage: "not gzip"}


def python_figures(store: Store) -> Expected:
    logged = prediction_log.read(store, SINCE, UNTIL, VERSION)
    return Expected(Observed.of(logged.X, logged.proba, logged.malignant, EDGES), dict(logged.other_versions),
                    logged.malformed, sorted(logged.unreadable_files))


def assert_same(counts: LoggedCounts, expected: Expected) -> None:
    assert counts.n == expected.observed.n > 0
    assert np.array_equal(counts.observed.scores, expected.observed.scores)
    assert np.array_equal(counts.observed.by_bin, expected.observed.by_bin)
    assert np.array_equal(counts.observed.malignant_by_bin, expected.observed.malignant_by_bin)
    assert counts.observed.malignant == expected.observed.malignant
    assert dict(counts.other_versions) == expected.other_versions
    assert counts.malformed == expected.malformed
    assert counts.unreadable_files == expected.unreadable
