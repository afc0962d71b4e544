"""Fixtures of the dashboard's tests: Debian's Chromium (installed by infra/chromium.py) driven by Playwright."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    """Debian's chromium, installed with apt-get on first use (infra/chromium.py); never a downloaded browser."""
    import chromium  # infra/chromium.py, on sys.path through tests/conftest.py

    try:
        return chromium.ensure()
    except chromium.ChromiumError as exc:
        pytest.fail(f"no Chromium for the browser tests: {exc}")


@pytest.fixture(scope="module")
def browser(chromium_path: Path) -> Iterator[Any]:
    """A headless Chromium under Playwright (its own browser download is never used)."""
    import chromium
    from playwright.sync_api import sync_playwright

    flags = [flag for flag in chromium.HEADLESS_FLAGS if flag != "--headless"]  # Playwright adds its own
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium_path), headless=True, args=flags)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="session")
def dask_scheduler() -> Iterator[str]:
    """A Dask LocalCluster of two single-threaded worker processes on 127.0.0.1, closed at the end."""
    from distributed import LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0", processes=True)
    try:
        yield str(cluster.scheduler_address)
    finally:
        cluster.close()
