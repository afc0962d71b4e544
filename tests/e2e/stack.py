"""The end-to-end stack: a container engine, registry and package index of the run's own.

Everything is started with the project's own scripts (``infra/up.sh``), under a state folder of its
own (``$ONCOLOGY_E2E_DIR``, default ``<repo>/.infra/e2e``) and on free ports, so the run starts
from an empty engine, gets a fresh random index password, and neither disturbs nor depends on the
developer's infrastructure (``.infra``) that may be running beside it.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import shutil
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from localproc import free_port  # infra/localproc.py, on sys.path through tests/conftest.py

from support import poll

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
PUBLISH = REPO / "deploy" / "publish.py"
DOCKER = "/usr/bin/docker"  # the Debian client: BuildKit and --secret (the other one on PATH has neither)
BASE_IMAGE = os.environ.get("ONCOLOGY_BASE_IMAGE", "oncology-base:bookworm")
DATA = REPO / "data" / "raw" / "breast-cancer-wisconsin" / "breast-cancer-wisconsin.data"
FEATURES_IN_FILE_ORDER = 9


class StackError(RuntimeError):
    pass


def _exports(text: str) -> dict[str, str]:
    found = {}
    for line in text.splitlines():
        if m := re.match(r"^export ([A-Z_][A-Z0-9_]*)=(.*)$", line.strip()):
            found[m.group(1)] = m.group(2)
    return found


@dataclass
class Stack:
    dir: Path
    env: dict[str, str] = field(repr=False)  # holds the index password
    password: str = field(repr=False)
    started_empty: bool = False
    containers: list[str] = field(default_factory=list)

    @property
    def registry(self) -> str:
        return self.env["ONCOLOGY_REGISTRY"]

    @property
    def index_url(self) -> str:
        return self.env["ONCOLOGY_PYPI_INDEX_URL"]

    def docker(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([DOCKER, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise StackError(f"docker {' '.join(args)}: exit {proc.returncode}: {proc.stderr.strip()[-2000:]}")
        return proc

    def inspect(self, ref: str) -> dict[str, Any]:
        data: list[dict[str, Any]] = json.loads(self.docker("image", "inspect", ref).stdout)
        return data[0]

    def publish(self, *args: str, cwd_repo: Path = REPO, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        """``deploy/publish.py ARGS`` of the checkout at ``cwd_repo``, in this stack's environment."""
        import sys

        return subprocess.run(
            [sys.executable, str(cwd_repo / "deploy" / "publish.py"), "--registry", self.registry,
             "--base-image", BASE_IMAGE, *args],
            env=self.env, capture_output=True, text=True, timeout=timeout, cwd=cwd_repo,
        )

    @contextmanager
    def container(self, *args: str, name: str = "e2e") -> Iterator[str]:
        """``docker run -d ARGS``; the container is removed on exit, whatever happened."""
        cname = f"oncology-{name}-{uuid.uuid4().hex[:8]}"
        self.containers.append(cname)
        try:
            self.docker("run", "-d", "--name", cname, *args, timeout=120)
            yield cname
        finally:
            self.docker("rm", "-f", "-v", cname, check=False, timeout=60)
            self.containers.remove(cname)


def _run_script(args: list[str], env: dict[str, str], timeout: float = 1800) -> str:
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise StackError(f"{' '.join(args)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout


def _no_mounts_under(path: Path) -> bool:
    with open("/proc/mounts") as f:
        return not any(line.split()[1].startswith(str(path) + "/") for line in f)


def _wipe(path: Path) -> None:
    if not path.exists():
        return
    if not _no_mounts_under(path):
        raise StackError(f"{path} still has mounts below it: not deleting it (infra/down.sh should have unmounted them)")
    shutil.rmtree(path)


def _seed_base_image_cache(state: Path) -> None:
    """Reuse the developer's cached Debian rootfs (same key, same bytes) rather than debootstrap again."""
    mine = state / "base-image"
    if any(mine.glob("rootfs-*.tar")):
        return
    theirs = Path(os.environ.get("ONCOLOGY_INFRA_DIR", REPO / ".infra")) / "base-image"
    for tarball in theirs.glob("rootfs-*.tar"):
        mine.mkdir(parents=True, exist_ok=True)
        try:
            os.link(tarball, mine / tarball.name)
        except OSError:
            shutil.copy2(tarball, mine / tarball.name)


@contextmanager
def running_stack(state: Path) -> Iterator[Stack]:
    """Engine (empty at start), base image, registry and password-protected index; all stopped at the end."""
    state.mkdir(parents=True, exist_ok=True)
    with open(state / ".e2e.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StackError(f"another end-to-end run uses {state} (set ONCOLOGY_E2E_DIR for a second one)") from None
        password = secrets.token_hex(16)  # fresh for every run: the leak checks look for it
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("DOCKER_", "ONCOLOGY_PYPI_", "ONCOLOGY_REGISTRY", "ONCOLOGY_STORE", "AWS_"))}
        env.update({
            "ONCOLOGY_INFRA_DIR": str(state),
            "ONCOLOGY_REGISTRY_PORT": str(free_port()),
            "ONCOLOGY_PYPI_PORT": str(free_port()),
            "ONCOLOGY_PYPI_USER": "oncology",
            "ONCOLOGY_PYPI_PASSWORD": password,
        })
        down = [str(INFRA / "down.sh"), "pypi", "registry", "docker"]
        _run_script(down, env)  # what a crashed run may have left
        for leftover in ("docker/data", "registry/data", "pypi/packages"):
            _wipe(state / leftover)
        _seed_base_image_cache(state)
        stack = Stack(state, env, password)
        try:
            env.update(_exports(_run_script([str(INFRA / "up.sh"), "docker"], env)))
            stack.started_empty = stack.docker("images", "--all", "--quiet").stdout.strip() == ""
            env.update(_exports(_run_script([str(INFRA / "up.sh"), "base-image", "registry", "pypi"], env)))
            yield stack
        finally:
            for name in list(stack.containers):
                stack.docker("rm", "-f", "-v", name, check=False, timeout=60)
            _run_script(down, env)
            _wipe(state / "docker" / "data")


