"""Training and serving models through a real S3 server (SeaweedFS on 127.0.0.1)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from racing import race_promoters_then_rollbacks, race_publishers
from tcp_proxy import HttpProxy, Request

from bundle_factory import bundle_files
from oncology.trainer import data
from oncology.trainer.pipeline import run_training
from oncology_model import Classifier, StoreError, Tumor
from oncology_model.datamodel import FEATURES
from oncology_model.errors import BundleError, ConflictError, RegistryError
from oncology_model.registry import ModelRegistry
from oncology_model.storage import S3Store, open_store, s3_client
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


def through(proxy: HttpProxy, s3: S3, prefix: str) -> ModelRegistry:
    """A registry on ``prefix`` whose S3 traffic goes through the proxy.

    Only the store's own integrity checks guard it: botocore's newer CRC32 checksums (on by default)
    are left off, so that these tests show what Content-MD5 and the read-back catch.
    """
    client = s3_client(proxy.endpoint_url, request_checksum_calculation="when_required",
                       response_checksum_validation="when_required")
    return ModelRegistry(S3Store(s3.bucket, prefix.removeprefix(f"s3://{s3.bucket}/"), client=client))


def s3_port(s3: S3) -> int:
    return int(s3.endpoint_url.rsplit(":", 1)[1])


def test_content_md5_refuses_bytes_corrupted_on_the_way_in(s3: S3, trained_store: Path) -> None:
    prefix = fresh_prefix(s3)
    files = ModelRegistry(open_store(trained_store)).load("1.0.1").files

    def model_upload(r: Request) -> bool:
        return r.method == "PUT" and r.path.endswith("/models/1.0.1/model.json")

    with (
        HttpProxy(s3_port(s3), corrupt_request=model_upload) as proxy,
        pytest.raises(StoreError, match=r"models/1\.0\.1/model\.json: .*BadDigest"),
    ):
        through(proxy, s3, prefix).publish(files)
    assert proxy.errors == []
    assert proxy.corrupted == [Request("PUT", f"/{s3.bucket}/{prefix.split('/')[-1]}/models/1.0.1/model.json")]
    registry = ModelRegistry(open_store(prefix))
    assert registry.versions() == []
    assert not registry.store.exists("models/1.0.1/model.json")  # the server kept nothing of it
    registry.publish(files)  # the same files again, on a sound network: published whole
    assert registry.load("1.0.1").files == files


def test_the_read_back_catches_bytes_corrupted_on_the_way_back(s3: S3, trained_store: Path) -> None:
    prefix = fresh_prefix(s3)
    files = ModelRegistry(open_store(trained_store)).load("1.0.1").files

    def model_download(r: Request) -> bool:
        return r.method == "GET" and r.path.endswith("/models/1.0.1/model.json")

    with (
        HttpProxy(s3_port(s3), corrupt_response=model_download) as proxy,
        pytest.raises(StoreError, match=r"models/1\.0\.1/model\.json: read-back differs"),
    ):
        through(proxy, s3, prefix).publish(files)
    assert proxy.errors == []
    assert [r.method for r in proxy.corrupted] == ["GET"]
    assert ModelRegistry(open_store(prefix)).versions() == []


def test_a_connection_cut_mid_publish_fails_the_training_and_leaves_no_version(s3: S3) -> None:
    prefix = fresh_prefix(s3)
    registry = ModelRegistry(open_store(prefix))
    uploads: list[Request] = []

    def second_model_file(r: Request) -> bool:  # the claim and one file reach the server, then the cut
        if r.method == "PUT" and "/models/" in r.path:
            uploads.append(r)
        return len(uploads) == 3

    with HttpProxy(s3_port(s3), cut=second_model_file) as proxy:
        proc = cli(s3.env(AWS_ENDPOINT_URL=proxy.endpoint_url), "train", "--store", prefix)
    assert proxy.errors == []
    assert proxy.is_cut.is_set()
    assert proc.returncode == 2, proc.stderr
    assert f"cannot reach the S3 server at {proxy.endpoint_url}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(registry.store.list("models/1.0.1/")) == 2  # the claim and one file got there ...
    assert registry.versions() == []  # ... and no version is visible
    with pytest.raises(ConflictError, match="being published"):  # nobody else may write into it
        registry.publish(bundle_files("1.0.1"))

    proc = cli(s3.env(), "train", "--store", prefix)  # the next run, on a sound network
    assert proc.returncode == 0, proc.stderr
    assert registry.versions() == ["1.0.2"]  # the abandoned 1.0.1 is skipped, not shared
    registry.load("1.0.2")


def test_swap_on_s3_is_compare_and_swap_on_the_etag(s3: S3) -> None:
    store = open_store(fresh_prefix(s3))
    assert store.swap("r/a.json", b"1", expected=None) is True
    assert store.swap("r/a.json", b"x", expected=None) is False
    data, tag = store.read_tagged("r/a.json")
    assert store.swap("r/a.json", b"2", expected=tag) is True
    assert store.swap("r/a.json", b"3", expected=tag) is False  # changed since it was read
    assert store.read("r/a.json") == b"2"


class IgnoresConditions:
    """An S3 client whose server ignores If-None-Match and If-Match, as some S3 look-alikes do."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def put_object(self, **kwargs: object) -> object:
        kwargs.pop("IfNoneMatch", None)
        kwargs.pop("IfMatch", None)
        return self._client.put_object(**kwargs)

    def __getattr__(self, name: str) -> object:
        return getattr(self._client, name)


def test_a_server_that_ignores_conditional_writes_is_refused_rather_than_raced(s3: S3) -> None:

    prefix = fresh_prefix(s3)
    ModelRegistry(open_store(prefix)).publish(bundle_files("1.0.1"))
    sloppy = ModelRegistry(S3Store(s3.bucket, prefix.removeprefix(f"s3://{s3.bucket}/"), client=IgnoresConditions(s3_client())))
    with pytest.raises(StoreError, match="does not honour conditional writes"):
        sloppy.promote("1.0.1")
    with pytest.raises(StoreError, match="does not honour conditional writes"):
        sloppy.publish_next(lambda version: bundle_files(version))
    assert sloppy.history() == []
    assert sloppy.versions() == ["1.0.1"]
    assert sloppy.store.list("models/1.0.2/") == []


def test_eight_concurrent_promoters_on_s3_lose_no_move(s3: S3, tmp_path: Path) -> None:
    prefix = fresh_prefix(s3)
    race_promoters_then_rollbacks(ModelRegistry(open_store(prefix)), prefix, tmp_path)


def test_four_concurrent_publishers_on_s3_get_distinct_complete_versions(s3: S3, tmp_path: Path) -> None:
    prefix = fresh_prefix(s3)
    race_publishers(ModelRegistry(open_store(prefix)), prefix, tmp_path)


def test_promote_on_s3_refuses_a_tampered_version(s3: S3) -> None:
    registry = ModelRegistry(open_store(fresh_prefix(s3)))
    registry.publish(bundle_files("1.0.1"))
    registry.store.write("models/1.0.1/metadata.json", registry.store.read("models/1.0.1/metadata.json") + b" ")
    with pytest.raises(BundleError, match=r"1\.0\.1/metadata\.json: size"):
        registry.promote("1.0.1")
    assert registry.history() == []


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
    from localproc import free_port

    server = weed.start(tmp_path / "sw", s3_port=free_port(), access_key=s3.access_key, secret_key=s3.secret_key)
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
