#!/usr/bin/env python3
"""Install, start and stop a real Prometheus (Debian's ``prometheus`` package) on 127.0.0.1 (stdlib only).

``prometheus`` and ``promtool`` come from Debian's ``prometheus`` package (2.42 on bookworm); when
they are missing, ``ensure_installed()`` installs it as root with ``infra/lib.sh``'s ``ensure_apt``
(the same apt options and the same guard against package scripts starting system services as the
other infra scripts).  Nothing starts by itself: there is no systemd here, and ``start`` runs one
server of its own with its own data folder.

Library use::

    from prometheus import ensure_installed, start, stop       # infra/ on sys.path
    ensure_installed()
    prom = start(Path("/tmp/prom"), targets=["127.0.0.1:8080"], rule_files=[Path("deploy/monitoring/alerts.yml")])
    prom.url, prom.alerts()
    prom.stop()                 # or stop(Path("/tmp/prom")) from another process

Command line::

    python infra/prometheus.py install
    python infra/prometheus.py start  --dir D --port 9090 --target 127.0.0.1:8080   # the project's alert rules
    python infra/prometheus.py status --dir D
    python infra/prometheus.py stop   --dir D
    python infra/prometheus.py check                  # promtool check rules + promtool test rules

Everything the server keeps lives in the data folder: ``prometheus.yml`` (its configuration),
``data/`` (the TSDB), ``prometheus.pid``, ``prometheus.json`` (its PID and port) and ``prometheus.log``.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from localproc import (
    HOST,
    StateFiles,
    apt_install,
    command_line,
    free_port,
    log_tail,
    pid_alive,
    port_open,
    runs,
    spawn,
    stopped_on_failure,
    terminate,
    wait_closed,
)

__all__ = [
    "Prometheus", "PrometheusError", "ensure_installed", "free_port", "promtool", "start", "status", "stop",
]

PACKAGE = "prometheus"
REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "deploy" / "monitoring" / "alerts.yml"
RULE_TESTS = REPO / "deploy" / "monitoring" / "alerts.test.yml"
JOB = "oncology"  # the scrape job the rules expect (`up{job="oncology"}`)
LOG_FILE = "prometheus.log"
CONFIG_FILE = "prometheus.yml"
_PR_SET_PDEATHSIG = 1


class PrometheusError(RuntimeError):
    """Prometheus could not be installed, started or stopped."""


# --------------------------------------------------------------------------- install


def _binaries() -> tuple[str, str] | None:
    prometheus, tool = shutil.which("prometheus"), shutil.which("promtool")
    return (prometheus, tool) if prometheus and tool else None


def ensure_installed() -> tuple[Path, Path]:
    """The paths of ``prometheus`` and ``promtool``; installs Debian's package first when missing (root)."""
    found = _binaries()
    if found is None:
        if os.geteuid() != 0:
            raise PrometheusError(
                "prometheus/promtool are not installed; as root: apt-get install -y --no-install-recommends prometheus"
            )
        done = apt_install(PACKAGE, "prometheus")
        found = _binaries()
        if done.returncode != 0 or found is None:
            raise PrometheusError(f"installing Debian's {PACKAGE} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return Path(found[0]), Path(found[1])


def promtool(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``promtool ARGS`` (installing it if needed); the completed process, whatever its exit status."""
    _, tool = ensure_installed()
    return subprocess.run([str(tool), *map(str, args)], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout, check=False)


# --------------------------------------------------------------------------- helpers


def _is_ours(pid: int, data_dir: Path) -> bool:
    """True if pid is a prometheus whose TSDB lies in data_dir (guards against a reused pid)."""
    return runs(pid, "prometheus", f"--storage.tsdb.path={data_dir.resolve() / 'data'}")


def _state(data_dir: Path) -> StateFiles:
    """``prometheus.pid`` and ``prometheus.json`` (its PID and port) in data_dir."""
    return StateFiles(data_dir, "prometheus")


def _log_tail(data_dir: Path, lines: int = 20) -> str:
    return log_tail(data_dir / LOG_FILE, lines)


def _get_json(url: str, timeout: float = 2) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.load(r)


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the process that started it dies (a killed test run)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def render_config(targets: Sequence[str], rule_files: Sequence[Path], *, scrape_interval: str = "15s",
                  evaluation_interval: str = "15s", job: str = JOB) -> str:
    """A prometheus.yml scraping ``targets`` as ``job`` with ``rule_files`` (JSON is YAML)."""
    config = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": evaluation_interval},
        "rule_files": [str(Path(f).resolve()) for f in rule_files],
        "scrape_configs": [
            {"job_name": job, "scrape_timeout": scrape_interval, "static_configs": [{"targets": list(targets)}]},
        ],
    }
    return json.dumps(config, indent=2) + "\n"


# --------------------------------------------------------------------------- server


@dataclass
class Prometheus:
    """A running Prometheus started by this module."""

    data_dir: Path
    port: int
    pid: int
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def alive(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        return pid_alive(self.pid)

    def api(self, path: str, timeout: float = 5) -> Any:
        """``GET /api/v1/<path>``'s ``data`` (raises PrometheusError unless the status is success)."""
        try:
            answer = _get_json(f"{self.url}/api/v1/{path}", timeout=timeout)
        except (OSError, ValueError) as exc:
            raise PrometheusError(f"GET /api/v1/{path}: {exc}") from exc
        if answer.get("status") != "success":
            raise PrometheusError(f"GET /api/v1/{path}: {answer}")
        return answer["data"]

    def alerts(self) -> list[dict[str, Any]]:
        """The pending and firing alerts (``/api/v1/alerts``)."""
        return list(self.api("alerts")["alerts"])

    def log(self) -> str:
        return _log_tail(self.data_dir, lines=200)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, SIGKILL after ``grace`` s; wait until the process is gone and its port closed."""
        if terminate([self.pid], lambda pid: not self.alive(), grace):
            raise PrometheusError(f"prometheus pid {self.pid} survived SIGKILL")
        wait_closed(self.port)
        _state(self.data_dir).forget()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start(data_dir: Path, *, targets: Sequence[str], rule_files: Sequence[Path] = (RULES,), port: int | None = None,
          scrape_interval: str = "15s", evaluation_interval: str = "15s", job: str = JOB, timeout: float = 60,
          die_with_parent: bool = False) -> Prometheus:
    """Start Prometheus on 127.0.0.1:``port`` (a free one by default) and wait until it is ready.

    It scrapes ``targets`` (``host:port``, path ``/metrics``) as job ``job`` and evaluates
    ``rule_files``.  ``die_with_parent``: the server is killed when the calling process dies, so a
    killed test run leaves nothing behind.  On failure everything started is stopped and the error
    carries the log's tail.
    """
    binary, _ = ensure_installed()
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    running = status(data_dir)
    if running is not None:
        raise PrometheusError(f"prometheus already runs in {data_dir} (pid {running.pid}, {running.url}); stop it first")
    port = port or free_port()
    if port_open(port):
        raise PrometheusError(f"port {port} on {HOST} is already in use")
    config = data_dir / CONFIG_FILE
    config.write_text(render_config(targets, rule_files, scrape_interval=scrape_interval,
                                    evaluation_interval=evaluation_interval, job=job))
    cmd = [
        str(binary),
        f"--config.file={config}",
        f"--storage.tsdb.path={data_dir / 'data'}",
        f"--web.listen-address={HOST}:{port}",
        "--storage.tsdb.retention.time=2d",
        "--log.level=info",
    ]
    proc = spawn(cmd, data_dir, data_dir / LOG_FILE, _die_with_parent if die_with_parent else None)
    prom = Prometheus(data_dir, port, proc.pid, proc)
    _state(data_dir).record([proc.pid], port=port)
    with stopped_on_failure(lambda: prom.stop(grace=2), PrometheusError, data_dir / LOG_FILE):
        _wait_ready(prom, time.monotonic() + timeout)
    return prom


def _wait_ready(prom: Prometheus, deadline: float) -> None:
    last = "its port never opened"
    while time.monotonic() < deadline:
        if not prom.alive():
            raise PrometheusError("prometheus exited during start-up")
        try:
            with urllib.request.urlopen(f"{prom.url}/-/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except urllib.error.HTTPError as exc:  # 503 while the TSDB opens
            last = f"/-/ready answered {exc.code}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.05)
    raise PrometheusError(f"prometheus not ready in time: {last}")


def status(data_dir: Path) -> Prometheus | None:
    """The server this module started in data_dir, if it still runs."""
    data_dir = Path(data_dir).resolve()
    files = _state(data_dir)
    pids = files.running(lambda pid: _is_ours(pid, data_dir), 1)
    try:
        port = int((files.state() or {})["port"])
    except (KeyError, ValueError, TypeError):
        return None
    return None if pids is None else Prometheus(data_dir, port, pids[0])


def stop(data_dir: Path, grace: float = 5.0) -> bool:
    """Stop what this module started in data_dir.  False if nothing was running."""
    running = status(data_dir)
    if running is None:
        _state(Path(data_dir)).forget()
        return False
    running.stop(grace=grace)
    return True


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    default_dir = Path(os.environ.get("ONCOLOGY_INFRA_DIR", REPO / ".infra"))
    parser = argparse.ArgumentParser(description="Install and run a local Prometheus on 127.0.0.1 with the project's rules.")
    parser.add_argument("command", choices=["install", "start", "stop", "status", "check"])
    parser.add_argument("--dir", type=Path, default=default_dir / "prometheus", help="state folder")
    parser.add_argument("--port", type=int, default=int(os.environ.get("ONCOLOGY_PROMETHEUS_PORT", "9090")))
    parser.add_argument("--target", action="append", default=[], help="host:port of an `oncology serve` (repeatable)")
    parser.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args(argv)

    def install() -> str:
        t0 = time.monotonic()
        binary, tool = ensure_installed()
        return f"{binary} and {tool} ({time.monotonic() - t0:.1f}s)"

    def check() -> str:
        for step in (("check", "rules", RULES), ("test", "rules", RULE_TESTS)):
            done = promtool(*step)
            sys.stdout.write(done.stdout)
            sys.stderr.write(done.stderr)
            if done.returncode != 0:
                raise PrometheusError(f"promtool {' '.join(map(str, step))} failed (exit {done.returncode})")
        return "rules checked and tested"

    def start_() -> str:
        t0 = time.monotonic()
        prom = start(args.dir, targets=args.target or [f"{HOST}:8080"], port=args.port, timeout=args.timeout)
        return f"{prom.url} (pid {prom.pid}, ready in {time.monotonic() - t0:.1f}s)"

    def status_() -> str | None:
        running = status(args.dir)
        return None if running is None else f"running at {running.url} (pid {running.pid})"

    return command_line("prometheus", PrometheusError, {
        "install": install, "check": check, "start": start_,
        "stop": lambda: "stopped" if stop(args.dir) else "not running", "status": status_,
    }, args.command)

if __name__ == "__main__":
    sys.exit(main())
