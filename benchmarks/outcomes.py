"""The outcome join at scale: N logged predictions and N/10 outcomes, joined and aggregated per model version and
month on the monitoring data plane (`oncology.monitoring.outcomes.join` and `realized`: what ``oncology outcomes
check`` runs, with the default engine, DuckDB embedded).

Writes a local store as production holds it: a year of the prediction log as the service writes it (gzip JSON
Lines under ``monitoring/predictions/date=YYYY-MM-DD/``, three versions in turn, features drawn 1-10), every day
but the last ``--open-days`` compacted into Parquet: written as compaction leaves a day (a Parquet part and its
manifest, through compaction's own `oncology.monitoring.compaction.write_part`), or with ``--compaction real`` by
`oncology.monitoring.compaction.compact` itself (the JSON Lines kept beside, as it leaves them: the query reads
each prediction once; minutes a million); and N/10 outcomes as JSON Lines
under ``monitoring/outcomes/date=YYYY-MM-DD/``, observed 1 to 200 days after their prediction.  Then it runs
the join and the per-version, per-month figures in a fresh process, ``--runs`` times, and prints the wall time
of each run (process start and imports included), the split between the join and the figures, and the
process's peak resident memory.

    .venv/bin/python benchmarks/outcomes.py [--predictions 1000000] [--runs 2] [--open-days 7] [--keep DIR]
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

REPO = Path(__file__).resolve().parents[1]
START = datetime(2025, 1, 1, tzinfo=UTC)
DAYS = 365

MEASURE = """
import sys, time
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
predictions = sum(v["predictions"] for v in versions.values())
# VmHWM, this process's own peak: ru_maxrss would report the parent's (it crosses exec), which wrote the store
rss = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) / 1024
print(f"{t2 - t0:.2f} {t1 - t0:.2f} {t2 - t1:.2f} {rss:.0f} {joined.labelled} {len(versions)} {chunks} {predictions}")
"""

_ISO = "strftime({0}, '%Y-%m-%dT%H:%M:%S.%g+00:00')"


def write_store(root: Path, n: int, open_days: int, direct: bool, seed: float = 0.25) -> tuple[float, float]:
    """The log, its compaction and the outcomes; the seconds the writing and the compaction took."""
    import duckdb

    from oncology.monitoring.compaction import compact, write_part
    from oncology.monitoring.engine.queries import CHAMPION_ARM
    from oncology_model.datamodel import FEATURES
    from oncology_model.storage import LocalStore

    store = LocalStore(root)
    t0 = time.perf_counter()
    con = duckdb.connect(config={"threads": 2})
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SELECT setseed({seed})")
    features = ", ".join(f"'{name}': 1 + CAST(floor(random() * 10) AS INTEGER)" for name in FEATURES)
    con.execute(f"""
        CREATE TABLE log AS
        WITH base AS (
            SELECT i, TIMESTAMPTZ '{START.isoformat()}' + to_microseconds(CAST(i * ({DAYS} * 86400e6 / {n}) AS BIGINT)) AS ts,
                   random() < 0.35 AS malignant, random() AS u
            FROM range({n}) t(i))
        SELECT i, ts, malignant, CAST(ts AS DATE) AS date,
               ['1.0.1', '1.0.2', '1.0.3'][1 + least(CAST(i * 3 // {n} AS INTEGER), 2)] AS version,
               round(CASE WHEN malignant THEN 1 - 0.8 * u * u ELSE 0.8 * u * u END, 6) AS probability,
               {{{features}}} AS inputs
        FROM base""")
    now = START + timedelta(days=DAYS)
    closed = {(START + timedelta(days=k)).date() for k in range(DAYS - open_days)}
    # one object per day (DuckDB writes no partitioned JSON): the day's lines as the service writes them
    for (day,) in con.execute("SELECT DISTINCT date FROM log ORDER BY 1").fetchall():
        if direct and day in closed:  # as compaction writes a day (its own `write_part`): a Parquet part, its manifest
            label = "CASE WHEN probability >= 0.5 THEN 'malignant' ELSE 'benign' END"
            write_part(store, day, 0, con, (
                f"SELECT ts, 'r' || i AS request_id, version AS model_version, '/predict' AS route, "
                f"{', '.join(f'inputs.{name} AS {name}' for name in FEATURES)}, probability, {label} AS prediction, "
                f"{label} AS decision, '{CHAMPION_ARM}' AS arm FROM log WHERE date = DATE '{day}'"), now)
            continue
        folder = root / "monitoring" / "predictions" / f"date={day}"
        folder.mkdir(parents=True)
        con.execute(f"""
            COPY (SELECT {_ISO.format('ts')} AS ts, 'r' || i AS request_id, version AS model_version, '/predict' AS route,
                         inputs, probability, CASE WHEN probability >= 0.5 THEN 'malignant' ELSE 'benign' END AS prediction,
                         CASE WHEN probability >= 0.5 THEN 'malignant' ELSE 'benign' END AS decision
                  FROM log WHERE date = DATE '{day}' ORDER BY i)
            TO '{folder}/bench-000000.jsonl.gz' (FORMAT json, COMPRESSION gzip)""")
    con.execute(f"""
        CREATE TABLE outcomes AS
        SELECT request_id, outcome, {_ISO.format('observed_at')} AS observed_at, 'bench' AS source,
               {_ISO.format('observed_at + INTERVAL 1 HOUR')} AS received_at, CAST(observed_at AS DATE) AS date
        FROM (SELECT 'r' || i AS request_id, CASE WHEN malignant THEN 'malignant' ELSE 'benign' END AS outcome,
                     ts + to_days(1 + CAST(floor(random() * 200) AS INTEGER)) AS observed_at
              FROM log WHERE i % 10 = 3)""")
    for (day,) in con.execute("SELECT DISTINCT date FROM outcomes ORDER BY 1").fetchall():
        folder = root / "monitoring" / "outcomes" / f"date={day}"
        folder.mkdir(parents=True)
        con.execute(f"""COPY (SELECT request_id, outcome, observed_at, source, received_at FROM outcomes
                              WHERE date = DATE '{day}') TO '{folder}/bench-000000.jsonl' (FORMAT json)""")
    con.close()
    written = time.perf_counter() - t0
    t1 = time.perf_counter()
    if not direct:
        compact(store, now, sorted(closed))
    return written, time.perf_counter() - t1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--predictions", type=int, default=1_000_000,
                        help="logged predictions N (a tenth as many outcomes; default 1,000,000)")
    parser.add_argument("--runs", type=int, default=2, help="measured runs of the join on the same store (default 2)")
    parser.add_argument("--open-days", type=int, default=7, help="the newest days, left as JSON Lines (default 7)")
    parser.add_argument("--compaction", choices=("direct", "real"), default="direct",
                        help="direct: write the closed days as compaction leaves them (a Parquet part and its manifest, "
                        "no JSON Lines); real: write JSON Lines and run the compaction (minutes a million)")
    parser.add_argument("--keep", type=Path, help="write the store into this folder and keep it; "
                        "if it holds one already (from an earlier run with the same --predictions), measure it again")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="outcomes-bench-") as tmp:
        root = args.keep or Path(tmp)
        if not (root / "monitoring").exists():
            written, compacted = write_store(root, args.predictions, args.open_days, args.compaction == "direct")
            print(f"wrote {args.predictions:,} predictions and {args.predictions // 10:,} outcomes in {written:.1f} s, "
                  f"compacted {DAYS - args.open_days} of {DAYS} days in {compacted:.1f} s", flush=True)
        size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
        parquet = sum(f.stat().st_size for f in root.rglob("*.parquet"))
        print(f"{root}: {size / 1e6:.0f} MB in all, {parquet / 1e6:.0f} MB of Parquet", flush=True)
        walls = []
        cpu_before = 0.0
        for run in range(args.runs):
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", MEASURE, str(root)], capture_output=True, text=True,
                                  env={**os.environ, "PYTHONPATH": str(REPO / "src")})
            wall = time.perf_counter() - start
            cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu_s = cpu.ru_utime + cpu.ru_stime - cpu_before
            cpu_before += cpu_s
            if done.returncode:
                print(done.stderr, file=sys.stderr)
                return 1
            _, joined, figures, rss, labelled, versions, chunks, predictions = done.stdout.split()
            walls.append(wall)
            print(f"run {run + 1}: {wall:.2f} s wall, {cpu_s:.1f} s CPU (process start included); join {joined} s, figures {figures} s; "
                  f"peak RSS {rss} MB; {predictions} predictions, {labelled} labelled cases, {versions} versions, "
                  f"{chunks} version-months", flush=True)
        print(f"median {statistics.median(walls):.2f} s on {os.cpu_count()} CPUs, load average "
              f"{os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
