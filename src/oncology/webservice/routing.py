"""Which version answers a request while a release is under way: champion, candidate (canary) or
champion with the candidate scoring alongside (shadow).  Knows no HTTP.

The plan (`oncology_model.release.ReleasePlan`) comes from the registry with the champion alias, and
every replica applies it alike: a request belongs to the candidate's share when its routing key (the
client's ``x-routing-key``, else the request id) hashes into it (`oncology_model.release.bucket`), so
every replica sends one key to the same version, and a key sent to the candidate at 5% stays there at
25% and 50%.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from oncology_model.classifier import Classifier
from oncology_model.release import CANARY, ReleasePlan, within

log = logging.getLogger(__name__)

#: The arms, as answers, metrics and the prediction log name them.
CHAMPION: Final = "champion"
CANDIDATE: Final = "candidate"
SHADOW: Final = "shadow"
#: A request that named its version (V2 ``/versions/{v}/infer``): served by it, never routed or judged.
PINNED: Final = "pinned"
#: Shadow scorings waiting for their turn on the event loop; past this, new ones are dropped (and counted).
SHADOW_QUEUE: Final = 1000


class Route(NamedTuple):
    classifier: Classifier
    arm: str
    shadow: Classifier | None  # the candidate, to score the same rows off the answer path
    #: the answer's header pairs naming version and arm (``x-model-version``, ``x-model-arm``), encoded once per
    #: route: a release's routes are made once per champion, so a request only reads them
    headers: tuple[tuple[bytes, bytes], ...] = ()


def named(classifier: Classifier, arm: str, shadow: Classifier | None = None) -> Route:
    """The route to ``classifier`` in ``arm``, with the header pairs that name them."""
    return Route(classifier, arm, shadow, ((b"x-model-version", classifier.version.encode()), (b"x-model-arm", arm.encode())))


@dataclass(frozen=True)
class Release:
    """A release as one replica serves it: the plan and the candidate's loaded model."""

    plan: ReleasePlan
    candidate: Classifier
    #: the plan's current share and mode, read once (every request reads them)
    share: float = field(init=False)
    canary: bool = field(init=False)
    #: whether a routing key falls in the share: ``plan.bucket(key) < share``, computed for less (`within`)
    inside: Callable[[str], bool] = field(init=False, repr=False, compare=False)
    #: a share of 100% (a shadow at 100%): every request is inside, no key is read
    everyone: bool = field(init=False)
    #: (champion, its route outside the share, the route inside it), made once per champion, not per request
    _routes: tuple[Classifier | None, Route | None, Route | None] = field(
        init=False, repr=False, compare=False, default=(None, None, None))

    def __post_init__(self) -> None:
        object.__setattr__(self, "share", self.plan.share)
        object.__setattr__(self, "canary", self.plan.mode == CANARY)
        object.__setattr__(self, "inside", within(self.plan.id, self.share))
        object.__setattr__(self, "everyone", self.share >= 1.0)  # as `within`: a share of 1 takes every key

    def route(self, champion: Classifier, key: str) -> Route:
        """The route of the request with routing key ``key``, ``champion`` answering outside the share."""
        cached, outside, inside = self._routes
        if cached is not champion or outside is None or inside is None:  # a new champion (a hot reload)
            outside, inside = self._make_routes(champion)
        return inside if self.inside(key) else outside

    def route_all(self, champion: Classifier) -> Route:
        """The route inside the share, where `everyone` sends every request (no key to read)."""
        cached, outside, inside = self._routes
        if cached is not champion or inside is None:
            outside, inside = self._make_routes(champion)
        return inside

    def _make_routes(self, champion: Classifier) -> tuple[Route, Route]:
        outside = named(champion, CHAMPION)
        inside = named(self.candidate, CANDIDATE) if self.canary else named(champion, CHAMPION, self.candidate)
        object.__setattr__(self, "_routes", (champion, outside, inside))
        return outside, inside


def route(champion: Classifier, release: Release | None, key: str) -> Route:
    """The version that answers the request with routing key ``key``, and its arm."""
    if release is None:
        return Route(champion, CHAMPION, None)
    return release.route_all(champion) if release.everyone else release.route(champion, key)


#: route, request id, the candidate, the rows, and the prediction log's lines of the champion's answer (None: not
#: logged), from which the shadow's lines are made
ShadowJob = tuple[str, str, Classifier, Sequence[Sequence[int]], Sequence[Any] | None]


