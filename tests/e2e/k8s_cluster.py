"""The real Kubernetes 1.20 cluster of ``infra/k8s/`` for the end-to-end tier, and a bounded load loop.

`running_cluster` builds the binaries once (``infra/k8s/build.sh``: a cache hit here, about 9 minutes on a
fresh machine), starts the cluster on the e2e stack's own dockerd (``infra/k8s/up.sh`` with
``ONCOLOGY_K8S_DOCKER_HOST``; state under the stack's ``$ONCOLOGY_INFRA_DIR/k8s``) and runs
``infra/k8s/down.sh`` at the end whatever happened. Then it looks for anything left behind: processes,
pod containers, mounts, KUBE-* iptables rules, the node address, sysctls, ports, host folders.

`Load` sends predictions to a Service from a few threads at a paced rate, each request on a new connection
(kube-proxy balances connections, not requests), bounded in count and in time, and checks every answer
against the in-process model of the version that the answer names.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localproc import bindable

from e2e.stack import DOCKER, INFRA, REPO

K8S = INFRA / "k8s"
#: the node address up.sh puts on lo (lib.sh's default)
NODE_IP = os.environ.get("ONCOLOGY_K8S_NODE_IP", "10.200.0.1")
#: the second node (lib.sh's defaults): its address in its network namespace, the host end of its veth, its pod range
NODE2_IP = os.environ.get("ONCOLOGY_K8S_NODE2_IP", "10.200.1.2")
NODE2_GW = os.environ.get("ONCOLOGY_K8S_NODE2_GW", "10.200.1.1")
NODE2_POD_CIDR = os.environ.get("ONCOLOGY_K8S_NODE2_POD_CIDR", "10.244.2.0/24")
NODE_NAMES = ("oncology-node", "oncology-node-2")
#: fixed ports of the cluster on 127.0.0.1 (etcd client/peer/metrics, API server, kubelet and kube-proxy
#: health and metrics, controller manager, scheduler); the kubelet's 10250 is on the node address
PORTS = (2379, 2380, 2381, 6443, 10248, 10249, 10256, 10257, 10259)
#: the sysctls the kubelet and kube-proxy change (lib.sh's K8S_SYSCTLS)
SYSCTLS = ("vm.overcommit_memory", "vm.panic_on_oom", "kernel.panic", "kernel.panic_on_oops",
           "kernel.keys.root_maxkeys", "kernel.keys.root_maxbytes", "net.ipv4.conf.all.route_localnet")
#: host folders the kubelet 1.20 creates whatever its flags say
HOST_DIRS = ("/var/lib/kubelet", "/var/log/pods", "/var/log/containers", "/usr/libexec/kubernetes")


class ClusterError(RuntimeError):
    pass


def kubectl_binary() -> str:
    """The kubectl on PATH (1.2x+, with kustomize 5): the one `make deploy` and the README use."""
    found = shutil.which("kubectl")
    if not found:
        raise ClusterError("kubectl is not on PATH (a current one, with kustomize 5, talks to the 1.20 cluster)")
    return found


def _run(args: list[str], env: dict[str, str], timeout: float, what: str) -> str:
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise ClusterError(f"{what} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc.stdout


@dataclass
class Cluster:
    env: dict[str, str] = field(repr=False)
    state: Path
    bin_dir: Path
    kubectl_bin: str
    build_seconds: float = 0.0
    #: wall time of up.sh, cached binaries (it also checks the cache and imports the pause image)
    up_seconds: float = 0.0
    #: node Ready after up.sh started, as up.sh measures it
    ready_seconds: float | None = None
    down_seconds: float = 0.0
    #: what down.sh left behind (filled in after it ran)
    left_behind: list[str] = field(default_factory=list)

    def kubectl(self, *args: str, check: bool = True, timeout: float = 180,
                input: str | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([self.kubectl_bin, *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, input=input, cwd=REPO)
        if check and proc.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)}: exit {proc.returncode}: {proc.stderr.strip()[-3000:]}")
        return proc

    def node2_docker(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``docker ARGS`` against the second node's dockerd (lib.sh: its socket is under /run, named after the
        state folder)."""
        sock = f"/run/onc-k8s-{hashlib.sha256(str(self.state).encode()).hexdigest()[:8]}-n2/docker.sock"
        proc = subprocess.run([DOCKER, *args], env={**self.env, "DOCKER_HOST": f"unix://{sock}"}, capture_output=True,
                              text=True, timeout=120)
        if proc.returncode != 0:
            raise ClusterError(f"docker {' '.join(args)} on the second node: {proc.stderr.strip()[-2000:]}")
        return proc

    def get(self, *args: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.kubectl("get", *args, "-o", "json").stdout)
        return data

    def make(self, target: str, /, **variables: str) -> subprocess.CompletedProcess[str]:
        """``make TARGET VAR=VALUE...`` in the repository, with this cluster's KUBECONFIG and kubectl (15 min max)."""
        args = ["make", "--no-print-directory", "-C", str(REPO), target, f"KUBECTL={self.kubectl_bin}"]
        args += [f"{name}={value}" for name, value in variables.items()]
        return subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=900)


