"""Issue 11: the package index keeps its packages in S3, so losing the index's container or pod loses nothing.

The index is pypiserver with the storage of ``deploy/index/s3index.py`` (S3 is the record; the container's
folder is a cache), in the image of ``deploy/index/Dockerfile`` built on the local base from wheels downloaded
on the host. SeaweedFS stands in for S3 (``infra/seaweedfs.py``, a free port, a random secret).

- ``test_a_new_container_serves_what_the_killed_one_was_given``: no cluster. Upload with twine, kill the
  container, start a new one with an empty cache: the same wheel, same sha256, comes back; the password is
  required; a second upload of the file is refused; an upload while S3 is down is refused (503) and never
  listed; a container whose S3 secret is wrong stops at start with one line.
- ``test_deleting_the_index_pod_loses_no_package``: the real cluster of ``infra/k8s`` (run it under
  ``flock /tmp/oncology-cluster.lock``). ``make index-deploy``, then ``make publish INDEX=cluster`` for the
  web-service image (the wheel goes to the in-cluster index, the image build installs ``oncology-model`` from
  it), then the index pod is deleted, and ``pip download`` from the new pod gives the same sha256.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from e2e.stack import BASE_IMAGE, REPO, Stack, free_port
from support import poll

pytestmark = pytest.mark.e2e

IMAGE_SCRIPT = REPO / "deploy" / "index" / "image.py"
INDEX_OVERLAY = REPO / "deploy" / "k8s" / "index" / "local"
BUCKET = "oncology-index"
USER = "oncology"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def index_image(stack: Stack, figures: dict[str, Any]) -> str:
    """``deploy/index/image.py``: built on the local base, pushed to the run's registry; its reference by tag."""
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(IMAGE_SCRIPT), "--registry", stack.registry, "--base-image", BASE_IMAGE],
                          env=stack.env, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures["index image: build and push (s)"] = round(time.monotonic() - t0, 1)
    reference = proc.stdout.strip().splitlines()[-1]
    tag = reference.split("@", 1)[0]
    size = stack.docker("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip()
    figures["index image: size (MB)"] = round(int(size) / 1e6)
    return tag


@pytest.fixture(scope="module")
def wheel(trained_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from oncology.packaging import build_model_wheel

    return build_model_wheel(str(trained_store), "champion", tmp_path_factory.mktemp("wheel"))


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[Any]:
    import seaweedfs as weed  # infra/seaweedfs.py

    server = weed.start(tmp_path / "seaweedfs", s3_port=weed.free_port(), access_key="index-test",
                        secret_key=secrets.token_hex(16))
    try:
        server.client().create_bucket(Bucket=BUCKET)
        yield server
    finally:
        server.stop()


def aws_env(s3: Any) -> dict[str, str]:
    return {"AWS_ENDPOINT_URL": s3.endpoint_url, "AWS_ACCESS_KEY_ID": s3.access_key,
            "AWS_SECRET_ACCESS_KEY": s3.secret_key, "AWS_DEFAULT_REGION": "us-east-1"}


def twine_upload(url: str, password: str, wheel: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TWINE_USERNAME": USER, "TWINE_PASSWORD": password, "TWINE_NON_INTERACTIVE": "1"}
    return subprocess.run([sys.executable, "-m", "twine", "upload", "--disable-progress-bar", "--repository-url", url,
                           str(wheel)], env=env, capture_output=True, text=True, timeout=120)


def pip_download(simple_url: str, requirement: str, dest: Path) -> subprocess.CompletedProcess[str]:
    """``pip download`` of one requirement from that index alone (no other index, no cache)."""
    dest.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    host = simple_url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1].split(":")[0]  # plain HTTP off loopback
    return subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir", "--isolated",
                           "--disable-pip-version-check", "--index-url", simple_url, "--trusted-host", host,
                           "--dest", str(dest), requirement],
                          env=env, capture_output=True, text=True, timeout=120)


