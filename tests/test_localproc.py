"""infra/localproc.py: the state files, the clean-up of a failed start and the command-line shell that
infra/seaweedfs.py and infra/prometheus.py share (they are exercised for real by the S3 and Prometheus
tests; these are the edges those do not reach)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from localproc import StateFiles, command_line, stopped_on_failure  # infra/, on sys.path through tests/conftest.py


class Failed(RuntimeError):
    pass


def test_the_state_files_name_a_running_server_only_while_its_processes_run(tmp_path: Path) -> None:
    files = StateFiles(tmp_path, "srv")
    assert files.pids() == [] and files.state() is None and files.running(lambda pid: True, 1) is None
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        files.record([proc.pid], port=1234)
        assert (tmp_path / "srv.pid").read_text() == f"{proc.pid}\n"
        assert files.state() == {"pids": [proc.pid], "port": 1234}
        assert files.running(lambda pid: True, 1) == [proc.pid]
        assert files.running(lambda pid: True, 2) is None  # not the count the server runs as
        assert files.running(lambda pid: False, 1) is None  # a reused PID: not ours
    finally:
        proc.kill()
        proc.wait()
    assert files.running(lambda pid: True, 1) is None
    files.forget()
    assert not (tmp_path / "srv.pid").exists() and not (tmp_path / "srv.json").exists()
    files.forget()  # twice: nothing to do


def test_a_failed_start_stops_what_it_started_and_carries_the_logs_tail(tmp_path: Path) -> None:
    log = tmp_path / "srv.log"
    log.write_text("".join(f"line {i}\n" for i in range(30)))
    stopped: list[bool] = []
    with (
        pytest.raises(Failed, match=r"(?s)^not ready \(port closed\); log tail .*line 29$") as caught,
        stopped_on_failure(lambda: stopped.append(True), Failed, log, lambda e: f"not ready ({e})"),
    ):
        raise Failed("port closed")
    assert stopped == [True] and "line 9\n" not in str(caught.value)  # the last 20 lines only
    with pytest.raises(KeyboardInterrupt), stopped_on_failure(lambda: stopped.append(True), Failed, log):
        raise KeyboardInterrupt  # any other failure: stopped too, and raised as it is
    assert stopped == [True, True]


def test_the_command_line_exit_statuses(capsys: pytest.CaptureFixture[str]) -> None:
    def fails() -> str:
        raise Failed("no binary")

    commands = {"start": lambda: "up", "status": lambda: None, "broken": fails}
    assert command_line("srv", Failed, commands, "start") == 0
    assert command_line("srv", Failed, commands, "status") == 3
    assert command_line("srv", Failed, commands, "broken") == 1
    out, err = capsys.readouterr()
    assert out == "srv: up\nsrv: not running\n" and err == "srv: error: no binary\n"


def test_free_port_never_hands_out_a_port_it_handed_out_just_before(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel picks a free port at random, so two calls in a row may get the same one back while neither's server
    has bound it yet (a server's HTTP and gRPC ports): the second server would find its port taken.  Here the
    kernel is made to pick 40001 twice, then 40003: the second call must skip 40001."""
    import localproc

    picks = iter([40001, 40001, 40003, 40001, 40005])

    class Kernel:  # a socket whose bind to port 0 gets the next pick
        def __init__(self, *args: object) -> None:
            self.port = 0

        def bind(self, address: tuple[str, int]) -> None:
            self.port = next(picks)

        def getsockname(self) -> tuple[str, int]:
            return ("127.0.0.1", self.port)

        def close(self) -> None:
            pass

    monkeypatch.setattr(localproc.socket, "socket", Kernel)
    monkeypatch.setattr(localproc, "_HANDED_OUT", localproc.collections.deque(maxlen=1024))
    assert localproc.free_port() == 40001
    assert localproc.free_port() == 40003
    assert localproc.free_ports(1) == [40005]
