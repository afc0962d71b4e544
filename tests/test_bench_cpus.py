"""benchmarks/run.py's `keep_cpus_awake`: the benchmarks hold the kernel's PM QoS bound at 0 µs while they measure,
so that a server is not billed for waking a halted load generator (docs/explanation/performance.md, "Idle CPUs"),
and release it when they exit; without the means, they say they measured as the machine idles."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import run as bench  # noqa: E402  (benchmarks/run.py)

HOLDER = ("import sys; sys.path.insert(0, sys.argv[1]); import run; print(run.keep_cpus_awake(sys.argv[2] == 'hold'), "
          "flush=True); sys.stdin.read()")


def bound() -> int:
    """The kernel's current bound on the CPUs' wake-up latency, in µs."""
    with open(bench.CPU_DMA_LATENCY, "rb") as file:
        return int(struct.unpack("i", file.read(4))[0])


@pytest.mark.skipif(not (os.geteuid() == 0 and bench.CPU_DMA_LATENCY.exists()), reason="needs root and PM QoS")
@pytest.mark.parametrize("how", ["hold", "idle"])
def test_the_bound_is_zero_while_a_benchmark_runs_and_as_it_was_once_it_exits(how: str) -> None:
    before = bound()
    assert before > 0, "another process holds the CPUs awake: nothing to tell apart"
    with subprocess.Popen([sys.executable, "-c", HOLDER, str(BENCHMARKS), how], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as holder:
        try:
            assert holder.stdout is not None and holder.stdin is not None
            said = holder.stdout.readline().strip()  # (said once the bound is written)
            if how == "hold":
                assert said == f"kept awake ({bench.CPU_DMA_LATENCY} held at 0 µs)"
                assert bound() == 0
            else:
                assert said == "as the machine idles (--cpus-idle)"
                assert bound() == before
            holder.stdin.close()
            assert holder.wait(timeout=30) == 0
        finally:
            holder.kill()
    assert bound() == before


def test_without_the_means_it_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(bench, "CPU_DMA_LATENCY", tmp_path / "cpu_dma_latency")  # (no such file)
    monkeypatch.setattr(bench, "_CPUS", {})
    said = bench.keep_cpus_awake()
    assert said == f"as the machine idles ({tmp_path / 'cpu_dma_latency'}: No such file or directory)"
    assert bench.machine_info(None, None)["cpu_idle"] == said