def wait_answers(url: str, timeout: float = 60) -> float:
    """Seconds until ``url`` answers at all (401: it asks for the password), polled every 50 ms."""
    t0 = time.monotonic()

    def answers() -> bool:
        try:
            return httpx.get(url, timeout=2).status_code == 401
        except httpx.TransportError:
            return False

    poll(answers, timeout, f"{url} did not answer within {timeout:.0f}s", interval=0.05)
    return time.monotonic() - t0


def test_a_new_container_serves_what_the_killed_one_was_given(stack: Stack, index_image: str, wheel: Path, s3: Any,
                                                              tmp_path: Path, figures: dict[str, Any]) -> None:
    password = secrets.token_hex(12)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    simple = f"http://{USER}:{password}@127.0.0.1:{port}/simple/"
    requirement = f"oncology-model=={wheel.name.split('-')[1]}"
    settings = {**aws_env(s3), "ONCOLOGY_INDEX_STORE": f"s3://{BUCKET}/packages", "ONCOLOGY_INDEX_USER": USER,
                "ONCOLOGY_INDEX_PASSWORD": password, "ONCOLOGY_INDEX_HOST": "127.0.0.1", "ONCOLOGY_INDEX_PORT": str(port)}
    run = ["--network=host", *[f"--env={k}={v}" for k, v in settings.items()]]

    # 1. the first container: the password is required; an upload is in S3 once acknowledged
    with stack.container(*run, index_image, name="index-1") as first:
        figures["index container: start to answering (s)"] = round(wait_answers(url + "simple/"), 2)
        assert httpx.get(url + "simple/", timeout=10).status_code == 401
        assert httpx.get(url + "simple/", auth=(USER, "wrong"), timeout=10).status_code in (401, 403)
        anonymous = twine_upload(url, "wrong", wheel)
        assert anonymous.returncode != 0 and "403" in anonymous.stdout + anonymous.stderr
        assert "Contents" not in s3.client().list_objects_v2(Bucket=BUCKET)
        uploaded = twine_upload(url, password, wheel)
        assert uploaded.returncode == 0, uploaded.stdout + uploaded.stderr
        head = s3.client().head_object(Bucket=BUCKET, Key=f"packages/{wheel.name}")  # in S3 at the acknowledgement
        assert head["Metadata"]["sha256"] == sha256(wheel)
        again = twine_upload(url, password, wheel)  # pypiserver answers twine 400 (as pypi.org does), others 409
        assert again.returncode != 0 and "400 Bad Request" in again.stdout + again.stderr, again.stdout + again.stderr
        with wheel.open("rb") as f:
            direct = httpx.post(url, auth=(USER, password), timeout=30, data={":action": "file_upload"},
                                files={"content": (wheel.name, f)})
        assert direct.status_code == 409 and "already exists" in direct.text, direct.text
        assert s3.client().head_object(Bucket=BUCKET, Key=f"packages/{wheel.name}")["ETag"] == head["ETag"]
        stack.docker("kill", first)  # SIGKILL: nothing gets a chance to flush

    # 2. a new container, empty cache: the same wheel, byte for byte
    drain = 5.0
    with stack.container(f"--env=ONCOLOGY_INDEX_DRAIN_SECONDS={drain}", *run, index_image, name="index-2") as second:
        t0 = time.monotonic()
        wait_answers(url + "simple/")
        got = pip_download(simple, requirement, tmp_path / "download")
        figures["index container: new container to the wheel downloaded (s)"] = round(time.monotonic() - t0, 2)
        assert got.returncode == 0, got.stdout + got.stderr
        (downloaded,) = (tmp_path / "download").iterdir()
        assert downloaded.name == wheel.name and sha256(downloaded) == sha256(wheel)
        page = httpx.get(url + "simple/oncology-model/", auth=(USER, password), timeout=10).text
        assert f"#sha256={sha256(wheel)}" in page
        assert pip_download(f"http://{USER}:wrong@127.0.0.1:{port}/simple/", requirement, tmp_path / "no").returncode != 0

        # 3. S3 down: an upload is refused (503) and not listed; what was stored is still served from the cache
        other = tmp_path / "other" / wheel.name.replace(wheel.name.split("-")[1], "9.9.9")
        other.parent.mkdir()
        shutil.copy(wheel, other)
        s3.stop()
        refused = twine_upload(url, password, other)
        assert refused.returncode != 0 and "503" in refused.stdout + refused.stderr, refused.stdout + refused.stderr
        page = httpx.get(url + "simple/oncology-model/", auth=(USER, password), timeout=60).text
        assert "9.9.9" not in page and wheel.name in page
        logs = stack.docker("logs", second).stderr
        assert password not in logs

        # 4. SIGTERM with a drain: it keeps answering (a Service may still send requests), then exits 0
        stack.docker("kill", "--signal", "TERM", second)
        signalled = time.monotonic()
        assert httpx.get(url + "simple/", timeout=10).status_code == 401  # not refused: still answering

        def exited() -> str | None:
            out = stack.docker("inspect", "-f", "{{.State.Running}} {{.State.ExitCode}}", second).stdout.strip()
            return out if out.startswith("false") else None

        state = poll(exited, 60, f"the index did not exit within 60 s of SIGTERM with a {drain:.0f} s drain")
        assert state == "false 0", state
        assert time.monotonic() - signalled >= drain - 0.5  # (the drain's timer: a lower bound, not the machine's speed)
        assert "SIGTERM: answering for 5.0s more" in stack.docker("logs", second).stderr

    # 5. a drain that is not a number of seconds: one line, exit 2, before anything else
    proc = stack.docker("run", "--rm", "--network=host", *[f"--env={k}={v}" for k, v in settings.items()],
                        "--env=ONCOLOGY_INDEX_DRAIN_SECONDS=soon", index_image, check=False, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == ("oncology-index: error: ONCOLOGY_INDEX_DRAIN_SECONDS must be "
                                                    "seconds from 0 to 3600, not 'soon'")

    # 6. a wrong S3 secret: the index does not start, and says why in one line
    bad = {**settings, "AWS_SECRET_ACCESS_KEY": "wrong", "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    proc = stack.docker("run", "--rm", "--network=host", *[f"--env={k}={v}" for k, v in bad.items()], index_image,
                        check=False, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"oncology-index: error: cannot read s3://{BUCKET}/packages/")


# ---- on the cluster ------------------------------------------------------------------------------


def index_overlay(dest: Path, s3: Any) -> Path:
    """A kustomization on top of deploy/k8s/index/local: the run's SeaweedFS (endpoint, credentials), nothing else."""
    dest.mkdir(parents=True)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(INDEX_OVERLAY, dest)],
        "configMapGenerator": [{"name": "oncology-index", "behavior": "merge",
                                "literals": [f"AWS_ENDPOINT_URL={s3.endpoint_url}",
                                             f"ONCOLOGY_INDEX_STORE=s3://{BUCKET}/packages"]}],
        "secretGenerator": [{"name": "oncology-index-s3", "behavior": "replace",
                             "literals": [f"access-key-id={s3.access_key}", f"secret-access-key={s3.secret_key}"]}],
    }
    (dest / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
    return dest


def index_pods(cluster: Any) -> list[dict[str, Any]]:
    pods = cluster.get("pods", "-l", "app=oncology-index")["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def wait_new_ready_pod(cluster: Any, old: str, timeout: float = 120) -> tuple[str, float]:
    t0 = time.monotonic()

    def new_ready() -> str | None:
        for pod in index_pods(cluster):
            ready = any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))
            if pod["metadata"]["name"] != old and ready:
                return str(pod["metadata"]["name"])
        return None

    name = poll(new_ready, timeout, lambda: f"no new ready index pod within {timeout:.0f}s: "
                f"{[p['metadata']['name'] for p in index_pods(cluster)]}")
    return name, time.monotonic() - t0


