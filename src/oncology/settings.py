"""Typed settings, read from ``ONCOLOGY_*`` environment variables in entry points only.

Every field has a working local default, so each command runs on a laptop with no set-up.
S3 endpoint and credentials are not here: they are the standard AWS variables
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``), read by boto3.

`ServeSettings` is defined here; the other commands' settings (`StoreSettings` and the classes built on it)
are pydantic-settings classes in `oncology.pipeline_settings`, loaded from here on first use.  A serving
worker holds what it imports for as long as it serves, and pydantic is about 10 MB of it (docs/grpc.md,
"Cost"), so `ServeSettings` is a plain class: its fields (type, default, bounds, description) are declared
here once, `oncology.serve_settings_model` builds the pydantic model of them (the documented schema: the
field descriptions, ``model_fields``), and `ServeSettings` reads and checks the values itself, as that model
would.  A value of a form it does not read, or one it refuses, goes to the pydantic model, whose
`ValidationError` (and its messages) is then the answer; a property test holds the two to the same values and
verdicts.  A serving worker started as usual loads neither pydantic nor pydantic-settings.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from pydantic.fields import FieldInfo

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


def _environment(settings: Any) -> dict[str, str]:
    """The environment's values of ``settings``' fields, as pydantic-settings reads them for a class whose
    fields are all read as text (no JSON): ``<env_prefix><FIELD>`` in any case (of two names that differ only
    in case, the later in the environment)."""
    prefix = str(settings.model_config.get("env_prefix", "")).lower()
    names = settings.FIELDS if isinstance(settings, _Described) else settings.model_fields
    found = {name.lower(): value for name, value in os.environ.items()}
    return {field: found[prefix + field] for field in names if prefix + field in found}


def _default_serve_store() -> str | None:
    from oncology_model.classifier import carries_a_model

    return None if carries_a_model() else "store"


class Setting:
    """A field of `ServeSettings`: its default (or default factory), bounds and description, as pydantic's
    ``Field`` takes them (`oncology.serve_settings_model` hands them to it)."""

    __slots__ = ("default", "default_factory", "description", "ge", "gt", "le")

    def __init__(self, default: Any = None, *, default_factory: Callable[[], Any] | None = None,
                 ge: float | None = None, gt: float | None = None, le: float | None = None, description: str) -> None:
        self.default, self.default_factory, self.description = default, default_factory, description
        self.ge, self.gt, self.le = ge, gt, le

    def field_arguments(self) -> dict[str, Any]:
        """The keyword arguments of pydantic's ``Field`` for this setting."""
        found = {k: getattr(self, k) for k in ("default_factory", "ge", "gt", "le") if getattr(self, k) is not None}
        return {**({} if self.default_factory else {"default": self.default}), **found,
                "description": self.description}

    def initial(self) -> Any:
        return self.default_factory() if self.default_factory is not None else self.default

    def within(self, value: float) -> bool:
        return ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le))


def setting(default: Any = None, **options: Any) -> Any:
    """A `Setting` (typed ``Any``, as pydantic's ``Field``: the class attribute stands for the value)."""
    return Setting(default, **options)


class Secret:
    """A secret string: printed as ``**********`` (pydantic's ``SecretStr``, whose methods it has)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __str__(self) -> str:
        return "**********" if self._value else ""

    def __repr__(self) -> str:
        return f"Secret({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class _Unread(Exception):
    """A value the plain reader does not read (a form it does not know, or one it refuses): pydantic's turn."""


_INT: Final = re.compile(r"0|[1-9][0-9]{0,17}")
_FLOAT: Final = re.compile(r"(0|[1-9][0-9]{0,17})(\.[0-9]{1,17})?(e-?[0-9]{1,2})?")
_BOOLEANS: Final = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False, "on": True,
                    "off": False, "t": True, "f": False, "y": True, "n": False}


