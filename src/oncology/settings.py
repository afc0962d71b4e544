"""Typed settings, read from ``ONCOLOGY_*`` environment variables in entry points only.

Every field has a working local default, so each command runs on a laptop with no set-up.
S3 endpoint and credentials are not here: they are the standard AWS variables
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``), read by boto3.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from oncology.model_families import FAMILIES, FAMILY


class StoreSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ONCOLOGY_", extra="ignore")

    store: str = Field("store", description="Model store: a folder, file://... or s3://bucket/prefix.")


class GateSettings(StoreSettings):
    """The quality gate: a model below any of these held-out test figures is not published or promoted."""

    gate_min_accuracy: float = Field(0.95, ge=0, le=1, description="Minimum test accuracy.")
    gate_min_recall: float = Field(0.95, ge=0, le=1, description="Minimum test malignant recall (sensitivity).")
    gate_min_specificity: float = Field(0.90, ge=0, le=1, description="Minimum test specificity.")
    gate_min_roc_auc: float = Field(0.98, ge=0, le=1, description="Minimum test ROC AUC.")


class TrainSettings(GateSettings):
    data: str | None = Field(None, description="Raw data file (path, file:// or s3://); default: the bundled UCI copy.")
    dataset: str | None = Field(
        None, description="Train on a dataset version of the store instead (`oncology outcomes dataset` makes them): "
        "its number, or `latest`; the model's metadata and card name it and how many cases came from outcomes. "
        "Not with `data`.",
    )
    seed: int = Field(42, description="Seed of every split and estimator: same data and seed, same model.")
    cv_folds: int = Field(
        5, ge=2, description="Outer folds of the nested cross-validation (group-aware, stratified) that gives the CV figures."
    )
    cv_repeats: int = Field(
        5, ge=1,
        description="Repeats of the outer cross-validation, each with its own shuffle; the model card shows the spread "
        "of the figures between them.",
    )
    inner_folds: int = Field(
        4, ge=2, description="Inner folds (group-aware, stratified) on which every choice is made: family, hyper-parameters, "
        "threshold and referral band.",
    )
    test_splits: int = Field(5, ge=2, description="The held-out test set is one of this many group folds (5: 20%).")
    target_recall: float = Field(
        0.98, gt=0, lt=1,
        description="Malignant recall the decision threshold aims at on new cases: the threshold is the k-th lowest of "
        "the n inner-CV malignant probabilities, with the largest k for which the miss rate (Beta(k, n + 1 - k)) is at "
        "most 1 - target_recall with probability target_confidence.",
    )
    target_confidence: float = Field(
        0.8, gt=0, lt=1,
        description="The probability with which the threshold's miss rate on new malignant cases is at most "
        "1 - target_recall (higher: a lower threshold, more false alarms).  With too few malignant cases for it, the "
        "lowest one sets the threshold and the model card states the confidence reached.",
    )
    referral_budget: float = Field(
        0.08, ge=0, lt=1,
        description="The share of cases the referral band may refer (inner CV): the band below the threshold reaches "
        "down as far as this allows, and at least to the lowest inner-CV malignant probability.",
    )
    families: Annotated[tuple[str, ...], NoDecode] = Field(
        tuple(f.name for f in FAMILIES),
        description="Model families compared (comma-separated); only linear ones can be selected, the others are reported.",
    )
    promote: bool = Field(False, description="Promote the new version to champion when it passes the gate.")

    @model_validator(mode="after")
    def _one_source(self) -> TrainSettings:
        if self.data is not None and self.dataset is not None:
            raise ValueError("give data (a raw file) or dataset (a dataset version of the store), not both")
        return self

    @field_validator("families", mode="before")
    @classmethod
    def _split_families(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(f.strip() for f in value.split(",") if f.strip())
        return value

    @field_validator("families")
    @classmethod
    def _known_families(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if unknown := [f for f in value if f not in FAMILY]:
            raise ValueError(f"unknown model families {unknown}; known: {', '.join(FAMILY)}")
        if not any(FAMILY[f].selectable for f in value):
            raise ValueError("at least one linear (selectable) family is needed: the service scores linear models only")
        return value


def _default_serve_store() -> str | None:
    from oncology_model.classifier import carries_a_model

    return None if carries_a_model() else "store"


class OutcomeSettings(StoreSettings):
    """The outcome check (`oncology outcomes check`): realized performance per model version and chunk, and alarms."""

    outcomes_period: Literal["day", "week", "month", "quarter", "year"] = Field(
        "month", description="Calendar chunks: the period of the prediction's time that groups labelled cases."
    )
    outcomes_chunk_size: int = Field(
        0, ge=0, description="If set, chunks of this many labelled cases per version (in prediction order) instead of "
        "calendar periods."
    )
    outcomes_min_malignant: int = Field(
        20, ge=1, description="Malignant recall is not reported for a chunk with fewer malignant outcomes than this."
    )
    outcomes_verification_ratio: float = Field(
        0.5, gt=0, le=1,
        description="Verification bias is flagged when predicted-benign cases are verified at less than this "
        "fraction of the rate of predicted-malignant ones: recall read off the labelled cases is then too high.",
    )
    outcomes_recall_in_control: float = Field(0.98, gt=0, lt=1, description="CUSUM: the malignant recall expected.")
    outcomes_recall_alarm: float = Field(0.90, gt=0, lt=1, description="CUSUM: the malignant recall to detect.")
    outcomes_specificity_in_control: float = Field(0.95, gt=0, lt=1, description="CUSUM: the specificity expected.")
    outcomes_specificity_alarm: float = Field(0.85, gt=0, lt=1, description="CUSUM: the specificity to detect.")
    outcomes_cusum_h: float = Field(
        9.0, gt=0, description="CUSUM decision threshold: 9 detects recall 0.98 -> 0.90 after ~100 malignant cases "
        "with under 1% false alarms per 1,000 cases (tests/monitoring/test_sequential.py)."
    )

    @model_validator(mode="after")
    def _alarm_below_in_control(self) -> OutcomeSettings:
        for name in ("recall", "specificity"):
            if getattr(self, f"outcomes_{name}_alarm") >= getattr(self, f"outcomes_{name}_in_control"):
                raise ValueError(f"outcomes_{name}_alarm must be below outcomes_{name}_in_control")
        return self


class RetrainSettings(StoreSettings):
    """The retraining trigger (`oncology outcomes retrain`)."""

    data: str | None = Field(None, description="Raw data file the dataset version starts from; default: the bundled UCI copy.")
    retrain_cooldown_hours: float = Field(
        168.0, ge=0,
        description="Hours after a retraining started during which no other starts, whatever the alarms (0: none); "
        "a failed retraining counts too, so that it is not run again on every schedule.",
    )


class ServeSettings(BaseSettings):
    """The web service.  Model source: ``model`` from ``store``, or the wheel's model when ``store`` is None."""

    model_config = SettingsConfigDict(env_prefix="ONCOLOGY_", extra="ignore")

    store: str | None = Field(
        default_factory=_default_serve_store,
        description="Model store to serve from; unset: the model inside the installed wheel where it carries one "
        "(a wheel built by `make wheel`), else the folder `store` (a source checkout, as every other command).",
    )
    model: str = Field("champion", description="Version, `champion` or `latest` (with a store).")
    host: str = Field("127.0.0.1", description="Address to bind.")
    port: int = Field(8080, ge=1, le=65535, description="Port to listen on.")
    workers: int = Field(1, ge=1, le=64, description="Worker processes.")
    grpc_port: int = Field(
        0, ge=0, le=65535,
        description="Port of the Open Inference Protocol over gRPC (inference.GRPCInferenceService and "
        "grpc.health.v1.Health), served by the same process on `host`; 0: off.",
    )
    grpc_reflection: bool = Field(
        True,
        description="Serve gRPC server reflection (grpc.reflection.v1alpha.ServerReflection) on the gRPC port, so clients "
        "such as grpcurl list and call the services without the .proto; false: only the .proto tells them.",
    )
    reload_interval: float = Field(
        5.0, ge=0, description="Seconds between checks of the model alias in the store (0: never reload)."
    )
    max_batch: int = Field(10_000, ge=1, description="Most rows accepted in one batch request.")
    max_body_bytes: int = Field(1 << 20, ge=1024, description="Largest body accepted by single-row routes (bytes).")
    max_batch_body_bytes: int = Field(
        8 << 20, ge=1024, description="Largest body accepted by batch routes (bytes); 10,000 rows take about 2.3 MB."
    )
    api_tokens: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Bearer tokens accepted by prediction routes (comma-separated in ONCOLOGY_API_TOKENS); none: open.",
    )
    api_tokens_file: Path | None = Field(None, description="A file with one bearer token per line, added to api_tokens.")
    access_log: bool = Field(True, description="Write a JSON access-log line per request (never with feature values).")
    graceful_timeout: float = Field(20.0, ge=0, description="Seconds that in-flight requests get to finish on SIGTERM.")
    overload_max_lag: float = Field(
        0.05, ge=0,
        description="Overload shedding: the seconds a request may wait for a worker's event loop; one that would wait "
        "longer (the work of the requests queued ahead of it) or did is answered 503 with Retry-After at once, "
        "unprocessed (probes and /metrics never are); 0: never shed (and no turns).  An admitted request's latency "
        "is about this plus its own time.  Raise it where concurrent requests each take longer than this (large "
        "batches).",
    )
    overload_min_queue: int = Field(
        8, ge=0,
        description="Overload shedding: the fewest other requests that must be waiting in a worker before it sheds; "
        "with fewer, a slow turn is the machine's (CPU taken by other processes, a pause, a cold start), not a queue's, "
        "and shedding would not shorten it, so every request is served however late.",
    )
    overload_retry_after: int = Field(1, ge=1, description="Seconds in the Retry-After header of a shed request.")
    request_read_timeout: float = Field(
        10.0, ge=0,
        description="Seconds a client gets to send a whole request (headers and body), from its connection or the "
        "request's first byte; a slower one is disconnected (slowloris).  0: no limit.",
    )
    keep_alive_timeout: float = Field(5.0, gt=0, description="Seconds an idle keep-alive connection is kept open.")
    inline_hot_routes: bool = Field(
        True,
        description="Answer the hot routes (POST /predict, /predict/batch, /invocations, V2 infer) in the HTTP "
        "protocol itself, without uvicorn's ASGI cycle, when the request is whole (body up to 64 KiB), nothing else of "
        "its connection is waiting for an answer and shedding would run it at once; the same answers, bytes for bytes.  "
        "false: every request through ASGI.",
    )
    drain_seconds: float = Field(
        0.0, ge=0, description="On SIGTERM, seconds to keep serving with readiness false (for load balancers) before closing."
    )
    prediction_log: bool = Field(
        False,
        description="Log every prediction to the store (inputs, probability, label, decision, model version, time, "
        "request id) as gzip JSON Lines under monitoring/predictions/date=YYYY-MM-DD/.  The inputs are PATIENT DATA: "
        "turn it on only where keeping them is allowed; retention and access are the operator's job.  Off by default.",
    )
    prediction_log_store: str | None = Field(
        None, description="Store of the prediction log (folder, file://... or s3://bucket/prefix); default: `store`."
    )
    prediction_log_max_buffered: int = Field(
        20_000, ge=1,
        description="Most predictions held in memory before they are written (about 0.5 KB each); past it new ones are "
        "dropped, never waited for, and counted in oncology_prediction_log_dropped_total.",
    )
    prediction_log_batch_rows: int = Field(
        5_000, ge=1, description="A batch (one object) is written as soon as this many predictions are buffered."
    )
    prediction_log_flush_seconds: float = Field(
        10.0, gt=0, description="Most seconds a prediction waits in memory before its batch is written."
    )
    prediction_log_shutdown_seconds: float = Field(
        5.0, ge=0,
        description="On shutdown, seconds to write what is still buffered; what is left after them is dropped and "
        "counted.  Keep drain_seconds + graceful_timeout + this under the orchestrator's grace period.",
    )

    outcomes: bool = Field(
        False,
        description="Accept outcomes (biopsy results) on POST /outcomes and record them in the store, once per request "
        "id, under monitoring/outcomes/.  Off by default: the service then needs no write access to the store.",
    )
    outcome_check_interval: float = Field(
        60.0, gt=0, description="With outcomes on: seconds between reads of the newest outcome check's verdicts from the "
        "store, exported as oncology_outcome_alarm for the alerting rules."
    )
    outcomes_store: str | None = Field(
        None, description="Store of the outcomes (folder, file://... or s3://bucket/prefix); default: "
        "prediction_log_store, else `store`."
    )

    @field_validator("api_tokens", mode="before")
    @classmethod
    def _split_tokens(cls, value: object) -> object:
        if isinstance(value, str):
            return [t.strip() for t in value.split(",") if t.strip()]
        return value

    @model_validator(mode="after")
    def _prediction_log_needs_a_store(self) -> ServeSettings:
        if self.prediction_log and not (self.prediction_log_store or self.store):
            raise ValueError(
                "prediction_log needs a store to write to: set ONCOLOGY_PREDICTION_LOG_STORE (or ONCOLOGY_STORE)"
            )
        return self

    @model_validator(mode="after")
    def _outcomes_need_a_store(self) -> ServeSettings:
        if self.outcomes and not self.outcome_store_uri:
            raise ValueError("outcomes needs a store to write to: set ONCOLOGY_OUTCOMES_STORE (or ONCOLOGY_STORE)")
        return self

    @property
    def outcome_store_uri(self) -> str | None:
        """Where outcomes are recorded: `outcomes_store`, else the prediction log's store, else `store`."""
        return self.outcomes_store or self.prediction_log_store or self.store

    def tokens(self) -> list[str]:
        """Every configured token (environment and file)."""
        found = [t.get_secret_value() for t in self.api_tokens]
        if self.api_tokens_file is not None:
            try:
                lines = self.api_tokens_file.read_text().splitlines()
            except OSError as exc:
                raise ValueError(f"{self.api_tokens_file}: cannot read the API tokens file ({exc.strerror})") from exc
            found += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
        return found


