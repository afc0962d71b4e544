"""What the service does, whatever the protocol: the served model, scoring, the model's facts,
readiness.  Knows no HTTP: the protocol modules (`rest`, `v2`, `sagemaker`) parse a request, call
the core and shape its answer."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from oncology.settings import ServeSettings
from oncology.webservice import errors, schemas
from oncology.webservice.metrics import Metrics
from oncology.webservice.model import ModelHolder
from oncology_model.classifier import Classifier
from oncology_model.datamodel import Decision

if TYPE_CHECKING:  # the prediction log is imported only when it is on (see app.create_app)
    from oncology.webservice import predlog

Scored = tuple[list[float], list[str], list[Decision]]


class Core:
    """The served model with its metrics and prediction log, bound to one settings object."""

    def __init__(self, settings: ServeSettings, holder: ModelHolder, metrics: Metrics,
                 prediction_log: predlog.PredictionLog | None = None) -> None:
        self.settings = settings
        self.holder = holder
        self.metrics = metrics
        self.prediction_log = prediction_log

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

    def score(self, route: str, request_id: str, classifier: Classifier, rows: Iterable[Sequence[int]]) -> Scored:
        """Malignant probabilities, labels and decisions of ``rows``; counted, and logged when the prediction
        log is on."""
        prediction_log = self.prediction_log
        if prediction_log is not None and not isinstance(rows, list):
            rows = list(rows)  # an iterator (decode_tumors) is consumed by scoring; the log needs the rows too
        probabilities = classifier.score_rows(rows)
        threshold = classifier.threshold
        labels = ["malignant" if p >= threshold else "benign" for p in probabilities]
        decisions = classifier.decide_many(probabilities)
        malignant = labels.count("malignant")
        referred = decisions.count(Decision.REFER) if classifier.referral is not None else 0
        self.metrics.count_predictions(malignant, len(labels), referred)
        if prediction_log is not None:  # never blocks or raises: a slow store cannot slow a prediction
            prediction_log.record(route, request_id, classifier.version,
                                  rows, probabilities, labels, decisions)  # type: ignore[arg-type]
        return probabilities, labels, decisions

    def results(self, route: str, request_id: str, classifier: Classifier, rows: Iterable[Sequence[int]],
                explain: bool = False) -> list[schemas.Result] | list[schemas.ExplainedResult]:
        """One result per row, in order (as /predict answers); ``explain`` adds each feature's contribution."""
        if explain:
            rows = list(rows)
            explanations = [
                schemas.ExplanationOut(e.baseline, e.contributions, e.log_odds) for e in classifier.explain_rows(rows)
            ]
        probabilities, labels, decisions = self.score(route, request_id, classifier, rows)
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
