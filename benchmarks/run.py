"""The project's benchmark (``make bench``): our service against the reference design and the HTTP floor.

One run, one machine, one worker process per server, load from ``wrk`` on 127.0.0.1:

- floor:     a bare ASGI app (constant JSON) on uvicorn with the service's own `_options`;
- ours:      ``oncology serve`` (uvicorn, uvloop, httptools), /predict, /predict?explain=true and /predict/batch;
- reference: Flask on gunicorn (one sync worker) calling scikit-learn per request;
- fastapi:   FastAPI on uvicorn (one worker, the service's uvicorn options where they apply), a pydantic
             request model, scikit-learn per request;
- in process: the same 10,000 rows scored by `Classifier` with no HTTP.

Single-row load runs at concurrency 1, 8 and 64, interleaved (floor, ours, reference in turn,
the order rotated each round) for several rounds; medians are reported and every ratio is the
median of per-round ratios.  Every single-row answer is checked (its probability, label and model
version); a wrong answer, a non-2xx answer or a socket error aborts the run.  See
benchmarks/README.md for what each number means.

    .venv/bin/python benchmarks/run.py [--rounds 3] [--duration 3] [--quick] [--strict]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
RESULTS = BENCH / "results"
PROJECT_BIN = Path(sys.executable).parent
REF_VENV = RESULTS / "reference-venv"
REF_MODEL = RESULTS / "reference-model"
FASTAPI_VENV = RESULTS / "fastapi-venv"
LOGS = RESULTS / "logs"
HOST = "127.0.0.1"

sys.path.insert(0, str(ROOT / "infra"))
from localproc import free_port  # noqa: E402  (infra/localproc.py: the project's one free-port helper)

SINGLE_CONCURRENCY = (1, 8, 64)
BATCH_CONCURRENCY = (1, 4)
BATCH_ROWS = 10_000
INPROCESS_REPEATS = 7
COLD_STARTS = 3
#: A saturated worker (concurrency >= 4) below this CPU share was starved by other processes.
STARVED_BELOW = 0.85
POLL_SECONDS = 0.005
WRK_TIMEOUT = "5s"
#: The single-row route with explanations, measured on ours beside plain /predict.
EXPLAIN_PATH = "/predict?explain=true"

#: One tumor, as in tests/webservice/conftest.py (EXAMPLE).
EXAMPLE = {
    "clump_thickness": 5, "uniformity_of_cell_size": 1, "uniformity_of_cell_shape": 1, "marginal_adhesion": 1,
    "single_epithelial_cell_size": 2, "bare_nuclei": 1, "bland_chromatin": 3, "normal_nucleoli": 1, "mitoses": 1,
}

TARGETS = {
    "single_c64_vs_reference": (">=", 5.0),
    "single_c64_vs_fastapi": (">=", 10.0),
    "single_c64_vs_floor": (">=", 0.75),  # issue 20's targets (were 0.40 and 2x before the hot routes went inline)
    "p99_c8_vs_floor": ("<=", 1.5),
    "batch_http_vs_inprocess": (">=", 0.5),
    "cold_start_s": ("<", 1.0),
    "rss_per_worker_mb": ("<", 80.0),
}


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class BenchError(RuntimeError):
    """The run cannot produce valid numbers (a server failed, errors under load...)."""


# ---- processes: only those started here, stopped by PID ------------------------------------------


@dataclass
class Server:
    name: str
    argv: list[str]
    port: int
    probe: bytes  # the raw HTTP request whose 200 means "ready"
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    pids: set[int] = field(default_factory=set)  # every process of this server seen so far

    def start(self) -> None:
        with self.log.open("ab") as out:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
            )
        self.pids = {self.proc.pid}
        STARTED.append(self)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def exited(self) -> bool:
        """Whether the main process is gone (without reaping it: its PID stays ours until `stop`)."""
        return _state(self.pid) in (None, "Z", "X")

    def children(self) -> list[int]:
        found = _children(self.pid)
        self.pids.update(found)
        return found

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server's processes (gunicorn: master and worker)."""
        return sum(cpu_seconds(pid) for pid in (self.pid, *self.children()))

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM, then SIGKILL to whatever is left of its own process group, then reap."""
        if self.proc is None or self.proc.returncode is not None:
            return
        self.children()
        if not self.exited():
            with suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while not self.exited() and time.monotonic() < deadline:
                time.sleep(0.02)
        # the main process is not reaped yet, so its PID (= its session's group id) is still ours
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        self.proc.wait()
        if self in STARTED:
            STARTED.remove(self)


STARTED: list[Server] = []


def _state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def memory_kb(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def stop_all() -> None:
    for server in list(reversed(STARTED)):
        try:
            server.stop()
        except Exception as exc:  # keep stopping the others
            say(f"stopping {server.name} (pid {server.pid}) failed: {exc!r}")


# ---- HTTP probes -------------------------------------------------------------------------------


def raw_request(method: str, path: str, body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def http_call(port: int, request: bytes, timeout: float = 30.0) -> tuple[int, bytes]:
    """(status, body) of one request on a new connection; (0, b"") when it cannot connect."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(request)
            data = bytearray()
            while chunk := sock.recv(1 << 16):
                data += chunk
    except OSError:
        return 0, b""
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return 0, b""
    if b"transfer-encoding: chunked" in head.lower():
        body = _unchunk(body)
    return status, body


def _unchunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return bytes(out)


def wait_ready(server: Server, started: float, timeout: float = 60.0) -> float:
    """Seconds from `started` (just before the spawn) to the first 200 of the server's probe."""
    deadline = started + timeout
    while time.perf_counter() < deadline:
        if server.exited():
            raise BenchError(f"{server.name} exited before it was ready:\n{server.tail()}")
        status, _ = http_call(server.port, server.probe, timeout=max(0.1, deadline - time.perf_counter()))
        if status == 200:
            return time.perf_counter() - started
        time.sleep(POLL_SECONDS)
    raise BenchError(f"{server.name} was not ready in {timeout:.0f}s:\n{server.tail()}")


# ---- set-up ------------------------------------------------------------------------------------


