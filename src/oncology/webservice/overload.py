"""Graceful degradation under overload: shed the excess early, bound slow clients.

`Shedder` is an ASGI wrapper around the app, and `protocol` the HTTP protocol that feeds it.  A
worker is one event loop running synchronous, CPU-bound handlers, so the queue of an overloaded
worker is not in the app but in front of it, and left to asyncio it is served in batches: all the
requests parsed in one iteration of the loop run back to back in the next, while the ones that came
meanwhile wait unread in the kernel, so that a request's wait is whatever was parsed with it and
before it (up to three batches), not the work queued ahead of it, and a budget on the queue does
not bound it.  `Shedder` makes the queue explicit: admitted requests take turns (`_Turns`), in the
order their bodies were in, a few at a time (up to a quantum of estimated work that grows with the
time the loop spends reading between turns, at least a millisecond and at most half the budget), and the loop reads, parses,
admits or sheds between every two turns.  So the requests waiting are the requests known, a request's
wait is the work queued ahead of it, and probes (never queued) are answered between two turns.  The
budget is ``overload_max_lag`` seconds of that waiting; it is enforced twice:

- at parse time (`Shedder.admit`, called by the protocol when a POST's headers are in): a request
  is admitted if the admitted requests still queued ahead of it would keep the loop busy for
  less than the budget (the sum of their estimated costs: for each, the moving average of the CPU
  time of the loop's thread that admitted requests of its size took, sizes grouped by powers of two
  of their bodies' bytes, so that a mix of single rows and large batches is estimated right), and
  otherwise answered at once with ``503`` and ``Retry-After``
  (in the service's one error shape) by the protocol itself: no ASGI task, its body skipped as it
  arrives, the connection kept.  That is the cheapest answer this server can give (through the app,
  a shed costs about as much CPU as a single-row prediction);
- at its turn (`Shedder.__call__`): a request that has waited more than the budget since its first
  bytes were parsed (``RECEIVED``), while the work still queued would also keep the loop busy for
  more than the budget, is answered 503 before its body is read (the costs were underestimated: a
  mix of large and small requests).

A stall (the process descheduled by a busy machine, a GC pause, a model reload holding the GIL)
sheds nothing once it is over unless the queue it left is more than the budget: the costs are CPU
times, which a stall does not inflate, and the requests that arrived during it were not parsed yet.
And neither rule sheds while fewer than ``overload_min_queue`` other requests wait in the worker: a
turn that comes late then is the machine's (the CPU taken by other processes, a pod's cold start),
not a queue's, and shedding a few would not shorten it.

While the whole queue fits in one turn (this request alone, or all the admitted work within a quantum)
and none waits for a turn, turns would change nothing and no rule can shed (a quantum is at most half the
budget), so an admitted request skips the turns and runs as it comes: the shedder then costs a comparison or
two a request, except the first request of a size and then one every `SAMPLE_SECONDS` (of the loop's clock), which
takes the turns to keep its size's cost estimate fresh for when a queue builds (by the clock, not one in so many: a
cost is measured in CPU time, a system call each side of the request, and at 20,000 requests a second one in 16
made that a measurable share of the shedder's cost).  The test is on the queued work, not on the
number of requests: a probe waits at most a quantum behind requests that came together, whatever the budget.

The protocol answers the hot routes itself (`_ReadDeadline._inline`, ``inline_hot_routes``): once a request's body
is in, it runs the route's handler on it, drives its coroutine to the end and writes the answer, with no ASGI scope,
cycle or task.  It does so at once, in the loop's iteration that read it, when shedding (when on) would run the
request as it comes, the test `Shedder.inline` makes as `__call__` does, with one difference that the budget needs:
under ASGI, the requests parsed in one iteration are all queued before the first of them runs (in the next), so
`__call__` sees the whole iteration's work; inline, a request runs before the ones after it in the same iteration are
even read, so they would never be seen queued, and the loop could serve any number of them back to back while the
requests of the next iteration wait, unread and uncounted, in the kernel.  So the work answered inline counts as
queued: an iteration answers at once at most a quantum of estimated work (or one request alone).  The requests read
after that are deferred (`_Deferred`): counted in the queue and queued for a turn behind the requests waiting already,
in the same queue as the ASGI way's, where they can be shed at their turn as before; a turn granted, they are
answered inline all the same, in a later iteration (`Shedder._next`), the loop reading between two turns.  A deferred
request costs a few attribute writes and one callback per iteration, where the ASGI way cost a scope, uvicorn's cycle,
a task and its awaitables (at 64 connections, the few percent of requests past the quantum were a measurable share of
the whole server's CPU).  Requests waiting for a turn, or granted one, are never overtaken by an answer given at once.

The quantum is counted in work answered at once since a time known to be before the iteration began (the start of
`Shedder._next`, or the last answer to the connection of the first request a read brings whole), not by the loop's
clock: uvloop's ``loop.time()`` is not libuv's time of the iteration but the clock read anew (in milliseconds), so
the requests of one iteration that each take more than a millisecond read different times.  Counted by that clock,
each of them saw an iteration of its own, and any number of them read together were answered at once, back to
back, a probe read with them answered last.  An inline request's cost is
measured as a turn's is, the first of a size and one every `SAMPLE_SECONDS` (`learn`), whether answered at once or
deferred.

So the latency of an admitted request is about the budget plus its own cost, however many requests
come.  (Clients that retry a 503 at once, ignoring Retry-After, are a flood of requests to read and
shed: the quantum grows so that admitted work keeps most of the loop, but each shed still costs the
worker ~60 µs for a 58 kB body read and parsed.)  Probes and scrapes (`EXEMPT`) are never shed and
never queue behind predictions: an overloaded worker is still live, its readiness unchanged, its
metrics readable.  Shed requests are counted in ``oncology_http_shed_total``; they skip the access
log (writing a line each would add load).

`protocol(settings)` is the HTTP protocol for uvicorn: httptools with a deadline for reading
each request (headers and body, ``request_read_timeout``), counted from the connection or from
the request's first byte; a client slower than that (slowloris) is disconnected.  Idle
keep-alive connections are closed by uvicorn's ``timeout_keep_alive``.  Given the listening socket, it also accepts the
connections waiting there in batches (`_Acceptor`): libuv accepts one per iteration of the event loop, and a
burst of new connections to a loaded worker waited seconds, unaccepted and unread, for their turn to be accepted.

An answer given before the request's body is all in (a 413 from Content-Length, a 401, a 415, a shed
503) leaves the rest of the body on its way.  On a kept-alive connection the parser reads and
discards it; a connection that closes after the answer (the client sent ``Connection: close``, as
Python's urllib does, or the server drains) closes gracefully: the answer, then a half-close
(shutdown(SHUT_WR)), then the rest of the body read and discarded until it ends or the request's
read deadline passes.  Closed at once, the kernel would answer the unread bytes with a reset that
reaches a client still sending before it reads the answer (urllib, requests at 30 MB) as
"connection reset" or "broken pipe" instead of the 413.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import time
from collections import deque
from collections.abc import Awaitable, Coroutine, Generator
from typing import Any, Final

from prometheus_client import Counter
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

from oncology.settings import ServeSettings
from oncology.webservice import schemas
from oncology.webservice.metrics import Metrics
from oncology.webservice.transport import Answer, Endpoint, Front

log = logging.getLogger("oncology.webservice")

#: Liveness, readiness and metrics: always answered.
EXEMPT = frozenset({"/healthz", "/readyz", "/metrics", "/ping", "/v2/health/live", "/v2/health/ready",
                    f"/v2/models/{schemas.V2_MODEL}/ready"})


_EXEMPT_BYTES: Final = frozenset(path.encode("latin-1") for path in EXEMPT)


class Shedder:
    """ASGI wrapper: admitted requests served in turns in arrival order, 503 + Retry-After for those that would wait
    (or did) more than the budget; probes always served."""

    def __init__(self, app: ASGIApp, settings: ServeSettings, metrics: Metrics) -> None:
        self.app = app
        self.max_lag = settings.overload_max_lag
        self.min_queue = settings.overload_min_queue
        self.retry_after = b"%d" % settings.overload_retry_after
        shed = Counter("oncology_http_shed", "Requests answered 503 + Retry-After because the worker was overloaded "
                       "(reason: queue, at parse time; wait, at the request's turn)", ["reason"], registry=metrics.registry)
        self.shed, self.shed_queue = shed.labels("wait"), shed.labels("queue")
        self.queued = 0  # requests admitted by the protocol (ADMITTED) and not finished yet
        self.work = 0.0  # the sum of their estimated costs (CPU seconds)
        self.costs = [0.0] * LARGEST  # by size (a body's bytes.bit_length()): CPU seconds such a request takes (moving average)
        self.sampled_at = [-math.inf] * LARGEST  # by size: the loop's time of the last request that measured its cost
        self.turns = _Turns(self.max_lag)  # admitted requests run in turns, from their start to their first answer
        # the estimated work answered at once (inline, in the iteration that read it), ever; and its value at a time
        # known to be before this iteration began (`inline`): their difference bounds this iteration's work from above
        self.answered = 0.0
        self.floor = 0.0
        self.granted: list[_Deferred] = []  # deferred requests given their turn, to run in `_next`
        self.next_due = False  # `_next` is scheduled
        self.shed_response = (b"HTTP/1.1 503 Service Unavailable\r\n" + b"".join(
            name + b": " + value + b"\r\n" for name, value in [*SHED_HEADERS, (b"retry-after", self.retry_after)]))

    def admit(self) -> bool:
        """At parse time, once a POST's headers are in (from `protocol`): False to shed it there, cheaply, without
        a task.  (An admitted request joins ``queued`` once its body is in too: a slow upload does not hold the
        loop, and must not hold back others.)

        A request is shed when at least ``min_queue`` admitted requests are queued ahead of it and they would keep
        the loop busy for more than ``max_lag`` (the sum of their estimated CPU costs).
        """
        if self.queued < self.min_queue or self.work <= self.max_lag:  # `_over_budget` (this request is not queued yet)
            return True
        self.shed_queue.inc()
        return False

    def inline(self, body_bytes: int, now: float, since: float = 0.0) -> int:
        """How the protocol answers an admitted hot route's request whose body (``body_bytes`` long) is in
        (`_ReadDeadline`): at once, in this iteration of the loop, if `__call__` would run it as it comes, with the work
        answered at once in this iteration (bounded as below) counted as queued (under ASGI it would be).  No request
        is deferred already, waits for a turn or holds one, and the whole queue fits in one turn: this request alone
        (none queued, none answered at once in this iteration), or the queued work, the work answered at once in this
        iteration and this request's within a quantum.  Then `INLINE`, or its size class when its cost is to be measured (`learn`): the first of its size, and
        one every `SAMPLE_SECONDS` after it (``now``: the loop's time when its bytes were parsed), as the turns measure
        theirs.  Else `DEFER`: it takes a turn as a `_Deferred` (`defer`), answered inline in a later iteration.

        Nothing marks an iteration (uvloop's ``loop.time()`` is the clock read anew, in milliseconds, not libuv's time
        of the iteration), so the work answered at once in this one is bounded from above: by the work answered at once
        (``answered``) since a time known to be before the iteration began (``floor``): the start of `_next`, which runs
        at an iteration's start once a request was deferred, or ``since``, ``answered`` just after the last answer to
        the request's connection when the request is the first to come whole from a read (the protocol's): that answer
        was written after its iteration's reads, so a read that brings the connection's next request is a later
        iteration's.  A request pipelined behind another in the same read (``since`` negative) is deferred if anything
        was answered at once since ``floor``: so a read answers at once at most one request of its connection, and a
        connection sending more than uvloop reads at a time (its buffer filled, libuv reads again in the same
        iteration) cannot have a quantum answered at once per read.
        """
        size = body_bytes.bit_length()
        if size >= LARGEST:
            size = LARGEST - 1
        estimate = self.costs[size]
        if since > self.floor:
            self.floor = since
        spent = self.answered - self.floor
        turns = self.turns
        if turns.waiting or turns.holders or turns.deferred or since < 0 and spent or not (
                self.min_queue and not self.queued and not spent or self.work + spent + estimate <= turns.quantum):
            return DEFER
        self.answered += estimate
        if now - self.sampled_at[size] < SAMPLE_SECONDS:
            return INLINE
        self.sampled_at[size] = now
        return size

    def defer(self, deferred: _Deferred, body_bytes: int) -> None:
        """Queue ``deferred`` (a request `inline` did not answer at once, its body ``body_bytes`` long): counted in, it
        waits for a turn behind the requests waiting already, as a request going the ASGI way does, and runs, inline,
        when the turns grant it one (`_next`)."""
        size = body_bytes.bit_length()  # (`enqueue`, inlined)
        if size >= LARGEST:
            size = LARGEST - 1
        deferred.size = size
        deferred.estimate = estimate = self.costs[size]
        self.queued += 1
        self.work += estimate
        turns = self.turns
        if turns.waiting or turns.holders:  # behind requests that take turns: a turn of its own
            turns.waiting.append((deferred, estimate))  # type: ignore[arg-type]
        else:  # (the common case: a plain queue, run by `_next` a quantum at a time)
            turns.deferred.append(deferred)
        if not self.next_due:  # (the grant may come from a turn's end too: `_next` then runs what it granted)
            self.next_due = True
            loop = deferred.protocol.loop
            loop.call_soon(self._next, loop)

    def _next(self, loop: asyncio.AbstractEventLoop) -> None:
        """In the loop's next iteration after a request was deferred or given its turn: the inline work counted afresh,
        then one batch of deferred requests: a quantum of those queued while no turn was taken or awaited
        (``turns.deferred``, at least one), or, once none is left, those the turns granted (`_Turns.waiting`, queued
        behind a request going the ASGI way; the next batch is granted first if the turns are free).  While more wait,
        it runs again in the next iteration: the loop reads between two batches."""
        self.floor = self.answered  # (the work answered at once so far was in earlier iterations)
        self.next_due = False
        turns = self.turns
        if turns.granted_at < math.inf:  # the first batch since a grant: the gap from the grant updates the quantum
            turns.started(loop)
        queue = turns.deferred
        if queue:
            quantum, spent = turns.quantum, 0.0
            while True:
                deferred = queue.popleft()
                estimate = deferred.estimate
                spent += estimate
                if deferred.protocol._answer_deferred(deferred):  # counted out (`count_out`, inlined)
                    self.queued -= 1
                    self.work = self.work - estimate if self.queued else 0.0
                if not queue or spent + queue[0].estimate > quantum:
                    break
            if queue or turns.waiting:  # the next batch in the next iteration, after the loop has read
                turns.granted_at = loop.time()
                self.next_due = True
                loop.call_soon(self._next, loop)
            return
        if turns.waiting and not turns.holders:  # nothing runs: the next batch (its deferred requests join `granted`)
            turns._grant(loop)
            turns.granted_at = math.inf  # (granted as it runs: no gap to learn from)
        granted, self.granted = self.granted, []
        for deferred in granted:
            if deferred.protocol._answer_deferred(deferred):  # its turn ends, it is counted out (`release`, `count_out`)
                self.queued -= 1
                self.work = self.work - deferred.estimate if self.queued else 0.0
                turns.holders -= 1
                if not turns.holders:
                    turns.ended(loop)

    def learn(self, size: int, cost: float) -> None:
        """A request of size class ``size`` took ``cost`` CPU seconds: its size's estimate follows (the first sets it)."""
        known = self.costs[size]
        self.costs[size] = cost if known == 0.0 else known + (cost - known) * COST_WEIGHT

    def count_out(self, estimate: float) -> None:
        """A request counted in by `enqueue` (its cost ``estimate``) is done: out of ``queued`` and ``work`` (``work``
        zeroed with ``queued``, so rounding errors do not drift)."""
        self.queued -= 1
        self.work = self.work - estimate if self.queued else 0.0

    def _over_budget(self, others: int) -> bool:
        """Whether the queue is overloaded for a request with ``others`` admitted requests queued besides it: at least
        ``min_queue`` of them, and the queued work more than the budget."""
        return others >= self.min_queue and self.work > self.max_lag

    def enqueue(self, body_bytes: int) -> tuple[int, float]:
        """Count in an admitted request whose body (``body_bytes`` long) is in: its size class and estimated cost, to
        be counted out when it is answered (`count_out`)."""
        size = body_bytes.bit_length()
        if size >= LARGEST:  # (a comparison, not min: it parses keyword arguments, on every request)
            size = LARGEST - 1
        estimate = self.costs[size]
        self.queued += 1
        self.work += estimate
        return size, estimate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        admitted = scope.get(ADMITTED, _ABSENT)
        if admitted is _ABSENT:  # not admitted by the protocol: a probe, a GET, shedding off
            await self.app(scope, receive, send)
            return
        turns = self.turns
        if (admitted is not None and not turns.waiting and not turns.deferred
                and (self.queued == 1 and self.min_queue or self.work <= turns.quantum)):
            # the whole queue fits in one turn (this request alone, or all the admitted work within a quantum, which is
            # at most half the budget: no rule can shed), so turns would change nothing: it runs as it comes, at no
            # cost but this test, except the first of a size and then one every SAMPLE_SECONDS, which takes the turns
            # to keep its size's cost estimate fresh for when a queue builds
            size = admitted[0]
            received = scope.get(RECEIVED, 0.0)  # (the protocol sets it with ADMITTED)
            if received - self.sampled_at[size] < SAMPLE_SECONDS:
                try:
                    await self.app(scope, receive, send)
                finally:  # counted out (`count_out`, inlined: this is the path of every request while the queue is short)
                    self.queued -= 1
                    self.work = self.work - admitted[1] if self.queued else 0.0
                return
            self.sampled_at[size] = received
        # the turns: no coroutine but the turn's and a plain function for the answer, for this is every request's path
        # while a queue is short but does not fit in one turn (64 connections)
        loop = asyncio.get_running_loop()
        turn: bool | None = None  # True while this request has the turn, False once it took it (None: not yet)
        cpu = 0.0  # the loop thread's CPU time when its turn began

        def answer(message: Message) -> Awaitable[None]:
            nonlocal turn
            if turn:  # its work is done once it answers: writing the answer (to a slow reader) holds no turn
                # its cost: the CPU time of the loop's thread in its turn (time on the CPU, so that a request that was
                # descheduled or waited for the GIL does not count as costly: the next ones will not be)
                self.learn(scope[ADMITTED][0], time.thread_time() - cpu)
                turn = False
                turns.release(loop)
            return send(message)

        try:
            if admitted is None:  # its body is still arriving: its turn comes once the body is in

                async def whole_body() -> Message:
                    nonlocal turn, cpu
                    message = await receive()
                    if turn is None and message["type"] == "http.request" and not message.get("more_body", False):
                        estimate = scope[ADMITTED][1]
                        waiting = turns.take(loop, estimate)  # its body is in: it queues now
                        if waiting is not TAKEN:
                            await turns.wait(loop, waiting, estimate)
                        turn, cpu = True, time.thread_time()
                    return message

                await self.app(scope, whole_body, answer)
                return
            waiting = turns.take(loop, admitted[1])
            if waiting is not TAKEN:  # (`_Turns.wait`, inlined: at 64 connections most requests wait for a turn)
                try:
                    await waiting
                except asyncio.CancelledError:
                    turns.abandon(loop, waiting, admitted[1])
                    raise
                if turns.granted_at < math.inf:  # the first of its batch to run
                    turns.started(loop)
            turn, cpu = True, time.thread_time()
            # overloaded: this request waited past the budget and the work still queued (this request's and the
            # ones behind it) would make them wait longer than the budget too.  A single stall sheds nothing: the
            # wait it caused is over, and the queue it left is served in less than the budget
            if loop.time() - scope.get(RECEIVED, math.inf) <= self.max_lag or not self._over_budget(self.queued - 1):
                await self.app(scope, receive, answer)
                return
            turn = False
            turns.release(loop)
            self.shed.inc()  # the body is never read: the server discards it, and the connection is kept
            await send({"type": "http.response.start", "status": 503,
                        "headers": SHED_HEADERS + [(b"retry-after", self.retry_after)]})
            await send({"type": "http.response.body", "body": SHED_BODY})
        finally:
            if turn:
                turns.release(loop)
            admitted = scope.get(ADMITTED)
            if admitted is not None:  # counted in by the protocol when its body was in (None: admitted, body not in)
                self.count_out(admitted[1])