def _as_int(value: Any) -> int:
    if type(value) is int:
        return value
    if type(value) is str and _INT.fullmatch(value):
        return int(value)
    raise _Unread


def _as_float(value: Any) -> float:
    if type(value) is int or (type(value) is float and value - value == 0):  # finite (no inf, no nan)
        return float(value)
    if type(value) is str and _FLOAT.fullmatch(value):
        return float(value)
    raise _Unread


def _as_bool(value: Any) -> bool:
    if type(value) is bool:
        return value
    if type(value) is str and value.isascii() and value.lower() in _BOOLEANS:
        return _BOOLEANS[value.lower()]
    raise _Unread


def _as_str(value: Any) -> str:
    if type(value) is str:
        return value
    raise _Unread


def _as_optional_str(value: Any) -> str | None:
    return None if value is None else _as_str(value)


def _as_optional_path(value: Any) -> Path | None:
    if value is None or isinstance(value, Path):
        return value
    if type(value) is str and value:
        return Path(value)
    raise _Unread


def _as_secrets(value: Any) -> list[Secret]:
    if type(value) is str:  # comma-separated, blanks dropped (`oncology.serve_settings_model`: the same)
        return [Secret(t.strip()) for t in value.split(",") if t.strip()]
    if type(value) is list and all(type(t) is str for t in value):
        return [Secret(t) for t in value]
    raise _Unread


#: How each annotation of `ServeSettings` is read (the pydantic model's lax conversions, in the forms known here).
_READERS: Final[dict[str, Callable[[Any], Any]]] = {
    "int": _as_int, "float": _as_float, "bool": _as_bool, "str": _as_str, "str | None": _as_optional_str,
    "Path | None": _as_optional_path, "list[Secret]": _as_secrets,
}


class _Described(type):
    """The metaclass of `ServeSettings`: its fields, and pydantic's view of them (loaded on first use)."""

    FIELDS: dict[str, tuple[str, Setting]]

    @property
    def model_fields(cls) -> dict[str, FieldInfo]:
        """The fields as pydantic describes them (`oncology.serve_settings_model`): for the docs, help and tests."""
        from oncology.serve_settings_model import model

        return model().model_fields