def run(argv: list[str], what: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, **kwargs)
    if proc.returncode != 0:
        raise BenchError(f"{what} failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return proc


def ensure_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk:
        return wrk
    say("wrk is missing: apt-get install -y wrk")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(["apt-get", "install", "-y", "wrk"], env=env).returncode != 0:
        run(["apt-get", "update"], "apt-get update", env=env)
        run(["apt-get", "install", "-y", "wrk"], "apt-get install -y wrk", env=env)
    wrk = shutil.which("wrk")
    if not wrk:
        raise BenchError("wrk is still not on PATH after apt-get install")
    return wrk


def clean_env() -> dict[str, str]:
    """The environment for servers: none of the caller's ONCOLOGY_* settings, no Python path tricks."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("ONCOLOGY_", "PYTHONPATH", "VIRTUAL_ENV"))}


def make_store(store: Path) -> str:
    shutil.rmtree(store, ignore_errors=True)
    say(f"training a model into {store.relative_to(ROOT)}")
    proc = run([str(PROJECT_BIN / "oncology"), "train", "--store", str(store), "--promote"], "oncology train", env=clean_env())
    from oncology_model import Classifier, OncologyError

    try:
        return Classifier.from_uri(str(store)).version
    except OncologyError as exc:
        raise BenchError(f"training did not promote a champion ({exc}):\n{proc.stdout[-2000:]}") from None


def _pinned() -> list[str]:
    """scikit-learn, numpy and joblib at the project venv's versions: the reference pickle loads exactly."""
    return [f"{name}=={metadata.version(name)}" for name in ("scikit-learn", "numpy", "joblib")]


def ensure_venv(venv: Path, pins: list[str], shown: set[str]) -> dict[str, str]:
    """A venv of its own at ``venv`` holding ``pins`` (made again when they change); the versions of ``shown``."""
    marker = venv / ".bench-requirements"
    python = venv / "bin" / "python"
    if not (python.exists() and marker.exists() and marker.read_text() == "\n".join(pins)):
        say(f"creating the venv {venv.relative_to(ROOT)} (pip install {' '.join(pins)})")
        shutil.rmtree(venv, ignore_errors=True)
        base = getattr(sys, "_base_executable", sys.executable)
        run([base, "-m", "venv", str(venv)], f"creating the venv {venv}")
        run([str(python), "-m", "pip", "install", "--quiet", *pins], f"pip install into {venv}", env=clean_env())
        marker.write_text("\n".join(pins))
    listed = run([str(python), "-m", "pip", "list", "--format=json"], "pip list", env=clean_env())
    return {p["name"]: p["version"] for p in json.loads(listed.stdout) if p["name"].lower() in shown}


def ensure_reference_venv() -> dict[str, str]:
    """A separate venv with flask, gunicorn and the project's scikit-learn/numpy/joblib (to load the pickle)."""
    return ensure_venv(REF_VENV, [*_pinned(), "flask", "gunicorn"],
                       {"flask", "gunicorn", "scikit-learn", "joblib", "numpy", "scipy", "werkzeug"})


def ensure_fastapi_venv() -> dict[str, str]:
    """FastAPI's venv: fastapi, and uvicorn, uvloop, httptools and pydantic at the project's versions (the same
    server stack as ours), with the project's scikit-learn/numpy/joblib (to load the pickle)."""
    same = [f"{name}=={metadata.version(name)}" for name in ("uvicorn", "uvloop", "httptools", "pydantic")]
    return ensure_venv(FASTAPI_VENV, [*_pinned(), "fastapi", *same],
                       {"fastapi", "starlette", "uvicorn", "uvloop", "httptools", "pydantic", "pydantic-core",
                        "scikit-learn", "joblib", "numpy", "scipy"})


def server_setting(text: str) -> tuple[str, str]:
    """``--set NAME=VALUE`` (an ``ONCOLOGY_*`` setting for the benchmark's server), for argparse."""
    name, sep, value = text.partition("=")
    if not sep or not name.startswith("ONCOLOGY_"):
        raise argparse.ArgumentTypeError(f"expected ONCOLOGY_NAME=VALUE, got {text!r}")
    return name, value


def split_cpus() -> tuple[int | None, int | None]:
    """(server CPU, client CPU): the first two this process may use, or (None, None) on a single CPU."""
    cpus = sorted(os.sched_getaffinity(0))
    return (cpus[0], cpus[1]) if len(cpus) >= 2 else (None, None)


def add_server_cpu(result: dict[str, Any], used: float) -> None:
    """A wrk result's server CPU: seconds, share of the run, µs per request."""
    result["server_cpu_s"] = used
    result["server_cpu_util"] = used / result["seconds"]
    result["server_cpu_us_per_req"] = used / result["requests"] * 1e6


def pin(cpu: int | None) -> list[str]:
    return ["taskset", "-c", str(cpu)] if cpu is not None else []


def make_servers(store: Path, server_cpu: int | None, tag: str) -> dict[str, Server]:
    env = clean_env()
    single = json.dumps(EXAMPLE).encode()
    servers = {}
    port = free_port()
    servers["floor"] = Server(
        "floor", [*pin(server_cpu), sys.executable, str(BENCH / "floor.py"), "--host", HOST, "--port", str(port)],
        port, raw_request("POST", "/predict", single), env, LOGS / f"floor-{tag}.log",
    )
    port = free_port()
    servers["ours"] = Server(
        "ours",
        [*pin(server_cpu), str(PROJECT_BIN / "oncology"), "serve", "--store", str(store), "--host", HOST,
         "--port", str(port), "--workers", "1"],
        # the defaults, shedding on (its turns cost every request), with a budget of 2 s instead of 0.05 s: this
        # measures throughput at saturation, where every request must be answered, and c=4 of 10,000-row batches
        # queues more than the default budget
        port, raw_request("GET", "/readyz"), {**env, "ONCOLOGY_OVERLOAD_MAX_LAG": "2"}, LOGS / f"ours-{tag}.log",
    )
    port = free_port()
    servers["reference"] = Server(
        "reference",
        [*pin(server_cpu), str(REF_VENV / "bin" / "gunicorn"), "--workers", "1", "--worker-class", "sync",
         "--bind", f"{HOST}:{port}", "--chdir", str(BENCH / "reference"), "app:app"],
        port, raw_request("POST", "/predict", single), {**env, "REFERENCE_MODEL_DIR": str(REF_MODEL)},
        LOGS / f"reference-{tag}.log",
    )
    from oncology.settings import ServeSettings

    port = free_port()
    keep_alive = ServeSettings.model_fields["keep_alive_timeout"].default
    servers["fastapi"] = Server(
        "fastapi",
        # the service's uvicorn options (`_options`) where they apply to a plain uvicorn app
        [*pin(server_cpu), str(FASTAPI_VENV / "bin" / "uvicorn"), "--app-dir", str(BENCH / "reference"),
         "fastapi_app:app", "--host", HOST, "--port", str(port), "--workers", "1", "--loop", "uvloop",
         "--http", "httptools", "--lifespan", "on", "--no-access-log", "--no-server-header",
         "--timeout-keep-alive", f"{keep_alive:g}"],
        port, raw_request("POST", "/predict", single), {**env, "REFERENCE_MODEL_DIR": str(REF_MODEL)},
        LOGS / f"fastapi-{tag}.log",
    )
    return servers


# ---- load --------------------------------------------------------------------------------------

#: wrk's Lua: POST the body in BODY_PATH; `done` prints the summary as one JSON line.  With CHECK, every answer's
#: body is checked by `response` in wrk's thread (see `WRK_CHECK`), and `done` adds the counts of all threads.
WRK_SCRIPT = """\
local f = assert(io.open("BODY_PATH", "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
checked, wrong, bad = -1, 0, ""
CHECK
local threads = {}
setup = function(thread) table.insert(threads, thread) end

done = function(summary, latency, requests)
  local e = summary.errors
  for _, t in ipairs(threads) do
    local n = t:get("checked")
    if n >= 0 then
      checked = math.max(checked, 0) + n
      wrong = wrong + t:get("wrong")
      if bad == "" then bad = t:get("bad") end
    end
  end
  io.write(string.format("WRK_JSON {\\"requests\\": %.0f, \\"duration_us\\": %.0f, \\"bytes\\": %.0f, " ..
    "\\"connect\\": %.0f, \\"read\\": %.0f, \\"write\\": %.0f, \\"status\\": %.0f, \\"timeout\\": %.0f, " ..
    "\\"p50_us\\": %.1f, \\"p90_us\\": %.1f, \\"p99_us\\": %.1f, \\"max_us\\": %.1f, \\"mean_us\\": %.1f, " ..
    "\\"checked\\": %.0f, \\"wrong\\": %.0f}\\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
    checked, wrong))
  if bad ~= "" then io.write("WRK_BAD " .. string.gsub(bad, "[\\r\\n]", " ") .. "\\n") end
end
"""

#: Every single-row answer: a 200 whose body holds the expected probability (within 1e-9), label and model version.
#: JSON members are found by pattern, whitespace allowed: each server formats its JSON its own way.
WRK_CHECK = """\
checked = 0
response = function(status, headers, body)
  checked = checked + 1
  local p = tonumber(string.match(body, '"probability"%s*:%s*([-+%d.eE]+)'))
  local label = string.match(body, '"prediction"%s*:%s*"([^"]*)"')
  local version = string.match(body, '"model_version"%s*:%s*"([^"]*)"')
  if status ~= 200 or p == nil or math.abs(p - (PROBABILITY)) > 1e-9 or label ~= LABEL or version ~= VERSION then
    wrong = wrong + 1
    if bad == "" then bad = status .. " " .. string.sub(body, 1, 300) end
  end
end
"""


@dataclass(frozen=True)
class Expected:
    """What every single-row answer of a server must hold."""

    probability: float
    label: str
    version: str


def _lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string of printable characters is a valid Lua string literal


def wrk_script(name: str, body: bytes, expected: Expected | None = None) -> Path:
    body_path = RESULTS / "load" / f"{name}.json"
    body_path.parent.mkdir(parents=True, exist_ok=True)
    body_path.write_bytes(body)
    check = ""
    if expected is not None:
        check = (WRK_CHECK.replace("PROBABILITY", repr(expected.probability))
                 .replace("LABEL", _lua_string(expected.label)).replace("VERSION", _lua_string(expected.version)))
    script = body_path.parent / f"{name}.lua"
    script.write_text(WRK_SCRIPT.replace("BODY_PATH", str(body_path)).replace("CHECK\n", check))
    return script


def wrk(wrk_bin: str, url: str, script: Path, connections: int, seconds: int, cpu: int | None) -> dict[str, Any]:
    argv = [*pin(cpu), wrk_bin, "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", WRK_TIMEOUT, "--latency",
            "-s", str(script), url]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({proc.returncode}): {' '.join(argv)}\n{proc.stdout}{proc.stderr}")
    raw = json.loads(line.removeprefix("WRK_JSON "))
    bad = next((ln.removeprefix("WRK_BAD ") for ln in proc.stdout.splitlines() if ln.startswith("WRK_BAD ")), "")
    seconds_run = raw["duration_us"] / 1e6
    return {
        "requests": int(raw["requests"]),
        "seconds": seconds_run,
        "rps": raw["requests"] / seconds_run,
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "non_2xx": int(raw["status"]),
        "socket_errors": {k: int(raw[k]) for k in ("connect", "read", "write", "timeout")},
        "mb_read": raw["bytes"] / 1e6,
        "checked": int(raw["checked"]),  # -1: answers not checked (the batch)
        "wrong": int(raw["wrong"]),
        **({"first_wrong": bad} if bad else {}),
    }


def measure_point(wrk_bin: str, server: Server, path: str, script: Path, connections: int, seconds: int,
                  warmup: int, cpu: int | None, what: str) -> dict[str, Any]:
    """Warm up, then one measured wrk run, with the server's CPU time over it (a noise-resistant cost)."""
    url = f"http://{HOST}:{server.port}{path}"
    if warmup:
        check_clean(wrk(wrk_bin, url, script, connections, warmup, cpu), f"{what} (warm-up)", server)
    before = server.cpu_seconds()
    result = wrk(wrk_bin, url, script, connections, seconds, cpu)
    used = server.cpu_seconds() - before
    check_clean(result, what, server)
    add_server_cpu(result, used)
    return result


def check_clean(result: dict[str, Any], what: str, server: Server) -> None:
    errors = sum(result["socket_errors"].values())
    if result["non_2xx"] or errors:
        raise BenchError(
            f"{what}: {result['non_2xx']} non-2xx answers and socket errors {result['socket_errors']} "
            f"in {result['requests']} requests: the numbers are not valid\n--- {server.name} log tail ---\n{server.tail()}"
        )
    if result["requests"] == 0:
        raise BenchError(f"{what}: no request completed")
    if result["wrong"] or 0 <= result["checked"] < result["requests"]:
        raise BenchError(
            f"{what}: {result['wrong']} wrong answers, {result['checked']} checked of {result['requests']}; the first: "
            f"{result.get('first_wrong', '')!r}\n--- {server.name} log tail ---\n{server.tail()}"
        )


# ---- in process --------------------------------------------------------------------------------


def batch_rows() -> list[tuple[int, ...]]:
    """10,000 rows: the bundled data's complete rows, cycled (a realistic mix of benign and malignant)."""
    from oncology.trainer.data import load

    data = [tuple(int(v) for v in row) for row in load().X.tolist()]
    return [data[i % len(data)] for i in range(BATCH_ROWS)]


@contextmanager
def on_cpu(cpu: int | None) -> Iterator[None]:
    if cpu is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def inprocess(store: Path, rows: list[tuple[int, ...]], cpu: int | None) -> dict[str, float]:
    """Rows/s of the model alone on the same rows: best of INPROCESS_REPEATS, on the server's CPU."""
    from oncology_model import FEATURES, Classifier, Tumor

    classifier = Classifier.from_uri(str(store))
    tumors = [Tumor(**dict(zip(FEATURES, row))) for row in rows]

    from oncology.webservice import schemas

    body = json.dumps([dict(zip(FEATURES, row)) for row in rows]).encode()

    def tumor_api() -> object:
        return classifier.predict_proba_batch(tumors), classifier.predict_batch(tumors)

    def json_in_json_out() -> object:
        # the batch handler's work without HTTP: the same body decoded, scored, encoded
        probabilities = classifier.score_rows(schemas.decode_tumors(body, len(rows)))
        labels = [p.value for p in map(classifier.label, probabilities)]
        decisions = classifier.decide_many(probabilities)
        version = classifier.version
        return schemas.encode([schemas.Result(label, p, d, version) for p, label, d in zip(probabilities, labels, decisions)])

    with on_cpu(cpu):
        tumor_api()
        classifier.score_rows(rows)
        json_in_json_out()
        api = best_seconds(tumor_api, INPROCESS_REPEATS)
        raw = best_seconds(lambda: classifier.score_rows(rows), INPROCESS_REPEATS)
        parsed = best_seconds(json_in_json_out, INPROCESS_REPEATS)
    return {"tumor_api_rows_s": len(rows) / api, "score_rows_rows_s": len(rows) / raw,
            "json_rows_s": len(rows) / parsed}


# ---- the run -----------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def summarize_load(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "rps": median([r["rps"] for r in rounds]),
        "p50_ms": median([r["p50_ms"] for r in rounds]),
        "p99_ms": median([r["p99_ms"] for r in rounds]),
        "server_cpu_util": median([r["server_cpu_util"] for r in rounds]),
        "server_cpu_us_per_req": median([r["server_cpu_us_per_req"] for r in rounds]),
        "non_2xx": sum(r["non_2xx"] for r in rounds),
        "socket_errors": sum(sum(r["socket_errors"].values()) for r in rounds),
        "checked": sum(r["checked"] for r in rounds) if all(r["checked"] >= 0 for r in rounds) else None,
        "rounds": rounds,
    }


