"""The monitoring data plane at scale: drift's counts from JSON Lines and from Parquet, compaction, and Dask.

For each size N (``--rows``), writes N synthetic logged predictions into a local store the way the web
service writes them (its own line struct, msgspec's encoder and ISA-L gzip at level 0, objects of
``--per-object`` lines per writer, ``<writer>-<seq>.jsonl.gz`` under ``date=`` partitions), spread over 30
days and 3 model versions; then measures, each step in its own process (wall time, CPU time, and the
process's peak RSS):

- drift's counts of one version over the 30 days, DuckDB, from JSON Lines;
- compaction of the 30 days into Parquet (``oncology.monitoring.compaction.compact``);
- the same counts from Parquet;
- with ``--dask``, the same counts on a Dask LocalCluster (2 single-threaded workers, 127.0.0.1), from
  Parquet; its figures must equal DuckDB's (correctness, not speed, on 2 cores).

``--command`` also trains a small real model and compares ``oncology drift`` (a process, as the CronJob runs
it; report and dashboard written) over 100,000 predictions with the same command as it was before the
engine (``drift_cli.py`` of ``--old-rev``, taken from git: Python loops over the lines), interleaved, in the
same run, on the same log: a ratio of wall times and of CPU times.

    .venv/bin/python benchmarks/dataplane.py --rows 1000000,3000000 --dask --command
    .venv/bin/python benchmarks/dataplane.py --quick          # 200,000 rows and the command: a smoke run
    .venv/bin/python benchmarks/dataplane.py --rows 1000000 --baseline REV   # each step also on commit REV's code
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
START = datetime(2026, 10, 1, tzinfo=UTC)
DAYS = 30
VERSIONS = ("1.0.1", "1.0.2", "1.0.3")
EDGES = [float(e) for e in np.round(np.linspace(0.0, 1.0, 21), 12)]


def generate(root: Path, rows: int, per_object: int, writers: int = 4, seed: int = 0) -> int:
    """N predictions over 30 days and 3 versions, as the service's writers file them; returns the objects written."""
    import msgspec

    from oncology.webservice.predlog import _GZIP_LEVEL, _gzip, _Inputs, _Line, object_key

    encode_lines = msgspec.json.Encoder().encode_lines
    rng = np.random.default_rng(seed)
    per_day = np.full(DAYS, rows // DAYS)
    per_day[: rows % DAYS] += 1
    objects = 0
    seqs = [0] * writers
    for day, n in enumerate(per_day.tolist()):
        base = START + timedelta(days=day)
        date = f"{base:%Y-%m-%d}"
        offsets = np.sort(rng.integers(0, 86_400_000, n))
        X = rng.integers(1, 11, size=(n, 9)).tolist()
        p = rng.beta(0.6, 0.9, n).round(4).tolist()
        version = rng.integers(0, len(VERSIONS), n).tolist()
        for start in range(0, n, per_object):
            w = (start // per_object) % writers
            lines = []
            for k in range(start, min(start + per_object, n)):
                ms = int(offsets[k])
                stamp = f"{base + timedelta(milliseconds=ms):%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}+00:00"
                label = "malignant" if p[k] >= 0.5 else "benign"
                lines.append(_Line(stamp, f"{seed:02d}{day:02d}{k:012x}", VERSIONS[version[k]], "/predict",
                                   _Inputs(*X[k]), p[k], label, label))
            key = object_key(date, f"bench-host-{w}", seqs[w])
            seqs[w] += 1
            path = root / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(_gzip(encode_lines(lines), _GZIP_LEVEL, wbits=31))
            objects += 1
    return objects


# ---- the measured steps, each run as its own process (``python dataplane.py _step NAME STORE ...``) ------------


def _step(name: str, store_dir: str, extra: list[str]) -> dict[str, Any]:
    from oncology.monitoring.engine.run import drift_counts
    from oncology.monitoring.engine.settings import EngineSettings
    from oncology_model.storage import LocalStore

    store = LocalStore(Path(store_dir))
    since, until = START, START + timedelta(days=DAYS)
    out: dict[str, Any] = {}
    if name in {"drift", "drift-dask"}:
        settings = EngineSettings(engine="dask", scheduler=None) if name == "drift-dask" else EngineSettings()
        counts = drift_counts(store, since, until, VERSIONS[1], EDGES, settings)
        out = {"n": counts.n, "others": dict(counts.other_versions), "malformed": counts.malformed,
               "scores": counts.observed.scores.tolist(), "bins": counts.observed.by_bin.tolist(),
               "malignant_bins": counts.observed.malignant_by_bin.tolist()}
    elif name == "compact":
        from oncology.monitoring.compaction import compact

        done = compact(store, datetime(2027, 1, 1, tzinfo=UTC))
        out = {"parts": sum(d.manifest is not None for d in done),
               "rows": sum(d.manifest.rows for d in done if d.manifest is not None)}
    else:
        raise SystemExit(f"unknown step {name}")
    out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def measure(name: str, store: Path, *extra: str, code: Path | None = None) -> dict[str, Any]:
    """One step in its own process; with ``code``, on the ``src`` tree there (``--baseline``) instead of this one."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(code or ""), os.environ.get("PYTHONPATH")])))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "_step", name, str(store), *extra], capture_output=True, text=True,
                          env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_s"] = wall
    result["cpu_s"] = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return result


def baseline_code(rev: str, work: Path) -> Path:
    """The ``src`` tree of commit ``rev`` (git archive), for the same steps on the code as it was."""
    target = work / f"baseline-{rev}"
    target.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "src"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target / "src"


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(a[k] == b[k] for k in ("n", "scores", "bins", "malignant_bins", "others", "malformed"))


def scale(rows: int, per_object: int, dask: bool, work: Path, baseline: Path | None = None) -> list[dict[str, Any]]:
    store = work / f"store-{rows}"
    shutil.rmtree(store, ignore_errors=True)
    t0 = time.perf_counter()
    objects = generate(store, rows, per_object)
    gen = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in (store / "monitoring/predictions").rglob("*.gz"))
    print(f"\n{rows:,} predictions: {objects} objects, {size / 2**20:.0f} MiB of gzip JSON Lines, generated in {gen:.0f} s",
          flush=True)
    results = []
    base_store = work / f"store-{rows}-baseline"
    if baseline is not None:  # the baseline compacts its own copy
        shutil.copytree(store, base_store)
    jsonl = measure("drift", store)
    results.append({"rows": rows, "step": "drift from JSON Lines (DuckDB)", **jsonl})
    if baseline is not None:
        old = measure("drift", store, code=baseline)
        assert _same(old, jsonl), "the baseline's figures differ"
        results.append({"rows": rows, "step": "drift from JSON Lines (DuckDB), baseline", **old})
    compacted = measure("compact", store)
    assert compacted["rows"] == rows, compacted
    parquet_size = sum(f.stat().st_size for f in (store / "monitoring/predictions-parquet").rglob("*.parquet"))
    results.append({"rows": rows, "step": f"compaction ({parquet_size / 2**20:.0f} MiB of Parquet)", **compacted})
    if baseline is not None:
        old = measure("compact", base_store, code=baseline)
        assert old["rows"] == rows, old
        results.append({"rows": rows, "step": "compaction, baseline", **old})
    parquet = measure("drift", store)
    assert _same(parquet, jsonl), "Parquet and JSON Lines disagree"
    results.append({"rows": rows, "step": "drift from Parquet (DuckDB)", **parquet})
    if baseline is not None:
        old = measure("drift", base_store, code=baseline)
        assert _same(old, parquet), "the baseline's figures differ"
        results.append({"rows": rows, "step": "drift from Parquet (DuckDB), baseline", **old})
        shutil.rmtree(base_store, ignore_errors=True)
    if dask:
        distributed = measure("drift-dask", store)
        assert _same(distributed, parquet), "Dask and DuckDB disagree"
        results.append({"rows": rows, "step": "drift from Parquet (Dask LocalCluster, 2 workers; same figures)",
                        **distributed})
    for r in results:
        print(f"  {r['step']}: {r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU, peak RSS {r['rss_mb']:.0f} MB", flush=True)
    shutil.rmtree(store, ignore_errors=True)
    return results


OLD_REV = "f1b550e"  # the last commit before the query engine


def command(work: Path, old_rev: str, records: int = 100_000) -> dict[str, Any]:
    """``oncology drift`` (DuckDB) against the path it replaced, on the same 100,000 logged predictions."""
    sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "monitoring")]
    from drift_support import records as make_records
    from drift_support import train_model, write_log

    from oncology_model.storage import LocalStore

    store = LocalStore(work / "command-store")
    trained = train_model(str(work / "training"))
    trained.publish(store)
    rng = np.random.default_rng(0)
    X = trained.X_train[rng.integers(0, len(trained.X_train), records)]
    now = datetime.now(UTC)
    times = [now - timedelta(seconds=float(s)) for s in np.linspace(60, 7 * 86400 - 3600, records)]
    write_log(store, make_records(X, trained.scores(X), trained.threshold, "1.0.2", times), writer="bench", per_file=1000)
    old_cli = work / "old_drift_cli.py"
    old_cli.write_bytes(subprocess.run(["git", "-C", str(REPO), "show", f"{old_rev}:src/oncology/monitoring/drift_cli.py"],
                                       capture_output=True, check=True).stdout)
    commands = {"new": [sys.executable, "-m", "oncology.monitoring.drift_cli"], "old": [sys.executable, str(old_cli)]}
    walls: dict[str, list[float]] = {"new": [], "old": []}
    cpus: dict[str, list[float]] = {"new": [], "old": []}
    for _ in range(3):  # interleaved: both see the same load
        for name, argv in commands.items():
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            proc = subprocess.run([*argv, "--store", str(store.root)], capture_output=True, text=True)
            walls[name].append(time.perf_counter() - t0)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus[name].append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
            if proc.returncode not in (0, 1) or f"{records} predictions" not in proc.stdout:
                raise SystemExit(f"{name}: exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    new, old, new_cpu, old_cpu = (float(np.median(d[k])) for d in (walls, cpus) for k in ("new", "old"))
    print(f"\noncology drift over {records:,} predictions (a process; report and dashboard written), median of 3: "
          f"{new:.2f} s wall, {new_cpu:.2f} s CPU; the same command at {old_rev} (Python loops): {old:.2f} s wall, "
          f"{old_cpu:.2f} s CPU; ratio {old / new:.2f}x wall, {old_cpu / new_cpu:.2f}x CPU", flush=True)
    return {"records": records, "new_s": new, "old_s": old, "new_cpu_s": new_cpu, "old_cpu_s": old_cpu,
            "ratio": old / new, "cpu_ratio": old_cpu / new_cpu}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_step":
        print(json.dumps(_step(sys.argv[2], sys.argv[3], sys.argv[4:])))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="1000000", help="Comma-separated sizes (default 1000000).")
    parser.add_argument("--per-object", type=int, default=5000, help="Lines per object (the service's batch_rows).")
    parser.add_argument("--dask", action="store_true", help="Also run the counts on a Dask LocalCluster.")
    parser.add_argument("--command", action="store_true", help="Also time oncology drift against the old path.")
    parser.add_argument("--quick", action="store_true", help="200,000 rows, Dask and the command: a smoke run.")
    parser.add_argument("--skip-scale", action="store_true", help="Only the command comparison (with --command).")
    parser.add_argument("--old-rev", default=OLD_REV, help="The commit whose drift_cli.py is 'before' (--command).")
    parser.add_argument("--baseline", default=None, metavar="REV",
                        help="Also run each step on the code of commit REV, on the same logs, interleaved (default: none).")
    parser.add_argument("--work", type=Path, default=None, help="Folder for the stores (default: a temporary one).")
    args = parser.parse_args()
    sizes = [200_000] if args.quick else [int(s) for s in args.rows.split(",")]
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    with tempfile.TemporaryDirectory(prefix="dataplane-bench-", dir=args.work) as tmp:
        work = Path(tmp)
        baseline = baseline_code(args.baseline, work) if args.baseline else None
        results = [] if args.skip_scale else [r for n in sizes
                                              for r in scale(n, args.per_object, args.dask or args.quick, work, baseline)]
        summary: dict[str, Any] = {"results": [{k: v for k, v in r.items() if k not in {"scores", "bins", "malignant_bins"}}
                                               for r in results]}
        if args.command or args.quick:
            summary["command"] = command(work, args.old_rev)
    out = REPO / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    path = out / f"dataplane-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(summary, indent=1))
    print(f"\nwritten {path.relative_to(REPO)}; load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
