"""Fixtures shared by the pipeline's tests: small real trainings and a real S3 server."""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from oncology.trainer.pipeline import run_training
from support import S3, fast_settings

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "infra"))

@pytest.fixture(scope="session")
def trained_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local store holding one trained, promoted version (1.0.1)."""
    store = tmp_path_factory.mktemp("store")
    run_training(fast_settings(store, promote=True))
    return store


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3]:
    """A real SeaweedFS S3 server on 127.0.0.1, stopped at the end even when tests fail."""
    import seaweedfs as weed  # infra/seaweedfs.py, the project's own start/stop script
    from localproc import free_port

    access, secret = "oncology-test", secrets.token_hex(16)
    server = weed.start(
        tmp_path_factory.mktemp("seaweedfs"), s3_port=free_port(), access_key=access, secret_key=secret
    )
    try:
        s3 = S3(server.endpoint_url, access, secret, "oncology")
        server.client().create_bucket(Bucket=s3.bucket)
        yield s3
    finally:
        server.stop()


@pytest.fixture
def s3(seaweedfs: S3, monkeypatch: pytest.MonkeyPatch) -> S3:
    """The S3 server's settings in this test's environment."""
    for key, value in seaweedfs.env().items():
        monkeypatch.setenv(key, value)
    return seaweedfs


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("ONCOLOGY_"):
            monkeypatch.delenv(key)