def cold_starts(servers_for: Callable[[str], dict[str, Server]], starts: int) -> dict[str, Any]:
    """Spawn to first 200, median of `starts`; the servers take turns so that noise spreads evenly."""
    seen: dict[str, list[float]] = {}
    for i in range(starts):
        for name, server in servers_for(f"cold{i}").items():
            started = time.perf_counter()
            server.start()
            try:
                seen.setdefault(name, []).append(wait_ready(server, started))
            finally:
                server.stop()
    return {name: {"median_s": median(values), "samples_s": values} for name, values in seen.items()}


#: The kernel's PM QoS bound on the CPUs' wake-up latency (µs, a 32-bit int): written and kept open, it keeps every
#: CPU out of the idle states slower to leave than the bound; the kernel drops it when the file is closed (at exit too).
CPU_DMA_LATENCY = Path("/dev/cpu_dma_latency")
_CPUS: dict[str, Any] = {"idle": "as the machine idles (keep_cpus_awake not called)"}


def parse_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """``parser``'s arguments and ``--cpus-idle``; from here on the CPUs are kept awake (`keep_cpus_awake`) unless it
    is given, and ``cpu_idle`` says which, for the benchmark's JSON."""
    parser.add_argument("--cpus-idle", action="store_true",
                        help="let idle CPUs halt, as the machine does by itself; by default the CPUs are kept awake "
                             "(/dev/cpu_dma_latency at 0) so that waking the load generator is not billed to the "
                             "server (docs/explanation/performance.md, \"Idle CPUs\")")
    args = parser.parse_args()
    args.cpu_idle = keep_cpus_awake(not args.cpus_idle)
    return args


