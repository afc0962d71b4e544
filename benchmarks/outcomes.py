"""The outcome join at scale: N logged predictions and N/10 outcomes, joined and aggregated per model version and
month with DuckDB (`oncology.monitoring.outcomes.join` and `realized`: what ``oncology outcomes check`` runs).

Writes a local store as the service and the intake write it: the prediction log as gzip JSON Lines under
``monitoring/predictions/date=YYYY-MM-DD/`` (a year of days, 5,000 lines a file, three versions in turn) and
the outcomes as JSON Lines under ``monitoring/outcomes/date=YYYY-MM-DD/`` (1,000 a file, observed 1 to 200 days
after their prediction).  Then it runs the join and the per-version, per-month figures in a fresh process,
several times, and prints the wall time of each run and the process's peak resident memory.

    .venv/bin/python benchmarks/outcomes.py [--predictions 1000000] [--runs 2]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PER_FILE = 5000
DAY = 86400.0
START = 1735689600.0  # 2025-01-01T00:00:00Z

MEASURE = """
import resource, sys, time
from pathlib import Path
t0 = time.perf_counter()
from oncology.monitoring.outcomes import join, realized
from oncology.settings import OutcomeSettings
from oncology_model.storage import LocalStore
joined = join(LocalStore(Path(sys.argv[1])), "month")
t1 = time.perf_counter()
versions = realized(joined, OutcomeSettings(store=sys.argv[1]))
t2 = time.perf_counter()
chunks = sum(len(v["chunks"]) for v in versions.values())
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"{t2 - t0:.2f} {t1 - t0:.2f} {t2 - t1:.2f} {rss:.0f} {joined.labelled} {len(versions)} {chunks}")
"""


def _iso(seconds: np.ndarray) -> list[str]:
    stamps = np.datetime_as_string((seconds * 1000).astype("datetime64[ms]"), unit="ms")
    return [s + "+00:00" for s in stamps]


def write_store(root: Path, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    ts = np.sort(START + rng.random(n) * 365 * DAY)
    malignant = rng.random(n) < 0.35
    probability = np.clip(np.where(malignant, rng.beta(5, 1.3, n), rng.beta(1.3, 5, n)), 0, 1).round(6)
    versions = np.array(["1.0.1", "1.0.2", "1.0.3"])[np.minimum((ts - START) // (122 * DAY), 2).astype(int)]
    stamps = _iso(ts)
    inputs = '{"clump_thickness": 5, "uniformity_of_cell_size": 1, "uniformity_of_cell_shape": 1, "marginal_adhesion": 1, ' \
             '"single_epithelial_cell_size": 2, "bare_nuclei": 1, "bland_chromatin": 3, "normal_nucleoli": 1, "mitoses": 1}'
    for start in range(0, n, PER_FILE):
        rows = range(start, min(start + PER_FILE, n))
        date = stamps[start][:10]
        folder = root / "monitoring" / "predictions" / f"date={date}"
        folder.mkdir(parents=True, exist_ok=True)
        lines = []
        for i in rows:
            label = "malignant" if probability[i] >= 0.5 else "benign"
            lines.append(f'{{"ts": "{stamps[i]}", "request_id": "r{i}", "model_version": "{versions[i]}", '
                         f'"route": "/predict", "inputs": {inputs}, "probability": {probability[i]}, '
                         f'"prediction": "{label}", "decision": "{label}"}}\n')
        (folder / f"bench-{start // PER_FILE:08d}.jsonl.gz").write_bytes(gzip.compress("".join(lines).encode(), 1))
    labelled = np.sort(rng.choice(n, n // 10, replace=False))
    observed = ts[labelled] + rng.integers(1, 201, labelled.size) * DAY
    observed_iso, received_iso = _iso(observed), _iso(observed + 3600)
    for start in range(0, labelled.size, 1000):
        part = range(start, min(start + 1000, labelled.size))
        folder = root / "monitoring" / "outcomes" / f"date={observed_iso[start][:10]}"
        folder.mkdir(parents=True, exist_ok=True)
        body = "".join(json.dumps({"request_id": f"r{labelled[j]}", "outcome": "malignant" if malignant[labelled[j]] else "benign",
                                   "observed_at": observed_iso[j], "source": "bench", "received_at": received_iso[j]},
                                  separators=(",", ":")) + "\n" for j in part)
        (folder / f"bench-{start // 1000:08d}.jsonl").write_text(body)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--predictions", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="outcomes-bench-") as tmp:
        t0 = time.perf_counter()
        write_store(Path(tmp), args.predictions)
        size = sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file())
        print(f"wrote {args.predictions:,} predictions and {args.predictions // 10:,} outcomes ({size / 1e6:.0f} MB) "
              f"in {time.perf_counter() - t0:.1f} s", flush=True)
        walls = []
        for run in range(args.runs):
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", MEASURE, tmp], capture_output=True, text=True,
                                  env={**os.environ, "PYTHONPATH": str(REPO / "src")})
            wall = time.perf_counter() - start
            if done.returncode:
                print(done.stderr, file=sys.stderr)
                return 1
            inner, joined, figures, rss, labelled, versions, chunks = done.stdout.split()
            walls.append(wall)
            print(f"run {run + 1}: {wall:.2f} s wall (process start included); join {joined} s, figures {figures} s; "
                  f"peak RSS {rss} MB; {labelled} labelled cases, {versions} versions, {chunks} version-months")
        print(f"median {statistics.median(walls):.2f} s on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
