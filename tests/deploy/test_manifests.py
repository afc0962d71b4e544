"""The Kubernetes manifests: valid for current clusters, and held against the application so the
two cannot drift apart (probe paths, port, settings, labels)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from oncology.settings import ReleaseSettings, ServeSettings, TrainSettings
from oncology.webservice.app import create_app

REPO = Path(__file__).resolve().parents[2]
OVERLAYS = REPO / "deploy" / "k8s" / "overlays"
VALIDATE_AGAINST = ("1.30.0", "1.34.0")


def render(overlay: str) -> list[dict[str, Any]]:
    out = subprocess.run(["kubectl", "kustomize", str(OVERLAYS / overlay)], capture_output=True, text=True, check=True, timeout=60)
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def kinds(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in docs}


def containers(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    for doc in docs:
        spec = doc.get("spec", {})
        pod = spec.get("template", {}).get("spec") or spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec")
        if pod:
            found += pod["containers"]
    return found


@pytest.mark.parametrize("overlay", ["local", "production"])
@pytest.mark.parametrize("version", VALIDATE_AGAINST)
def test_every_rendered_resource_is_strictly_valid(overlay: str, version: str) -> None:
    for doc in render(overlay):
        kubernetes_validate.validate(doc, version, strict=True)  # raises with the first error


def test_production_has_autoscaling_and_retraining_and_local_leaves_them_out() -> None:
    prod, local = kinds(render("production")), kinds(render("local"))
    assert {"HorizontalPodAutoscaler/oncology-webservice", "CronJob/oncology-retrain"} <= set(prod)
    assert prod["HorizontalPodAutoscaler/oncology-webservice"]["apiVersion"] == "autoscaling/v2"
    assert not {k for k in local if k.split("/")[0] in {"HorizontalPodAutoscaler", "CronJob"}}


@pytest.mark.parametrize("overlay", ["local", "production"])
def test_both_overlays_keep_one_replica_through_voluntary_disruptions(overlay: str) -> None:
    found = kinds(render(overlay))
    pdb = found["PodDisruptionBudget/oncology-webservice"]
    assert pdb["apiVersion"] == "policy/v1"
    deployment = found["Deployment/oncology-webservice"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert pdb["spec"]["minAvailable"] == 1 < deployment["spec"]["replicas"]  # one may go, never both
    (spread,) = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]  # one replica per node
    assert (spread["topologyKey"], spread["maxSkew"]) == ("kubernetes.io/hostname", 1)
    assert spread["labelSelector"]["matchLabels"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    # soft: a drained node's replica must be able to come up beside the other one
    assert spread["whenUnsatisfiable"] == "ScheduleAnyway"


@pytest.mark.parametrize("overlay", ["local", "production"])
def test_the_deployment_is_safe_to_run(overlay: str) -> None:
    deployment = kinds(render(overlay))["Deployment/oncology-webservice"]
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["name"] == "oncology-webservice"
    sc = container["securityContext"]
    assert sc == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
    assert {"requests", "limits"} <= set(container["resources"])
    assert {"startupProbe", "readinessProbe", "livenessProbe"} <= set(container)


def test_probes_ports_and_labels_match_the_application() -> None:
    docs = render("local")
    found = kinds(docs)
    deployment = found["Deployment/oncology-webservice"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    app_paths = {route.path for route in create_app(ServeSettings(store=None)).routes if hasattr(route, "methods")}  # as the image: its wheel's model
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"  # readiness: model loaded
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"  # liveness: process up
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] in app_paths
    config = next(d for k, d in found.items() if k.startswith("ConfigMap/oncology-webservice"))
    port, grpc_port = container["ports"]
    assert port["containerPort"] == int(config["data"]["ONCOLOGY_PORT"]) == ServeSettings().port
    assert grpc_port["containerPort"] == int(config["data"]["ONCOLOGY_GRPC_PORT"]) > 0  # gRPC on (off by default)
    assert ServeSettings().grpc_port == 0
    service = found["Service/oncology-webservice"]
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert [p["targetPort"] for p in service["spec"]["ports"]] == [port["name"], grpc_port["name"]] == ["http", "grpc"]
    # `make deploy` selects deployments by these labels and sets the image of this container
    dry = subprocess.run(["make", "-n", "deploy", "VERSION=1.0.2"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    selector = re.search(r"kubectl set image deployments -l ([^ ]+) ([a-z-]+)=[^ ]*/oncology-webservice:1.0.2", dry)
    assert selector, "make deploy must run kubectl set image with a label selector"
    labels = dict(pair.split("=") for pair in selector.group(1).split(","))
    assert labels["app"] == deployment["metadata"]["labels"]["app"]
    assert "team" in labels and deployment["metadata"]["labels"]["team"] == "ml-platform"
    assert selector.group(2) == container["name"]


def _settings_env() -> set[str]:
    names = set(ServeSettings.model_fields) | set(TrainSettings.model_fields) | set(ReleaseSettings.model_fields)
    return {f"ONCOLOGY_{n.upper()}" for n in names}


AWS = {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"}


@pytest.mark.parametrize("overlay", ["local", "production"])
def test_every_variable_set_is_a_setting_the_app_reads(overlay: str) -> None:
    docs = render(overlay)
    known = _settings_env() | AWS
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            assert set(doc["data"]) <= known, doc["metadata"]["name"]
    for container in containers(docs):
        assert {e["name"] for e in container.get("env", [])} <= known, container["name"]


@pytest.mark.parametrize("overlay", ["local", "production"])
def test_images_are_the_ones_make_publish_pushes(overlay: str) -> None:
    published = {"oncology-webservice", "oncology-trainer"}
    for container in containers(render(overlay)):
        name = container["image"].rsplit(":", 1)[0].rsplit("/", 1)[-1]
        assert name in published and name == container["name"]  # each container is named after its image
