"""The monitoring data plane at scale: drift's counts from JSON Lines and from Parquet, compaction, and Dask.

For each size N (``--rows``), writes N synthetic logged predictions into a store (a local folder; with
``--s3``, a bucket of a SeaweedFS server started for the run) the way the web
service writes them (its own line struct, msgspec's encoder and ISA-L gzip at level 0, objects of
``--per-object`` lines per writer, ``<writer>-<seq>.jsonl.gz`` under ``date=`` partitions), spread over 30
days and 3 model versions; then measures, each step in its own process (wall time, CPU time, and the
process's peak RSS):

- drift's counts of one version over the 30 days, DuckDB, from JSON Lines;
- compaction of the 30 days into Parquet (``oncology.monitoring.compaction.compact``);
- the same counts from Parquet;
- with ``--dask``, the same counts on a Dask LocalCluster (2 single-threaded workers, 127.0.0.1), from
  Parquet; its figures must equal DuckDB's (correctness, not speed, on 2 cores).

Up to 1,000,000 rows, it then writes the same rows straight as compacted parts (below) and asserts drift
counts them as it counted the compacted JSON Lines.

``--parquet-only`` writes the same N predictions as compaction leaves the closed days instead, with no JSON
Lines (writing and compacting 100 million lines would take about half an hour of CPU): per day one Parquet
part and its manifest, through compaction's own `write_part`, so every column, types, order, compression and
row groups are what compaction writes; then measures drift's counts from Parquet (and Dask's with ``--dask``).
Each step's line also shows the load average (1 minute) before and after it.

``--command`` also trains a small real model and compares ``oncology drift`` (a process, as the CronJob runs
it; report and dashboard written) over 100,000 predictions with the same command as it was before the
engine (``drift_cli.py`` of ``--old-rev``, taken from git: Python loops over the lines), interleaved, in the
same run, on the same log: a ratio of wall times and of CPU times.

    .venv/bin/python benchmarks/dataplane.py --rows 1000000,3000000 --dask --command
    .venv/bin/python benchmarks/dataplane.py --quick          # 200,000 rows and the command: a smoke run
    .venv/bin/python benchmarks/dataplane.py --rows 1000000 --s3  # the logs in S3 (a SeaweedFS of its own)
    .venv/bin/python benchmarks/dataplane.py --rows 1000000 --baseline REV   # each step also on commit REV's code
    nice -n 10 .venv/bin/python benchmarks/dataplane.py --rows 10000000,100000000 --parquet-only --work /var/tmp/dp
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
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
START = datetime(2026, 10, 1, tzinfo=UTC)
DAYS = 30
VERSIONS = ("1.0.1", "1.0.2", "1.0.3")
EDGES = [float(e) for e in np.round(np.linspace(0.0, 1.0, 21), 12)]
#: When the benchmark's compaction runs (every day of the log closed), and the time its direct parts record.
COMPACTED_AT = datetime(2027, 1, 1, tzinfo=UTC)
#: Up to this size, a run from JSON Lines also writes the same rows directly as parts and checks the figures agree.
DIRECT_CHECK_MAX = 1_000_000


def _days(rows: int, seed: int) -> Iterator[tuple[int, datetime, dict[str, Any]]]:
    """The rows of each day, drawn once (both writers below write these): ms offsets in the day (sorted), the
    nine features, the probability and the version's index."""
    rng = np.random.default_rng(seed)
    per_day = np.full(DAYS, rows // DAYS)
    per_day[: rows % DAYS] += 1
    for day, n in enumerate(per_day.tolist()):
        offsets = np.sort(rng.integers(0, 86_400_000, n))
        X = rng.integers(1, 11, size=(n, 9))
        p = rng.beta(0.6, 0.9, n).round(4)
        version = rng.integers(0, len(VERSIONS), n)
        yield day, START + timedelta(days=day), {"ms": offsets, "X": X, "p": p, "version": version}


def generate(root: Path, rows: int, per_object: int, writers: int = 4, seed: int = 0) -> int:
    """N predictions over 30 days and 3 versions, as the service's writers file them; returns the objects written."""
    import msgspec

    from oncology.webservice.predlog import _GZIP_LEVEL, _gzip, _Inputs, _Line, object_key

    encode_lines = msgspec.json.Encoder().encode_lines
    objects = 0
    seqs = [0] * writers
    for day, base, drawn in _days(rows, seed):
        date = f"{base:%Y-%m-%d}"
        offsets, X, p, version = (drawn[k].tolist() for k in ("ms", "X", "p", "version"))
        n = len(offsets)
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


def generate_parts(root: Path, rows: int, seed: int = 0) -> int:
    """The same N predictions as `generate`, written as compaction leaves the closed days: one Parquet part per day
    and its manifest, through compaction's own `write_part`, with no JSON Lines; returns the parts written."""
    from oncology.monitoring.compaction import write_part
    from oncology.monitoring.engine.connection import connect, location
    from oncology.monitoring.engine.queries import CHAMPION_ARM, literal
    from oncology_model.datamodel import FEATURES
    from oncology_model.storage import LocalStore

    store = LocalStore(root)
    con = connect(location(store))
    label = "CASE WHEN probability >= 0.5 THEN 'malignant' ELSE 'benign' END"
    versions = "[" + ", ".join(literal(v) for v in VERSIONS) + "]"
    parts = 0
    try:
        for day, base, drawn in _days(rows, seed):
            columns = {"ms": drawn["ms"], "k": np.arange(len(drawn["ms"])), "probability": drawn["p"],
                       "v": drawn["version"].astype(np.int8),
                       **{name: drawn["X"][:, j].astype(np.int8) for j, name in enumerate(FEATURES)}}
            con.register("day_rows", columns)
            # the line of `generate` as compaction reads it: the same time to the ms, id, version, route, features,
            # probability and labels, and the arm of a line that names none
            write_part(store, base.date(), 0, con, (
                f"SELECT TIMESTAMPTZ {literal(base.isoformat())} + to_milliseconds(ms) AS ts, "
                f"printf('%02d%02d%012x', {seed}, {day}, k) AS request_id, {versions}[v + 1] AS model_version, "
                f"'/predict' AS route, {', '.join(FEATURES)}, probability, {label} AS prediction, {label} AS decision, "
                f"{literal(CHAMPION_ARM)} AS arm FROM day_rows"), COMPACTED_AT)
            con.unregister("day_rows")
            parts += 1
    finally:
        con.close()
    return parts


# ---- the measured steps, each run as its own process (``python dataplane.py _step NAME STORE ...``) ------------


def _step(name: str, store_dir: str, extra: list[str]) -> dict[str, Any]:
    from oncology.monitoring.engine.run import drift_counts
    from oncology.monitoring.engine.settings import EngineSettings
    from oncology_model.storage import open_store

    store = open_store(store_dir)  # a folder, or s3://bucket/prefix (--s3)
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

        done = compact(store, COMPACTED_AT)
        out = {"parts": sum(d.manifest is not None for d in done),
               "rows": sum(d.manifest.rows for d in done if d.manifest is not None)}
    else:
        raise SystemExit(f"unknown step {name}")
    out["rss_mb"] = peak_rss_mb()
    return out


def peak_rss_mb() -> float:
    """This process's own peak resident memory (VmHWM).  Not ``ru_maxrss``: Linux carries a process's high-water
    mark across exec, so in a step started by this benchmark it reports the parent's peak when that is larger
    (after writing 100 million rows, 1.7 GB for a step whose own peak is a few hundred MB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise SystemExit("no VmHWM in /proc/self/status: this benchmark measures memory on Linux only")


def measure(name: str, store: Path, *extra: str, code: Path | None = None) -> dict[str, Any]:
    """One step in its own process; with ``code``, on the ``src`` tree there (``--baseline``) instead of this one."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(code or ""), os.environ.get("PYTHONPATH")])))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "_step", name, str(store), *extra], capture_output=True, text=True,
                          env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_s"] = wall
    result["load"] = [load, os.getloadavg()[0]]  # the 1-minute load average before and after the step
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


class S3Bench:
    """A SeaweedFS S3 server of the run's own (infra/seaweedfs.py, on 127.0.0.1; ``--s3``), its credentials in this
    process's environment so that the measured steps, its children, reach it."""

    BUCKET = "dataplane-bench"

    def __init__(self, work: Path) -> None:
        import secrets

        sys.path[:0] = [str(REPO / "infra")]
        import seaweedfs  # infra/seaweedfs.py: the project's own start/stop
        from localproc import free_port

        access, secret = "dataplane-bench", secrets.token_hex(16)
        self.server = seaweedfs.start(work / "seaweedfs", s3_port=free_port(), access_key=access, secret_key=secret)
        os.environ.update({"AWS_ENDPOINT_URL": self.server.endpoint_url, "AWS_ACCESS_KEY_ID": access,
                           "AWS_SECRET_ACCESS_KEY": secret, "AWS_DEFAULT_REGION": "us-east-1",
                           "AWS_EC2_METADATA_DISABLED": "true"})
        self.client = self.server.client()
        self.client.create_bucket(Bucket=self.BUCKET)
        print(f"S3: SeaweedFS at {self.server.endpoint_url}, bucket {self.BUCKET}", flush=True)

    def upload(self, local: Path, prefix: str) -> str:
        """Every file under ``local`` as an object under ``prefix`` (as the service's writers would have put them)."""
        from concurrent.futures import ThreadPoolExecutor

        files = [f for f in local.rglob("*") if f.is_file()]
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda f: self.client.put_object(Bucket=self.BUCKET, Key=f"{prefix}/{f.relative_to(local)}",
                                                           Body=f.read_bytes()), files))
        return f"s3://{self.BUCKET}/{prefix}"

    def size(self, store: str, under: str, suffix: str) -> int:
        prefix = store.removeprefix(f"s3://{self.BUCKET}/") + "/" + under
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.BUCKET, Prefix=prefix)
        return sum(o["Size"] for page in pages for o in page.get("Contents", []) if o["Key"].endswith(suffix))

    def stop(self) -> None:
        self.server.stop()