def keep_cpus_awake(hold: bool = True) -> str:
    """Keep every CPU polling when idle, not halted, for the rest of this process (``hold``; else note that they may
    halt): an idle CPU woken over loopback costs the process that wakes it, and on this machine (a virtual machine
    whose idle CPUs halt at once, ``haltpoll.guest_halt_poll_ns=0``) a server's answer that wakes a halted load
    generator costs the server ~20 µs, so a server slower than its client pays it on every answer and the floor,
    which keeps its client busy, does not.  What was done is in `machine_info` (``cpu_idle``) and returned."""
    if not hold:
        _CPUS["idle"] = "as the machine idles (--cpus-idle)"
    elif "fd" not in _CPUS:
        try:
            fd = os.open(CPU_DMA_LATENCY, os.O_WRONLY)
            os.write(fd, struct.pack("i", 0))
        except OSError as exc:  # not root, or no PM QoS: measured as the machine idles, and said so
            _CPUS["idle"] = f"as the machine idles ({CPU_DMA_LATENCY}: {exc.strerror})"
        else:
            _CPUS["fd"] = fd  # (open until this process exits)
            _CPUS["idle"] = f"kept awake ({CPU_DMA_LATENCY} held at 0 µs)"
    say(f"CPUs: {_CPUS['idle']}")
    return str(_CPUS["idle"])


