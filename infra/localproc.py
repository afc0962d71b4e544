"""What the scripts that install and run local servers share (stdlib only): installing a Debian
package, free ports, whether a port or a process is still there, a log's tail, the state files a
server leaves in its folder, stopping processes by their PIDs (and everything started when a
start fails), and the command-line shell of start/stop/status.

Imported as ``localproc`` with ``infra/`` on sys.path: by ``infra/seaweedfs.py`` and
``infra/prometheus.py`` (run as scripts, their folder is on the path), and by the tests and
benchmarks that start servers of their own (``tests/conftest.py`` and ``benchmarks/run.py`` put
``infra/`` on the path).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
_LIB_SH = Path(__file__).resolve().parent / "lib.sh"


def apt_install(package: str, name: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Install Debian's ``package`` (as root) with ``infra/lib.sh``'s ``ensure_apt``: the same apt options
    as the other infra scripts, and the same guard against package scripts starting system services.
    ``name`` labels its log lines.  The completed process, whatever its exit status."""
    script = f'source "{_LIB_SH}" && ensure_apt {package}'  # bash's $0 (``name``) names the log lines
    return subprocess.run(["bash", "-c", script, name], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout, check=False)


def spawn(cmd: list[str], cwd: Path, log: Path,
          preexec_fn: Callable[[], None] | None = None) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own session, in ``cwd``, its output appended to ``log`` after a line that
    names the time and the command."""
    with open(log, "ab") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(cmd)}\n".encode())
        out.flush()
        return subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=preexec_fn)


#: The ports this process handed out last: a port is free until its server binds it, so two calls in a row (a
#: server's HTTP and gRPC ports, a server and the S3 address that stays down) could otherwise get the same port
#: back, the kernel's pick being random (1 in ~14,000 for each pair), and the second server finds it taken.
_HANDED_OUT: collections.deque[int] = collections.deque(maxlen=1024)
_HANDED_OUT_LOCK = threading.Lock()


def free_port(exclude: Iterable[int] = ()) -> int:
    """A TCP port on 127.0.0.1 that is free right now (and not one of ``exclude``, nor one of the last 1,024 this
    process handed out)."""
    return free_ports(1, exclude)[0]


def free_ports(n: int, exclude: Iterable[int] = ()) -> list[int]:
    """``n`` distinct TCP ports on 127.0.0.1 that are free right now (sockets held open together so they differ),
    none of ``exclude`` and none of the last 1,024 this process handed out."""
    socks: list[socket.socket] = []
    ports: list[int] = []
    with _HANDED_OUT_LOCK:
        skip = set(exclude) | set(_HANDED_OUT)
        try:
            for _ in range(n + 200):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(s)
                s.bind((HOST, 0))
                port: int = s.getsockname()[1]
                if port not in skip and port not in ports:
                    ports.append(port)
                    if len(ports) == n:
                        _HANDED_OUT.extend(ports)
                        return ports
        finally:
            for s in socks:
                s.close()
    raise OSError(f"could not find {n} free ports on {HOST}")


def port_open(port: int, host: str = HOST) -> bool:
    """Whether something accepts connections on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def bindable(port: int, host: str = HOST) -> bool:
    """Whether a server could listen on host:port now (with SO_REUSEADDR, as Go listeners bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def wait_closed(port: int, timeout: float = 10, host: str = HOST) -> bool:
    """Poll until nothing listens on host:port any more; False if something still does at the deadline."""
    deadline = time.monotonic() + timeout
    while port_open(port, host) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not port_open(port, host)


def pid_alive(pid: int) -> bool:
    """True if pid runs and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def runs(pid: int, program: str, argument: str) -> bool:
    """True if pid is ``program`` started with ``argument`` (guards against a reused pid)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(argv) and argv[0].endswith(program.encode()) and argument.encode() in argv


def log_tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file, or ``(no log)``."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def terminate(pids: Iterable[int], gone: Callable[[int], bool] | None = None, grace: float = 3.0,
              kill_wait: float = 10) -> list[int]:
    """SIGTERM each of ``pids``, SIGKILL what still runs after ``grace`` seconds, and wait up to
    ``kill_wait`` seconds more for them to go.  The PIDs that survived (normally none).

    ``gone(pid)`` tells whether a process ended (default: not `pid_alive`; pass ``Popen.poll`` for a
    child, which only waiting reaps)."""
    pids = list(pids)
    is_gone = gone or (lambda pid: not pid_alive(pid))

    def wait(seconds: float) -> list[int]:
        deadline = time.monotonic() + seconds
        while (left := [p for p in pids if not is_gone(p)]) and time.monotonic() < deadline:
            time.sleep(0.05)
        return left

    for sig, seconds in ((signal.SIGTERM, grace), (signal.SIGKILL, kill_wait)):
        for pid in pids:
            if not is_gone(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
        if not (left := wait(seconds)):
            return []
    return left


@dataclass(frozen=True)
class StateFiles:
    """What a server started by a script leaves in its folder: ``<name>.pid`` (one PID a line) and
    ``<name>.json`` (its PIDs and whatever else the script records, e.g. its ports)."""

    folder: Path
    name: str

    @property
    def pid_file(self) -> Path:
        return self.folder / f"{self.name}.pid"

    @property
    def state_file(self) -> Path:
        return self.folder / f"{self.name}.json"

    def record(self, pids: list[int], **state: Any) -> None:
        self.pid_file.write_text("".join(f"{p}\n" for p in pids))
        self.state_file.write_text(json.dumps({"pids": pids, **state}) + "\n")

    def pids(self) -> list[int]:
        """The PIDs recorded (none when the file is missing or unreadable)."""
        try:
            return [int(x) for x in self.pid_file.read_text().split()]
        except (OSError, ValueError):
            return []

    def state(self) -> dict[str, Any] | None:
        """What `record` wrote, or None when it is missing or unreadable."""
        try:
            found = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None
        return found if isinstance(found, dict) else None

    def running(self, ours: Callable[[int], bool], count: int) -> list[int] | None:
        """The recorded PIDs when exactly ``count`` are recorded and each still runs and is ``ours``."""
        pids = self.pids()
        if len(pids) != count or not all(pid_alive(p) and ours(p) for p in pids):
            return None
        return pids

    def forget(self) -> None:
        for path in (self.pid_file, self.state_file):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


@contextlib.contextmanager
def stopped_on_failure(stop: Callable[[], None], error: type[Exception], log: Path,
                       describe: Callable[[Exception], str] = str) -> Iterator[None]:
    """Around a start: if it fails, stop what it started; a failure of kind ``error`` is raised again
    as one, described by ``describe`` and followed by the tail of ``log``."""
    try:
        yield
    except BaseException as exc:
        with contextlib.suppress(Exception):
            stop()
        if isinstance(exc, error):
            raise error(f"{describe(exc)}; log tail ({log}):\n{log_tail(log)}") from exc
        raise


def command_line(name: str, error: type[Exception], commands: dict[str, Callable[[], str | None]],
                 command: str) -> int:
    """Run a server script's ``command`` and print its line as ``<name>: <line>``: exit 0; a command
    that returns None found nothing running (``status``): exit 3; a failure of kind ``error`` is one
    line on stderr: exit 1."""
    try:
        line = commands[command]()
    except error as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 1
    print(f"{name}: {'not running' if line is None else line}")
    return 3 if line is None else 0
