"""Which version answers a request while a release is under way: champion, candidate (canary) or
champion with the candidate scoring alongside (shadow).  Knows no HTTP.

The plan (`oncology_model.release.ReleasePlan`) comes from the registry with the champion alias, and
every replica applies it alike: a request belongs to the candidate's share when its routing key (the
client's ``x-routing-key``, else the request id) hashes into it (`oncology_model.release.bucket`), so
every replica sends one key to the same version, and a key sent to the candidate at 5% stays there at
25% and 50%.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple

from oncology_model.classifier import Classifier
from oncology_model.release import CANARY, ReleasePlan, bucket

log = logging.getLogger(__name__)

#: The arms, as answers, metrics and the prediction log name them.
CHAMPION: Final = "champion"
CANDIDATE: Final = "candidate"
SHADOW: Final = "shadow"
#: A request that named its version (V2 ``/versions/{v}/infer``): served by it, never routed or judged.
PINNED: Final = "pinned"
#: Shadow scorings waiting for the shadow thread; past this, new ones are dropped (and counted).
SHADOW_QUEUE: Final = 1000


@dataclass(frozen=True)
class Release:
    """A release as one replica serves it: the plan and the candidate's loaded model."""

    plan: ReleasePlan
    candidate: Classifier


class Route(NamedTuple):
    classifier: Classifier
    arm: str
    shadow: Classifier | None  # the candidate, to score the same rows off the answer path


def route(champion: Classifier, release: Release | None, key: str) -> Route:
    """The version that answers the request with routing key ``key``, and its arm."""
    if release is None:
        return Route(champion, CHAMPION, None)
    inside = bucket(release.plan.id, key) < release.plan.share
    if release.plan.mode == CANARY:
        return Route(release.candidate, CANDIDATE, None) if inside else Route(champion, CHAMPION, None)
    return Route(champion, CHAMPION, release.candidate if inside else None)


ShadowJob = tuple[str, str, Classifier, Sequence[Sequence[int]]]


class ShadowScorer:
    """Scores shadow requests on a thread of its own, after the champion has answered.

    ``submit`` never waits: past `SHADOW_QUEUE` waiting jobs a job is dropped and ``on_drop`` called.
    """

    def __init__(self, score: Callable[[str, str, Classifier, Sequence[Sequence[int]]], None],
                 on_drop: Callable[[], None]) -> None:
        self._score = score
        self._on_drop = on_drop
        self._jobs: queue.Queue[ShadowJob] = queue.Queue(SHADOW_QUEUE)
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()
        self.errors: list[BaseException] = []

    def submit(self, route_name: str, request_id: str, candidate: Classifier, rows: Sequence[Sequence[int]]) -> None:
        if self._thread is None:
            with self._start:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="shadow-scorer", daemon=True)
                    self._thread.start()
        try:
            self._jobs.put_nowait((route_name, request_id, candidate, rows))
        except queue.Full:
            self._on_drop()

    def drain(self, timeout: float) -> bool:
        """Wait (up to ``timeout`` seconds) until every submitted job is scored; True if none is left."""
        deadline = time.monotonic() + timeout
        while self._jobs.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._jobs.unfinished_tasks

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                self._score(*job)
            except Exception as exc:  # the candidate's failure is counted by the scorer; a bug here is kept
                self.errors.append(exc)
                log.exception("shadow scoring failed")
            finally:
                self._jobs.task_done()