class ReleaseSettings(GateSettings):
    """Canary and shadow releases (`oncology release`): the judge's statistics and patience."""

    prediction_log_store: str | None = Field(
        None, description="Store holding the prediction log the judge reads; unset: the model store."
    )
    release_alpha: float = Field(
        0.01, gt=0, lt=0.5,
        description="False-rollback budget of a whole release: split evenly over its steps and, in each, over the tests.",
    )
    release_min_requests: int = Field(
        600, ge=10, description="Requests each arm must have answered in a step's window before any verdict (else hold)."
    )
    release_step_deadline_minutes: float = Field(
        120.0, gt=0, description="A step still inconclusive this long after it began is rolled back (never promoted)."
    )
    release_latency_margin_ms: float = Field(
        10.0, ge=0,
        description="Latency rolls back only if the candidate is significantly slower and its median is this much above.",
    )
    release_max_costly_share: float = Field(
        0.01, ge=0, le=1,
        description="Shadow: most share of paired requests where the candidate says benign and the champion malignant.",
    )
    release_metrics: Literal["log", "prometheus", "pods", "replicas"] = Field(
        "log",
        description="Where the judge reads each arm's requests, errors and scoring times: the prediction log, a "
        "Prometheus, the service's pods through the Kubernetes API server, or replica URLs.",
    )
    release_prometheus_url: str = Field(
        "http://prometheus:9090", description="With release_metrics=prometheus: the Prometheus scraping the replicas."
    )
    release_pods_selector: str = Field(
        "app=oncology-webservice", description="With release_metrics=pods: the label selector of the service's pods."
    )
    release_pods_port: int = Field(8080, ge=1, le=65535, description="With release_metrics=pods: the pods' HTTP port.")
    release_pods_namespace: str | None = Field(
        None, description="With release_metrics=pods: their namespace; unset: the judge's own (or the kubeconfig's)."
    )
    release_replica_urls: str | None = Field(
        None, description="With release_metrics=replicas: the replicas' base URLs, comma-separated (a local run)."
    )