# ---- what the machine looks like, before and after ---------------------------------------------------


@dataclass(frozen=True)
class MachineState:
    kube_rules: frozenset[str]
    lo_addresses: frozenset[str]
    sysctls: dict[str, str]
    host_dirs: frozenset[str]
    netns: frozenset[str] = frozenset()
    links: frozenset[str] = frozenset()
    routes: frozenset[str] = frozenset()
    forward_rules: frozenset[str] = frozenset()


def _kube_rules() -> frozenset[str]:
    lines: set[str] = set()
    for tool in ("iptables-save", "ip6tables-save"):
        if shutil.which(tool):
            out = subprocess.run([tool], capture_output=True, text=True, timeout=60).stdout
            lines.update(f"{tool}: {line}" for line in out.splitlines() if "KUBE-" in line)
    return frozenset(lines)


def _lo_addresses() -> frozenset[str]:
    out = subprocess.run(["ip", "-o", "addr", "show", "dev", "lo"], capture_output=True, text=True, timeout=30).stdout
    return frozenset(re.findall(r"inet6? (\S+)", out))


def _sysctls() -> dict[str, str]:
    found = {}
    for name in SYSCTLS:
        path = Path("/proc/sys") / name.replace(".", "/")
        if path.exists():
            found[name] = " ".join(path.read_text().split())
    return found


def _lines(*args: str) -> frozenset[str]:
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=60)
    return frozenset(line.strip() for line in proc.stdout.splitlines() if line.strip())


def machine_state() -> MachineState:
    links = frozenset(re.sub(r"@.*", "", line.split()[1].rstrip(":")) for line in _lines("ip", "-o", "link", "show"))
    return MachineState(_kube_rules(), _lo_addresses(), _sysctls(),
                        frozenset(d for d in HOST_DIRS if os.path.exists(d)),
                        frozenset(line.split()[0] for line in _lines("ip", "netns", "list")), links,
                        _lines("ip", "route", "show"), _lines("iptables", "-w", "-S", "FORWARD"))


def _processes_of(state: Path, bin_dir: Path) -> list[str]:
    """Processes whose command line names the cluster's state folder or its binaries."""
    found = []
    marks = (str(state) + "/", str(bin_dir) + "/", f"bind={NODE2_GW},", "/run/onc-k8s-")  # the node's forwarders
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if cmdline and any(mark in cmdline for mark in marks):
            found.append(f"process {proc.name}: {cmdline[:200]}")
    return found


def _port_in_use(port: int) -> bool:
    return not bindable(port)


def left_behind(before: MachineState, cluster: Cluster) -> list[str]:
    """Everything the cluster left on the machine that was not there before it started."""
    problems = _processes_of(cluster.state, cluster.bin_dir)
    docker = subprocess.run([DOCKER, "ps", "-aq", "--filter", "label=io.kubernetes.docker.type"], env=cluster.env,
                            capture_output=True, text=True, timeout=60)
    if docker.returncode != 0:
        problems.append(f"docker ps failed: {docker.stderr.strip()}")
    problems += [f"pod container {c}" for c in docker.stdout.split()]
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split()[4] for line in f]
    problems += [f"mount {m}" for m in mounts
                 if m.startswith(str(cluster.state) + "/") or m.startswith("/var/lib/kubelet/")]
    after = machine_state()
    problems += [f"iptables rule {line}" for line in sorted(after.kube_rules - before.kube_rules)]
    problems += [f"address {a} on lo" for a in sorted(after.lo_addresses - before.lo_addresses)]
    if f"{NODE_IP}/32" in after.lo_addresses:
        problems.append(f"node address {NODE_IP} still on lo")
    problems += [f"sysctl {name} = {after.sysctls.get(name)} (was {value})"
                 for name, value in before.sysctls.items() if after.sysctls.get(name) != value]
    problems += [f"host folder {d}" for d in sorted(after.host_dirs - before.host_dirs)]
    problems += [f"network namespace {n}" for n in sorted(after.netns - before.netns)]
    problems += [f"network link {n}" for n in sorted(after.links - before.links)]
    problems += [f"route {r}" for r in sorted(after.routes - before.routes)]
    problems += [f"iptables FORWARD rule {r}" for r in sorted(after.forward_rules - before.forward_rules)]
    problems += [f"port 127.0.0.1:{p} still in use" for p in PORTS if _port_in_use(p)]
    run = cluster.state / "run"
    if run.exists():
        problems.append(f"{run} still exists")
    return problems


