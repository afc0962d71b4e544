"""Benchmark of the dashboard: ``oncology report`` over a store with 50 versions.

    .venv/bin/python benchmarks/report.py [--versions 50] [--runs 3]

Builds a temporary local store (every third version without evaluation.json, coverage for most,
promotions, a rollback, a drift report; tests/monitoring/report_store.py), then times the command as
a new process, as a user runs it: once with an empty Vega bundle cache (vl-convert bundles the
JavaScript: the first report on a machine) and ``--runs`` times with it.  Prints wall-clock and CPU
seconds (CPU is the steadier figure on a shared machine) and the page's size.  Targets: under 5 s,
under 5 MB.  Not a test: it reports, it does not fail on a miss.
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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "monitoring"))

from report_store import many_versions  # noqa: E402

from oncology_model.storage import LocalStore  # noqa: E402

TARGET_SECONDS, TARGET_BYTES = 5.0, 5_000_000


def _run(store: Path, out: Path, cache: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of one ``oncology report`` process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "oncology.monitoring.report_cli", "--store", str(store), "--out", str(out)],
        check=True, capture_output=True, env={**os.environ, "ONCOLOGY_CACHE_DIR": str(cache)},
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--versions", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="oncology-report-bench-") as tmp:
        root = Path(tmp)
        many_versions(LocalStore(root / "store"), args.versions)
        out, cache = root / "dashboard.html", root / "cache"
        cold = _run(root / "store", out, cache)
        warm = [_run(root / "store", out, cache) for _ in range(args.runs)]
        size = out.stat().st_size
    wall = statistics.median(w for w, _ in warm)
    cpu = statistics.median(c for _, c in warm)
    print(f"oncology report, {args.versions} versions, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print(f"  first run (empty Vega bundle cache): {cold[0]:.2f} s wall, {cold[1]:.2f} s CPU")
    print(f"  cached bundle, median of {args.runs}: {wall:.2f} s wall, {cpu:.2f} s CPU "
          f"(runs: {', '.join(f'{w:.2f}' for w, _ in warm)} s wall)")
    print(f"  page: {size:,} bytes ({size / 1e6:.2f} MB)")
    print(f"  target < {TARGET_SECONDS:.0f} s (cached): {'PASS' if wall < TARGET_SECONDS else 'MISS'} wall, "
          f"{'PASS' if cpu < TARGET_SECONDS else 'MISS'} CPU; page < 5 MB: {'PASS' if size < TARGET_BYTES else 'MISS'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
