"""Bearer tokens from a file are rotated without a restart, and a rotation never opens the service."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from oncology.settings import ServeSettings
from oncology.webservice.app import create_app

from .conftest import EXAMPLE


def _status(client: TestClient, token: str) -> int:
    return client.post("/predict", json=EXAMPLE, headers={"authorization": f"Bearer {token}"}).status_code


def _until(check: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _replace(path: Path, text: str) -> None:
    """As a Kubernetes Secret volume rotates: a new file renamed over the old one."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_a_rotated_token_file_is_read_again_without_a_restart(
    trained_store: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token_file = tmp_path / "tokens"
    token_file.write_text("old-token\n")
    settings = ServeSettings(store=str(trained_store), api_tokens_file=token_file)
    with TestClient(create_app(settings)) as client:
        assert _status(client, "old-token") == 200
        assert _status(client, "new-token") == 401
        _replace(token_file, "# rotated\nnew-token\n")
        _until(lambda: _status(client, "new-token") == 200, "the new token was never accepted")
        assert _status(client, "old-token") == 401

        token_file.unlink()  # a rotation caught half-way: the last tokens stay in force
        _until(lambda: _status(client, "x") == 401 and "cannot re-read the API tokens file" in caplog.text,
               "the missing file was never noticed")
        assert _status(client, "new-token") == 200

        _replace(token_file, "\n")  # an empty file accepts nobody: it never opens the service
        _until(lambda: _status(client, "new-token") == 401, "the emptied file still accepted the old token")
        assert client.post("/predict", json=EXAMPLE).status_code == 401


def test_environment_tokens_stay_beside_a_rotating_file(trained_store: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "tokens"
    token_file.write_text("file-token\n")
    settings = ServeSettings(store=str(trained_store), api_tokens="env-token", api_tokens_file=token_file)  # type: ignore[arg-type]
    with TestClient(create_app(settings)) as client:
        _replace(token_file, "other\n")
        _until(lambda: _status(client, "other") == 200, "the rotated token was never accepted")
        assert _status(client, "env-token") == 200 and _status(client, "file-token") == 401


TOKEN = "s3cret-token-0123456789abcdef"


@pytest.mark.parametrize("source", ["env", "file"])
def test_only_the_whole_token_is_accepted(trained_store: Path, tmp_path: Path, source: str) -> None:
    """A token is compared whole: one sharing a prefix with a valid one, the valid one cut short or extended are 401."""
    token_file = tmp_path / "tokens"
    token_file.write_text(TOKEN + "\n")
    settings = (ServeSettings(store=str(trained_store), api_tokens=TOKEN)  # type: ignore[arg-type]
                if source == "env" else ServeSettings(store=str(trained_store), api_tokens_file=token_file))
    near_misses = {
        "a shared prefix, the last byte differs": TOKEN[:-1] + "0",
        "a shared prefix, the first half": TOKEN[: len(TOKEN) // 2] + "x" * (len(TOKEN) - len(TOKEN) // 2),
        "cut short by one byte": TOKEN[:-1],
        "its first 8 bytes": TOKEN[:8],
        "extended by one byte": TOKEN + "0",
        "extended by itself": TOKEN * 2,
        "empty": "",
    }
    with TestClient(create_app(settings)) as client:
        assert _status(client, TOKEN) == 200
        for what, token in near_misses.items():
            assert _status(client, token) == 401, what