class ShadowScorer:
    """Scores shadow requests after the champion's answer: on the event loop, once the request's handler is done.

    ``submit`` (called while the request is handled, on the event loop) only queues the job and schedules
    one pass over the queue for the loop's next turn (``call_soon``): after the request's task has given
    the loop back, which on the hot routes is once its answer has been handed to the connection.  A pass
    hands every job queued since to ``score`` at once, which scores their rows in one call of the model.
    No thread: a thread of its own would fight the event loop for the interpreter lock at every job (it
    cost ~30% of the throughput when measured; see benchmarks/release.py).  Past `SHADOW_QUEUE` waiting
    jobs a job is dropped and ``on_drop`` called.  Outside an event loop (a direct call), the job is
    scored at once.

    The hot routes' requests (one row, its champion line logged) wait in three plain lists, ``rows``, ``lines`` and
    ``times`` (the row, the champion's line and its scoring time), for the candidate ``due`` (the one of this turn's
    pass; None while no pass is due): while ``due`` is the request's candidate (or `open` makes it so), the caller
    appends to them itself (`Core.score`), with no call, no job, no count and no test of the bound.  The pass first hands the
    lines and times to ``count`` (the champion's answers, counted whatever the candidate does), then keeps the first
    that fit in `SHADOW_QUEUE` beside the jobs, drops the rest (counted), and hands their rows and lines to
    ``score_lines`` in one call.  Any other request is a job (`submit`).
    """

    def __init__(self, score: Callable[[Sequence[ShadowJob]], None],
                 score_lines: Callable[[Classifier, list[Sequence[int]], list[Any]], None],
                 on_drop: Callable[[int], None], count: Callable[[list[Any], list[float]], None]) -> None:
        self._score = score
        self._score_lines = score_lines
        self._on_drop = on_drop
        self._count = count
        self._jobs: list[ShadowJob] = []
        self._scheduled = False
        #: the candidate of the pass due this turn, whose one-row requests' rows, champion lines and the champion's
        #: scoring times wait in `rows`, `lines` and `times`
        self.due: Classifier | None = None
        self.rows: list[Sequence[int]] = []
        self.lines: list[Any] = []
        self.times: list[float] = []
        self.errors: list[BaseException] = []

    def open(self, candidate: Classifier) -> bool:
        """Whether one-row requests of ``candidate`` may join this turn's pass (`rows`, `lines`, `times`): True once
        ``due`` is ``candidate`` (a pass scheduled for it if none was); False while another candidate's pass is due,
        or outside an event loop (a direct call: `submit` scores the job at once)."""
        if self._scheduled:
            return self.due is candidate
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        self.due = candidate
        self._scheduled = True
        loop.call_soon(self.flush)
        return True

    def submit(self, route_name: str, request_id: str, candidate: Classifier, rows: Sequence[Sequence[int]],
               logged: Sequence[Any] | None = None) -> None:
        """A job: a request the candidate scores in the next pass (or at once, outside an event loop)."""
        if self._scheduled:  # a pass is due this turn
            if len(self._jobs) + len(self.lines) >= SHADOW_QUEUE:
                self._on_drop(1)
                return
            self._jobs.append((route_name, request_id, candidate, rows, logged))
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._run([(route_name, request_id, candidate, rows, logged)])
            return
        self._jobs.append((route_name, request_id, candidate, rows, logged))
        self.due = candidate
        self._scheduled = True
        loop.call_soon(self.flush)

    def flush(self) -> None:
        """Score every queued job now (the loop's pass, and the last one at shutdown)."""
        candidate, rows, lines, times, jobs = self.due, self.rows, self.lines, self.times, self._jobs
        self.due, self.rows, self.lines, self.times, self._jobs, self._scheduled = None, [], [], [], [], False
        if lines:
            try:
                self._count(lines, times)
            except Exception as exc:  # a bug: kept, and the candidate still scores
                self.errors.append(exc)
                log.exception("counting the champion's answers failed")
        room = SHADOW_QUEUE - len(jobs)
        if len(lines) > room:  # more than the queue holds: the first kept, the rest dropped (as `submit` drops jobs)
            self._on_drop(len(lines) - room)
            del rows[room:], lines[room:]
        if jobs:  # with requests of several rows (or unlogged, or of another candidate): one pass over all, as jobs
            if rows:
                assert candidate is not None
                jobs[:0] = [(line.route, line.request_id, candidate, (row,), (line,)) for row, line in zip(rows, lines)]
            self._run(jobs)
        elif rows:
            assert candidate is not None
            try:
                self._score_lines(candidate, rows, lines)
            except Exception as exc:  # as `_run`
                self.errors.append(exc)
                log.exception("shadow scoring failed")

    def _run(self, jobs: Sequence[ShadowJob]) -> None:
        try:
            self._score(jobs)
        except Exception as exc:  # the candidate's failure is counted by the scorer; a bug here is kept
            self.errors.append(exc)
            log.exception("shadow scoring failed")
