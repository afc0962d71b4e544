"""deploy/publish.py against the run's own registry and password-protected package index."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from pathlib import Path

import httpx
import pytest

from e2e.conftest import IMAGES, Published
from e2e.stack import Stack
from oncology.trainer.pipeline import run_training
from support import fast_settings

pytestmark = pytest.mark.e2e

MANIFEST_TYPES = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
])


def test_the_run_starts_from_an_empty_engine(stack: Stack) -> None:
    assert stack.started_empty


def test_publish_prints_one_digest_per_image(published: Published) -> None:
    assert set(published.tags) == set(IMAGES)
    for image in IMAGES:
        assert published.tags[image].endswith(f"/oncology-{image}:{published.version}")
        assert published.digests[image].startswith("sha256:") and len(published.digests[image]) == 71
    assert "uploaded to" in published.stderr


def test_the_registry_lists_both_images_and_their_tags(stack: Stack, published: Published) -> None:
    base = f"http://{stack.registry}/v2"
    with httpx.Client(timeout=10) as client:
        catalog = client.get(f"{base}/_catalog").json()["repositories"]
        assert {"oncology-webservice", "oncology-trainer"} <= set(catalog)
        for image in IMAGES:
            assert published.version in client.get(f"{base}/oncology-{image}/tags/list").json()["tags"]
            head = client.head(f"{base}/oncology-{image}/manifests/{published.version}", headers={"Accept": MANIFEST_TYPES})
            assert head.status_code == 200
            assert head.headers["Docker-Content-Digest"] == published.digests[image]


def test_the_index_holds_the_wheel_behind_its_password(stack: Stack, published: Published) -> None:
    simple = stack.env["ONCOLOGY_PYPI_URL"].rstrip("/") + "/simple/oncology-model/"
    with httpx.Client(timeout=10) as client:
        assert client.get(simple).status_code == 401
        assert client.get(simple, auth=("oncology", "not-the-password")).status_code in (401, 403)
        page = client.get(simple, auth=(stack.env["ONCOLOGY_PYPI_USER"], stack.password))
    assert page.status_code == 200
    links = re.findall(r'href="([^"#]+)', page.text)
    assert [link.rsplit("/", 1)[-1] for link in links] == [f"oncology_model-{published.version}-py3-none-any.whl"]


def test_republishing_the_same_content_is_a_no_op(stack: Stack, published: Published) -> None:
    proc = stack.publish("--version", published.version, "--store", str(published.store), "--image", "webservice", "--no-push")
    assert proc.returncode == 0, proc.stderr
    assert "already on the index with the same content: not uploaded again" in proc.stderr


def test_republishing_a_version_with_other_content_is_refused(
    stack: Stack, published: Published, tmp_path: Path
) -> None:
    other = tmp_path / "other-store"
    run_training(fast_settings(other, promote=True, seed=7))  # another model under the same version number
    proc = stack.publish("--version", published.version, "--store", str(other))
    assert proc.returncode == 1
    (line,) = [line for line in proc.stderr.splitlines() if "error" in line]
    assert proc.stderr.strip().splitlines()[-1] == line
    assert f"oncology_model-{published.version}-py3-none-any.whl is already on the package index with different content" in line
    assert "immutable" in line
    assert "built " not in proc.stderr  # refused before any image was built


@pytest.mark.parametrize(
    ("args", "drop", "message"),
    [
        (["--version", "9.9.9"], (), "model version 9.9.9 is not published"),
        (["--version", "champion"], ("ONCOLOGY_PYPI_URL", "ONCOLOGY_PYPI_PASSWORD"), "ONCOLOGY_PYPI_URL, ONCOLOGY_PYPI_PASSWORD not set"),
    ],
    ids=["unknown-version", "no-index-settings"],
)
def test_errors_are_one_clear_line(
    stack: Stack, published: Published, args: list[str], drop: tuple[str, ...], message: str
) -> None:
    saved = dict(stack.env)
    for key in drop:
        stack.env.pop(key)
    try:
        proc = stack.publish(*args, "--store", str(published.store))
    finally:
        stack.env.clear()
        stack.env.update(saved)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("publish: error: ") and message in lines[-1], proc.stderr
    assert not [line for line in lines if "Traceback" in line]


def test_wrong_index_password_is_a_clear_error(stack: Stack, published: Published) -> None:
    saved = dict(stack.env)
    stack.env["ONCOLOGY_PYPI_PASSWORD"] = "wrong"
    try:
        proc = stack.publish("--version", published.version, "--store", str(published.store))
    finally:
        stack.env.clear()
        stack.env.update(saved)
    assert proc.returncode == 1
    assert re.match(r"publish: error: the package index refused the credentials \(40[13]\) at http://127\.0\.0\.1:\d+/simple/oncology-model/$",
                    proc.stderr.strip().splitlines()[-1]), proc.stderr
    assert stack.password not in proc.stderr and "wrong" not in proc.stderr


def test_anonymous_pip_cannot_read_the_index(stack: Stack) -> None:
    url = stack.env["ONCOLOGY_PYPI_URL"].rstrip("/") + "/simple/"
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(url, timeout=10)  # noqa: S310 (loopback)
    exc.value.close()
    assert exc.value.code == 401
