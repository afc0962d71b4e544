"""The published images, pulled back from the registry and run: what a deployment gets."""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from e2e.conftest import IMAGES, Published
from e2e.stack import BASE_IMAGE, REPO, Stack, dataset_rows, free_port, scan_saved_image, wait_ready
from oncology_model import Classifier
from oncology_model.datamodel import FEATURES
from support import S3

pytestmark = pytest.mark.e2e

MB = 1e6
WHEEL_CLASSIFIER = """
import json, sys
import oncology_model
from oncology_model import Classifier, Tumor
from oncology_model.datamodel import FEATURES
assert oncology_model.__file__.startswith(sys.argv[1]), oncology_model.__file__
clf = Classifier()
tumors = [Tumor(**dict(zip(FEATURES, row))) for row in json.load(sys.stdin)]
print(json.dumps({"version": clf.version, "probabilities": clf.predict_proba_batch(tumors),
                  "labels": [p.value for p in clf.predict_batch(tumors)]}))
"""


@pytest.fixture(scope="module")
def service(stack: Stack, pulled: Published, figures: dict[str, Any]) -> Iterator[str]:
    """The web-service image from the registry, run as SageMaker runs it (`docker run IMAGE serve`),
    on a published 127.0.0.1 port."""
    port = free_port()
    t0 = time.monotonic()
    with stack.container("-p", f"127.0.0.1:{port}:8080", pulled.ref("webservice"), "serve", name="webservice"):
        url = f"http://127.0.0.1:{port}"
        figures["webservice: docker run to /readyz 200 (s)"] = round(wait_ready(f"{url}/readyz", t0), 2)
        yield url