@contextmanager
def running_cluster(stack_env: dict[str, str], ports: tuple[int, ...] = ()) -> Iterator[Cluster]:
    """The cluster on the e2e stack's dockerd (node 1) and a second node of its own; torn down at the end whatever
    happened, then checked. ``ports``: host ports on 127.0.0.1 that the second node reaches on its own 127.0.0.1
    (its pulls from the stack's registry, which is always forwarded; S3 for host-network pods)."""
    env = {k: v for k, v in stack_env.items() if k != "KUBECONFIG"}
    env["ONCOLOGY_K8S_DOCKER_HOST"] = env["DOCKER_HOST"]
    registry_port = int(env["ONCOLOGY_REGISTRY"].rsplit(":", 1)[1]) if "ONCOLOGY_REGISTRY" in env else None
    forwarded = sorted({*ports, *([registry_port] if registry_port else [])})
    env["ONCOLOGY_K8S_NODE2_PORTS"] = " ".join(map(str, forwarded))
    state = Path(env["ONCOLOGY_INFRA_DIR"]) / "k8s"
    t0 = time.monotonic()
    bin_dir = Path(_run([str(K8S / "build.sh")], env, 3600, "infra/k8s/build.sh").strip().splitlines()[-1])
    cluster = Cluster(env, state, bin_dir, kubectl_binary(), build_seconds=time.monotonic() - t0)
    _run([str(K8S / "down.sh")], env, 300, "infra/k8s/down.sh (what a crashed run may have left)")
    busy = [p for p in PORTS if _port_in_use(p)]
    if busy:
        raise ClusterError(f"ports {busy} on 127.0.0.1 are taken: another Kubernetes cluster runs on this machine")
    before = machine_state()
    try:
        t0 = time.monotonic()
        out = _run([str(K8S / "up.sh")], env, 900, "infra/k8s/up.sh")
        cluster.up_seconds = time.monotonic() - t0
        exports = dict(re.findall(r"(?m)^export ([A-Z_]+)=(.*)$", out))
        cluster.env["KUBECONFIG"] = exports["KUBECONFIG"]
        if m := re.search(r"# node Ready in ([\d.]+)s", out):
            cluster.ready_seconds = float(m.group(1))
        yield cluster
    finally:
        t0 = time.monotonic()
        down = subprocess.run([str(K8S / "down.sh")], env=env, capture_output=True, text=True, timeout=300)
        cluster.down_seconds = time.monotonic() - t0
        if down.returncode != 0:
            cluster.left_behind.append(f"infra/k8s/down.sh failed (exit {down.returncode}): {down.stderr[-2000:]}")
        cluster.left_behind += left_behind(before, cluster)


# ---- a bounded load loop through a Service ---------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    sent: float
    done: float
    row: int
    status: int | None
    version: str | None
    error: str | None
    attempts: int = 1
    #: the ``x-request-id`` the request was sent with, and the ``x-model-arm`` header of its answer (a release's)
    request_id: str = ""
    arm: str | None = None


@dataclass(frozen=True)
class Retry:
    """The clients' retry policy for the window in which a lost node's pods are still in the Service's endpoints:
    each attempt on a new connection with a short timeout, another attempt after a connection error, a timeout or a
    502/503/504, until ``budget`` seconds after the first. ``POST /predict`` only reads: retrying it is safe.
    The window measured without retries is 15-17 s (the last failed request after the kill, `_node_loss` (b)); the
    budget is about four times it, so that a slow control plane (a loaded CI machine) does not fail the test."""

    attempt_timeout: float = 1.0
    budget: float = 60.0
    pause: float = 0.1
    statuses: tuple[int, ...] = (502, 503, 504)


def request(host: str, port: int, method: str, path: str, body: bytes | None = None,
            timeout: float = 10) -> tuple[int, bytes]:
    """One request on a new connection (``Connection: close``): kube-proxy picks a pod per connection."""
    status, _, answer = exchange(host, port, method, path, body, timeout)
    return status, answer