class _Taken:
    """An awaitable that is done: a turn taken at once."""

    __slots__ = ()

    def __await__(self) -> Generator[None, None, None]:
        return iter(())  # type: ignore[return-value]


TAKEN: Final = _Taken()


class _Turns:
    """Admitted requests take turns: a batch of them runs back to back in one iteration of the loop, in the order they
    came, up to a quantum of estimated work; then the loop reads from every socket with data (parsing, admitting or
    shedding what came) before the next batch.  The quantum adapts to the time the loop spends between batches (reading,
    parsing, shedding, probes): `READ_SHARE` times it, at most half the budget, so that a flood of requests to shed
    (clients retrying at once, ignoring Retry-After) cannot starve the admitted ones, while with little to read a
    turn is one request or a few and the requests parsed meanwhile wait no longer than the work queued ahead."""

    def __init__(self, budget: float) -> None:
        self.budget = budget
        self.holders = 0  # requests of the running batch not done yet
        self.spent = 0.0  # the estimated work of the running batch
        self.waiting: deque[tuple[asyncio.Future[None], float]] = deque()  # (waiter, estimated cost), in order
        # requests deferred by the protocol while none took or awaited a turn, before any of ``waiting`` (run by
        # `Shedder._next`, which grants ``waiting`` once they have run)
        self.deferred: deque[_Deferred] = deque()
        self.freeing = False  # a batch ended in this iteration with none waiting: free from the next one
        self.granted_at = math.inf  # when the last batch was granted (loop time), until its first request runs
        self.gap = 0.0  # seconds from a batch's grant to its run (moving average): the loop's work between batches
        self.quantum = 0.0  # a batch's estimated work, at most (kept up to date with the gap: read by every request)
        self._set_gap(0.0)

    def _set_gap(self, gap: float) -> None:
        # the quantum: at least MIN_QUANTUM: with little to read, a batch of one request per loop iteration would spend
        # more on the iterations than on the requests (16% of a single-row prediction at c=64).  A floor in seconds, not
        # a share of the budget: the quantum is how long a probe or a newly read request may wait, whatever the budget.
        # (Comparisons, not min and max: this runs once per batch, and they parse keyword arguments.)
        self.gap = gap
        quantum = READ_SHARE * gap
        if quantum < MIN_QUANTUM:
            quantum = MIN_QUANTUM
        self.quantum = quantum if quantum < self.budget / 2 else self.budget / 2

    def take(self, loop: asyncio.AbstractEventLoop, estimate: float) -> Awaitable[None]:
        """A turn: `TAKEN` (taken at once) if no batch runs or the one that ran in this iteration has room and none
        wait (the caller need not await it: no coroutine for the common case), else the future that is done when this
        request's batch is granted, to give to `wait` (or, awaited, to `abandon` if cancelled, and `started` after)."""
        if not self.waiting and not self.deferred and (self.holders == 0 and not self.freeing
                                 or self.freeing and self.spent + estimate <= self.quantum):
            if not self.freeing:
                self.spent = 0.0
            self.holders += 1
            self.spent += estimate
            return TAKEN
        waiter = loop.create_future()
        self.waiting.append((waiter, estimate))
        return waiter

    async def wait(self, loop: asyncio.AbstractEventLoop, waiter: Awaitable[None], estimate: float) -> None:
        """Wait for the turn `take` did not give at once (``waiter``, of a request of cost ``estimate``)."""
        try:
            await waiter
        except asyncio.CancelledError:
            self.abandon(loop, waiter, estimate)
            raise
        if self.granted_at < math.inf:
            self.started(loop)

    def abandon(self, loop: asyncio.AbstractEventLoop, waiter: Awaitable[None], estimate: float) -> None:
        """A request waiting for its turn is cancelled (its client went away): its place, or its turn, is given up."""
        if not isinstance(waiter, asyncio.Future):
            return
        if waiter.done() and not waiter.cancelled():  # it was given the turn: give it back
            self.release(loop)
        else:
            self.waiting.remove((waiter, estimate))

    def started(self, loop: asyncio.AbstractEventLoop) -> None:
        """The first request of the batch granted last runs: the gap from the grant to it updates the quantum."""
        self._set_gap(self.gap + (loop.time() - self.granted_at - self.gap) * COST_WEIGHT)
        self.granted_at = math.inf

    def release(self, loop: asyncio.AbstractEventLoop) -> None:
        self.holders -= 1
        if self.holders == 0:
            self.ended(loop)

    def ended(self, loop: asyncio.AbstractEventLoop) -> None:
        """The batch running is over (no holder left): the next is granted, or the turns are free from the next
        iteration."""
        if self.waiting:
            if not self.deferred:  # (else `Shedder._next` grants it once they have run)
                self._grant(loop)
        elif not self.freeing:  # the requests whose tasks start in this iteration wait for the next
            self.freeing = True
            loop.call_soon(self._free, loop)

    def _free(self, loop: asyncio.AbstractEventLoop) -> None:
        self.freeing = False
        if self.waiting and self.holders == 0 and not self.deferred:
            self._grant(loop)

    def _grant(self, loop: asyncio.AbstractEventLoop) -> None:
        """The next batch: the requests waiting first, up to the quantum of estimated work (at least one); they run in
        the loop's next iteration, after it has read."""
        quantum, waiting, holders, spent = self.quantum, self.waiting, self.holders, 0.0
        while waiting and (holders == 0 or spent + waiting[0][1] <= quantum):
            waiter, estimate = waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                holders += 1
                spent += estimate
        self.holders, self.spent = holders, spent
        if holders:
            self.granted_at = loop.time()