@pytest.fixture(scope="module")
def wheel_answers(stack: Stack, pulled: Published, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``Classifier()`` of the very wheel the image installed (fetched from the index), on every complete row."""
    publish = _publish_module()
    index = publish.Index(stack.env["ONCOLOGY_PYPI_URL"], stack.index_url, stack.env["ONCOLOGY_PYPI_USER"], stack.password)
    data = index.published(f"oncology_model-{pulled.version}-py3-none-any.whl")
    assert data is not None
    site = tmp_path_factory.mktemp("wheel-site")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        zf.extractall(site)
    complete, _ = dataset_rows()
    proc = subprocess.run(
        [sys.executable, "-c", WHEEL_CLASSIFIER, str(site)], input=json.dumps(complete), capture_output=True, text=True,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}, timeout=120, cwd=site,
    )
    assert proc.returncode == 0, proc.stderr
    answers: dict[str, Any] = json.loads(proc.stdout)
    return answers


def _publish_module() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("oncology_publish", REPO / "deploy" / "publish.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["oncology_publish"] = module
    spec.loader.exec_module(module)
    return module


def _as_json_rows(rows: list[list[int]]) -> list[dict[str, int]]:
    return [dict(zip(FEATURES, row)) for row in rows]


# ---- the web service ----------------------------------------------------------------------------


def test_every_row_of_the_dataset_gets_the_in_process_answer(
    service: str, pulled: Published, wheel_answers: dict[str, Any]
) -> None:
    complete, incomplete = dataset_rows()
    assert len(complete) == 683 and len(incomplete) == 16
    expected = Classifier.from_uri(pulled.store, pulled.version)
    assert wheel_answers["version"] == expected.version == pulled.version
    probabilities = expected.score_rows(complete)
    assert wheel_answers["probabilities"] == probabilities
    labels = [expected.label(p).value for p in probabilities]
    assert wheel_answers["labels"] == labels
    decisions = [str(d) for d in expected.decide_many(probabilities)]

    with httpx.Client(base_url=service, timeout=30) as client:
        batch = client.post("/predict/batch", json=_as_json_rows(complete))
        assert batch.status_code == 200, batch.text
        assert [r["probability"] for r in batch.json()] == probabilities
        assert [r["prediction"] for r in batch.json()] == labels
        assert {r["model_version"] for r in batch.json()} == {pulled.version}
        assert [r["decision"] for r in batch.json()] == decisions
        for row, p, label, decision in zip(_as_json_rows(complete), probabilities, labels, decisions):
            answer = client.post("/predict", json=row)
            assert answer.status_code == 200, answer.text
            assert answer.json() == {"prediction": label, "probability": p, "decision": decision,
                                     "model_version": pulled.version}
        for values in incomplete:  # the 16 rows with a missing value ("?") are refused, naming the field
            row = {name: (int(v) if v.isdigit() else v) for name, v in zip(FEATURES, values)}
            refused = client.post("/predict", json=row)
            assert refused.status_code == 422
            assert "bare_nuclei" in refused.text


def test_the_sagemaker_routes(service: str, pulled: Published) -> None:
    complete, _ = dataset_rows()
    expected = Classifier.from_uri(pulled.store, pulled.version)
    probabilities = expected.score_rows(complete)
    with httpx.Client(base_url=service, timeout=30) as client:
        ping = client.get("/ping")
        assert ping.status_code == 200
        single = client.post("/invocations", json=_as_json_rows(complete[:1])[0])
        assert single.status_code == 200 and single.json()["probability"] == probabilities[0]
        array = client.post("/invocations", json=_as_json_rows(complete))
        assert [r["probability"] for r in array.json()] == probabilities
        csv = "\n".join(",".join(map(str, row)) for row in complete) + "\n"
        rows = client.post("/invocations", content=csv, headers={"content-type": "text/csv"})
        assert rows.status_code == 200, rows.text
        assert [r["probability"] for r in rows.json()] == probabilities


def test_the_v2_and_probe_routes(service: str, pulled: Published) -> None:
    with httpx.Client(base_url=service, timeout=10) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").json()["model_version"] == pulled.version
        assert client.get("/v2/health/ready").status_code == 200
        assert client.get("/model").json()["version"] == pulled.version
        assert client.get("/docs").status_code == 200
        assert client.get("/docs/static/swagger-ui-bundle.js").status_code == 200


def test_the_server_is_pid_1_as_a_non_root_user_and_stops_cleanly_on_sigterm(
    stack: Stack, pulled: Published, figures: dict[str, Any]
) -> None:
    port = free_port()
    t0 = time.monotonic()
    with stack.container("-p", f"127.0.0.1:{port}:8080", pulled.ref("webservice"), name="sigterm") as name:
        wait_ready(f"http://127.0.0.1:{port}/readyz", t0)
        cmdline = stack.docker("exec", name, "cat", "/proc/1/cmdline").stdout.split("\0")
        assert cmdline[1:3] == ["/opt/oncology/bin/oncology", "serve"], cmdline
        assert stack.docker("exec", name, "id", "-u").stdout.strip() == "10001"
        t1 = time.monotonic()
        stack.docker("stop", "--time", "30", name, timeout=60)
        figures["webservice: docker stop (SIGTERM) to exit (s)"] = round(time.monotonic() - t1, 2)
        state = json.loads(stack.docker("inspect", "--format", "{{json .State}}", name).stdout)
        assert state["ExitCode"] == 0 and not state["OOMKilled"]
        assert time.monotonic() - t1 < 10
        logs = stack.docker("logs", name).stderr
        assert "readiness off" in logs


# ---- the trainer --------------------------------------------------------------------------------


def test_the_trainer_trains_against_s3_and_publishes_a_version(
    stack: Stack, pulled: Published, s3: S3, figures: dict[str, Any]
) -> None:
    prefix = f"s3://{s3.bucket}/e2e-{time.time_ns()}"
    env = {**s3.env(), "ONCOLOGY_STORE": prefix, "ONCOLOGY_PROMOTE": "true"}
    args = [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]
    t0 = time.monotonic()
    # --network=host: the container reaches the host's 127.0.0.1 S3 server
    with stack.container("--network=host", *args, pulled.ref("trainer"), name="trainer") as name:
        status = stack.docker("wait", name, timeout=900).stdout.strip()
        logs = stack.docker("logs", name)
    figures["trainer: container run, full training (s)"] = round(time.monotonic() - t0, 1)
    assert status == "0", logs.stdout + logs.stderr
    m = re.search(r"published model version (\S+) to " + re.escape(prefix), logs.stdout)
    assert m, logs.stdout
    version = m.group(1)
    assert f"champion is now {version}" in logs.stdout

    listing = subprocess.run(
        [str(Path(sys.executable).parent / "oncology"), "models", "list", "--store", prefix],
        env={**s3.env(), "PATH": "/usr/bin:/bin", "COLUMNS": "200"}, capture_output=True, text=True, timeout=120,
    )
    assert listing.returncode == 0, listing.stderr
    (row,) = [line for line in listing.stdout.splitlines() if f" {version} " in line]
    assert "champion" in row

    # the model records the commit the image was built from (no git in the image)
    trained = Classifier.from_uri(prefix, version)
    revision = stack.inspect(pulled.ref("trainer"))["Config"]["Labels"]["org.opencontainers.image.revision"]
    assert trained.metadata["code"]["git_commit"] == revision != "unknown"


# ---- both images --------------------------------------------------------------------------------


@pytest.mark.parametrize("image", IMAGES)
def test_the_image_runs_as_a_non_root_numeric_user(stack: Stack, pulled: Published, image: str) -> None:
    config = stack.inspect(pulled.ref(image))["Config"]
    assert config["User"] == "10001:10001"
    proc = stack.docker("run", "--rm", "--entrypoint", "id", pulled.ref(image), timeout=60)
    assert proc.stdout.startswith("uid=10001(oncology) gid=10001(oncology)")


@pytest.mark.parametrize("image", IMAGES)
def test_no_secret_leaks_into_the_image(stack: Stack, pulled: Published, image: str, tmp_path: Path) -> None:
    """The run's random index password is nowhere: no layer, no file name, no history, no config."""
    user, password = stack.env["ONCOLOGY_PYPI_USER"], stack.password
    needles = [password.encode(), stack.index_url.encode(), base64.b64encode(f"{user}:{password}".encode())]
    ref = pulled.ref(image)

    archive = tmp_path / f"{image}.tar"
    stack.docker("save", "-o", str(archive), stack.inspect(ref)["Id"], timeout=600)
    layers, hits = scan_saved_image(archive, needles)
    assert layers == len(stack.inspect(ref)["RootFS"]["Layers"]) >= 3
    assert hits == {}

    history = stack.docker("history", "--no-trunc", "--format", "{{json .}}", ref).stdout
    assert password not in history and stack.index_url not in history
    config = stack.inspect(ref)
    assert password not in json.dumps(config)
    for key in ("Env", "Labels", "Cmd", "Entrypoint"):
        assert password not in json.dumps(config["Config"][key])
        assert "PYPI" not in json.dumps(config["Config"][key]).upper()
    # the secret file itself stayed in the build
    assert stack.docker("run", "--rm", "--entrypoint", "/opt/oncology/bin/python", ref, "-c",
                        "import os; print(os.path.exists('/run/secrets/pipindex'))", timeout=60).stdout.strip() == "False"


def test_image_sizes(stack: Stack, pulled: Published, figures: dict[str, Any]) -> None:
    base = stack.inspect(BASE_IMAGE)["Size"]
    sizes = {image: stack.inspect(pulled.ref(image))["Size"] for image in IMAGES}
    figures["image size: base oncology-base:bookworm (MB)"] = round(base / MB)
    for image in IMAGES:
        figures[f"image size: {image} (MB)"] = round(sizes[image] / MB)
        figures[f"image size: {image} over the base (MB)"] = round((sizes[image] - base) / MB)
    assert sizes["webservice"] - base <= 120 * MB
    # the runtime venv holds no installer and no compiler
    found = stack.docker("run", "--rm", "--entrypoint", "/bin/sh", pulled.ref("webservice"), "-c",
                         "ls /opt/oncology/lib/python3*/site-packages | grep -iE '^(pip|setuptools|wheel)([-_.]|$)' ;"
                         " command -v gcc cc; ls /opt/oncology/lib/python3*/site-packages/swagger_ui/static/"
                         " | grep -E 'editor|[.]map$'; true", timeout=60).stdout
    assert found.strip() == ""
