"""The cluster targets of the Makefile act only on a cluster that was chosen explicitly."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from support import make_env

REPO = Path(__file__).resolve().parents[2]

#: A stand-in for kubectl that records every call and, like kubectl with no configuration, has no context; a Job it
#: is asked about has completed.
KUBECTL_STUB = """#!/bin/sh
echo "$*" >> "$(dirname "$0")/calls"
if [ "$1 $2" = "config current-context" ]; then echo "error: current-context is not set" >&2; exit 1; fi
case "$*" in *"get job "*) printf Complete;; esac
exit 0
"""

TARGETS = [("deploy", ["VERSION=1.0.2"]), ("rollback-deployment", []), ("train-job", ["VERSION=1.0.2"])]


def _make(tmp_path: Path, target: str, args: list[str], **env: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    stub = tmp_path / "kubectl"
    stub.write_text(KUBECTL_STUB)
    stub.chmod(0o755)
    # train-job's `install` prerequisite is satisfied by the checkout's own virtual environment
    proc = subprocess.run(
        ["make", "--no-print-directory", "-C", str(REPO), target, f"KUBECTL={stub}", *args],
        env=make_env(HOME=str(tmp_path), **env), capture_output=True, text=True, timeout=120,
    )
    calls = (tmp_path / "calls").read_text().splitlines() if (tmp_path / "calls").exists() else []
    return proc, calls


@pytest.mark.parametrize(("target", "args"), TARGETS)
def test_without_a_chosen_cluster_the_target_refuses_and_calls_nothing(tmp_path: Path, target: str, args: list[str]) -> None:
    proc, calls = _make(tmp_path, target, args)
    assert proc.returncode != 0
    assert f"make {target} acts on a Kubernetes cluster and none is chosen" in proc.stderr
    assert calls == ["config current-context"]  # it only asked which cluster; it changed nothing


@pytest.mark.parametrize(("target", "args"), TARGETS)
def test_kubeconfig_chooses_the_cluster(tmp_path: Path, target: str, args: list[str]) -> None:
    proc, calls = _make(tmp_path, target, args, KUBECONFIG=str(tmp_path / "kubeconfig"))
    assert calls and calls[0] != "config current-context" and all("--context" not in c for c in calls), calls
    assert any(c.startswith(("set image", "rollout undo", "delete job")) for c in calls), calls


@pytest.mark.parametrize(("target", "args"), TARGETS)
def test_a_context_chooses_the_cluster_and_every_call_names_it(tmp_path: Path, target: str, args: list[str]) -> None:
    proc, calls = _make(tmp_path, target, [*args, "CONTEXT=staging"])
    assert calls and all(c.startswith("--context=staging ") for c in calls), calls
    assert any(c.startswith(("--context=staging set image", "--context=staging rollout undo",
                             "--context=staging delete job")) for c in calls), calls


def test_the_alias_rollback_and_the_deployment_rollback_have_different_names() -> None:
    shown = subprocess.run(["make", "-C", str(REPO), "help"], capture_output=True, text=True, check=True).stdout
    targets = {re.sub(r"\x1b\[[0-9;]*m", "", line).split()[0] for line in shown.splitlines() if line.strip()}
    assert "deploy" in targets and "rollback-deployment" in targets
    assert "rollback" not in targets  # `oncology models rollback` moves the model alias; this is the Deployment


def test_make_help_sets_every_description_apart_in_one_column() -> None:
    shown = subprocess.run(["make", "--no-print-directory", "-C", str(REPO), "help"], capture_output=True, text=True,
                           check=True, env=make_env()).stdout
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in shown.splitlines() if line.strip()]
    rows = [re.fullmatch(r"  (\S+)( {2,})(\S.*)", line) for line in lines]
    assert all(rows), [line for line, row in zip(lines, rows) if row is None]  # a name, two spaces or more, its text
    columns = {len(row[1]) + len(row[2]) for row in rows if row}
    assert len(columns) == 1, columns  # every description starts in the same column, the longest name's included
    longest = max((row for row in rows if row), key=lambda row: len(row[1]))
    assert len(longest[2]) == 2, longest[0]


@pytest.mark.parametrize("target", ["run", "serve"])
def test_the_serving_targets_take_the_services_own_port_and_host_variables(target: str) -> None:
    """`ONCOLOGY_PORT=8090 make serve` (the error of a taken port names ONCOLOGY_PORT) must not be overridden by
    the recipe's own --port; a make variable given on the command line still wins."""
    def shown(*args: str, **env: str) -> str:
        proc = subprocess.run(["make", "--no-print-directory", "-n", "-C", str(REPO), target, *args],
                              env=make_env(**env), capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return [line for line in proc.stdout.splitlines() if " serve " in line][-1]

    assert shown().endswith("--host 127.0.0.1 --port 8080")
    assert shown(ONCOLOGY_PORT="18123", ONCOLOGY_HOST="0.0.0.0").endswith("--host 0.0.0.0 --port 18123")
    assert shown("PORT=9000", ONCOLOGY_PORT="18123").endswith("--port 9000")
