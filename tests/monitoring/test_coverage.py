"""Coverage as `make test` measures it reaches into the processes the tests start.

A small run under the project's own coverage settings (pyproject.toml) starts what the suite starts: the
CLI, `oncology serve` stopped by SIGTERM, and `oncology serve --workers 2`, whose uvicorn workers end by
re-raising SIGTERM.  The combined report must hold lines that only those processes run.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from oncology.webservice import server

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

SCENARIO = textwrap.dedent(
    """
    import signal, subprocess, sys, time, urllib.request

    bin_dir, store = sys.argv[1], sys.argv[2]
    sys.path.insert(0, sys.argv[3])
    from localproc import free_port  # infra/localproc.py

    def serve_and_stop(*args):
        port = free_port()
        proc = subprocess.Popen([f"{bin_dir}/oncology", "serve", "--store", store, "--port", str(port), *args])
        deadline = time.monotonic() + 60
        while True:  # poll readiness
            assert proc.poll() is None and time.monotonic() < deadline, "server did not become ready"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=60)

    subprocess.run([f"{bin_dir}/oncology", "models", "list", "--store", store], check=True, capture_output=True)
    print("one worker", serve_and_stop())
    print("two workers", serve_and_stop("--workers", "2"))
    """
)


def body_lines(function: object) -> set[int]:
    lines, first = inspect.getsourcelines(function)  # type: ignore[arg-type]
    body = [i for i, text in enumerate(lines) if text.strip() and not text.strip().startswith(("def ", '"""', "#"))]
    return {first + i for i in body}


def test_processes_started_by_the_tests_are_measured_even_when_sigterm_ends_them(trained_store: Path, tmp_path: Path) -> None:
    (tmp_path / "scenario.py").write_text(SCENARIO)
    data = tmp_path / "data"
    data.mkdir()
    # a run of its own: the outer measurement (when `make test` runs this) must not reach into it
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COVERAGE_", "ONCOLOGY_", "AWS_"))}
    env["COVERAGE_FILE"] = str(data / ".coverage")
    coverage = [str(BIN / "coverage")]
    rcfile = f"--rcfile={REPO / 'pyproject.toml'}"
    proc = subprocess.run(
        [*coverage, "run", rcfile, str(tmp_path / "scenario.py"), str(BIN), str(trained_store), str(REPO / "infra")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "one worker 0" in proc.stdout  # the single-process server exits 0 after SIGTERM
    for step in (["combine", rcfile, "-q", f"--data-file={tmp_path / '.coverage'}", str(data)],
                 ["json", rcfile, "-q", f"--data-file={tmp_path / '.coverage'}", "-o", str(tmp_path / "cov.json")]):
        done = subprocess.run([*coverage, *step], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    files = json.loads((tmp_path / "cov.json").read_text())["files"]

    cli = files["src/oncology/cli.py"]
    assert cli["summary"]["covered_lines"] > 0  # the CLI ran only in child processes
    served = set(files["src/oncology/webservice/server.py"]["executed_lines"])
    assert body_lines(server._DrainingServer._close) <= served  # in `oncology serve`, on SIGTERM
    assert body_lines(server.app_from_env) <= served  # in the uvicorn worker processes only