#: The scope key holding the loop's time when the request's first bytes were parsed (set by `protocol`).
RECEIVED: Final = "oncology.received"
#: The scope key of a request admitted at parse time: None, then what `Shedder.enqueue` gave when its body was in.
ADMITTED: Final = "oncology.admitted"
#: The quantum of a turn is this many times the time the loop spends between turns (at most half the budget).
READ_SHARE: Final = 2.0
#: Connections accepted at most in one iteration of the event loop, besides libuv's one (`_Acceptor`).
ACCEPT_BATCH: Final = 256
#: Seconds a lingering close reads the rest of an answered body when no read deadline is configured (nginx's
#: ``lingering_time``); otherwise the request's read deadline ends it.
LINGER_SECONDS: Final = 30.0
#: A turn's quantum is at least this many seconds of estimated work (at most half the budget).
MIN_QUANTUM: Final = 0.001
#: Of the requests that skip the turns (the queue fits in one), the first of a size and then one every this many seconds
#: (of the loop's clock, when it was parsed) takes the turns (or, answered inline, is timed) to measure its cost.
SAMPLE_SECONDS: Final = 0.01
_ABSENT: Final = object()
#: A hot route's request with a body up to this many bytes may be answered inline (uvicorn's read buffer, beyond which
#: it pauses reading until the app reads the body); a larger one goes the ASGI way, its body read as it comes.
INLINE_BODY: Final = 65_536
#: uvicorn's default headers (the date), as the list it makes each second and their bytes.
_DEFAULTS: list[Any] = [None, b""]
_clock = time.perf_counter
#: Size classes of request bodies (a body's bytes.bit_length(), the largest class holding the rest).
LARGEST: Final = 64
#: `Shedder.inline`'s answers: deferred (a turn, then inline), inline (its cost not measured); else the size class to measure.
DEFER: Final = -1
INLINE: Final = LARGEST
#: Weight of the newest request in the moving average of the cost of admitted requests of its size (the first sets it).
COST_WEIGHT: Final = 0.05