def exchange(host: str, port: int, method: str, path: str, body: bytes | None = None, timeout: float = 10,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """`request` with headers sent and received: (status, response headers in lower case, body)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        sent = {"Connection": "close", **(headers or {})}
        if body is not None:
            sent["Content-Type"] = "application/json"
        conn.request(method, path, body=body, headers=sent)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


class Load:
    """POST /predict from ``threads`` threads at ``rate`` requests a second in all, until stopped, at most
    ``max_requests`` requests and ``max_seconds`` seconds. Every answer must come with status 200 and be exactly
    what ``expected[its model_version][row]`` says: (prediction, probability)."""

    def __init__(self, host: str, port: int, rows: list[dict[str, int]],
                 expected: dict[str, list[tuple[str, float]]], *, threads: int = 4, rate: float = 200.0,
                 max_requests: int = 30_000, max_seconds: float = 240.0, timeout: float = 10.0,
                 retry: Retry | None = None) -> None:
        self.host, self.port = host, port
        self.bodies = [json.dumps(row).encode() for row in rows]
        self.expected = expected
        self.threads, self.rate = threads, rate
        self.max_requests, self.max_seconds, self.timeout = max_requests, max_seconds, timeout
        self.retry = retry
        self.answers: list[Answer] = []
        self.exhausted: str | None = None  # why it stopped on its own, if it did
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sent = 0
        self._workers: list[threading.Thread] = []
        self._deadline = 0.0

    def __enter__(self) -> Load:
        self._deadline = time.monotonic() + self.max_seconds
        self._workers = [threading.Thread(target=self._work, args=(k,), name=f"load-{k}", daemon=True)
                         for k in range(self.threads)]
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=self.timeout + 5)

    def wait_for(self, condition: Any, timeout: float) -> bool:
        """Whether ``condition(answers)`` came true within ``timeout`` seconds (polled every 50 ms)."""
        end = time.monotonic() + timeout
        while not condition(list(self.answers)):
            if time.monotonic() > end or self._stop.is_set():
                return False
            time.sleep(0.05)
        return True

    def failures(self) -> list[Answer]:
        return [a for a in self.answers if a.error is not None]

    def _take(self) -> bool:
        with self._lock:
            if self._sent >= self.max_requests:
                self.exhausted = f"{self.max_requests} requests"
                self._stop.set()
                return False
            if time.monotonic() > self._deadline:
                self.exhausted = f"{self.max_seconds:.0f}s"
                self._stop.set()
                return False
            self._sent += 1
            return True

    def _work(self, k: int) -> None:
        interval = self.threads / self.rate
        next_at = time.monotonic() + k * interval / self.threads
        row = k
        while not self._stop.is_set():
            now = time.monotonic()
            if now < next_at:
                self._stop.wait(next_at - now)
                continue
            next_at = max(next_at + interval, now)  # paced: no burst to catch up after a slow answer
            if not self._take():
                break
            self.answers.append(self._with_retries(row % len(self.bodies)) if self.retry else self._one(row % len(self.bodies)))
            row += self.threads

    def _with_retries(self, row: int) -> Answer:
        assert self.retry is not None
        first = time.monotonic()
        attempts = 0
        while True:
            attempts += 1
            answer = self._one(row, self.retry.attempt_timeout)
            retryable = answer.status is None or answer.status in self.retry.statuses
            if answer.error is None or not retryable or time.monotonic() - first > self.retry.budget:
                return Answer(first, answer.done, row, answer.status, answer.version, answer.error, attempts,
                              answer.request_id, answer.arm)
            time.sleep(self.retry.pause)

    def _one(self, row: int, timeout: float | None = None) -> Answer:
        sent = time.monotonic()
        status: int | None = None
        version: str | None = None
        rid = f"e2e-{uuid.uuid4().hex[:16]}"
        arm: str | None = None
        try:
            status, headers, body = exchange(self.host, self.port, "POST", "/predict", self.bodies[row],
                                             timeout or self.timeout, {"x-request-id": rid})
            arm = headers.get("x-model-arm")
            if status != 200:
                return Answer(sent, time.monotonic(), row, status, None, f"HTTP {status}: {body[:200]!r}", 1, rid, arm)
            answer = json.loads(body)
            version = answer.get("model_version")
            expected = self.expected.get(str(version))
            if expected is None:
                error = f"model_version {version} is not one this step may answer with ({sorted(self.expected)})"
            elif (answer["prediction"], answer["probability"]) != expected[row]:
                error = f"row {row}: {answer} differs from the in-process answer {expected[row]}"
            elif headers.get("x-request-id") != rid:
                error = f"row {row}: the answer names request {headers.get('x-request-id')}, not {rid}"
            else:
                error = None
            return Answer(sent, time.monotonic(), row, status, version, error, 1, rid, arm)
        except Exception as exc:  # every failure is an answer to report, never a thread that dies
            return Answer(sent, time.monotonic(), row, status, version, f"{type(exc).__name__}: {exc}", 1, rid, arm)
