"""The package index's manifests (deploy/k8s/index/): valid for current Kubernetes, and held against the index
server and the targets that use them (make index-deploy, make publish INDEX=cluster)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from support import make_env

REPO = Path(__file__).resolve().parents[2]
INDEX = REPO / "deploy" / "k8s" / "index"
VALIDATE_AGAINST = ("1.30.0", "1.34.0")


def render(overlay: str) -> list[dict[str, Any]]:
    out = subprocess.run(["kubectl", "kustomize", str(INDEX / overlay)], capture_output=True, text=True, check=True, timeout=60)
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "oncology-index"]
    return found


@pytest.mark.parametrize("overlay", ["base", "local"])
@pytest.mark.parametrize("version", VALIDATE_AGAINST)
def test_every_rendered_resource_is_strictly_valid(overlay: str, version: str) -> None:
    for doc in render(overlay):
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("overlay", ["base", "local"])
def test_a_deployment_behind_a_service_with_the_password_from_a_secret(overlay: str) -> None:
    docs = render(overlay)
    dep = deployment(docs)
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["ONCOLOGY_INDEX_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "oncology-index", "key": "password"}
    assert env["ONCOLOGY_INDEX_USER"]["valueFrom"]["secretKeyRef"] == {"name": "oncology-index", "key": "username"}
    assert env["ONCOLOGY_INDEX_HOST"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    (service,) = [d for d in docs if d["kind"] == "Service"]
    assert service["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == container["ports"][0]["name"]
    # the pod keeps no package of its own: its only volumes are emptyDirs (a cache, and /tmp)
    assert all("emptyDir" in v for v in pod["volumes"])
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    (config,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert config["data"]["ONCOLOGY_INDEX_STORE"].startswith("s3://")
    assert config["data"]["ONCOLOGY_INDEX_PORT"] == str(container["ports"][0]["containerPort"])
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health"  # pypiserver's health route (no password)


def test_the_local_overlay_reaches_the_hosts_seaweedfs_with_one_pod_replaced_not_rolled() -> None:
    dep = deployment(render("local"))
    assert dep["spec"]["template"]["spec"]["hostNetwork"] is True
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"] == {"type": "Recreate"}


def test_make_index_deploy_sets_the_image_that_make_index_image_builds(tmp_path: Path) -> None:
    tag = subprocess.run([sys.executable, str(REPO / "deploy" / "index" / "image.py"), "--tag-only"],
                         capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    dry = subprocess.run(["make", "--no-print-directory", "-n", "-C", str(REPO), "index-deploy", "KUBECONFIG=/nonexistent",
                          "REGISTRY=reg.example:5000"], env=make_env(), capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    assert f"--image reg.example:5000/oncology-index:{tag}" in dry.stdout
    rendered = subprocess.run([sys.executable, str(REPO / "deploy" / "index" / "render.py"), "--image", f"r/oncology-index:{tag}"],
                              input=yaml.safe_dump_all(render("local")), capture_output=True, text=True, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    (container,) = deployment([d for d in yaml.safe_load_all(rendered.stdout) if d])["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"r/oncology-index:{tag}"


def test_publish_to_the_cluster_index_needs_a_chosen_cluster() -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}
    proc = subprocess.run(["make", "--no-print-directory", "-C", str(REPO), "publish", "INDEX=cluster", "KUBECTL=false"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "make publish acts on a Kubernetes cluster and none is chosen" in proc.stderr, proc.stderr
    other = subprocess.run(["make", "--no-print-directory", "-C", str(REPO), "publish", "INDEX=elsewhere"],
                           env=env, capture_output=True, text=True, timeout=120)
    assert other.returncode == 2 and "INDEX must be host or cluster, not 'elsewhere'" in other.stderr, other.stderr