SHED_BODY = schemas.encode({"error": "overloaded: the request was not processed; retry after the Retry-After seconds",
                            "status": 503, "request_id": "", "details": []})
SHED_HEADERS: Final = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(SHED_BODY))]


class _Resumed:
    """Awaits the rest of a coroutine that was started outside a task (``send(None)``) and suspended on ``awaited``:
    awaited in a task, it hands the task what the coroutine awaits and the coroutine what the task sends back."""

    __slots__ = ("coroutine", "awaited")

    def __init__(self, coroutine: Coroutine[Any, Any, Any], awaited: Any) -> None:
        self.coroutine = coroutine
        self.awaited = awaited

    def __await__(self) -> Generator[Any, Any, Any]:
        coroutine, awaited = self.coroutine, self.awaited
        while True:
            try:
                sent = yield awaited
            except GeneratorExit:
                coroutine.close()
                raise
            except BaseException as exc:  # (a cancellation, thrown into the task): into the coroutine
                try:
                    awaited = coroutine.throw(exc)
                except StopIteration as done:
                    return done.value
                continue
            try:
                awaited = coroutine.send(sent)
            except StopIteration as done:
                return done.value


class _NoEvent:
    """What uvicorn sets (``cycle.message_event.set()``) on a connection's pending answer when the connection is lost:
    nothing, for a `_Deferred`."""

    __slots__ = ()

    @staticmethod
    def set() -> None:
        pass


