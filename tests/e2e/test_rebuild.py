"""A change to the application code alone rebuilds only the application layer."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from e2e.conftest import Published
from e2e.stack import REPO, Stack

pytestmark = pytest.mark.e2e


def _checkout_copy(dest: Path) -> Path:
    """The working tree as git sees it (tracked and new files, nothing ignored), with the shared wheelhouse."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode().split("\0")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    (dest / "build").mkdir(exist_ok=True)
    (dest / "build" / "wheelhouse").symlink_to(REPO / "build" / "wheelhouse")
    return dest


def _steps(log: str) -> dict[str, bool]:
    """Build step title -> whether BuildKit took it from its cache."""
    titles = dict(re.findall(r"(?m)^#(\d+) (\[[^\]]+\] .*)$", log))
    cached = set(re.findall(r"(?m)^#(\d+) CACHED$", log))
    return {title: number in cached for number, title in titles.items() if not title.startswith("[internal]")}


def test_a_code_change_reuses_every_dependency_layer(
    stack: Stack, pulled: Published, tmp_path: Path, figures: dict[str, Any]
) -> None:
    repo = _checkout_copy(tmp_path / "repo")
    init = repo / "src" / "oncology" / "__init__.py"
    init.write_text(init.read_text() + f"# a code change made by the rebuild test at {time.time_ns()}\n")

    t0 = time.monotonic()
    proc = stack.publish(
        "--version", pulled.version, "--store", str(pulled.store), "--image", "webservice", "--no-push", cwd_repo=repo
    )
    wall = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    built = re.search(r"built (\S+) in ([\d.]+)s", proc.stderr)
    assert built
    figures["webservice: rebuild after a code change, docker build (s)"] = float(built.group(2))
    figures["webservice: rebuild after a code change, publish.py --no-push (s)"] = round(wall, 1)

    steps = _steps((repo / "build" / "publish" / "logs" / "webservice-build.log").read_text())
    dependency_steps = {t: c for t, c in steps.items() if t.startswith("[deps ") and "] FROM " not in t}
    assert dependency_steps and all(dependency_steps.values()), steps  # venv, wheels, oncology-model: all cached
    assert [t for t, c in steps.items() if t.startswith("[app ") and not c], steps  # the application: rebuilt

    # in the image too: every layer but the application's is the published image's, byte for byte
    new = stack.inspect(built.group(1))["RootFS"]["Layers"]
    old = stack.inspect(pulled.ref("webservice"))["RootFS"]["Layers"]
    assert len(new) == len(old) and new[:-1] == old[:-1] and new[-1] != old[-1]
