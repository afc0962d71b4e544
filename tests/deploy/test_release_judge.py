"""The release judge on Kubernetes: the production overlay runs `oncology release judge --loop` from the trainer
image, reading the service's pods through the API server with a Role that allows exactly that."""

from __future__ import annotations

import kubernetes_validate
from deploy.test_manifests import VALIDATE_AGAINST, kinds, render

from oncology.settings import ReleaseSettings


def test_production_runs_one_judge_in_a_loop_with_the_rights_it_needs_and_no_more() -> None:
    found = kinds(render("production"))
    judge = found["Deployment/oncology-release-judge"]
    spec = judge["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}  # never two judges at once
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"][:3] == ["release", "judge", "--loop"] and float(container["args"][3]) <= 30
    assert container["image"] == found["CronJob/oncology-drift"]["spec"]["jobTemplate"]["spec"]["template"]["spec"][
        "containers"][0]["image"]  # the trainer image: numpy and scipy
    env = {e["name"]: e.get("value") for e in container["env"]}
    settings = ReleaseSettings(**{k.removeprefix("ONCOLOGY_").lower(): v for k, v in env.items()
                                  if k.startswith("ONCOLOGY_")})  # each one a setting the judge reads, valid
    assert settings.release_metrics == "pods"
    # the pods it reads are the service's: its selector and port
    service = found["Deployment/oncology-webservice"]
    labels = service["spec"]["template"]["metadata"]["labels"]
    assert dict(pair.split("=") for pair in settings.release_pods_selector.split(",")).items() <= labels.items()
    (http, *_) = service["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert settings.release_pods_port == http["containerPort"]
    # its service account may list pods and get their proxy, in its namespace only
    assert pod["serviceAccountName"] == "oncology-release-judge" and pod["automountServiceAccountToken"] is True
    role = found["Role/oncology-release-judge"]
    assert sorted((tuple(r["resources"]), tuple(r["verbs"])) for r in role["rules"]) == [
        (("pods",), ("list",)), (("pods/proxy",), ("get",))]
    assert all(r["apiGroups"] == [""] for r in role["rules"])
    binding = found["RoleBinding/oncology-release-judge"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "oncology-release-judge"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "oncology-release-judge"}]
    assert not any(k.startswith("ClusterRole") for k in found)
    sc = container["securityContext"]
    assert sc == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
    for name in ("ServiceAccount", "Role", "RoleBinding", "Deployment"):
        for version in VALIDATE_AGAINST:
            kubernetes_validate.validate(found[f"{name}/oncology-release-judge"], version, strict=True)
    assert "Deployment/oncology-release-judge" not in kinds(render("local"))  # the local cluster runs it by hand