class _Deferred:
    """A hot route's request whose body is in, answered inline when its turn comes, in a later iteration of the loop
    (`Shedder.inline` did not answer it at once: the quantum of inline work was spent, or requests wait for a turn).

    It waits in a plain queue (`_Turns.deferred`, a quantum of which `Shedder._next` runs in each iteration), or,
    behind a request that takes turns the ASGI way, in the turns' own queue (`_Turns.waiting`, through `done` and
    `set_result`, as a future); it runs in `Shedder._next` (`_ReadDeadline._answer_deferred`): no task, no uvicorn
    cycle, no scope, no ``receive``/``send`` awaitables.  Until then it stands as its connection's pending
    answer (``cycle``, with the attributes uvicorn reads there), so that requests pipelined behind it wait for it, a
    drain (``keep_alive`` turned off) closes the connection after it, and a lost connection marks it ``disconnected``.
    """

    __slots__ = ("protocol", "endpoint", "headers", "query", "body", "received", "keep_alive", "size", "estimate",
                 "response_complete", "disconnected")
    message_event: Final = _NoEvent()

    def __init__(self, protocol: _ReadDeadline, endpoint: Endpoint, headers: dict[bytes, bytes], query: bytes,
                 body: bytes, received: float, keep_alive: bool) -> None:
        self.protocol = protocol
        self.endpoint = endpoint
        self.headers = headers
        self.query = query
        self.body = body
        self.received = received  # the loop's time when its first bytes were parsed (``RECEIVED``)
        self.keep_alive = keep_alive
        self.size = 0  # its size class and estimated cost (`Shedder.defer`)
        self.estimate = 0.0
        self.response_complete = False
        self.disconnected = False

    @staticmethod
    def done() -> bool:
        return False  # (granted, it is no longer among the waiting: `_Turns._grant` asks only those)

    def set_result(self, result: None) -> None:
        """Its turn is granted (`_Turns._grant`): it runs in `Shedder._next`, in this iteration or the next."""
        protocol = self.protocol
        shedder = protocol.shedder
        assert shedder is not None
        shedder.granted.append(self)
        if not shedder.next_due:
            shedder.next_due = True
            protocol.loop.call_soon(shedder._next, protocol.loop)



class _GracefulClose:
    """The connection's transport as the protocol and its request cycles see it: `close` while a request's body is
    still arriving becomes the protocol's lingering close (every other call goes to the transport)."""

    __slots__ = ("_transport", "_protocol")

    def __init__(self, transport: asyncio.Transport, protocol: _ReadDeadline) -> None:
        self._transport = transport
        self._protocol = protocol

    def write(self, data: bytes) -> None:
        self._transport.write(data)

    def is_closing(self) -> bool:
        return self._protocol._lingering or self._transport.is_closing()

    def close(self) -> None:
        self._protocol._close()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _Acceptor:
    """Accepts the connections waiting on the listening socket in batches, for a loaded worker.

    libuv (uvloop's, since 1.45) accepts one connection per iteration of the event loop, and an iteration of a
    loaded worker runs a turn of requests (or, shedding off, all the requests parsed in the previous one): a burst of
    1,024 new connections waited up to 1,024 iterations, seconds, with their first request unread in sockets the
    worker had not accepted yet, where neither the shedder nor the read deadline can see it.  So each time libuv
    accepts one (`connection_made`), the loop's next iteration accepts the others waiting too, up to ``ACCEPT_BATCH``
    (and again in the iterations after while more wait): their requests are read together, and the shedder admits or
    sheds them at once.
    """

    __slots__ = ("listener", "scheduled", "opening")

    def __init__(self, listener: socket.socket) -> None:
        self.listener = listener
        self.scheduled = False  # an accept is due in the loop's next iteration
        self.opening: set[asyncio.Task[None]] = set()  # (the tasks making transports of accepted sockets)

    def soon(self, protocol: _ReadDeadline) -> None:
        if not self.scheduled:
            self.scheduled = True
            protocol.loop.call_soon(self._accept, protocol)

    def _accept(self, model: _ReadDeadline) -> None:
        self.scheduled = False
        loop = model.loop

        def factory() -> _ReadDeadline:  # as uvicorn makes the protocol of a connection
            return type(model)(config=model.config, server_state=model.server_state, app_state=model.app_state,
                               _loop=loop)

        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):  # none waits
                return
            except ConnectionAbortedError:  # one that reset before it was accepted
                continue
            except OSError as exc:  # the listener closed (shutting down), or no file descriptor left: libuv's accept
                log.debug("accepting connections: %s", exc)
                return
            task = loop.create_task(self._open(loop, factory, conn))
            self.opening.add(task)
            task.add_done_callback(self.opening.discard)

    @staticmethod
    async def _open(loop: asyncio.AbstractEventLoop, factory: Any, conn: socket.socket) -> None:
        try:
            await loop.connect_accepted_socket(factory, conn)
        except OSError as exc:  # the client went away meanwhile
            log.debug("opening an accepted connection: %s", exc)
            conn.close()