def _size(root: Path, pattern: str = "*") -> int:
    return sum(f.stat().st_size for f in root.rglob(pattern) if f.is_file())


def _print(results: list[dict[str, Any]]) -> None:
    for r in results:
        print(f"  {r['step']}: {r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU, peak RSS {r['rss_mb']:.0f} MB, "
              f"load {r['load'][0]:.1f}-{r['load'][1]:.1f}", flush=True)


def scale(rows: int, per_object: int, dask: bool, work: Path, baseline: Path | None = None,
          s3: S3Bench | None = None) -> list[dict[str, Any]]:
    local = work / f"store-{rows}"
    shutil.rmtree(local, ignore_errors=True)
    t0 = time.perf_counter()
    objects = generate(local, rows, per_object)
    gen = time.perf_counter() - t0
    size = _size(local / "monitoring/predictions", "*.gz")
    print(f"\n{rows:,} predictions: {objects} objects, {size / 2**20:.0f} MiB of gzip JSON Lines, generated in {gen:.0f} s",
          flush=True)
    store: Path | str = local
    if s3 is not None:  # the same objects in S3, where every step reads and writes them
        t0 = time.perf_counter()
        store = s3.upload(local, f"store-{rows}")
        print(f"  uploaded to {store} in {time.perf_counter() - t0:.0f} s", flush=True)
        shutil.rmtree(local, ignore_errors=True)
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
    parquet_size = (s3.size(str(store), "monitoring/predictions-parquet/", ".parquet") if s3 is not None
                    else _size(local / "monitoring/predictions-parquet", "*.parquet"))
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
    _print(results)
    shutil.rmtree(local, ignore_errors=True)
    if rows <= DIRECT_CHECK_MAX:  # what --parquet-only writes must count as the compacted JSON Lines do
        direct = work / f"store-{rows}-direct"
        generate_parts(direct, rows)
        assert _same(measure("drift", direct), parquet), "parts written directly and compacted JSON Lines disagree"
        print("  the same rows written directly as parts (--parquet-only): the same figures", flush=True)
        shutil.rmtree(direct, ignore_errors=True)
    return results


