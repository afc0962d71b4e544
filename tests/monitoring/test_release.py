"""`make release`: test -> upload.monitoring -> publish -> deploy, in order, stopping at the first failure.

The real publish and deploy need dockerd and a cluster (the e2e tier runs them); here make prints the
chain (`make -n`) or runs it with stubbed steps: a second makefile whose recipes replace the real ones.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from support import make_env, makefile_variables

REPO = Path(__file__).resolve().parents[2]

STUB_STEPS = {
    "test": "STEP test",
    "upload.monitoring": "STEP upload.monitoring",
    "publish": "STEP publish",
    "deploy": "STEP deploy",
}


def make(*args: str, stubs: tuple[str, ...] = (), tmp_path: Path | None = None) -> subprocess.CompletedProcess[str]:
    """make in the repository, outside any make that runs these tests; ``stubs``: steps that only say their name."""
    files: list[str] = []
    if stubs:
        assert tmp_path is not None
        stub = tmp_path / "stub.mk"
        lines = [".venv/.installed: ;"]  # never reinstall from a test
        lines += [f"{step}:\n\t@echo {STUB_STEPS[step]}" for step in stubs]
        stub.write_text("\n".join(lines) + "\n")
        files = ["-f", "Makefile", "-f", str(stub)]
    return subprocess.run(["make", "--no-print-directory", *files, *args], cwd=REPO, env=make_env(), capture_output=True, text=True, timeout=120)


def positions(text: str, *needles: str) -> list[int]:
    found = [text.find(needle) for needle in needles]
    assert -1 not in found, f"missing {[n for n, i in zip(needles, found) if i < 0]} in:\n{text}"
    return found


pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def test_the_release_chain_runs_test_upload_publish_deploy_in_that_order() -> None:
    proc = make("-n", "release", "VERSION=1.0.1")
    assert proc.returncode == 0, proc.stderr
    steps = positions(proc.stdout, "coverage run -m pytest", "oncology monitoring upload", "deploy/publish.py", "kubectl set image")
    assert steps == sorted(steps)
    assert "--version 1.0.1" in proc.stdout and "oncology-webservice:1.0.1" in proc.stdout


@pytest.mark.parametrize("jobs", ["-j1", "-j4"])
def test_each_step_waits_for_the_one_before_even_with_parallel_jobs(tmp_path: Path, jobs: str) -> None:
    proc = make(jobs, "release", "VERSION=1.0.1", stubs=tuple(STUB_STEPS), tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    ran = [line for line in proc.stdout.splitlines() if line.startswith("STEP ")]
    assert ran == list(STUB_STEPS.values())


def test_the_chain_stops_at_the_first_failure(tmp_path: Path) -> None:
    # test passes (stubbed); upload.monitoring runs for real and fails: VERSION is not in the store
    store, coverage = tmp_path / "empty-store", tmp_path / "coverage"
    store.mkdir()
    coverage.mkdir()
    for suite in ("unittest", "test"):
        (coverage / f"{suite}-coverage.json").write_text('{"files": {}, "totals": {"percent_covered": 100.0}}')
    proc = make(
        "release", "VERSION=9.9.9", f"STORE={store}", f"COVERAGE_DIR={coverage}",
        stubs=("test", "publish", "deploy"), tmp_path=tmp_path,
    )
    assert proc.returncode != 0
    assert "STEP test" in proc.stdout
    assert "STEP publish" not in proc.stdout and "STEP deploy" not in proc.stdout
    assert "9.9.9 is not published" in proc.stderr
    assert not (store / "monitoring").exists()


def test_release_needs_a_concrete_version_and_refuses_before_any_step(tmp_path: Path) -> None:
    proc = make("release", stubs=tuple(STUB_STEPS), tmp_path=tmp_path)
    assert proc.returncode != 0 and "make release needs VERSION=<model version>" in proc.stderr
    assert "STEP" not in proc.stdout


def test_the_refusal_does_not_depend_on_the_callers_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # make exports its command line to the recipes' environment: `make release VERSION=1.0.3` runs these tests with
    # VERSION=1.0.3 (and any other variable) set; what the tests expect must not change with that
    variables = makefile_variables()
    assert {"VERSION", "STORE", "COVERAGE_DIR", "KUBECONFIG"} <= variables
    for name in variables:
        monkeypatch.setenv(name, "1.0.3" if name == "VERSION" else f"/poison/{name}")
    monkeypatch.setenv("MAKEFLAGS", " -- VERSION=1.0.3")
    monkeypatch.setenv("ONCOLOGY_STORE", "/poison/store")
    test_release_needs_a_concrete_version_and_refuses_before_any_step(tmp_path)
    test_the_release_chain_runs_test_upload_publish_deploy_in_that_order()


def test_deploy_and_publish_alone_run_no_other_step() -> None:
    deploy = make("-n", "deploy", "VERSION=1.0.1")
    assert deploy.returncode == 0, deploy.stderr
    assert "kubectl set image" in deploy.stdout
    assert "pytest" not in deploy.stdout and "publish.py" not in deploy.stdout and "monitoring upload" not in deploy.stdout
    publish = make("-n", "publish", "VERSION=1.0.1")
    assert "publish.py" in publish.stdout and "pytest" not in publish.stdout and "monitoring upload" not in publish.stdout


def test_upload_monitoring_runs_the_tests_first() -> None:
    proc = make("-n", "upload.monitoring", "VERSION=1.0.1", "STORE=s3://bucket/prefix")
    assert proc.returncode == 0, proc.stderr
    steps = positions(proc.stdout, "coverage run -m pytest", "coverage json", "oncology monitoring upload --store s3://bucket/prefix --version 1.0.1")
    assert steps == sorted(steps)


def test_make_test_runs_every_test_once_the_unit_tests_first() -> None:
    import re
    import shlex
    import sys

    lines = [line for line in make("-n", "test").stdout.splitlines() if "coverage run -m pytest" in line]
    runs = [shlex.split(re.split(r"\|\||\\$", line.split("coverage run -m pytest", 1)[1])[0]) for line in lines]
    assert len(runs) == 2 and runs[0] == ["model/tests", "tests/trainer"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}

    def collected(*args: str) -> list[str]:
        proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return [line for line in proc.stdout.splitlines() if "::" in line]

    everything, other = collected(), collected(*runs[1])  # the unit run names its folders: runs[0] above
    unit = [test for test in everything if test.startswith(tuple(f"{folder}/" for folder in runs[0]))]
    assert unit and other and not set(unit) & set(other)
    assert sorted(unit + other) == sorted(everything)
