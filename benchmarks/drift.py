"""How long ``oncology drift`` takes over 100,000 logged predictions (target: under 10 s).

Trains a small real model (fast settings) into a temporary local store with its ``reference.json``, logs
100,000 predictions of training-like rows over the last 7 days (gzip JSON Lines, 1,000 records a file, as
several writers would), then runs the command as a process, as the CronJob does, several times, and prints
the wall time of each run and their median.  Imports and the report write are included.

    .venv/bin/python benchmarks/drift.py [--records 100000] [--runs 3] [--per-file 1000]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "monitoring")]

from drift_support import records, train_model, write_log  # noqa: E402

from oncology_model.storage import LocalStore  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--per-file", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="drift-bench-") as tmp:
        store = LocalStore(Path(tmp) / "store")
        trained = train_model(str(Path(tmp) / "training"))
        trained.publish(store)
        rng = np.random.default_rng(0)
        X = trained.X_train[rng.integers(0, len(trained.X_train), args.records)]
        now = datetime.now(UTC)
        times = [now - timedelta(seconds=float(s)) for s in np.linspace(60, 7 * 86400 - 3600, args.records)]
        t0 = time.perf_counter()
        keys = write_log(store, records(X, trained.scores(X), trained.threshold, "1.0.2", times),
                         writer="bench", per_file=args.per_file)
        print(f"logged {args.records:,} predictions in {len(keys)} files in {time.perf_counter() - t0:.1f} s", flush=True)
        walls, cpus = [], []
        for i in range(args.runs):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "oncology.monitoring.drift_cli", "--store", str(store.root)],
                                  capture_output=True, text=True)
            walls.append(time.perf_counter() - t0)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
            if proc.returncode not in (0, 1):
                print(proc.stdout, proc.stderr, file=sys.stderr)
                return 1
            print(f"run {i + 1}: {walls[-1]:.2f} s wall, {cpus[-1]:.2f} s CPU (exit {proc.returncode})", flush=True)
        load = os.getloadavg()[0]
        print(f"oncology drift over {args.records:,} predictions: median {statistics.median(walls):.2f} s wall, "
              f"{statistics.median(cpus):.2f} s CPU, of {args.runs} runs (target < 10 s; one process, one core; "
              f"load average {load:.1f} on {os.cpu_count()} cores: on a busy machine wall time is CPU time "
              "times the contention)")
        print(proc.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