def machine_info(server_cpu: int | None, client_cpu: int | None) -> dict[str, Any]:
    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), platform.processor())
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "cpu_idle": _CPUS["idle"],
        "loadavg_start": os.getloadavg(),
        "pinning": (f"servers and in-process scoring on CPU {server_cpu}, wrk and the probes on CPU {client_cpu} (taskset)"
                    if server_cpu is not None else "none"),
    }


def ratio_per_round(a: list[dict[str, Any]], b: list[dict[str, Any]], key: str) -> list[float]:
    return [x[key] / y[key] for x, y in zip(a, b)]


def meets(value: float, op: str, bound: float) -> bool:
    return {">=": value >= bound, "<=": value <= bound, "<": value < bound}[op]


def evaluate(report: dict[str, Any]) -> dict[str, Any]:
    single, batch, inproc = report["single"], report["batch"], report["inprocess"]
    ours, floor, ref, fastapi = single["ours"], single["floor"], single["reference"], single["fastapi"]
    best_batch_c = max(batch, key=lambda c: batch[c]["rows_s"])
    batch_rounds = [r["rps"] * BATCH_ROWS for r in batch[best_batch_c]["rounds"]]
    score_rows = [r["score_rows_rows_s"] for r in inproc["rounds"]]
    tumor_api = [r["tumor_api_rows_s"] for r in inproc["rounds"]]
    json_rows = [r["json_rows_s"] for r in inproc["rounds"]]
    mem = report["memory"]["ours"]["after_load"]
    values = {
        "single_c64_vs_reference": median(ratio_per_round(ours["64"]["rounds"], ref["64"]["rounds"], "rps")),
        "single_c64_vs_fastapi": median(ratio_per_round(ours["64"]["rounds"], fastapi["64"]["rounds"], "rps")),
        "single_c64_vs_floor": median(ratio_per_round(ours["64"]["rounds"], floor["64"]["rounds"], "rps")),
        "p99_c8_vs_floor": median(ratio_per_round(ours["8"]["rounds"], floor["8"]["rounds"], "p99_ms")),
        "batch_http_vs_inprocess": median([h / s for h, s in zip(batch_rounds, json_rows)]),
        "cold_start_s": report["cold_start"]["ours"]["median_s"],
        "rss_per_worker_mb": max(mem["VmRSS"], mem["VmHWM"]) / 1024,
    }
    notes = {
        "single_c64_vs_reference": "ours /predict req/s at c=64 / reference's (median of per-round ratios)",
        "single_c64_vs_fastapi": "ours /predict req/s at c=64 / FastAPI's (median of per-round ratios)",
        "single_c64_vs_floor": "ours /predict req/s at c=64 / floor's (median of per-round ratios)",
        "p99_c8_vs_floor": "ours /predict p99 at c=8 / floor's p99 at c=8 (median of per-round ratios)",
        "batch_http_vs_inprocess": f"/predict/batch rows/s (c={best_batch_c}, the best level) / in-process rows/s of the same JSON body decoded, scored and encoded (parsing included on both sides)",
        "cold_start_s": "ours: spawn of `oncology serve` to the first 200 from /readyz (median of starts)",
        "rss_per_worker_mb": "ours: peak resident memory (VmHWM) of the one worker after all the load",
    }
    # The same comparisons in server CPU time per request: what each server does with a CPU to itself.
    # Robust to CPU taken by other processes; for p99 at c=8 (a queue of 8 behind one worker) it is
    # the per-request cost ratio that the p99 ratio follows when nothing else disturbs the run.
    cpu = "server_cpu_us_per_req"
    batch_cpu_rows_s = [BATCH_ROWS / (r[cpu] / 1e6) for r in batch[best_batch_c]["rounds"]]
    cpu_values = {
        "single_c64_vs_reference": median(ratio_per_round(ref["64"]["rounds"], ours["64"]["rounds"], cpu)),
        "single_c64_vs_fastapi": median(ratio_per_round(fastapi["64"]["rounds"], ours["64"]["rounds"], cpu)),
        "single_c64_vs_floor": median(ratio_per_round(floor["64"]["rounds"], ours["64"]["rounds"], cpu)),
        "p99_c8_vs_floor": median(ratio_per_round(ours["8"]["rounds"], floor["8"]["rounds"], cpu)),
        "batch_http_vs_inprocess": median([b / s for b, s in zip(batch_cpu_rows_s, json_rows)]),
    }
    targets = {}
    for key, (op, bound) in TARGETS.items():
        value = values[key]
        check = functools.partial(meets, op=op, bound=bound)
        targets[key] = {"value": value, "op": op, "target": bound, "pass": check(value), "what": notes[key]}
        if key in cpu_values:
            targets[key]["cpu_value"] = cpu_values[key]
            targets[key]["cpu_pass"] = check(cpu_values[key])
    explain = report["explain"]
    targets["_info"] = {
        # ours / each reference at every concurrency: req/s, and server CPU µs per request (theirs / ours)
        "vs_references": {
            name: {c: {"rps": median(ratio_per_round(ours[c]["rounds"], single[name][c]["rounds"], "rps")),
                       "cpu": median(ratio_per_round(single[name][c]["rounds"], ours[c]["rounds"], cpu))}
                   for c in ours}
            for name in ("reference", "fastapi")},
        "batch_http_vs_inprocess_tumor_api": median([h / t for h, t in zip(batch_rounds, tumor_api)]),
        "batch_http_vs_inprocess_score_rows": median([h / s for h, s in zip(batch_rounds, score_rows)]),
        "batch_concurrency_used": best_batch_c,
        "explain_c64_vs_plain": median(ratio_per_round(explain["64"]["rounds"], ours["64"]["rounds"], "rps")),
        "explain_c64_vs_floor": median(ratio_per_round(explain["64"]["rounds"], floor["64"]["rounds"], "rps")),
        "explain_c64_cpu_us_per_req_vs_plain": median(ratio_per_round(explain["64"]["rounds"], ours["64"]["rounds"], cpu)),
    }
    return targets