class ServeSettings(metaclass=_Described):
    """The web service.  Model source: ``model`` from ``store``, or the wheel's model when ``store`` is None.

    ``ServeSettings(**values)`` reads ``ONCOLOGY_*`` environment variables as pydantic-settings reads them
    (`_environment`), ``values`` (by field name) taking precedence, and validates them as a pydantic-settings
    class does (``validate_default``): pydantic's `ValidationError` for a bad value (module docstring).
    """

    #: as pydantic's ``model_config`` (other code reads the prefix there)
    model_config: Final = {"extra": "ignore", "validate_default": True, "env_prefix": "ONCOLOGY_"}

    store: str | None = setting(
        default_factory=_default_serve_store,
        description="Model store to serve from; unset: the model inside the installed wheel where it carries one "
        "(a wheel built by `make wheel`), else the folder `store` (a source checkout, as every other command).",
    )
    model: str = setting("champion", description="Version, `champion` or `latest` (with a store).")
    host: str = setting("127.0.0.1", description="Address to bind.")
    port: int = setting(8080, ge=1, le=65535, description="Port to listen on.")
    workers: int = setting(1, ge=1, le=64, description="Worker processes.")
    grpc_port: int = setting(
        0, ge=0, le=65535,
        description="Port of the Open Inference Protocol over gRPC (inference.GRPCInferenceService and "
        "grpc.health.v1.Health), served by the same process on `host`; 0: off.",
    )
    grpc_reflection: bool = setting(
        True,
        description="Serve gRPC server reflection (grpc.reflection.v1alpha.ServerReflection) on the gRPC port, so clients "
        "such as grpcurl list and call the services without the .proto; false: only the .proto tells them.",
    )
    reload_interval: float = setting(
        5.0, ge=0, description="Seconds between checks of the model alias in the store (0: never reload)."
    )
    max_batch: int = setting(10_000, ge=1, description="Most rows accepted in one batch request.")
    max_body_bytes: int = setting(1 << 20, ge=1024, description="Largest body accepted by single-row routes (bytes).")
    max_batch_body_bytes: int = setting(
        8 << 20, ge=1024, description="Largest body accepted by batch routes (bytes); 10,000 rows take about 2.3 MB."
    )
    api_tokens: list[Secret] = setting(
        default_factory=list,
        description="Bearer tokens accepted by prediction routes (comma-separated in ONCOLOGY_API_TOKENS); none: open.",
    )
    api_tokens_file: Path | None = setting(None, description="A file with one bearer token per line, added to api_tokens.")
    access_log: bool = setting(True, description="Write a JSON access-log line per request (never with feature values).")
    graceful_timeout: float = setting(20.0, ge=0, description="Seconds that in-flight requests get to finish on SIGTERM.")
    overload_max_lag: float = setting(
        0.05, ge=0,
        description="Overload shedding: the seconds a request may wait for a worker's event loop; one that would wait "
        "longer (the work of the requests queued ahead of it) or did is answered 503 with Retry-After at once, "
        "unprocessed (probes and /metrics never are); 0: never shed (and no turns).  An admitted request's latency "
        "is about this plus its own time.  Raise it where concurrent requests each take longer than this (large "
        "batches).",
    )
    overload_min_queue: int = setting(
        8, ge=0,
        description="Overload shedding: the fewest other requests that must be waiting in a worker before it sheds; "
        "with fewer, a slow turn is the machine's (CPU taken by other processes, a pause, a cold start), not a queue's, "
        "and shedding would not shorten it, so every request is served however late.",
    )
    overload_retry_after: int = setting(1, ge=1, description="Seconds in the Retry-After header of a shed request.")
    request_read_timeout: float = setting(
        10.0, ge=0,
        description="Seconds a client gets to send a whole request (headers and body), from its connection or the "
        "request's first byte; a slower one is disconnected (slowloris).  0: no limit.",
    )
    keep_alive_timeout: float = setting(5.0, gt=0, description="Seconds an idle keep-alive connection is kept open.")
    inline_hot_routes: bool = setting(
        True,
        description="Answer the hot routes (POST /predict, /predict/batch, /invocations, V2 infer) in the HTTP "
        "protocol itself, without uvicorn's ASGI cycle, when the request is whole (body up to 64 KiB), nothing else of "
        "its connection is waiting for an answer and no request waits for a turn (past an iteration's quantum of work it "
        "is answered so in a later one); the same answers, bytes for bytes.  "
        "false: every request through ASGI.",
    )
    drain_seconds: float = setting(
        0.0, ge=0, description="On SIGTERM, seconds to keep serving with readiness false (for load balancers) before closing."
    )
    prediction_log: bool = setting(
        False,
        description="Log every prediction to the store (inputs, probability, label, decision, model version, time, "
        "request id) as gzip JSON Lines under monitoring/predictions/date=YYYY-MM-DD/.  The inputs are PATIENT DATA: "
        "turn it on only where keeping them is allowed; retention and access are the operator's job.  Off by default.",
    )
    prediction_log_store: str | None = setting(
        None, description="Store of the prediction log (folder, file://... or s3://bucket/prefix); default: `store`."
    )
    prediction_log_max_buffered: int = setting(
        20_000, ge=1,
        description="Most predictions held in memory before they are written (about 0.5 KB each); past it new ones are "
        "dropped, never waited for, and counted in oncology_prediction_log_dropped_total.",
    )
    prediction_log_batch_rows: int = setting(
        5_000, ge=1, description="A batch (one object) is written as soon as this many predictions are buffered."
    )
    prediction_log_flush_seconds: float = setting(
        10.0, gt=0, description="Most seconds a prediction waits in memory before its batch is written."
    )
    prediction_log_shutdown_seconds: float = setting(
        5.0, ge=0,
        description="On shutdown, seconds to write what is still buffered; what is left after them is dropped and "
        "counted.  Keep drain_seconds + graceful_timeout + this under the orchestrator's grace period.",
    )

    outcomes: bool = setting(
        False,
        description="Accept outcomes (biopsy results) on POST /outcomes and record them in the store, once per request "
        "id, under monitoring/outcomes/.  Off by default: the service then needs no write access to the store.",
    )
    outcome_check_interval: float = setting(
        60.0, gt=0, description="With outcomes on: seconds between reads of the newest outcome check's verdicts from the "
        "store, exported as oncology_outcome_alarm for the alerting rules."
    )
    outcomes_store: str | None = setting(
        None, description="Store of the outcomes (folder, file://... or s3://bucket/prefix); default: "
        "prediction_log_store, else `store`."
    )

    def __init__(self, **values: Any) -> None:
        given = {**_environment(type(self)), **values}
        try:
            found = _read_plainly(given)
        except _Unread:
            found = _read_by_pydantic(given)  # its ValidationError, or the values of a form read only there
        self.__dict__.update(found)

    @property
    def outcome_store_uri(self) -> str | None:
        """Where outcomes are recorded: `outcomes_store`, else the prediction log's store, else `store`."""
        return _outcome_store(self.__dict__)

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

    def model_dump(self, *, exclude: set[str] | frozenset[str] = frozenset(), exclude_none: bool = False) -> dict[str, Any]:
        """The values by field name (as pydantic's ``model_dump``)."""
        return {name: value for name in type(self).FIELDS if name not in exclude
                for value in (getattr(self, name),) if not (exclude_none and value is None)}

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.model_dump() == other.model_dump()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ServeSettings({', '.join(f'{k}={v!r}' for k, v in self.model_dump().items())})"


