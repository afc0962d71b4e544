"""Prometheus metrics of the service (one registry per app; multi-process aware).

The per-request figures (requests, latency, predictions) are counted in plain Python numbers, so that a request
costs a dict lookup and a few additions instead of a dozen of prometheus_client's locked increments.  A scrape
(`exposition`) adds what is pending to the Prometheus metrics first, so it reads every request answered before it.
In one process nothing else reads them, and that is all; with several workers a scrape of one reads the others'
counts from their files, so each worker adds its counts once per turn of the event loop too (a callback the first
count of a turn schedules).
"""

from __future__ import annotations

import asyncio
import os
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Iterable
from itertools import accumulate
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
#: Routes whose answer is the service's readiness (200 ready, 503 not): `oncology_ready` follows them.
#: The model's scoring time by arm: finer than a request's latency (a row scores in ~0.1 ms), up to 2.5 s.
SCORING_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
READINESS_ROUTES = frozenset({"/readyz", "/v2/health/ready", "/ping"})


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "oncology_http_requests", "HTTP requests by route, method and status", ["route", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "oncology_http_request_duration_seconds", "Request latency by route and status", ["route", "status"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.predictions = Counter("oncology_predictions", "Predictions by predicted class", ["prediction"], registry=r)
        self.referrals = Counter(
            "oncology_referrals", "Predictions referred for review (inside the model's referral band)", registry=r
        )
        self.model_info = Gauge(
            "oncology_model_info", "Model versions this process has served: 1 for the one it serves now, 0 for earlier ones", ["version"], registry=r, multiprocess_mode="liveall"
        )
        self.reloads = Counter("oncology_model_reloads", "Model loads by result (initial, success, failure)", ["result"], registry=r)
        # Set to 1 when the first model is loaded, then by every answer of a readiness route (the drain
        # turns those to 503).  livemin: with several workers, 1 only if every live worker is ready.
        self.ready = Gauge(
            "oncology_ready", "1 if the service is ready (a verified model is loaded, not shutting down), else 0",
            registry=r, multiprocess_mode="livemin",
        )
        # the prediction log (oncology.webservice.predlog); the alert rules use oncology_prediction_log_dropped_total
        self.prediction_log_written = Counter(
            "oncology_prediction_log_written", "Predictions written to the prediction log in the store", registry=r
        )
        self.prediction_log_dropped = Counter(
            "oncology_prediction_log_dropped",
            "Predictions left out of the prediction log, by reason (buffer_full, write_failed, shutdown, invalid)",
            ["reason"], registry=r,
        )
        self.prediction_log_write_failures = Counter(
            "oncology_prediction_log_write_failures",
            "Failed attempts to write a prediction-log object (each batch is retried a bounded number of times)",
            registry=r,
        )
        self.prediction_log_buffered = Gauge(
            "oncology_prediction_log_buffered", "Predictions buffered in memory, not yet written (sampled each second)",
            registry=r, multiprocess_mode="livesum",
        )
        self.outcomes = Counter(
            "oncology_outcomes",
            "Outcomes received on POST /outcomes, by result (created, unchanged, conflict)", ["result"], registry=r,
        )
        self.outcome_alarm = Gauge(
            "oncology_outcome_alarm",
            "The newest outcome check's sequential (CUSUM) alarm per model version and metric (recall, specificity): "
            "1 alarm, 0 none; read from the store (monitoring/outcome-checks/latest.json)",
            ["model_version", "metric"], registry=r, multiprocess_mode="max",
        )
        self.outcome_check_time = Gauge(
            "oncology_outcome_check_timestamp_seconds", "When the newest outcome check ran (Unix time; 0: none seen)",
            registry=r, multiprocess_mode="max",
        )
        # releases (oncology.webservice.routing): what each version did in each arm, and the plan followed
        self.arm_predictions = Counter(
            "oncology_arm_predictions", "Predictions by model version, arm (champion, candidate, shadow, pinned) and class",
            ["version", "arm", "prediction"], registry=r,
        )
        self.arm_requests = Counter(
            "oncology_arm_requests", "Scored requests by model version, arm and outcome (ok, error)",
            ["version", "arm", "outcome"], registry=r,
        )
        # a histogram: the judge ranks its buckets (oncology.release.metrics) when it reads the replicas' metrics
        self.arm_scoring = Histogram(
            "oncology_arm_scoring_seconds", "Seconds the model took to score a request, by model version and arm",
            ["version", "arm"], buckets=SCORING_BUCKETS, registry=r,
        )
        self.release_share = Gauge(
            "oncology_release_share", "Share of requests the candidate answers (canary) or scores (shadow); 0: no release",
            ["candidate", "mode"], registry=r, multiprocess_mode="livemax",
        )
        self.release_step_started = Gauge(
            "oncology_release_step_started_timestamp_seconds",
            "When the current step of the release under way began (Unix time); 0: no release",
            registry=r, multiprocess_mode="livemax",
        )
        self.release_last_rollback = Gauge(
            "oncology_release_last_rollback_timestamp_seconds",
            "When the latest release was rolled back by its judge (Unix time); 0: never", registry=r,
            multiprocess_mode="livemax",
        )
        self.shadow_dropped = Counter(
            "oncology_shadow_dropped", "Shadow scorings dropped because the shadow queue was full", registry=r
        )
        self._arms: dict[tuple[str, str], tuple[Any, Any, Any, Any, Any]] = {}
        #: (version, arm) -> what was counted and not yet added to the metrics: a prometheus_client increment costs
        #: ~1 us (a check and a lock), five per request; a request here adds two numbers and appends its time
        self._arm_pending: dict[tuple[str, str], _ArmCounts] = {}
        #: several workers share the metrics through files, which a scrape of one worker reads for the others: each
        #: worker writes its arm counts once per turn of the loop; one process writes them at each scrape only (two
        #: arms' four to six additions each turn cost ~5% of a release's single-row throughput)
        self._multiprocess = "PROMETHEUS_MULTIPROC_DIR" in os.environ
        self._release_labels: tuple[str, str] | None = None
        self._children: dict[tuple[str, str, int], _Pending] = {}  # one per label set, made at its first request
        self._dirty: list[_Pending] = []  # those with counts not added to the Prometheus metrics yet
        self._predicted = [0, 0, 0]  # malignant, benign, referred: not added yet
        #: a flush is scheduled, or none is needed: in one process the counts wait for the scrape (a callback per turn
        #: of the loop cost ~3% of a single-row request, with one request a turn)
        self._scheduled = not self._multiprocess
        self.benign = self.predictions.labels("benign")
        self.malignant = self.predictions.labels("malignant")
        self._version: str | None = None

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        pending = self._children.get((route, method, status))
        if pending is None:  # label lookups cost more than the increments: once per label set
            pending = self._children[(route, method, status)] = _Pending(
                self.requests.labels(route, method, str(status)),
                self.latency.labels(route, str(status)),
                int(status == 200) if route in READINESS_ROUTES and status in (200, 503) else None,
            )
        if pending.ready is not None:  # a readiness answer (the drain turns it to 503): at once
            self.ready.set(pending.ready)
        if not pending.count:
            self._dirty.append(pending)
        pending.count += 1
        pending.seconds += seconds
        pending.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1  # as prometheus_client: the first bound >= seconds
        if not self._scheduled:
            self._schedule()

    def count_predictions(self, malignant: int, total: int, referred: int = 0) -> None:
        predicted = self._predicted
        predicted[0] += malignant
        predicted[1] += total - malignant
        predicted[2] += referred
        if not self._scheduled:
            self._schedule()

    def _schedule(self) -> None:
        try:
            asyncio.get_running_loop().call_soon(self.flush)
        except RuntimeError:  # no event loop (a test, a script): count now
            self.flush()
            return
        self._scheduled = True

    def flush(self) -> None:
        """Add the pending counts to the Prometheus metrics (before a scrape; with several workers, once per turn)."""
        self._scheduled = not self._multiprocess
        for pending in self._dirty:
            pending.flush()
        self._dirty.clear()
        malignant, benign, referred = self._predicted
        for counts in self._arm_pending.values():  # the answers of a release (`count_answer`): also the arms' rows
            answered = counts.answered
            if answered:
                answered_malignant = counts.answered_malignant
                counts.malignant += answered_malignant
                counts.rows += answered
                malignant += answered_malignant
                benign += answered - answered_malignant
                referred += counts.referred
                counts.answered = counts.answered_malignant = counts.referred = 0
        if malignant:
            self.malignant.inc(malignant)
        if benign:
            self.benign.inc(benign)
        if referred:
            self.referrals.inc(referred)
        self._predicted[:] = (0, 0, 0)
        if self._arm_pending and self._multiprocess:
            self._flush_arms()

    def count_arm(self, version: str, arm: str, malignant: int, total: int, seconds: float) -> None:
        """A request scored by ``version`` in ``arm``: its predictions and scoring time.  Added up here and written
        to the metrics at each scrape (`exposition`), and with several workers also with the other counts, once per
        turn of the loop (`flush`): a scrape reads the other workers' counts from their files."""
        self._arm_counts(version, arm).add(malignant, total, (seconds,))
        if self._multiprocess and not self._scheduled:
            self._schedule()

    def count_answer(self, version: str, arm: str, malignant: int, total: int, referred: int, seconds: float) -> None:
        """An answer given in a release: `count_predictions` and `count_arm` in one call.  Its predictions are added up
        in the arm's counts only (three additions, not six), and reach the service's own counts at the next `flush`."""
        counts = self._arm_pending.get((version, arm))
        if counts is None:
            counts = self._arm_pending[(version, arm)] = _ArmCounts()
        counts.answered += total  # `_ArmCounts.add` of one time, written here (a call less on every answer)
        counts.answered_malignant += malignant
        counts.referred += referred
        times = counts.times
        times.append(seconds)
        if len(times) >= _ARM_TIMES:
            counts.bin()
        if not self._scheduled:
            self._schedule()

    def count_answers(self, version: str, arm: str, malignant: int, rows: int, referred: int,
                      times: list[float]) -> None:
        """`count_answer` for one-row requests answered in one turn: their malignant and referred rows, their rows
        (one a request) and each one's scoring time, in order."""
        counts = self._arm_counts(version, arm)
        counts.answered += rows
        counts.answered_malignant += malignant
        counts.referred += referred
        counts.times += times
        if len(counts.times) >= _ARM_TIMES:
            counts.bin()
        if not self._scheduled:
            self._schedule()

    def count_arm_requests(self, version: str, arm: str, malignant: int, rows: int, times: Iterable[float]) -> None:
        """`count_arm` for several requests: their malignant rows, their rows, and each one's scoring time."""
        self._arm_counts(version, arm).add(malignant, rows, times)
        if self._multiprocess and not self._scheduled:
            self._schedule()

    def count_arm_alike(self, version: str, arm: str, malignant: int, rows: int, seconds: float) -> None:
        """`count_arm_requests` for ``rows`` one-row requests that each took ``seconds`` (a shadow pass's), written out
        (~1,000 instructions a request less than binning the pass at once, whose iterator and deque cost more than
        the later sort of its times)."""
        counts = self._arm_counts(version, arm)
        counts.malignant += malignant
        counts.rows += rows
        times = counts.times
        times += [seconds] * rows
        if len(times) >= _ARM_TIMES:
            counts.bin()
        if self._multiprocess and not self._scheduled:
            self._schedule()

    def _arm_counts(self, version: str, arm: str) -> _ArmCounts:
        counts = self._arm_pending.get((version, arm))
        if counts is None:
            counts = self._arm_pending[(version, arm)] = _ArmCounts()
        return counts

    def _flush_arms(self) -> None:
        pending, self._arm_pending = self._arm_pending, {}
        for (version, arm), counts in pending.items():
            values = self._arms.get((version, arm))
            if values is None:
                histogram = self.arm_scoring.labels(version, arm)
                # the children's values (prometheus_client's `inc` adds to the same ones, after a check per call that
                # these counts, never negative, do not need): 4 to 6 additions a flush, ~0.5 us less each
                values = self._arms[(version, arm)] = (
                    self.arm_predictions.labels(version, arm, "malignant")._value,
                    self.arm_predictions.labels(version, arm, "benign")._value,
                    self.arm_requests.labels(version, arm, "ok")._value,
                    histogram._sum,  # prometheus_client's Histogram has no observe-many: its sum and buckets
                    histogram._buckets,
                )
            counts.bin()
            if counts.malignant:
                values[0].inc(counts.malignant)
            if counts.rows - counts.malignant:
                values[1].inc(counts.rows - counts.malignant)
            values[2].inc(counts.requests)
            values[3].inc(counts.seconds)
            for index, count in enumerate(counts.buckets):
                if count:
                    values[4][index].inc(count)

    def count_arm_error(self, version: str, arm: str) -> None:
        self.arm_requests.labels(version, arm, "error").inc()

    def release_followed(self, candidate: str | None, mode: str | None, share: float, step_started: float,
                         last_rollback: float) -> None:
        """The release plan this process follows now (None: no release)."""
        labels = (candidate, mode) if candidate is not None and mode is not None else None
        if self._release_labels is not None and self._release_labels != labels:
            self.release_share.labels(*self._release_labels).set(0)
        if labels is not None:
            self.release_share.labels(*labels).set(share)
        self._release_labels = labels
        self.release_step_started.set(step_started)
        self.release_last_rollback.set(last_rollback)

    def model_loaded(self, result: str, version: str | None) -> None:
        self.reloads.labels(result).inc()
        if result == "initial":  # the first verified model: ready (reloads, failed or not, keep a model served)
            self.ready.set(1)
        if version is not None and version != self._version:
            if self._version is not None:  # 0, not removed: removal does not reach other workers' files
                self.model_info.labels(self._version).set(0)
            self.model_info.labels(version).set(1)
            self._version = version

    def exposition(self) -> bytes:
        self.flush()
        if self._arm_pending:
            self._flush_arms()
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:  # several workers: merge their files
            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
            return generate_latest(merged)
        return generate_latest(self.registry)


class _Pending:
    """One label set's request counter and latency histogram, and what it counted since the last flush."""

    __slots__ = ("requests", "latency", "ready", "count", "seconds", "buckets")

    def __init__(self, requests: Any, latency: Any, ready: int | None) -> None:
        self.requests, self.latency, self.ready = requests, latency, ready
        self.count = 0
        self.seconds = 0.0
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last: +Inf

    def flush(self) -> None:
        self.requests.inc(self.count)
        # a histogram child's own sum and bucket values (prometheus_client's `Histogram.observe` adds to the same
        # ones, one observation at a time): a turn's observations in one addition per bucket
        self.latency._sum.inc(self.seconds)
        for i, n in enumerate(self.buckets):
            if n:
                self.latency._buckets[i].inc(n)
                self.buckets[i] = 0
        self.count = 0
        self.seconds = 0.0


#: A label set's scoring times waiting to be binned: at this many, binned (one process writes them at scrapes only,
#: and a service nobody scrapes would otherwise keep every request's time).
_ARM_TIMES = 1024


class _ArmCounts:
    """One (version, arm)'s counts not yet in the metrics: rows, malignant rows, and each request's scoring time,
    appended as it comes (an append is cheaper than a bisection and four additions) and binned many at a time."""

    __slots__ = ("malignant", "rows", "times", "requests", "seconds", "buckets", "answered", "answered_malignant",
                 "referred")

    def __init__(self) -> None:
        self.malignant = 0
        self.rows = 0
        #: rows answered (`Metrics.count_answer`), their malignant and referred rows, not yet in ``rows``, ``malignant``
        #: and the service's own counts (`Metrics.flush` adds them)
        self.answered = 0
        self.answered_malignant = 0
        self.referred = 0
        self.times: list[float] = []
        self.requests = 0
        self.seconds = 0.0
        self.buckets = [0] * (len(SCORING_BUCKETS) + 1)  # the last: +Inf

    def add(self, malignant: int, rows: int, times: Iterable[float]) -> None:
        """Requests' malignant rows and rows, and each one's scoring time (binned later, many at a time)."""
        self.malignant += malignant
        self.rows += rows
        self.times.extend(times)
        if len(self.times) >= _ARM_TIMES:
            self.bin()

    def bin(self) -> None:
        """Move the times appended so far into the request count, the sum and the buckets."""
        times = self.times
        if not times:
            return
        self.requests += len(times)
        # one addition after another, as observing each time would add them (`sum` may compensate rounding)
        self.seconds = deque(accumulate(times, initial=self.seconds), maxlen=1)[0]
        # sorted (a C sort of floats, a few compares a time), each bucket is a slice: its count the difference of two
        # bisections a bound, ~15 a batch, instead of a bisection (and a tally) a time (~1,800 instructions each)
        times.sort()
        buckets = self.buckets
        below = 0
        for index, bound in enumerate(SCORING_BUCKETS):  # le: a time equal to a bound is inside it
            upto = bisect_right(times, bound, below)
            buckets[index] += upto - below
            below = upto
        buckets[-1] += len(times) - below
        times.clear()