def starved(report: dict[str, Any]) -> list[str]:
    """The saturated points (concurrency >= 4) whose server did not get its CPU: their req/s and p99 are pessimistic."""
    found = []
    points = [(f"{n} /predict", per) for n, per in report["single"].items()] + [
        (f"ours {EXPLAIN_PATH}", report["explain"]), ("ours /predict/batch", report["batch"])]
    for what, per in points:
        for c, summary in per.items():
            if int(c) < 4:
                continue
            for i, r in enumerate(summary["rounds"], start=1):
                if r["server_cpu_util"] < STARVED_BELOW:
                    found.append(f"{what} c={c} round {i}: server CPU {r['server_cpu_util'] * 100:.0f}%")
    return found


def render(report: dict[str, Any]) -> str:
    single, batch, inproc = report["single"], report["batch"], report["inprocess"]
    out = [
        f"## oncology benchmark {report['timestamp']}",
        "",
        f"Machine: {report['machine']['cpus']} CPUs ({report['machine']['cpu_model']}), load average at start "
        f"{', '.join(f'{x:.2f}' for x in report['machine']['loadavg_start'])}, at end "
        f"{', '.join(f'{x:.2f}' for x in report['machine']['loadavg_end'])}.  "
        f"Pinning: {report['machine']['pinning']}.  {report['config']['rounds']} interleaved rounds of "
        f"{report['config']['duration_s']} s per point after a {report['config']['warmup_s']} s warm-up; medians.",
        "",
        "| server | route | conc | req/s | rows/s | p50 ms | p99 ms | non-2xx | socket errors | server CPU % | server CPU µs/req |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    labels = {"floor": "floor (bare ASGI, uvicorn `_options`)", "ours": "ours (`oncology serve`)",
              "reference": "reference (Flask + gunicorn sync, sklearn)",
              "fastapi": "FastAPI (uvicorn, pydantic, sklearn)"}
    for name in ("floor", "ours", "reference", "fastapi"):
        for c, s in single[name].items():
            out.append(f"| {labels[name]} | /predict | {c} | {s['rps']:,.0f} | {s['rps']:,.0f} | {s['p50_ms']:.2f} | "
                       f"{s['p99_ms']:.2f} | {s['non_2xx']} | {s['socket_errors']} | {s['server_cpu_util'] * 100:.0f} | "
                       f"{s['server_cpu_us_per_req']:,.0f} |")
    for c, s in report["explain"].items():
        out.append(f"| {labels['ours']} | {EXPLAIN_PATH} | {c} | {s['rps']:,.0f} | {s['rps']:,.0f} | {s['p50_ms']:.2f} | "
                   f"{s['p99_ms']:.2f} | {s['non_2xx']} | {s['socket_errors']} | {s['server_cpu_util'] * 100:.0f} | "
                   f"{s['server_cpu_us_per_req']:,.0f} |")
    for c, s in batch.items():
        out.append(f"| {labels['ours']} | /predict/batch ({BATCH_ROWS:,} rows) | {c} | {s['rps']:,.2f} | {s['rows_s']:,.0f} | "
                   f"{s['p50_ms']:.1f} | {s['p99_ms']:.1f} | {s['non_2xx']} | {s['socket_errors']} | "
                   f"{s['server_cpu_util'] * 100:.0f} | {s['server_cpu_us_per_req']:,.0f} |")
    out.append(f"| in process | `predict_proba_batch` + `predict_batch` (Tumor) | - | - | {inproc['tumor_api_rows_s']:,.0f} | - | - | - | - | - | - |")
    out.append(f"| in process | `score_rows` (int tuples) | - | - | {inproc['score_rows_rows_s']:,.0f} | - | - | - | - | - | - |")
    out.append(f"| in process | same JSON body: decode + score + encode | - | - | {inproc['json_rows_s']:,.0f} | - | - | - | - | - | - |")
    out += [
        "",
        "| server | cold start ms (median) | cold starts ms | VmRSS MB after load | VmHWM MB after load | VmRSS MB idle |",
        "| --- | ---: | --- | ---: | ---: | ---: |",
    ]
    for name in ("floor", "ours", "reference", "fastapi"):
        cold = report["cold_start"][name]
        mem = report["memory"][name]
        samples = ", ".join(f"{s * 1000:.0f}" for s in cold["samples_s"])
        out.append(f"| {labels[name]}{' master+worker' if name == 'reference' else ''} | {cold['median_s'] * 1000:.0f} | "
                   f"{samples} | {mem['after_load']['VmRSS'] / 1024:.1f} | {mem['after_load']['VmHWM'] / 1024:.1f} | "
                   f"{mem['idle']['VmRSS'] / 1024:.1f} |")
        if name == "reference":
            w = mem["worker"]
            out.append(f"| reference worker alone | | | {w['after_load']['VmRSS'] / 1024:.1f} | {w['after_load']['VmHWM'] / 1024:.1f} | "
                       f"{w['idle']['VmRSS'] / 1024:.1f} |")
    if report.get("model_import"):
        mi = report["model_import"]
        out += ["", f"Model import (`import oncology_model` + `Classifier()`, fresh interpreter, venv with only the wheel "
                    f"{mi['wheel']}): median {mi['import_and_load_ms_median']:.0f} ms in-interpreter (min "
                    f"{mi['import_and_load_ms_min']:.0f}), whole process {mi['process_wall_ms_median']:.0f} ms; "
                    f"{mi['runs']} runs."]
    out += ["", "Targets (ratios: median of per-round ratios of interleaved measurements):", ""]
    for key, t in report["targets"].items():
        if key.startswith("_"):
            continue
        line = f"- {'PASS' if t['pass'] else 'FAIL'} {key}: {t['value']:.3g} {t['op']} {t['target']:g}  ({t['what']})"
        if "cpu_value" in t:
            line += f"; in server CPU µs/req: {t['cpu_value']:.3g} ({'pass' if t['cpu_pass'] else 'fail'})"
            if t["cpu_pass"] != t["pass"]:
                line += " - the two disagree: machine noise decided the wall-clock verdict"
        out.append(line)
    info = report["targets"]["_info"]
    for name, what in (("reference", "the reference (Flask)"), ("fastapi", "FastAPI")):
        per_c = info["vs_references"][name]
        out.append(f"- info: ours vs {what}, /predict at c=" + " / ".join(per_c) + ": "
                   + " / ".join(f"{r['rps']:.3g}x" for r in per_c.values()) + " in req/s, "
                   + " / ".join(f"{r['cpu']:.3g}x" for r in per_c.values()) + " in server CPU µs/req")
    if report["starved"]:
        out.append(f"- WARNING: {len(report['starved'])} saturated point(s) ran with the server under "
                   f"{STARVED_BELOW:.0%} of its CPU (other processes took it): their req/s and p99 are pessimistic and "
                   f"the ratios noisier; the CPU µs/req figures hold. {'; '.join(report['starved'])}")
    out.append(f"- info: {EXPLAIN_PATH} at c=64: {info['explain_c64_vs_plain']:.3g} of plain /predict's req/s "
               f"({info['explain_c64_cpu_us_per_req_vs_plain']:.3g}x its server CPU per request), "
               f"{info['explain_c64_vs_floor']:.3g} of the floor's")
    out.append(f"- info: /predict/batch rows/s vs the in-process Tumor API (predict_proba_batch + predict_batch): "
               f"{info['batch_http_vs_inprocess_tumor_api']:.3g}")
    out.append(f"- info: /predict/batch rows/s vs in-process `score_rows` on rows already parsed (no JSON at all): "
               f"{info['batch_http_vs_inprocess_score_rows']:.3g}")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--duration", type=int, default=3, help="seconds of load per point (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of warm-up load before each point (default 1)")
    parser.add_argument("--cold-starts", type=int, default=COLD_STARTS)
    parser.add_argument("--no-pin", action="store_true", help="do not pin servers and wrk to separate CPUs")
    parser.add_argument("--skip-model-import", action="store_true", help="leave out benchmarks/model_import.py")
    parser.add_argument("--quick", action="store_true", help="1 round of 1 s, 1 cold start: a smoke run, not numbers")
    parser.add_argument("--strict", action="store_true", help="exit 3 when a target is missed")
    args = parse_args(parser)
    if args.quick:
        args.rounds, args.duration, args.cold_starts = 1, 1, 1

    try:
        import oncology.webservice.server  # noqa: F401
    except ImportError as exc:
        raise BenchError(f"run this with the project's venv (.venv/bin/python benchmarks/run.py): {exc}") from None
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` stops the servers
    RESULTS.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(LOGS, ignore_errors=True)
    LOGS.mkdir(parents=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, client_cpu = split_cpus() if not args.no_pin else (None, None)
    started_at = time.perf_counter()

    wrk_bin = ensure_wrk()
    store = RESULTS / "store"
    version = make_store(store)
    ref_packages = ensure_reference_venv()
    fastapi_packages = ensure_fastapi_venv()
    say("fitting the reference estimator (same family and hyper-parameters as the bundle)")
    fitted = json.loads(run([sys.executable, str(BENCH / "reference" / "fit.py"), "--store", str(store), "--out",
                             str(REF_MODEL)], "benchmarks/reference/fit.py", env=clean_env()).stdout)

    rows = batch_rows()
    batch_body = json.dumps([dict(zip(EXAMPLE, row)) for row in rows]).encode()
    batch_script = wrk_script("batch", batch_body)

    report: dict[str, Any] = {
        "timestamp": stamp,
        "machine": machine_info(server_cpu, client_cpu),
        "config": {"rounds": args.rounds, "duration_s": args.duration, "warmup_s": args.warmup,
                   "single_concurrency": list(SINGLE_CONCURRENCY), "batch_concurrency": list(BATCH_CONCURRENCY),
                   "batch_rows": BATCH_ROWS, "batch_body_bytes": len(batch_body), "wrk": "wrk -t1 --latency",
                   "cold_starts": args.cold_starts, "poll_s": POLL_SECONDS},
        "model": {"version": version, "reference": fitted},
        "versions": {"oncology": metadata.version("oncology"), "uvicorn": metadata.version("uvicorn"),
                     "starlette": metadata.version("starlette"), "reference_venv": ref_packages,
                     "fastapi_venv": fastapi_packages},
    }
    try:
        if client_cpu is not None:
            os.sched_setaffinity(0, {client_cpu})  # this process polls and drives: keep it off the server's CPU

        say(f"cold starts: {args.cold_starts} of each server, taking turns")
        report["cold_start"] = cold_starts(lambda tag: make_servers(store, server_cpu, tag), args.cold_starts)

        servers = make_servers(store, server_cpu, "load")
        memory: dict[str, Any] = {}
        for server in servers.values():
            server.start()
            wait_ready(server, time.perf_counter())
        time.sleep(0.5)
        for name, server in servers.items():
            memory[name] = {"pid": server.pid, "idle": memory_kb(server.pid)}
        ref = servers["reference"]
        workers = ref.children()
        if len(workers) != 1:
            raise BenchError(f"gunicorn should have exactly one worker, found {workers}")
        memory["reference"]["worker"] = {"pid": workers[0], "idle": memory_kb(workers[0])}
        expected = sanity(servers, rows, batch_body)
        single_scripts = {name: wrk_script(f"single-{name}", json.dumps(EXAMPLE).encode(), check)
                          for name, check in expected.items()}
        report["expected_answers"] = {name: vars(check) for name, check in expected.items()}

        single: dict[str, dict[str, list[dict[str, Any]]]] = {n: {str(c): [] for c in SINGLE_CONCURRENCY} for n in servers}
        explain: dict[str, list[dict[str, Any]]] = {str(c): [] for c in SINGLE_CONCURRENCY}
        batch: dict[str, list[dict[str, Any]]] = {str(c): [] for c in BATCH_CONCURRENCY}
        inproc_rounds = []
        # ours with explanations takes its turn beside the three servers' plain /predict
        names = [*servers, "ours+explain"]
        for r in range(args.rounds):
            order = names[r % len(names):] + names[: r % len(names)]
            say(f"round {r + 1}/{args.rounds}: order {', '.join(order)}")
            for c in SINGLE_CONCURRENCY:
                for name in order:
                    if name == "ours+explain":
                        explain[str(c)].append(measure_point(
                            wrk_bin, servers["ours"], EXPLAIN_PATH, single_scripts[name], c, args.duration, args.warmup,
                            client_cpu, f"ours {EXPLAIN_PATH} c={c}"))
                        continue
                    single[name][str(c)].append(measure_point(
                        wrk_bin, servers[name], "/predict", single_scripts[name], c, args.duration, args.warmup, client_cpu,
                        f"{name} /predict c={c}"))
            for c in BATCH_CONCURRENCY:
                batch[str(c)].append(measure_point(
                    wrk_bin, servers["ours"], "/predict/batch", batch_script, c, args.duration, args.warmup, client_cpu,
                    f"ours /predict/batch c={c}"))
            inproc_rounds.append(inprocess(store, rows, server_cpu))

        for name, server in servers.items():
            if server.exited():
                raise BenchError(f"{name} died during the load:\n{server.tail()}")
            memory[name]["after_load"] = memory_kb(server.pid)
        if ref.children() != workers:
            raise BenchError(f"gunicorn's worker changed during the load ({workers} -> {ref.children()}): see {ref.log}")
        memory["reference"]["worker"]["after_load"] = memory_kb(workers[0])
        master, worker = memory["reference"], memory["reference"]["worker"]
        for phase in ("idle", "after_load"):  # gunicorn's memory is master + worker
            master[phase] = {k: master[phase][k] + worker[phase][k] for k in ("VmRSS", "VmHWM")}
        report["memory"] = memory
    finally:
        stop_all()
        if client_cpu is not None:
            os.sched_setaffinity(0, set(cpus))

    report["single"] = {n: {c: summarize_load(v) for c, v in per.items()} for n, per in single.items()}
    report["explain"] = {c: summarize_load(v) for c, v in explain.items()}
    report["batch"] = {}
    for c, v in batch.items():
        s = summarize_load(v)
        s["rows_s"] = s["rps"] * BATCH_ROWS
        report["batch"][c] = s
    report["inprocess"] = {
        "tumor_api_rows_s": median([r["tumor_api_rows_s"] for r in inproc_rounds]),
        "score_rows_rows_s": median([r["score_rows_rows_s"] for r in inproc_rounds]),
        "json_rows_s": median([r["json_rows_s"] for r in inproc_rounds]),
        "repeats_per_round": INPROCESS_REPEATS,
        "rounds": inproc_rounds,
    }
    if not args.skip_model_import:
        say("model import: building the wheel, a fresh venv holding only it, 10 fresh interpreters")
        sys.path.insert(0, str(BENCH))
        from model_import import measure

        report["model_import"] = measure(str(store), runs=10, cpu=server_cpu, results=RESULTS)
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["targets"] = evaluate(report)
    report["starved"] = starved(report)
    report["elapsed_s"] = time.perf_counter() - started_at

    out = RESULTS / f"bench-{stamp}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    table = render(report)
    out.with_suffix(".md").write_text(table + "\n")
    print(table)
    print(f"\nJSON: {out.relative_to(ROOT)}  (Markdown beside it; {report['elapsed_s']:.0f} s)")
    missed = [k for k, t in report["targets"].items() if not k.startswith("_") and not t["pass"]]
    return 3 if (missed and args.strict) else 0


def sanity(servers: dict[str, Server], rows: list[tuple[int, ...]], batch_body: bytes) -> dict[str, Expected]:
    """Before any load: each server answers, and ours and the references give the same probability and version.

    Returns what every single-row answer of each server must hold under load (ours with explanations under
    "ours+explain"): ours' probability and version, and each server's own label (scikit-learn's `predict` cuts at
    0.5, the service at its tuned threshold); the floor's own constant.
    """
    body = json.dumps(EXAMPLE).encode()
    answers = {}
    for name in servers:
        status, data = http_call(servers[name].port, raw_request("POST", "/predict", body))
        if status != 200:
            raise BenchError(f"{name} /predict answered {status}: {data[:300]!r}")
        answers[name] = json.loads(data)
    ours = answers["ours"]
    for name in ("reference", "fastapi"):
        if sorted(answers[name]) != ["model_version", "prediction", "probability"]:
            raise BenchError(f"{name} answered {answers[name]}: not the reference's answer shape")
        if abs(ours["probability"] - answers[name]["probability"]) > 1e-9 or ours["model_version"] != answers[name]["model_version"]:
            raise BenchError(f"ours and {name} disagree: {answers}")
    status, data = http_call(servers["ours"].port, raw_request("POST", EXPLAIN_PATH, body))
    explained = json.loads(data) if status == 200 else {}
    if "explanation" not in explained or "explanation" in ours or explained.get("probability") != ours["probability"]:
        raise BenchError(f"ours {EXPLAIN_PATH} answered {status}: {data[:300]!r}; plain /predict: {ours}")
    status, data = http_call(servers["ours"].port, raw_request("POST", "/predict/batch", batch_body))
    if status != 200 or len(json.loads(data)) != len(rows):
        raise BenchError(f"ours /predict/batch answered {status}: {data[:300]!r}")
    expected = {name: Expected(ours["probability"], answer["prediction"], ours["model_version"])
                for name, answer in answers.items()}
    floor = answers["floor"]
    expected["floor"] = Expected(floor["probability"], floor["prediction"], floor["model_version"])
    expected["ours+explain"] = Expected(ours["probability"], explained["prediction"], ours["model_version"])
    return expected


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"BENCH FAILED: {exc}", file=sys.stderr)
        sys.exit(1)
