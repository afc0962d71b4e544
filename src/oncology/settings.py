"""Typed settings, read from ``ONCOLOGY_*`` environment variables in entry points only.

Every field has a working local default, so each command runs on a laptop with no set-up.
S3 endpoint and credentials are not here: they are the standard AWS variables
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``), read by boto3.

`ServeSettings` is defined here; the other commands' settings (`StoreSettings` and the classes built on it)
are pydantic-settings classes in `oncology.pipeline_settings`, loaded from here on first use.  A serving
worker holds what it imports for as long as it serves, so `ServeSettings` is a plain pydantic model that
reads the environment itself, exactly as pydantic-settings reads it (a property test holds the two
together): a worker loads neither pydantic-settings nor the other commands' settings, 1.6 MB less
(docs/grpc.md, "Cost").
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

if TYPE_CHECKING:
    from oncology.pipeline_settings import GateSettings as GateSettings
    from oncology.pipeline_settings import OutcomeSettings as OutcomeSettings
    from oncology.pipeline_settings import ReleaseSettings as ReleaseSettings
    from oncology.pipeline_settings import RetrainSettings as RetrainSettings
    from oncology.pipeline_settings import StoreSettings as StoreSettings
    from oncology.pipeline_settings import TrainSettings as TrainSettings

_PIPELINE = frozenset({"StoreSettings", "GateSettings", "TrainSettings", "OutcomeSettings", "RetrainSettings",
                       "ReleaseSettings"})


def __getattr__(name: str) -> Any:
    if name in _PIPELINE:  # the other commands' settings, loaded on first use
        from oncology import pipeline_settings

        return getattr(pipeline_settings, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _environment(settings: type[BaseModel]) -> dict[str, str]:
    """The environment's values of ``settings``' fields, as pydantic-settings reads them for a class whose
    fields are all read as text (no JSON): ``<env_prefix><FIELD>`` in any case (of two names that differ only
    in case, the later in the environment)."""
    prefix = str(settings.model_config.get("env_prefix", "")).lower()
    found = {name.lower(): value for name, value in os.environ.items()}
    return {field: found[prefix + field] for field in settings.model_fields if prefix + field in found}


def _default_serve_store() -> str | None:
    from oncology_model.classifier import carries_a_model

    return None if carries_a_model() else "store"



class ServeSettings(BaseModel):
    """The web service.  Model source: ``model`` from ``store``, or the wheel's model when ``store`` is None.

    ``ServeSettings(**values)`` reads ``ONCOLOGY_*`` environment variables as pydantic-settings reads them
    (`_environment`), ``values`` (by field name) taking precedence, and validates them as a pydantic-settings
    class does (``validate_default``).
    """

    # env_prefix: the variables' prefix, under pydantic-settings' name for it (other code reads it there)
    model_config = ConfigDict(extra="ignore", validate_default=True, env_prefix="ONCOLOGY_")  # type: ignore[typeddict-unknown-key]

    def __init__(self, **values: Any) -> None:
        super().__init__(**{**_environment(type(self)), **values})

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
    api_tokens: list[SecretStr] = Field(
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
