"""How long a user waits for the model: `import oncology_model` + `Classifier()` in a fresh interpreter.

Builds the oncology-model wheel of a store's champion (``oncology wheel``), installs it alone in a
new venv (its only dependency, pydantic, comes with it), then starts a fresh interpreter ``runs``
times.  Each run reports the in-interpreter time of the import plus loading the packaged model
(manifest check included); the whole process (interpreter start to exit) is timed too.  Medians.

    .venv/bin/python benchmarks/model_import.py --store STORE [--runs 10] [--cpu 0]

`run.py` runs it as part of ``make bench`` (``--skip-model-import`` leaves it out).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PROJECT_BIN = Path(sys.executable).parent

PROBE = (
    "import time\n"
    "t0 = time.perf_counter()\n"
    "import oncology_model\n"
    "c = oncology_model.Classifier()\n"
    "t1 = time.perf_counter()\n"
    "import sys, json\n"
    "print(json.dumps({'seconds': t1 - t0, 'version': c.version,"
    " 'heavy': sorted(m for m in ('numpy', 'sklearn', 'boto3', 'oncology') if m in sys.modules)}))\n"
)


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "ONCOLOGY_", "VIRTUAL_ENV"))}


def measure(store: str, runs: int = 10, cpu: int | None = None, results: Path = RESULTS) -> dict[str, object]:
    dist = results / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    built = subprocess.run(
        [str(PROJECT_BIN / "oncology"), "wheel", "--store", store, "--out", str(dist)],
        capture_output=True, text=True, check=False, cwd=ROOT,
    )
    if built.returncode != 0:
        raise RuntimeError(f"oncology wheel failed:\n{built.stdout}{built.stderr}")
    wheel = Path(built.stdout.strip().splitlines()[-1])

    env_dir = results / "model-import-venv"
    shutil.rmtree(env_dir, ignore_errors=True)
    base_python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_python, "-m", "venv", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    pip = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(wheel)], capture_output=True, text=True, env=_clean_env()
    )
    if pip.returncode != 0:
        raise RuntimeError(f"installing {wheel.name} failed:\n{pip.stdout}{pip.stderr}")
    installed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=json"], capture_output=True, text=True, check=True, env=_clean_env()
    )
    packages = {p["name"]: p["version"] for p in json.loads(installed.stdout)}

    pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
    inside: list[float] = []
    whole: list[float] = []
    probe_out: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="model-import-") as cwd:  # no source tree on sys.path
        for i in range(runs + 1):
            start = time.perf_counter()
            proc = subprocess.run([*pin, str(python), "-c", PROBE], capture_output=True, text=True, cwd=cwd, env=_clean_env())
            elapsed = time.perf_counter() - start
            if proc.returncode != 0:
                raise RuntimeError(f"the probe failed:\n{proc.stderr}")
            probe_out = json.loads(proc.stdout)
            if i == 0:
                continue  # the first start warms the page cache; not counted
            inside.append(float(probe_out["seconds"]))  # type: ignore[arg-type]
            whole.append(elapsed)
    return {
        "wheel": wheel.name,
        "model_version": probe_out.get("version"),
        "venv_packages": packages,
        "heavy_modules_imported": probe_out.get("heavy"),
        "runs": runs,
        "pinned_cpu": cpu,
        "import_and_load_ms_median": round(statistics.median(inside) * 1000, 2),
        "import_and_load_ms_min": round(min(inside) * 1000, 2),
        "process_wall_ms_median": round(statistics.median(whole) * 1000, 2),
        "samples_import_and_load_ms": [round(s * 1000, 2) for s in inside],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--cpu", type=int, default=None, help="pin each run to this CPU (taskset)")
    args = parser.parse_args()
    print(json.dumps(measure(args.store, args.runs, args.cpu), indent=2))


if __name__ == "__main__":
    main()
