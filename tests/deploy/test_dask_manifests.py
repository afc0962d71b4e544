"""The production overlay's Dask cluster: the scheduler the workers and `oncology drift --engine dask` name,
from the trainer image, workers spread over the nodes, and no credentials on them."""

from __future__ import annotations

import subprocess

from test_manifests import REPO, kinds, render

from oncology.monitoring.engine.settings import EngineSettings


def test_the_workers_find_the_scheduler_its_service_exposes_and_hold_no_secrets() -> None:
    found = kinds(render("production"))
    service = found["Service/oncology-dask-scheduler"]
    scheduler, workers = found["Deployment/oncology-dask-scheduler"], found["Deployment/oncology-dask-worker"]
    assert service["spec"]["selector"].items() <= scheduler["spec"]["template"]["metadata"]["labels"].items()
    (port,) = service["spec"]["ports"]
    (s,) = scheduler["spec"]["template"]["spec"]["containers"]
    assert s["command"][:2] == ["dask", "scheduler"] and s["ports"][0]["containerPort"] == port["port"]
    (w,) = workers["spec"]["template"]["spec"]["containers"]
    address = f"tcp://{service['metadata']['name']}:{port['port']}"
    assert w["command"][:3] == ["dask", "worker", address]
    assert EngineSettings(engine="dask", scheduler=address).scheduler == address
    assert s["image"] == w["image"] and s["image"].rsplit(":", 1)[0].endswith("/oncology-trainer")
    assert workers["spec"]["replicas"] == 2
    (spread,) = workers["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname" and spread["maxSkew"] == 1
    assert "env" not in w and "envFrom" not in w  # the tasks carry the store's settings
    assert "Deployment/oncology-dask-worker" not in kinds(render("local"))


def test_every_flag_the_manifests_pass_is_one_the_dask_command_of_the_trainer_image_knows() -> None:
    trainer = (REPO / "deploy" / "docker" / "trainer" / "requirements.txt").read_text()
    assert "distributed==" in trainer and "dask==" in trainer
    found = kinds(render("production"))
    for name in ("oncology-dask-scheduler", "oncology-dask-worker"):
        (container,) = found[f"Deployment/{name}"]["spec"]["template"]["spec"]["containers"]
        command = container["command"]
        proc = subprocess.run([*command[:2], "--help"], capture_output=True, text=True, timeout=120,
                              env={"PATH": str(REPO / ".venv" / "bin")})
        assert proc.returncode == 0, proc.stderr
        flags = [arg for arg in command[2:] if arg.startswith("--")]
        assert flags and all(flag in proc.stdout for flag in flags), (name, flags)
