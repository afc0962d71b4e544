"""The end-to-end tier: real images built, pushed, pulled and run against a real registry, index and S3.

Tests marked ``e2e`` run only when asked for (``make e2e``, ``pytest tests/e2e``, ``-m e2e`` or
``ONCOLOGY_E2E=1``); a plain ``pytest`` (``make test``) deselects them. They need root (the
container engine) and a few minutes. The figures they measure (image sizes, start-up, rebuild)
are printed at the end and written to ``build/e2e/figures.json``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from e2e.stack import REPO, Stack, running_stack

E2E_DIR = Path(__file__).resolve().parent
FIGURES: dict[str, Any] = {}
FIGURES_FILE = REPO / "build" / "e2e" / "figures.json"
IMAGES = ("webservice", "trainer")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: end-to-end tier (container images, registry, index, S3); run by `make e2e`")
    config.addinivalue_line("markers", "uncached_build: builds an image without BuildKit's cache; runs after the other tests")


def _requested(config: pytest.Config) -> bool:
    if os.environ.get("ONCOLOGY_E2E") == "1":
        return True
    markexpr = config.getoption("markexpr", "") or ""
    if re.search(r"(?<!not )\be2e\b", markexpr):
        return True
    for arg in config.args:
        path = Path(arg.split("::", 1)[0]).resolve()
        if path == E2E_DIR or E2E_DIR in path.parents:
            return True
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _requested(config):
        # a build without BuildKit's cache replaces the cached layers that later builds reuse (the rebuild test
        # compares them with the published image's): such tests run after all the others
        items.sort(key=lambda item: item.get_closest_marker("uncached_build") is not None)
        return
    # by marker, not keyword: every test in this folder has the keyword "e2e" (its package's name)
    dropped = [item for item in items if item.get_closest_marker("e2e") is not None]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if item.get_closest_marker("e2e") is None]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    FIGURES_FILE.parent.mkdir(parents=True, exist_ok=True)
    FIGURES_FILE.write_text(json.dumps(FIGURES, indent=2, sort_keys=True) + "\n")
    terminalreporter.section("end-to-end figures")
    for key in sorted(FIGURES):
        terminalreporter.write_line(f"{key:<42} {FIGURES[key]}")
    terminalreporter.write_line(f"(also in {FIGURES_FILE.relative_to(REPO)})")


@pytest.fixture(scope="session")
def figures() -> dict[str, Any]:
    return FIGURES


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    state = Path(os.environ.get("ONCOLOGY_E2E_DIR", REPO / ".infra" / "e2e"))
    with running_stack(state) as s:
        yield s


@dataclass(frozen=True)
class Published:
    version: str
    store: Path
    #: image -> REGISTRY/oncology-IMAGE:VERSION
    tags: dict[str, str]
    #: image -> sha256:... in the registry
    digests: dict[str, str]
    stdout: str
    stderr: str

    def ref(self, image: str) -> str:
        """The image by digest: exactly what was pushed, whatever local tags say."""
        return f"{self.tags[image].rsplit(':', 1)[0]}@{self.digests[image]}"


@pytest.fixture(scope="session")
def published(stack: Stack, trained_store: Path, figures: dict[str, Any]) -> Published:
    """``deploy/publish.py --version champion``: the wheel to the index, both images built from the
    empty engine and pushed."""
    import time

    t0 = time.monotonic()
    proc = stack.publish("--version", "champion", "--store", str(trained_store))
    assert proc.returncode == 0, f"publish failed:\n{proc.stderr}"
    figures["publish: first run, from an empty engine (s)"] = round(time.monotonic() - t0, 1)
    for image in IMAGES:
        m = re.search(rf"built \S+/oncology-{image}:\S+ in ([\d.]+)s", proc.stderr)
        if m:
            figures[f"build {image}: from an empty engine (s)"] = float(m.group(1))
    tags, digests = {}, {}
    for line in proc.stdout.split():
        tag, _, digest = line.partition("@")
        image = tag.rsplit("/", 1)[1].split(":")[0].removeprefix("oncology-")
        tags[image], digests[image] = tag, digest
    version = tags["webservice"].rsplit(":", 1)[1]
    return Published(version, trained_store, tags, digests, proc.stdout, proc.stderr)


@pytest.fixture(scope="session")
def pulled(stack: Stack, published: Published) -> Published:
    """The local images deleted, then pulled back from the registry."""
    for image in IMAGES:
        stack.docker("image", "rm", published.tags[image])
        assert stack.docker("image", "inspect", published.tags[image], check=False).returncode != 0
    for image in IMAGES:
        stack.docker("pull", published.tags[image])
        assert published.ref(image) in stack.inspect(published.tags[image])["RepoDigests"]
    return published
