"""Real processes racing on one registry: promoters and publishers that start at the same instant.

Each racer sets up (imports, store client), says it is ready, and waits for a "go" file that the
test creates once all are ready: then all act at once; each prints one JSON line per outcome.  Used
by the local tests here and by the S3 tests in ``tests/integration`` (the same code, another store).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bundle_factory import bundle_files
from oncology_model.registry import ModelRegistry

HERE = Path(__file__).resolve().parent

#: A racer's start line, for the end of its set-up (imports, clients built): it says it is ready, then waits for
#: the "go" file named by its second argument (``sys.argv[2]``), so that all act at once.
START_LINE = """
import os, sys, time
go = sys.argv[2]
open(f"{go}.ready-{os.getpid()}", "w").close()  # set-up done: at the line
deadline = time.monotonic() + 120
while not os.path.exists(go):  # every racer waits at the line, then all act at once
    assert time.monotonic() < deadline, "never started"
    time.sleep(0.001)
"""

_WAIT = """
import json, sys
from oncology_model.registry import ModelRegistry
from oncology_model.storage import open_store
registry = ModelRegistry(open_store(sys.argv[1]))  # the S3 client built before the start line
""" + START_LINE

MOVER = _WAIT + """
action, version = sys.argv[3], sys.argv[4]
move = registry.promote(version) if action == "promote" else registry.rollback()
print(json.dumps(move))
"""

PUBLISHER = _WAIT + """
from bundle_factory import bundle_files
writer, rounds = int(sys.argv[3]), int(sys.argv[4])
for n in range(rounds):
    intercept = -(writer * 100 + n)  # this writer's and this round's mark in the model's parameters
    bundle = registry.publish_next(lambda version: bundle_files(version, intercept=intercept))
    print(json.dumps({"version": bundle.version, "intercept": intercept}))
"""


def race(script: str, uri: str, argvs: list[list[str]], go: Path) -> list[list[Any]]:
    """Start one process per argv on the store at ``uri``, let them all go at once; the JSON lines each printed."""
    return start_together(script, [[uri, str(go), *argv] for argv in argvs], go)


def start_together(script: str, argvs: list[list[str]], go: Path, env: dict[str, str] | None = None,
                   timeout: float = 120) -> list[list[Any]]:
    """Run ``script`` (ending its set-up with `START_LINE`, ``str(go)`` its second argument) once per argv, let all
    go at once when all are at the line; the JSON lines each printed.

    Every process must exit 0 within ``timeout`` seconds of the start: a racer's failure (its traceback) fails the
    test.  ``env``: more variables for the racers.
    """
    path = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {}), "PYTHONPATH": path},
        )
        for argv in argvs
    ]
    try:
        deadline = time.monotonic() + 120
        while len(list(go.parent.glob(f"{go.name}.ready-*"))) < len(procs):  # all at the line
            early = [p for p in procs if p.poll() is not None]
            assert not early, f"a racer exited before the start: {early[0].communicate()}"
            assert time.monotonic() < deadline, "the racers never got ready"
            time.sleep(0.01)
        go.touch()
        outs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    failures = [f"racer {argv} exited {p.returncode}:\n{err}" for p, argv, (_, err) in zip(procs, argvs, outs) if p.returncode]
    assert not failures, "\n".join(failures)
    return [[json.loads(line) for line in out.splitlines()] for out, _ in outs]


def check_history_chain(registry: ModelRegistry, alias: str = "champion") -> list[dict[str, Any]]:
    """The alias's history is one consistent chain: each move starts where the previous one ended,
    and each rollback goes to the version before the latest promotion still in force."""
    history = registry.history(alias)
    current: str | None = None
    stack: list[str] = []
    for move in history:
        assert move["from"] == current, (move, history)
        if move["action"] == "promote":
            stack.append(move["to"])
        else:
            assert move["action"] == "rollback", move
            assert len(stack) >= 2 and move["to"] == stack[-2], (move, stack)
            stack.pop()
        current = move["to"]
    assert registry.resolve(alias) == current
    return history


def race_promoters_then_rollbacks(registry: ModelRegistry, uri: str, tmp_path: Path) -> None:
    """8 promoters of 8 versions at once, then 4 rollbacks at once: no move lost, one chain."""
    versions = [f"1.0.{n}" for n in range(1, 9)]
    for version in versions:
        registry.publish(bundle_files(version))
    promotions = [m for [m] in race(MOVER, uri, [["promote", v] for v in versions], tmp_path / "go-promote")]
    history = check_history_chain(registry)
    assert _same_moves(history, promotions)  # each racer's move recorded, once, as it was returned
    assert sorted((m["to"] for m in history), key=lambda v: int(v.rsplit(".", 1)[1])) == versions
    order = [m["to"] for m in history]

    rollbacks = [m for [m] in race(MOVER, uri, [["rollback", ""]] * 4, tmp_path / "go-rollback")]
    history = check_history_chain(registry)
    assert _same_moves(history[8:], rollbacks)
    assert [m["to"] for m in history[8:]] == order[-5:-1][::-1]  # back down the promotions, one by one
    assert registry.resolve("champion") == order[3]


def race_publishers(registry: ModelRegistry, uri: str, tmp_path: Path, writers: int = 4, rounds: int = 3) -> None:
    """4 publishers at once, 3 versions each: distinct versions, each complete with its writer's files."""
    results = race(PUBLISHER, uri, [[str(w), str(rounds)] for w in range(writers)], tmp_path / "go-publish")
    published = [r for lines in results for r in lines]
    assert len(published) == writers * rounds
    versions = [r["version"] for r in published]
    assert len(set(versions)) == len(versions), versions  # no version given to two writers
    assert registry.versions() == sorted(versions, key=lambda v: int(v.rsplit(".", 1)[1]))
    for result in published:
        bundle = registry.load(result["version"])  # manifest and every hash verified
        assert bundle.files == bundle_files(result["version"], intercept=result["intercept"])  # its writer's, whole


def _same_moves(recorded: list[dict[str, Any]], returned: list[dict[str, Any]]) -> bool:
    return sorted(json.dumps(m, sort_keys=True) for m in recorded) == sorted(json.dumps(m, sort_keys=True) for m in returned)
