"""Training and serving models through a real S3 server (SeaweedFS on 127.0.0.1)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from oncology.trainer import data
from oncology.trainer.pipeline import run_training
from oncology_model import Classifier, StoreError, Tumor
from oncology_model.datamodel import FEATURES
from oncology_model.errors import RegistryError
from oncology_model.registry import ModelRegistry
from oncology_model.storage import S3Store, open_store
from support import S3, fast_env, fast_settings

pytestmark = pytest.mark.s3


def fresh_prefix(s3: S3) -> str:
    return f"s3://{s3.bucket}/run-{uuid.uuid4().hex[:8]}"


def test_train_from_s3_publish_to_s3_and_load_back(s3: S3, trained_store: Path) -> None:
    prefix = fresh_prefix(s3)
    store = open_store(prefix)
    store.write("data/raw/breast-cancer-wisconsin.data", data.BUNDLED_DATA.read_bytes())
    outcome = run_training(fast_settings(prefix, data=f"{prefix}/data/raw/breast-cancer-wisconsin.data", promote=True))
    assert outcome.version == "1.0.1" and outcome.promoted

    remote = Classifier.from_uri(prefix, "champion")
    local = Classifier.from_uri(trained_store, "champion")  # same data, same seed, local store
    assert remote.version == "1.0.1"
    assert remote.metadata["data"]["uri"].startswith("s3://")
    ds = data.load()
    tumors = [Tumor(**dict(zip(FEATURES, map(int, row)))) for row in ds.X]
    assert remote.predict_proba_batch(tumors) == local.predict_proba_batch(tumors)
    assert ModelRegistry(store).versions() == ["1.0.1"]


def test_republishing_a_version_on_s3_is_refused(s3: S3, trained_store: Path) -> None:
    registry = ModelRegistry(open_store(fresh_prefix(s3)))
    files = ModelRegistry(open_store(trained_store)).load("1.0.1").files
    registry.publish(files)
    with pytest.raises(RegistryError, match="already published"):
        registry.publish(files)


def test_a_connection_lost_halfway_leaves_no_visible_version(
    s3: S3, trained_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = ModelRegistry(open_store(fresh_prefix(s3)))
    files = ModelRegistry(open_store(trained_store)).load("1.0.1").files
    real_write = S3Store.write
    written: list[str] = []

    def lose_connection(self: S3Store, key: str, data: bytes, **extra: object) -> None:
        if len(written) == 2:
            raise StoreError(f"cannot write {key}: connection lost")
        written.append(key)
        real_write(self, key, data, **extra)

    monkeypatch.setattr(S3Store, "write", lose_connection)
    with pytest.raises(StoreError, match="connection lost"):
        registry.publish(files)
    monkeypatch.undo()
    assert len(written) == 2  # two files reached the server ...
    assert registry.versions() == []  # ... but no version is visible
    registry.publish(files)  # and the version can still be published whole
    assert registry.versions() == ["1.0.1"]


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ONCOLOGY_", "AWS_"))}
    full = {**base, **fast_env(), **env}
    return subprocess.run([str(Path(sys.executable).parent / "oncology"), *args], capture_output=True, text=True, env=full, timeout=300)


def test_wrong_credentials_give_a_clear_error_and_publish_nothing(s3: S3) -> None:
    prefix = fresh_prefix(s3)
    proc = cli(s3.env(AWS_SECRET_ACCESS_KEY="not-the-secret"), "train", "--store", prefix)
    assert proc.returncode == 2
    assert "refused the credentials (SignatureDoesNotMatch)" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert ModelRegistry(open_store(prefix)).versions() == []


def test_a_stopped_server_gives_a_clear_error(s3: S3, tmp_path: Path) -> None:
    import seaweedfs as weed

    server = weed.start(tmp_path / "sw", s3_port=weed.free_port(), access_key=s3.access_key, secret_key=s3.secret_key)
    endpoint = server.endpoint_url
    server.stop()
    proc = cli(s3.env(AWS_ENDPOINT_URL=endpoint), "train", "--store", f"s3://{s3.bucket}/x")
    assert proc.returncode == 2
    assert f"cannot reach the S3 server at {endpoint}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_missing_bucket_is_named(s3: S3) -> None:
    proc = cli(s3.env(), "models", "list", "--store", "s3://no-such-bucket/x")
    assert proc.returncode == 2 and "bucket does not exist" in proc.stderr


def test_s3_create_is_a_conditional_write_of_which_one_racer_wins(s3: S3, tmp_path: Path) -> None:
    from test_storage import race_create  # model/tests: the same racing processes as the local store's test

    uri = fresh_prefix(s3)
    store = open_store(uri)
    assert store.create("monitoring/a.json", b"1") is True
    assert store.create("monitoring/a.json", b"1") is False
    with pytest.raises(RegistryError, match="already exists with other content"):
        store.create("monitoring/a.json", b"2")
    contents = [f"writer {i}" for i in range(8)]
    outs = race_create(uri, "k/v.txt", contents, tmp_path / "go")
    winners = [c for c, out in zip(contents, outs) if out == "created"]
    assert len(winners) == 1, outs
    assert all(out.startswith("refused") for out in outs if out != "created"), outs
    assert store.read("k/v.txt") == winners[0].encode()