ServeSettings.FIELDS = {name: (kind, vars(ServeSettings)[name]) for name, kind in ServeSettings.__annotations__.items()
                        if isinstance(vars(ServeSettings).get(name), Setting)}


def _read_plainly(given: dict[str, Any]) -> dict[str, Any]:
    """``given`` read and checked without pydantic; `_Unread` for a value of a form not read here, or refused."""
    fields = ServeSettings.FIELDS
    found = {name: (_READERS[kind](given[name]) if name in given else field.initial())
             for name, (kind, field) in fields.items()}
    if not all(field.within(found[name]) for name, (kind, field) in fields.items() if kind in ("int", "float")):
        raise _Unread
    if missing_store(found):
        raise _Unread
    return found


def _outcome_store(values: dict[str, Any]) -> str | None:
    """Where outcomes are recorded, of settings' ``values``: `outcomes_store`, else the prediction log's store, else
    `store`."""
    return values["outcomes_store"] or values["prediction_log_store"] or values["store"]  # type: ignore[no-any-return]


def missing_store(values: dict[str, Any]) -> str | None:
    """What a feature turned on in settings' ``values`` lacks, a store to write to; None: nothing (both readers)."""
    if values["prediction_log"] and not (values["prediction_log_store"] or values["store"]):
        return "prediction_log needs a store to write to: set ONCOLOGY_PREDICTION_LOG_STORE (or ONCOLOGY_STORE)"
    if values["outcomes"] and not _outcome_store(values):
        return "outcomes needs a store to write to: set ONCOLOGY_OUTCOMES_STORE (or ONCOLOGY_STORE)"
    return None


def _read_by_pydantic(given: dict[str, Any]) -> dict[str, Any]:
    """``given`` validated by the pydantic model: its `ValidationError`, else the values (secrets as `Secret`)."""
    from oncology.serve_settings_model import model

    checked = model()(**given)
    found = {name: getattr(checked, name) for name in ServeSettings.FIELDS}
    found["api_tokens"] = [Secret(t.get_secret_value()) for t in found["api_tokens"]]
    return found