# ---- data ----------------------------------------------------------------------------------------


def dataset_rows() -> tuple[list[list[int]], list[list[str]]]:
    """Every row of the raw UCI file: (complete rows as nine ints, rows with a missing value as strings)."""
    complete, incomplete = [], []
    for line in DATA.read_text().splitlines():
        if not line.strip():
            continue
        values = [v.strip() for v in line.split(",")[1 : 1 + FEATURES_IN_FILE_ORDER]]
        if all(v.isdigit() for v in values):
            complete.append([int(v) for v in values])
        else:
            incomplete.append(values)
    return complete, incomplete


# ---- looking for a secret in an image ------------------------------------------------------------


def _scan_stream(stream: IO[bytes], needles: list[bytes], chunk: int = 1 << 20) -> set[bytes]:
    """Which needles occur in the stream (chunks overlap, so a needle across a boundary is found)."""
    found: set[bytes] = set()
    keep = max(len(n) for n in needles) - 1
    tail = b""
    while block := stream.read(chunk):
        window = tail + block
        found.update(n for n in needles if n in window)
        tail = window[-keep:] if keep else b""
    return found


def scan_saved_image(archive: Path, needles: list[bytes]) -> tuple[int, dict[str, set[bytes]]]:
    """``docker save`` output: every layer, every file in it, and every JSON beside the layers.

    Returns how many layers were read and, per member that holds one, the needles found.
    """
    hits: dict[str, set[bytes]] = {}
    layers = 0
    with tarfile.open(archive) as outer:
        manifest = json.load(_member(outer, "manifest.json"))
        layer_names = {name for entry in manifest for name in entry["Layers"]}
        for member in outer.getmembers():
            if not member.isfile():
                continue
            if member.name in layer_names:
                layers += 1
                with tarfile.open(fileobj=_member(outer, member.name)) as layer:
                    for entry in layer.getmembers():
                        # names and link targets too: a secret in a file name is a leak as well
                        names = f"{entry.name}\0{entry.linkname}".encode()
                        found = {n for n in needles if n in names}
                        if entry.isfile():
                            found |= _scan_stream(_extract(layer, entry), needles)
                        if found:
                            hits[f"{member.name}:{entry.name}"] = found
            else:
                found = _scan_stream(_member(outer, member.name), needles)
                if found:
                    hits[member.name] = found
    return layers, hits


def _member(archive: tarfile.TarFile, name: str) -> IO[bytes]:
    f = archive.extractfile(name)
    if f is None:
        raise StackError(f"{name} is not a file in the image archive")
    return f


def _extract(archive: tarfile.TarFile, member: tarfile.TarInfo) -> IO[bytes]:
    f = archive.extractfile(member)
    if f is None:
        raise StackError(f"{member.name} is not a file in the layer")
    return f


def wait_ready(url: str, since: float, deadline_s: float = 60) -> float:
    """Seconds from ``since`` (a ``time.monotonic()``) until GET url answers 200 (polled every 10 ms)."""
    import httpx

    with httpx.Client(timeout=1.0) as client:

        def answers() -> bool:
            try:
                return client.get(url).status_code == 200
            except httpx.TransportError:
                return False

        poll(answers, deadline_s - (time.monotonic() - since), f"{url} did not answer 200 within {deadline_s:.0f}s",
             interval=0.01)
    return time.monotonic() - since