class _ReadDeadline(HttpToolsProtocol):
    """httptools with a deadline for receiving each whole request (slow clients are disconnected), which sheds
    at parse time what `Shedder.admit` refuses, answers the hot routes itself when it can (`_inline`), and closes
    gracefully after an answer given before the body was in."""

    read_timeout = 10.0
    shedder: Shedder | None = None
    acceptor: _Acceptor | None = None
    front: Front | None = None  # the app's front, whose hot routes (``hot``) this protocol answers inline
    hot: dict[bytes, Endpoint] = {}  # noqa: RUF012 - (the class's, read only)
    _hot: Endpoint | None = None  # the request being parsed is a hot route's, its body held here (not yet ASGI's)
    _hot_body = b""
    _hot_query = b""  # its query string (the URL's part after '?'), split off once with its path
    _socket: asyncio.Transport  # the transport itself (``self.transport`` is its `_GracefulClose`)
    _timer: asyncio.TimerHandle | None = None  # the connection's one timer (`_expire`), due at ``_timer_at``
    _timer_at = math.inf
    _read_by = math.inf  # the loop time by which the request being read must be whole (the read deadline)
    _idle_by = math.inf  # the loop time by which an idle kept-alive connection is closed (uvicorn's keep-alive)
    _shedding = False  # the request being parsed is shed: its body is skipped, the 503 written at its end
    _body_bytes = 0  # of the request being parsed, so far
    _received = 0.0  # the loop's time when the request being parsed began (``RECEIVED``)
    _admitted = False  # the request being parsed was admitted by the shedder at parse time (``ADMITTED``)
    _keep_alive = True
    _in_body = False  # a request's headers are in, its body is not (yet)
    _lingering = False  # answered and half-closed: the rest of the body is read and discarded, then the connection closed
    _fresh = False  # no request has come whole yet from the read being parsed
    _answered_at = 0.0  # the shedder's ``answered`` just after this connection's last answer (at once or deferred)

    def _close(self) -> None:
        """A close: at once, unless a request's body is still arriving after its complete answer; then the answer,
        a half-close, and the rest of the body read and discarded (see the module's docstring)."""
        sock = self._socket
        cycle = self.cycle
        if (self._lingering or sock.is_closing() or not self._in_body
                or cycle is None or not cycle.response_complete or not sock.can_write_eof()):
            sock.close()
            return
        self._lingering = True
        sock.write_eof()  # after the answer still buffered: the client reads it, then end of stream
        sock.resume_reading()  # (the parser discards the body: the request's answer is complete)
        if self._read_by == math.inf:  # no read deadline configured: the lingering still ends
            self._due(LINGER_SECONDS, True)

    # The read deadline and uvicorn's keep-alive timeout share one timer per connection, moved lazily: a deadline is
    # a number set and reset per request, and the timer, when it fires early, waits again for the nearest one.  (A
    # timer armed and cancelled for each of the two, per request, cost ~10,000 instructions, 5% of a /predict.)

    def _arm(self) -> None:
        if self._read_by == math.inf and self.read_timeout > 0:
            self._due(self.read_timeout, True)

    def _disarm(self) -> None:
        self._read_by = math.inf

    def _due(self, seconds: float, read: bool) -> None:
        at = self.loop.time() + seconds
        if read:
            self._read_by = at
        else:
            self._idle_by = at
        if at < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer, self._timer_at = self.loop.call_at(at, self._expire), at

    def _expire(self) -> None:
        self._timer, self._timer_at = None, math.inf
        now = self.loop.time() + 0.001  # (libuv's timers are in milliseconds: one may fire a fraction early)
        if now >= self._read_by:
            self._read_by = math.inf
            self._too_slow()
        elif now >= self._idle_by:
            self._idle_by = math.inf
            self.timeout_keep_alive_handler()
        else:
            at = self._read_by if self._read_by < self._idle_by else self._idle_by
            if at < math.inf:
                self._timer, self._timer_at = self.loop.call_at(at, self._expire), at

    def _too_slow(self) -> None:
        if not self._socket.is_closing():
            log.debug("closing a connection that did not send its request in %.1fs", self.read_timeout)
            self._socket.close()

    def _unset_keepalive_if_required(self) -> None:
        # (uvicorn calls it first thing in `data_received`, for each read)
        self._idle_by = math.inf
        self._fresh = True  # no request has come whole from this read yet

    def on_response_complete(self) -> None:
        # uvicorn's, with its keep-alive timeout on the connection's timer
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self._idle_by = math.inf
        self.flow.resume_reading()  # unpause reading if needed
        if self.pipeline:  # the next pipelined request's task; else the keep-alive timeout
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        else:
            self._due(self.timeout_keep_alive, False)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._socket = transport
        super().connection_made(_GracefulClose(transport, self))  # type: ignore[arg-type]
        self._arm()  # a connection that sends nothing at all is bounded too
        if self.acceptor is not None:  # others may wait behind it: accept them in the loop's next iteration
            self.acceptor.soon(self)

    def on_message_begin(self) -> None:
        # uvicorn's, without the scope: it is made for a request that goes the ASGI way only (`_asgi_scope`)
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self.scope = None  # type: ignore[assignment]
        self._received = self.loop.time()
        self._admitted = False
        self._body_bytes = 0
        self._arm()

    def _asgi_scope(self) -> None:
        """The ASGI scope of the request being parsed, as uvicorn's ``on_message_begin`` makes it, with ours."""
        url, headers, expect_100_continue = self.url, self.headers, self.expect_100_continue
        super().on_message_begin()
        self.url, self.headers, self.expect_100_continue = url, headers, expect_100_continue
        scope = self.scope
        scope["headers"] = headers
        scope[RECEIVED] = self._received  # type: ignore[typeddict-unknown-key]
        if self._admitted:
            scope[ADMITTED] = None  # type: ignore[typeddict-unknown-key]  # admitted: queued once its body is in

    def on_headers_complete(self) -> None:
        self._in_body = True
        if (self.parser.get_method() == b"POST"
                and (self.cycle is None or self.cycle.response_complete)  # no answer of this connection pending
                and not self.expect_100_continue and not self.parser.should_upgrade()):
            path, _, query = self.url.partition(b"?")
            hot = self.hot.get(path)
            shedder = self.shedder
            if shedder is not None and (hot is not None or path not in _EXEMPT_BYTES):  # (a hot route is never exempt)
                if shedder.work > shedder.max_lag and not shedder.admit():  # (nothing to shed below the budget: no call)
                    # no ASGI task, no scope: the cheapest answer this server can give (a shed costs as much CPU as
                    # a small prediction when it goes through the app)
                    self._shedding = True
                    self._keep_alive = self.parser.should_keep_alive()
                    return
                self._admitted = True
            if hot is not None and b"#" not in query and not self._socket.is_closing():
                for name, value in self.headers:  # a body announced larger: the ASGI way at once (a 413 before the body)
                    if name == b"content-length" and not (value.isdigit() and int(value) <= INLINE_BODY):
                        break
                else:
                    self._hot = hot  # its body is held; answered inline once it is in, or given to ASGI (`_to_asgi`)
                    self._hot_query = query
                    return
        self._asgi_scope()
        super().on_headers_complete()

    def _to_asgi(self) -> None:
        """The hot route's request being parsed goes the ASGI way after all: its cycle and task, its body so far."""
        self._hot = None
        body, self._hot_body = self._hot_body, b""
        self._asgi_scope()
        super().on_headers_complete()
        if body:
            super().on_body(body)

    def on_body(self, body: bytes) -> None:
        if not self._shedding:
            self._body_bytes += len(body)
            if self._hot is not None:
                if self._body_bytes <= INLINE_BODY:
                    self._hot_body += body
                    return
                self._to_asgi()  # a large body: read as it comes, with the flow control of uvicorn's cycle
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()
        self._in_body = False
        if self._lingering:  # the rest of an answered request's body is in: nothing is left unread
            self._socket.close()
            return
        if not self._shedding:
            if self._hot is not None:
                self._inline()
                return
            if (self.shedder is not None and ADMITTED in self.scope  # admitted at parse time (a fresh scope per request)
                    and not self.cycle.response_complete):  # (answered early: never queued)
                self.scope[ADMITTED] = self.shedder.enqueue(self._body_bytes)  # type: ignore[typeddict-unknown-key]
            super().on_message_complete()
            return
        self._shedding = False
        if not self._write_shed(self._keep_alive):
            return
        self.on_response_complete()  # as after any answer: reading resumed, the keep-alive timer armed

    def _write_shed(self, keep_alive: bool) -> bool:
        """The shed answer (503, ``Retry-After``, the service's error shape) in one write, the connection closed after
        it unless kept alive; whether it is."""
        assert self.shedder is not None
        default = b"".join(name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers)
        close = b"" if keep_alive else b"connection: close\r\n"
        self.transport.write(self.shedder.shed_response + default + close + b"\r\n" + SHED_BODY)
        if not keep_alive:
            self.transport.close()
        return keep_alive

    def _inline(self) -> None:
        """Answer the hot route's request whose body is in, here and now, if the shedder (when on) would run it as it
        comes: `Front.inline`'s coroutine driven to its end, its answer written as uvicorn writes one, then `Front.finish`.
        Else it takes a turn (`_defer`) and is answered so in a later iteration.  A handler that suspends (none does:
        the body is in) is continued as a task."""
        shedder = self.shedder
        body = self._hot_body
        if shedder is None:
            how = INLINE
        else:
            since = -1.0  # (pipelined behind another request of this read)
            if self._fresh:  # the first request to come whole from this read: its connection's last answer was earlier
                self._fresh = False
                since = self._answered_at
            how = shedder.inline(len(body), self._received, since)
            if how == DEFER:
                self._defer()
                return
            self._answered_at = shedder.answered
        cpu = time.thread_time() if how != INLINE else 0.0
        endpoint = self._hot
        assert endpoint is not None and self.front is not None
        self._hot, self._hot_body = None, b""
        start = _clock()
        front = self.front
        parser = self.parser
        keep_alive = parser.should_keep_alive() and parser.get_http_version() != "1.0"  # (as uvicorn's cycle)
        try:
            state, answering = front.inline(endpoint, dict(self.headers), self._hot_query, body)
            try:
                suspended = answering.send(None)
            except StopIteration as done:
                answer: Answer | None = done.value
            else:
                self._suspended(answering, suspended, state, start, keep_alive, len(body))
                return
            if how != INLINE:  # (shedding is on) its cost, as a turn measures it: from its start to its answer
                shedder.learn(how, time.thread_time() - cpu)  # type: ignore[union-attr]
            if answer is not None:
                self._write(answer, keep_alive)
            else:  # nobody to answer (the client went away)
                self.transport.close()
            front.finish(state, "POST", start)
        except Exception as exc:  # a fault of this code (the app's are a 500): as uvicorn does when its app fails
            # (raised into the parser, it would be taken for a malformed request: a 400)
            log.error("answering a request inline: %s", type(exc).__name__)
            self.transport.close()

    def _defer(self) -> None:
        """The hot route's request whose body is in waits for a turn, as a `_Deferred`: the connection's pending answer
        (``cycle``), so that the requests pipelined behind it wait for it and a drain closes the connection after it."""
        assert self._hot is not None and self.shedder is not None
        parser = self.parser
        deferred = _Deferred(self, self._hot, dict(self.headers), self._hot_query, self._hot_body, self._received,
                             parser.should_keep_alive() and parser.get_http_version() != "1.0")
        self._hot, self._hot_body = None, b""
        self.cycle = deferred  # type: ignore[assignment]
        self.shedder.defer(deferred, len(deferred.body))

    def _answer_deferred(self, deferred: _Deferred) -> bool:
        """``deferred``'s turn (from `Shedder._next`, which then ends its turn and counts it out): answered inline, as
        `_inline` answers, or shed as `Shedder.__call__` sheds at a turn (it waited past the budget, and the work queued
        would make the requests behind it wait past it too), or, its client gone, not run at all (a 499, as through
        ASGI).  False: its answer suspended, and the task that continues it ends its turn and counts it out."""
        shedder, front = self.shedder, self.front
        assert shedder is not None and front is not None
        deferred.response_complete = True  # answered now (whatever comes next on the connection may follow it)
        self._answered_at = shedder.answered
        try:
            endpoint, keep_alive = deferred.endpoint, deferred.keep_alive
            if deferred.disconnected or self._socket.is_closing():
                state, answering = front.inline(endpoint, deferred.headers, deferred.query, b"")
                answering.close()  # (never started)
                state["route"], state["disconnected"] = endpoint.path, True
                front.finish(state, "POST", _clock())
            elif (shedder._over_budget(shedder.queued - 1)  # (the others queued besides it)
                  and self.loop.time() - deferred.received > shedder.max_lag):
                shedder.shed.inc()
                self._write_shed(keep_alive)
                self.on_response_complete()
            else:
                # its cost measured as an inline answer's is: the first of its size, then one every SAMPLE_SECONDS
                size, received = deferred.size, deferred.received
                measured = received - shedder.sampled_at[size] >= SAMPLE_SECONDS
                cpu = 0.0
                if measured:
                    shedder.sampled_at[size] = received
                    cpu = time.thread_time()
                start = _clock()
                state, answering = front.inline(endpoint, deferred.headers, deferred.query, deferred.body)
                try:
                    suspended = answering.send(None)
                except StopIteration as done:
                    answer: Answer | None = done.value
                else:
                    task = self.loop.create_task(self._deferred_rest(deferred, answering, suspended, state, start))
                    task.add_done_callback(self.tasks.discard)
                    self.tasks.add(task)
                    return False
                if measured:  # the CPU time of the loop's thread from its start to its answer, as a turn's
                    shedder.learn(size, time.thread_time() - cpu)
                if answer is not None:
                    self._write(answer, keep_alive)
                else:  # nobody to answer (the client went away)
                    self.transport.close()
                front.finish(state, "POST", start)
        except Exception as exc:  # a fault of this code (the app's are a 500): as in `_inline`
            log.error("answering a request inline: %s", type(exc).__name__)
            self.transport.close()
        return True

    async def _deferred_rest(self, deferred: _Deferred, answering: Coroutine[Any, Any, Answer | None], awaited: Any,
                             state: dict[str, Any], start: float) -> None:
        """The rest of a deferred request's answer that suspended (awaiting ``awaited``), in a task holding its turn."""
        shedder = self.shedder
        assert shedder is not None and self.front is not None
        try:
            answer = await _Resumed(answering, awaited)
            if answer is not None:
                self._write(answer, deferred.keep_alive)
            else:
                self.transport.close()
        except Exception as exc:  # as in `_inline`
            log.error("answering a request inline: %s", type(exc).__name__)
            self.transport.close()
        finally:
            shedder.turns.release(self.loop)
            shedder.count_out(deferred.estimate)
            self.front.finish(state, "POST", start)

    def _write(self, answer: Answer, keep_alive: bool) -> None:
        """An answer, as uvicorn's `RequestResponseCycle` writes it (its status line, the server's default headers,
        the answer's, ``connection: close`` unless kept alive), in one write; then what follows any answer."""
        status, headers, body = answer
        defaults = self.server_state.default_headers
        if _DEFAULTS[0] is not defaults:  # (uvicorn makes a new list each second, with the new date)
            _DEFAULTS[:] = defaults, b"".join(name.lower() + b": " + value + b"\r\n" for name, value in defaults)
        parts = [STATUS_LINE[status], _DEFAULTS[1]]
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        if not keep_alive:
            parts.append(b"connection: close\r\n")
        parts += (b"\r\n", body)
        self.transport.write(b"".join(parts))
        if not keep_alive:
            self.transport.close()
        self.on_response_complete()  # counted; as after any answer: reading resumed, the keep-alive timer armed

    def _suspended(self, answering: Coroutine[Any, Any, Answer | None], awaited: Any, state: dict[str, Any],
                   start: float, keep_alive: bool, body_bytes: int) -> None:
        """An inline answer that suspended (awaiting ``awaited``): the rest of it runs as a task, its answer sent
        through a cycle of uvicorn's, as the ASGI way sends it (so that the requests pipelined behind it wait, a drain
        waits for it and closes the connection after it); queued in the shedder meanwhile."""
        self._asgi_scope()
        self.scope["method"] = "POST"
        self.cycle = cycle = RequestResponseCycle(
            scope=self.scope, transport=self.transport, flow=self.flow, logger=self.logger,
            access_logger=self.access_logger, access_log=self.access_log,
            default_headers=self.server_state.default_headers, message_event=asyncio.Event(),
            expect_100_continue=False, keep_alive=keep_alive, on_response=self.on_response_complete)
        cycle.more_body = False
        shedder = self.shedder
        queued = None if shedder is None else shedder.enqueue(body_bytes)

        async def rest() -> None:
            try:
                answer = await _Resumed(answering, awaited)
                if answer is None:
                    return
                status, headers, body = answer
                try:
                    await cycle.send({"type": "http.response.start", "status": status, "headers": headers})
                    await cycle.send({"type": "http.response.body", "body": body})
                except Exception as exc:  # (a header uvicorn refuses): as uvicorn's cycle ends after a failed send
                    log.error("sending an answer: %s", exc)
                    self.transport.close()
            finally:
                if shedder is not None and queued is not None:
                    shedder.count_out(queued[1])
                self.front.finish(state, "POST", start)  # type: ignore[union-attr]

        task = self.loop.create_task(rest())
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    def shutdown(self) -> None:
        if self._hot is not None:  # a hot route's request whose body is arriving: in flight, as ASGI's are
            self._to_asgi()
        super().shutdown()

    def connection_lost(self, exc: Exception | None) -> None:
        self._read_by = self._idle_by = self._timer_at = math.inf
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._in_body = False
        if self._hot is not None:  # a hot route's request whose body was arriving: as through ASGI, a disconnect (499)
            self._to_asgi()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        self._in_body = False  # a request that cannot be parsed: nothing of it will be read, so no lingering
        super().send_400_response(msg)