def scale_parquet(rows: int, dask: bool, work: Path) -> list[dict[str, Any]]:
    """N predictions written as compaction leaves the closed days (no JSON Lines), and drift's counts from them."""
    store = work / f"store-{rows}-parquet"
    shutil.rmtree(store, ignore_errors=True)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    parts = generate_parts(store, rows)
    gen = time.perf_counter() - t0
    size, disk = _size(store, "*.parquet"), _size(store)
    print(f"\n{rows:,} predictions written as compacted parts: {parts} parts, {size / 2**20:.0f} MiB of Parquet "
          f"({disk / 2**20:.0f} MiB on disk with the manifests), written in {gen:.0f} s at load "
          f"{load:.1f}-{os.getloadavg()[0]:.1f}", flush=True)
    results = [{"rows": rows, "step": "drift from Parquet (DuckDB; parts written directly)", "parquet_mib": size / 2**20,
                "written_s": gen, **measure("drift", store)}]
    if dask:
        results.append({"rows": rows, "step": "drift from Parquet (Dask LocalCluster, 2 workers; same figures)",
                        **measure("drift-dask", store)})
        assert _same(results[-1], results[0]), "Dask and DuckDB disagree"
    _print(results)
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
    parser.add_argument("--rows", default="1000000",
                        help="Comma-separated sizes, e.g. 1000000,10000000 or 100_000_000 (default 1000000).")
    parser.add_argument("--per-object", type=int, default=5000, help="Lines per object (the service's batch_rows; default 5000).")
    parser.add_argument("--parquet-only", action="store_true",
                        help="Write the rows as compaction leaves closed days (a Parquet part and its manifest a day, no "
                        "JSON Lines) and measure drift from Parquet only: sizes JSON Lines would take too long to "
                        "write and compact (default: off).")
    parser.add_argument("--dask", action="store_true", help="Also run the counts on a Dask LocalCluster (default: off).")
    parser.add_argument("--command", action="store_true", help="Also time oncology drift against the old path (default: off).")
    parser.add_argument("--quick", action="store_true", help="200,000 rows, Dask and the command: a smoke run (default: off).")
    parser.add_argument("--skip-scale", action="store_true", help="Only the command comparison (with --command; default: off).")
    parser.add_argument("--old-rev", default=OLD_REV, help=f"The commit whose drift_cli.py is 'before' (--command; default {OLD_REV}).")
    parser.add_argument("--baseline", default=None, metavar="REV",
                        help="Also run each step on the code of commit REV, on the same logs, interleaved (default: none).")
    parser.add_argument("--s3", action="store_true",
                        help="Keep the logs in S3: a SeaweedFS server started for the run (infra/seaweedfs.py, "
                        "127.0.0.1), the generated objects put into it, and every step reading and writing there "
                        "(not with --parquet-only, --baseline or --command; default: local folders).")
    parser.add_argument("--work", type=Path, default=None,
                        help="Folder for the stores, created if missing (default: a temporary one).")
    args = parser.parse_args()
    sizes = [200_000] if args.quick else []
    for text in [] if args.quick else args.rows.split(","):
        try:
            sizes.append(int(text))
        except ValueError:
            parser.error(f"--rows {args.rows}: {text!r} is not a whole number of rows")
        if sizes[-1] < 1:
            parser.error(f"--rows {args.rows}: {text!r} is not a positive number of rows")
    if args.s3 and (args.parquet_only or args.baseline or args.command or args.quick or args.skip_scale):
        parser.error("--s3 measures the JSON Lines steps alone: not with --parquet-only, --baseline, --command or --quick")
    if args.parquet_only and (args.baseline or args.quick):
        parser.error("--parquet-only writes no JSON Lines: it measures no baseline and no --quick run")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dataplane-bench-", dir=args.work) as tmp:
        work = Path(tmp)
        baseline = baseline_code(args.baseline, work) if args.baseline else None
        s3 = S3Bench(work) if args.s3 else None
        try:
            if args.skip_scale:
                results = []
            elif args.parquet_only:
                results = [r for n in sizes for r in scale_parquet(n, args.dask, work)]
            else:
                results = [r for n in sizes for r in scale(n, args.per_object, args.dask or args.quick, work, baseline, s3)]
        finally:
            if s3 is not None:
                s3.stop()
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
