"""What the service does, whatever the protocol: the served model, scoring, the model's facts,
readiness.  Knows no HTTP: the protocol modules (`rest`, `v2`, `sagemaker`) parse a request, call
the core and shape its answer."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from itertools import chain, repeat
from operator import is_, itemgetter
from typing import TYPE_CHECKING, Any, cast

from oncology.settings import ServeSettings
from oncology.webservice import errors, routing, schemas
from oncology.webservice.metrics import Metrics
from oncology.webservice.model import ModelHolder
from oncology_model.classifier import Classifier
from oncology_model.datamodel import Decision, Prediction

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # the prediction log is imported only when it is on (see app.create_app)
    from oncology.webservice import predlog

Scored = tuple[list[float], list[str], list[Decision]]
_CANDIDATE = itemgetter(2)  # of a shadow job
_ROWS = itemgetter(3)
_LOGGED = itemgetter(4)


def _verdicts(candidate: Classifier, probabilities: Sequence[float]) -> tuple[list[str], list[Decision]]:
    """A shadow pass's labels and decisions of the candidate's ``probabilities`` (as `Core.score` makes the
    champion's, written out there on every request's path)."""
    threshold = candidate.threshold
    return ["malignant" if p >= threshold else "benign" for p in probabilities], candidate.decide_many(probabilities)


class Core:
    """The served model with its metrics and prediction log, bound to one settings object."""

    def __init__(self, settings: ServeSettings, holder: ModelHolder, metrics: Metrics,
                 prediction_log: predlog.PredictionLog | None = None) -> None:
        self.settings = settings
        self.holder = holder
        self.metrics = metrics
        self.prediction_log = prediction_log
        self.shadow = routing.ShadowScorer(self._score_shadow, self._score_shadow_lines, metrics.shadow_dropped.inc,
                                           self._count_answers)

    def route(self, champion: Classifier, key: str) -> routing.Route:
        """Who answers the request with routing key ``key``: the champion, or the candidate of a release."""
        return routing.route(champion, self.holder.release, key)

    def _score_shadow(self, jobs: Sequence[routing.ShadowJob]) -> None:
        """Score the shadow jobs queued since the last pass: each candidate's rows in one call of its model (the
        per-call work is paid once), then counted and logged request by request, each with its rows' share of
        the scoring time.  If that call fails, each job is scored alone, so a failure is counted against the
        requests that cause it only."""
        first = jobs[0][2]
        if all(map(is_, repeat(first), map(_CANDIDATE, jobs))):  # one candidate (a release has one): no grouping
            self._score_shadow_of(first, jobs)
            return
        by_candidate: dict[int, list[routing.ShadowJob]] = {}
        for job in jobs:
            by_candidate.setdefault(id(job[2]), []).append(job)
        for group in by_candidate.values():
            self._score_shadow_of(group[0][2], group)

    def _count_answers(self, lines: list[Any], times: list[float]) -> None:
        """The champion's answers to one-row requests shadowed in a pass, counted as `score` counts an answer in a
        release (`Metrics.count_answer`), from their lines (version, prediction, decision) and scoring times: one
        count a pass, not a call a request.  (A plain loop: C maps of `attrgetter`s took three times as long.)"""
        version = lines[0].model_version
        malignant = referred = 0
        refer = Decision.REFER
        for line in lines:
            if line.model_version != version:  # a champion reloaded within the turn: line by line
                self._count_lines(lines, times)
                return
            if line.prediction == "malignant":
                malignant += 1
            if line.decision == refer:
                referred += 1
        self.metrics.count_answers(version, routing.CHAMPION, malignant, len(lines), referred, times)

    def _count_lines(self, lines: list[Any], times: list[float]) -> None:
        """`_count_answers` line by line."""
        for line, seconds in zip(lines, times):
            self.metrics.count_answer(line.model_version, routing.CHAMPION, int(line.prediction == "malignant"), 1,
                                      int(line.decision == Decision.REFER), seconds)

    def _score_shadow_lines(self, candidate: Classifier, rows: list[Sequence[int]], lines: list[Any]) -> None:
        """`_score_shadow` of one-row requests whose champion lines were logged (the hot routes): their rows in one
        call, one count of them all, and the shadow's lines made from the champion's; each request's share of the
        scoring time is one row's."""
        start = time.perf_counter()
        try:
            probabilities = candidate.score_rows(rows)
        except Exception:  # each request alone, through the jobs' path: a failure counts against its request only
            for row, line in zip(rows, lines):
                self._score_shadow_of(candidate, ((line.route, line.request_id, candidate, (row,), (line,)),))
            return
        labels, decisions = _verdicts(candidate, probabilities)
        per_row = (time.perf_counter() - start) / len(rows)
        version = candidate.version
        self.metrics.count_arm_alike(version, routing.SHADOW, labels.count("malignant"), len(rows), per_row)
        self.prediction_log.record_shadow_lines(  # type: ignore[union-attr]  # (lines are logged: the log is on)
            lines, version, probabilities, labels, decisions, int(per_row * 1e6) / 1000)

    def _score_shadow_of(self, candidate: Classifier, jobs: Sequence[routing.ShadowJob]) -> None:
        rows = jobs[0][3] if len(jobs) == 1 else list(chain.from_iterable(map(_ROWS, jobs)))
        version, prediction_log = candidate.version, self.prediction_log
        start = time.perf_counter()
        try:
            probabilities = candidate.score_rows(rows)
        except Exception as exc:  # counted (metrics, prediction log); nobody waits for this answer
            if len(jobs) > 1:  # each request alone: a failure counts against the requests that cause it only
                for job in jobs:
                    self._score_shadow_of(candidate, (job,))
                return
            ((route, request_id, *_),) = jobs
            self.metrics.count_arm_error(version, routing.SHADOW)
            if prediction_log is not None:
                prediction_log.record_error(route, request_id, version, routing.SHADOW,
                                            (time.perf_counter() - start) * 1000)
            log.warning("shadow: candidate %s failed on request %s (%s)", version, request_id, type(exc).__name__)
            return
        labels, decisions = _verdicts(candidate, probabilities)
        per_row = (time.perf_counter() - start) / max(len(rows), 1)
        sizes = list(map(len, map(_ROWS, jobs)))
        single = sizes.count(1) == len(sizes)  # one row a request (the hot routes): each one's share is one row's
        times = [per_row] * len(sizes) if single else [per_row * n for n in sizes]
        self.metrics.count_arm_requests(version, routing.SHADOW, labels.count("malignant"), len(labels), times)
        if prediction_log is None:
            return
        latencies = [int(per_row * 1e6) / 1000] * len(sizes) if single else [int(t * 1e6) / 1000 for t in times]
        answered = list(map(_LOGGED, jobs))
        if None not in answered:  # the shadow's lines are made from the champion's
            prediction_log.record_shadow(answered, version, probabilities, labels, decisions,
                                         latencies)
            return
        first = 0  # a champion's line could not be made (the log counted it): from these requests' rows
        for (route, request_id, _, job_rows, _), latency in zip(jobs, latencies):
            last = first + len(job_rows)
            prediction_log.record(route, request_id, version, job_rows, probabilities[first:last], labels[first:last],
                                  decisions[first:last], routing.SHADOW, latency)
            first = last

    def classifier(self) -> Classifier:
        """The model serving now (one object per request: a reload never mixes two); 503 before one loads."""
        classifier = self.holder.classifier
        if classifier is None:
            raise errors.NotReady("no verified model is loaded yet")
        return classifier

    def readiness(self) -> dict[str, Any]:
        """The readiness answer; 503 before a model loads and once the service drains."""
        if not self.holder.ready:
            raise errors.NotReady("shutting down" if self.holder.draining else "no verified model is loaded yet")
        return {"status": "ready", "model_version": self.classifier().version}

    def score(self, route: str, request_id: str, classifier: Classifier, rows: Iterable[Sequence[int]],
              arm: str = routing.CHAMPION, shadow: Classifier | None = None) -> Scored:
        """Malignant probabilities, labels and decisions of ``rows``; counted by version and arm, and logged
        when the prediction log is on.  ``shadow``: a candidate that also scores the rows, off the answer path."""
        prediction_log = self.prediction_log
        if (prediction_log is not None or shadow is not None) and not isinstance(rows, list):
            rows = list(rows)  # an iterator (decode_tumors) is consumed by scoring; the log needs the rows too
        start = time.perf_counter()
        try:
            probabilities = classifier.score_rows(rows)
        except errors.APIError:  # the client's rows (validated while scored): not the model's failure
            raise
        except Exception:
            self.metrics.count_arm_error(classifier.version, arm)
            if prediction_log is not None:
                prediction_log.record_error(route, request_id, classifier.version, arm,
                                            (time.perf_counter() - start) * 1000)
            raise
        threshold = classifier.threshold
        labels = ["malignant" if p >= threshold else "benign" for p in probabilities]
        decisions = classifier.decide_many(probabilities)
        elapsed = time.perf_counter() - start
        malignant = labels.count("malignant")
        referred = decisions.count(Decision.REFER) if classifier.referral is not None else 0
        # by arm only in a release (or pinned): outside one, every answer is the champion's and the service's own
        # counts (and the log's lines as before) say so; each costs ~1% of single-row throughput
        version = classifier.version
        # the prediction log never blocks or raises: a slow store cannot slow a prediction
        if arm == routing.CHAMPION and self.holder.release is None:
            self.metrics.count_predictions(malignant, len(labels), referred)
            logged = None if prediction_log is None else prediction_log.record(  # no arm, no latency: as before releases
                route, request_id, version, rows, probabilities, labels, decisions)  # type: ignore[arg-type]
        else:
            logged = None if prediction_log is None else prediction_log.record(
                route, request_id, version, rows, probabilities, labels, decisions,  # type: ignore[arg-type]
                arm, int(elapsed * 1e6) / 1000)
            if shadow is not None and logged is not None and len(logged) == 1:
                queue = self.shadow
                if queue.due is shadow or queue.open(shadow):
                    # a one-row request shadowed in this turn's pass: its row, line and time queued, with no call; the
                    # pass counts the champion's answers from their lines (`_count_answers`), then scores them
                    queue.rows.append(rows[0])  # type: ignore[index]
                    queue.lines.append(logged[0])
                    queue.times.append(elapsed)
                    return probabilities, labels, decisions
            if arm == routing.SHADOW:  # the service's own counts are of the answers given
                self.metrics.count_arm(version, arm, malignant, len(labels), elapsed)
            else:  # both in one call
                self.metrics.count_answer(version, arm, malignant, len(labels), referred, elapsed)
        if shadow is not None:
            self.shadow.submit(route, request_id, shadow, rows, logged)  # type: ignore[arg-type]
        return probabilities, labels, decisions

    def results(self, route: str, request_id: str, classifier: Classifier, rows: Iterable[Sequence[int]],
                explain: bool = False, arm: str = routing.CHAMPION,
                shadow: Classifier | None = None) -> list[schemas.Result] | list[schemas.ExplainedResult]:
        """One result per row, in order (as /predict answers); ``explain`` adds each feature's contribution."""
        if explain:
            rows = list(rows)
            explanations = [
                schemas.Explanation(e.baseline, schemas.Contributions(**e.contributions), e.log_odds)
                for e in classifier.explain_rows(rows)
            ]
        probabilities, strs, decisions = self.score(route, request_id, classifier, rows, arm, shadow)
        # `Prediction`'s values as plain strings: msgspec encodes them ~0.5 us a row faster than the enum's members
        labels = cast(list[Prediction], strs)
        version = classifier.version
        if not explain:
            return [schemas.Result(label, p, d, version) for p, label, d in zip(probabilities, labels, decisions)]
        return [
            schemas.ExplainedResult(label, p, d, version, e)
            for p, label, d, e in zip(probabilities, labels, decisions, explanations)
        ]

    def model_info(self) -> dict[str, Any]:
        """The served model's version, source, threshold, referral band, metadata and KPIs."""
        classifier = self.classifier()
        referral = classifier.referral
        return {
            "version": classifier.version,
            "source": self.holder.source,
            "threshold": classifier.threshold,
            "referral": None if referral is None else {"low": referral.low, "high": referral.high},
            "metadata": classifier.metadata,
            "kpis": classifier.kpis,
        }