def protocol(settings: ServeSettings, shedder: Shedder | None = None,
             listener: socket.socket | None = None, front: Front | None = None) -> type[HttpToolsProtocol]:
    """The HTTP protocol class for uvicorn's ``http`` option, with ``request_read_timeout``, shedding at parse
    time for ``shedder`` (the one wrapping the app it serves) when given, connections accepted in batches from
    ``listener`` (the socket uvicorn serves) when given, and ``front``'s hot routes answered inline when given and
    ``inline_hot_routes`` is on (``front``: the app served, behind ``shedder`` if given)."""
    inline = front is not None and settings.inline_hot_routes
    if front is not None and front.hot.keys() & _EXEMPT_BYTES:  # (`on_headers_complete` takes a hot route for not exempt)
        raise ValueError(f"a hot route is exempt from shedding: {sorted(front.hot.keys() & _EXEMPT_BYTES)}")
    return type("HttpToolsReadDeadline", (_ReadDeadline,),
                {"read_timeout": settings.request_read_timeout,
                 "shedder": shedder if shedder is not None and shedder.max_lag > 0 else None,  # (0: shedding off)
                 "acceptor": None if listener is None else _Acceptor(listener),
                 "front": front if inline else None, "hot": front.hot if inline and front is not None else {}})


def document(doc: dict[str, Any]) -> dict[str, Any]:
    """Add the overload answer (503 with Retry-After) to every operation of an OpenAPI document that can be shed."""
    overloaded = "The worker is overloaded: the request was not processed; retry after `Retry-After` seconds."
    retry_after = {"Retry-After": {"description": "Seconds to wait before retrying (sent with an overload 503).",
                                   "schema": {"type": "integer", "minimum": 1}}}
    for path, operations in doc["paths"].items():
        if path.replace("{model_name}", schemas.V2_MODEL) in EXEMPT:
            continue
        for operation in operations.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            answer = operation["responses"].setdefault("503", {"description": "", "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}})
            answer["description"] = f"{answer['description']} Or: {overloaded}".strip() if answer["description"] else overloaded
            answer["headers"] = retry_after
    return doc