@pytest.mark.uncached_build
def test_deleting_the_index_pod_loses_no_package(stack: Stack, index_image: str, trained_store: Path, s3: Any,
                                                 tmp_path: Path, figures: dict[str, Any]) -> None:
    from e2e.k8s_cluster import running_cluster

    overlay = index_overlay(tmp_path / "overlay", s3)
    password = secrets.token_hex(12)
    sys.path.insert(0, str(REPO / "deploy"))
    import publish as publish_module  # deploy/publish.py

    publish_module.download_wheels([REPO / "deploy" / "docker" / "webservice" / "requirements.txt"])  # before the cluster
    with running_cluster(stack.env, ports=(s3.s3_port,)) as cluster:  # the pod may land on the second node
        t0 = time.monotonic()
        deploy = cluster.make("index-deploy", REGISTRY=stack.registry, INDEX_OVERLAY=str(overlay), INDEX_PASSWORD=password)
        assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]
        figures["k8s index: make index-deploy to ready (s)"] = round(time.monotonic() - t0, 1)
        assert "created the Secret oncology-index" in deploy.stdout
        (pod,) = index_pods(cluster)
        (container,) = pod["spec"]["containers"]
        assert container["image"] == index_image

        svc = cluster.get("service", "oncology-index")["spec"]
        url = f"http://{svc['clusterIP']}:{svc['ports'][0]['port']}/"  # from the host, through kube-proxy
        # the Service forwards once kube-proxy has the pod's address: polled, as a client retries
        figures["k8s index: ready to the Service answering (s)"] = round(wait_answers(url + "simple/"), 2)

        # make publish INDEX=cluster (the web-service image only): the wheel to the in-cluster index, and the
        # image build installs oncology-model from it
        version = "1.0.1"
        t0 = time.monotonic()
        publish = cluster.make("publish", INDEX="cluster", VERSION=version, STORE=str(trained_store),
                               BASE_IMAGE=BASE_IMAGE,
                               # --no-cache: not the layer an earlier build installed from another index; --no-push:
                               # the registry keeps the session's published image, which other tests check by digest
                               PUBLISH_ARGS="--image webservice --no-cache --no-push")
        figures["k8s index: make publish INDEX=cluster (s)"] = round(time.monotonic() - t0, 1)
        assert publish.returncode == 0, publish.stdout[-3000:] + publish.stderr[-3000:]
        assert f"uploaded to {url}" in publish.stderr, publish.stderr[-3000:]
        build_log = (REPO / "build" / "publish" / "logs" / "webservice-build.log").read_text()
        assert re.search(rf"Looking in indexes: http://{USER}:\*+@{re.escape(svc['clusterIP'])}", build_log), build_log[-3000:]
        assert password not in build_log
        (key,) = [o["Key"] for o in s3.client().list_objects_v2(Bucket=BUCKET)["Contents"]]
        wheel_name = key.rsplit("/", 1)[1]
        recorded = s3.client().head_object(Bucket=BUCKET, Key=key)["Metadata"]["sha256"]

        simple = f"http://{USER}:{password}@{url.split('://', 1)[1]}simple/"
        before = pip_download(simple, f"oncology-model=={version}", tmp_path / "before")
        assert before.returncode == 0, before.stdout + before.stderr
        (first,) = (tmp_path / "before").iterdir()
        assert first.name == wheel_name and sha256(first) == recorded

        # delete the index pod: the Deployment replaces it, with an empty cache
        old = pod["metadata"]["name"]
        cluster.kubectl("delete", "pod", old, "--wait=false")
        new, seconds = wait_new_ready_pod(cluster, old)
        figures["k8s index: pod deleted to a new pod ready (s)"] = round(seconds, 1)
        wait_answers(url + "simple/")  # the new pod's address reaches kube-proxy after it is ready
        after = pip_download(simple, f"oncology-model=={version}", tmp_path / "after")
        assert after.returncode == 0, after.stdout + after.stderr
        (second,) = (tmp_path / "after").iterdir()
        assert second.name == wheel_name and sha256(second) == sha256(first) == recorded
        logs = cluster.kubectl("logs", new).stdout + cluster.kubectl("logs", new).stderr
        assert f"fetched {wheel_name}" in logs and "cache filled from" in logs  # the new pod read it from S3
        assert httpx.get(url + "simple/", timeout=10).status_code == 401
    assert cluster.left_behind == []
