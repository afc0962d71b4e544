"""The Open Inference Protocol (V2) over gRPC: KServe's ``inference.GRPCInferenceService`` (the `.proto`
is in `proto/`), with the standard health service (``grpc.health.v1.Health``).

Thin handlers over the same `Core` as the HTTP routes, on their own port (``grpc_port``; off when 0), in
the same process and event loop: the same model (and hot reload), the same referral decision and outputs
as ``POST /v2/models/oncology/infer``, the same bearer tokens (metadata ``authorization: Bearer <token>``),
the same prediction counters and prediction log.  Each RPC is counted in ``oncology_grpc_requests_total``
and ``oncology_grpc_request_duration_seconds`` (by method and status code) and written to the access log
(``"transport": "grpc"``).

A request's tensor may come typed (``contents.int64_contents`` ...) or raw (``raw_input_contents``, as
`tritonclient.grpc` sends it); the answer comes in the same form: raw outputs (``raw_output_contents``:
FP64 little-endian, BYTES length-prefixed) for a raw request, typed contents otherwise.

Errors are gRPC status codes whose message names the field: INVALID_ARGUMENT (a bad name, shape,
datatype or value), NOT_FOUND (a model or version not served), UNAVAILABLE (no model loaded yet),
RESOURCE_EXHAUSTED (more rows than ``max_batch``, or a message over ``max_batch_body_bytes``),
UNAUTHENTICATED (a missing or wrong token).  Anything unexpected is INTERNAL with the request id, logged
without the request's data; the server keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import struct
import time
import traceback
from collections.abc import Callable, Sequence
from importlib import metadata as importlib_metadata
from typing import TYPE_CHECKING, Any, Final, TypeVar

import grpc
from google.protobuf.message import DecodeError
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import Counter, Histogram

from oncology.webservice import errors, routing, schemas
from oncology.webservice.accesslog import AccessLog
from oncology.webservice.auth import Tokens
from oncology.webservice.core import Core
from oncology.webservice.metrics import LATENCY_BUCKETS
from oncology.webservice.proto import grpc_predict_v2_pb2 as pb
from oncology_model.classifier import Classifier
from oncology_model.datamodel import FEATURES, SCORE_MAX, SCORE_MIN

log = logging.getLogger("oncology.webservice")

if TYPE_CHECKING:
    _Context = aio.ServicerContext[Any, Any]
_R = TypeVar("_R")

SERVICE: Final = "inference.GRPCInferenceService"
#: The route of the prediction log and the access log (the RPC's HTTP/2 path).
INFER_ROUTE: Final = f"/{SERVICE}/ModelInfer"
#: Probes stay out of the access log, as their HTTP twins do.
_QUIET: Final = frozenset({"ServerLive", "ServerReady", "ModelReady"})
_N_FEATURES: Final = len(FEATURES)
#: datatype -> (struct code of its raw little-endian form, the typed field that carries it)
_DATATYPES: Final = {"INT64": ("q", "int64_contents"), "INT32": ("i", "int_contents"),
                     "FP32": ("f", "fp32_contents"), "FP64": ("d", "fp64_contents")}
_CONTENT_FIELDS: Final = ("bool_contents", "int_contents", "int64_contents", "uint_contents", "uint64_contents",
                          "fp32_contents", "fp64_contents", "bytes_contents")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
#: An `APIError`'s HTTP status -> the gRPC code (as Google's HTTP mapping has it).
_CODES: Final = {
    400: grpc.StatusCode.INVALID_ARGUMENT, 422: grpc.StatusCode.INVALID_ARGUMENT,
    415: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND, 413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}


class TooManyRows(errors.APIError):
    status = 413


# ---- decoding and encoding (no gRPC here: pure functions of the messages) ---------------------------


def decode_infer(request: pb.ModelInferRequest, limit: int) -> list[tuple[int, ...]]:
    """The feature rows of an inference request: one tensor ``tumor`` of shape [N, 9] in `FEATURES` order,
    typed or raw; an `APIError` naming the field otherwise."""
    if len(request.inputs) != 1:
        raise errors.BadRequest(
            f"inputs: expected exactly one input tensor ({schemas.V2_INPUT!r}), got {len(request.inputs)}")
    tensor = request.inputs[0]
    if tensor.name != schemas.V2_INPUT:
        raise errors.BadRequest(f"inputs[0].name: unexpected inference input {tensor.name!r} for model "
                                f"{schemas.V2_MODEL!r}: its one input is {schemas.V2_INPUT!r}")
    datatype = tensor.datatype
    if datatype not in _DATATYPES:
        raise errors.BadRequest(
            f"inputs[0].datatype: {datatype!r} is not one of {', '.join(schemas.V2_INPUT_DATATYPES)}")
    shape = list(tensor.shape)
    if len(shape) != 2 or shape[1] != _N_FEATURES or shape[0] < 0:
        raise errors.BadRequest(f"inputs[0].shape must be [N, {_N_FEATURES}], got {shape}")
    n = shape[0]
    if n > limit:
        raise TooManyRows(f"inputs[0].shape: {n} rows; at most {limit} are accepted in one request")
    code, field = _DATATYPES[datatype]
    needed = n * _N_FEATURES
    raw = request.raw_input_contents
    values: Sequence[Any]
    if raw:
        if len(raw) != 1:
            raise errors.BadRequest(f"raw_input_contents: {len(raw)} entries for the 1 input")
        if tensor.HasField("contents"):
            raise errors.BadRequest("inputs[0].contents: give the values either here or in raw_input_contents, "
                                    "not both")
        itemsize = struct.calcsize("<" + code)
        if len(raw[0]) != needed * itemsize:
            raise errors.BadRequest(f"raw_input_contents[0]: {len(raw[0])} bytes, but shape {shape} of {datatype} "
                                    f"needs {needed * itemsize} ({itemsize} bytes a value)")
        values = struct.unpack(f"<{needed}{code}", raw[0])
        where = "raw_input_contents[0]"
    else:
        contents = tensor.contents
        for other in _CONTENT_FIELDS:
            if other != field and len(getattr(contents, other)):
                raise errors.BadRequest(
                    f"inputs[0].contents.{other}: datatype {datatype} takes its values in inputs[0].contents.{field}")
        values = getattr(contents, field)
        where = f"inputs[0].contents.{field}"
        if len(values) != needed:
            raise errors.BadRequest(f"{where}: {len(values)} values, but shape {shape} needs {needed}")
    if datatype.startswith("FP"):
        if not all(v.is_integer() for v in values):
            _refuse(values, where)
        values = [int(v) for v in values]
    if values and (min(values) < SCORE_MIN or max(values) > SCORE_MAX):
        _refuse(values, where)
    return [tuple(values[i : i + _N_FEATURES]) for i in range(0, needed, _N_FEATURES)]


def _refuse(values: Sequence[Any], where: str) -> None:
    bad = [i for i, v in enumerate(values) if not (float(v).is_integer() and SCORE_MIN <= v <= SCORE_MAX)]
    i = bad[0]
    raise errors.BadRequest(
        f"{where}[{i}]: {FEATURES[i % _N_FEATURES]} of row {i // _N_FEATURES} is {values[i]!r}, not a whole number "
        f"{SCORE_MIN}-{SCORE_MAX}" + (f" ({len(bad)} invalid values)" if len(bad) > 1 else ""))


def check_outputs(request: pb.ModelInferRequest) -> None:
    """An `APIError` naming the first requested output this model does not have."""
    for i, output in enumerate(request.outputs):
        if output.name not in schemas.V2_OUTPUTS:
            raise errors.BadRequest(f"outputs[{i}].name: unknown output {output.name!r}; this model has "
                                    f"{', '.join(schemas.V2_OUTPUTS)}")


def encode_infer(request: pb.ModelInferRequest, version: str, probabilities: list[float], labels: list[str],
                 decisions: Sequence[str]) -> pb.ModelInferResponse:
    """The answer: the requested outputs (all three when none is named), raw when the request was raw."""
    values: dict[str, Sequence[Any]] = {"label": labels, "probability": probabilities, "decision": decisions}
    wanted = [o.name for o in request.outputs] or list(schemas.V2_OUTPUTS)  # checked by `check_outputs`
    response = pb.ModelInferResponse(model_name=schemas.V2_MODEL, model_version=version, id=request.id)
    raw = bool(request.raw_input_contents)
    n = len(labels)
    for name in wanted:
        datatype = schemas.V2_OUTPUTS[name]
        output = response.outputs.add(name=name, datatype=datatype, shape=[n])
        if raw:
            response.raw_output_contents.append(schemas.binary_tensor(datatype, values[name]))
        elif datatype == "BYTES":
            output.contents.bytes_contents.extend([str(v).encode() for v in values[name]])
        else:
            output.contents.fp64_contents.extend(values[name])
    return response


# ---- the service --------------------------------------------------------------------------------------

#: name -> (request, response) message types
_RPCS: Final[dict[str, tuple[Any, Any]]] = {
    "ServerLive": (pb.ServerLiveRequest, pb.ServerLiveResponse),
    "ServerReady": (pb.ServerReadyRequest, pb.ServerReadyResponse),
    "ModelReady": (pb.ModelReadyRequest, pb.ModelReadyResponse),
    "ServerMetadata": (pb.ServerMetadataRequest, pb.ServerMetadataResponse),
    "ModelMetadata": (pb.ModelMetadataRequest, pb.ModelMetadataResponse),
    "ModelInfer": (pb.ModelInferRequest, pb.ModelInferResponse),
}


class _Malformed:
    """A request whose bytes are not a valid message of its type."""

    def __init__(self, type_name: str, reason: str) -> None:
        self.type_name = type_name
        self.reason = reason


def _lenient(message_type: Any) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return message_type.FromString(data)
        except DecodeError as exc:
            return _Malformed(message_type.DESCRIPTOR.full_name, str(exc) or "undecodable")
    return deserialize




class InferenceService:
    """The six RPCs of the Open Inference Protocol, over `Core`."""

    def __init__(self, core: Core, tokens: Tokens, access_log: AccessLog | None) -> None:
        self.core = core
        self._tokens = tokens
        self._access_log = access_log
        self._server_version = importlib_metadata.version("oncology")
        registry = core.metrics.registry
        self._requests = Counter("oncology_grpc_requests", "gRPC calls by method and status code",
                                 ["method", "code"], registry=registry)
        self._latency = Histogram("oncology_grpc_request_duration_seconds", "gRPC call latency by method and status code",
                                  ["method", "code"], buckets=LATENCY_BUCKETS, registry=registry)
        self._children: dict[tuple[str, str], tuple[Any, Any]] = {}

    # Each RPC: time it, run its handler, turn an `APIError` into its status code; count and log it.
    async def _call(self, method: str, handler: Callable[[Any, dict[str, Any]], _R], request: Any,
                    context: _Context) -> _R:
        start = time.perf_counter()
        metadata = dict(context.invocation_metadata() or ())
        request_id = metadata.get("x-request-id", "")
        if not (isinstance(request_id, str) and _REQUEST_ID.fullmatch(request_id)):
            request_id = os.urandom(8).hex()
        state: dict[str, Any] = {"request_id": request_id, "metadata": metadata}
        code = grpc.StatusCode.OK
        status = 200
        message = ""
        response: _R | None = None
        try:
            if isinstance(request, _Malformed):
                raise errors.BadRequest(f"the request is not a valid {request.type_name} message ({request.reason})")
            response = handler(request, state)
        except errors.APIError as exc:
            status = exc.status
            code = _CODES.get(status, grpc.StatusCode.INTERNAL)
            message = exc.message
        except Exception as exc:  # never the message or a traceback (either can carry patient data)
            status, code = 500, grpc.StatusCode.INTERNAL
            message = f"internal error; the request id {request_id} is in the server log"
            log.error("unhandled error %s (request %s) at %s", type(exc).__name__, request_id, _where(exc),
                      extra={"request_id": request_id, "path": f"/{SERVICE}/{method}"})
        elapsed = time.perf_counter() - start
        self._observe(method, code.name, elapsed)
        if self._access_log is not None and method not in _QUIET:
            self._access_log.write({
                "request_id": request_id, "transport": "grpc", "method": "POST", "route": f"/{SERVICE}/{method}",
                "status": status, "grpc_status": code.name, "latency_ms": round(elapsed * 1000, 3),
                "model_version": state.get("model_version"), "arm": state.get("model_arm"),
            })
        if code is not grpc.StatusCode.OK:
            await context.abort(code, message, ((("x-request-id", request_id), *state.get("trailers", ()))))
        if "trailers" in state:
            context.set_trailing_metadata(state["trailers"])
        assert response is not None
        return response

    def handlers(self) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
        """The RPCs by name, as protoc's ``add_GRPCInferenceServiceServicer_to_server`` registers them, except
        that a request that is not a valid message reaches the handler (as `_Malformed`), to be refused with
        INVALID_ARGUMENT and counted, rather than failing in the framework as INTERNAL."""
        return {
            name: grpc.unary_unary_rpc_method_handler(
                getattr(self, name), request_deserializer=_lenient(request_type),
                response_serializer=response_type.SerializeToString)
            for name, (request_type, response_type) in _RPCS.items()
        }

    def _observe(self, method: str, code: str, seconds: float) -> None:
        children = self._children.get((method, code))
        if children is None:
            children = self._children[(method, code)] = (
                self._requests.labels(method, code), self._latency.labels(method, code))
        children[0].inc()
        children[1].observe(seconds)

    def _model(self, name: str, version: str) -> Classifier:
        classifier = self.core.classifier()  # UNAVAILABLE before a model loads
        release = self.core.holder.release
        if release is not None and version and version == release.candidate.version and name == schemas.V2_MODEL:
            return release.candidate  # a release's candidate, asked for by its version (as on the REST route)
        if name != schemas.V2_MODEL or (version and version != classifier.version):
            shown = repr(name) + (f" version {version!r}" if version else "")
            raise errors.NotFound(
                f"model {shown} is not served here (serving {schemas.V2_MODEL} {classifier.version})")
        return classifier

    def _authorize(self, state: dict[str, Any]) -> None:
        if not self._tokens.enabled:
            return
        value = state["metadata"].get("authorization", "")
        scheme, _, token = value.partition(" ") if isinstance(value, str) else ("", "", "")
        if scheme.lower() != "bearer" or not self._tokens.accepts(token.strip().encode()):
            raise errors.Unauthorized("a valid `authorization: Bearer <token>` metadata entry is required")

    # ---- the RPCs

    async def ServerLive(self, request: pb.ServerLiveRequest, context: _Context) -> pb.ServerLiveResponse:
        return await self._call("ServerLive", lambda r, s: pb.ServerLiveResponse(live=True), request, context)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: _Context) -> pb.ServerReadyResponse:
        return await self._call("ServerReady", lambda r, s: pb.ServerReadyResponse(ready=self.core.holder.ready),
                                request, context)

    async def ModelReady(self, request: pb.ModelReadyRequest, context: _Context) -> pb.ModelReadyResponse:
        return await self._call("ModelReady", self._model_ready, request, context)

    def _model_ready(self, request: pb.ModelReadyRequest, state: dict[str, Any]) -> pb.ModelReadyResponse:
        if request.name != schemas.V2_MODEL:
            raise errors.NotFound(f"model {request.name!r} is not served here (serving {schemas.V2_MODEL})")
        if self.core.holder.classifier is None:
            return pb.ModelReadyResponse(ready=False)
        self._model(request.name, request.version)
        return pb.ModelReadyResponse(ready=self.core.holder.ready)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest,
                             context: _Context) -> pb.ServerMetadataResponse:
        return await self._call(
            "ServerMetadata", lambda r, s: pb.ServerMetadataResponse(name="oncology", version=self._server_version),
            request, context)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest,
                            context: _Context) -> pb.ModelMetadataResponse:
        return await self._call("ModelMetadata", self._model_metadata, request, context)

    def _model_metadata(self, request: pb.ModelMetadataRequest, state: dict[str, Any]) -> pb.ModelMetadataResponse:
        classifier = self._model(request.name, request.version)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=schemas.V2_MODEL,
            versions=[classifier.version],
            platform=f"oncology/{classifier.metadata.get('model', {}).get('family', 'unknown')}",
            inputs=[tensor(name=schemas.V2_INPUT, datatype="INT64", shape=[-1, _N_FEATURES])],
            outputs=[tensor(name=name, datatype=dtype, shape=[-1]) for name, dtype in schemas.V2_OUTPUTS.items()],
        )

    async def ModelInfer(self, request: pb.ModelInferRequest, context: _Context) -> pb.ModelInferResponse:
        return await self._call("ModelInfer", self._infer, request, context)

    def _infer(self, request: pb.ModelInferRequest, state: dict[str, Any]) -> pb.ModelInferResponse:
        self._authorize(state)
        classifier = self._model(request.model_name, request.model_version)
        rows = decode_infer(request, self.core.settings.max_batch)
        check_outputs(request)  # before scoring: a refused request is neither counted nor logged
        chosen = self._route(request, state, classifier)
        probabilities, labels, decisions = self.core.score(INFER_ROUTE, state["request_id"], chosen.classifier, rows,
                                                           chosen.arm, chosen.shadow)
        return encode_infer(request, chosen.classifier.version, probabilities, labels, decisions)

    def _route(self, request: pb.ModelInferRequest, state: dict[str, Any], champion: Classifier) -> routing.Route:
        """Who answers, as on the REST routes: routed by the ``x-routing-key`` metadata entry (else the request id)
        while a release is under way; a request naming its version (``model_version``) is answered by it
        (arm "pinned").  In a release (or pinned) the answer's trailing metadata names the version and arm
        (``x-model-version``, ``x-model-arm``), as the REST answers' headers do."""
        if request.model_version:
            chosen = routing.Route(champion, routing.PINNED, None)
        else:  # outside a release, the champion (`routing.route`)
            key = state["metadata"].get("x-routing-key")
            chosen = self.core.route(champion, key if isinstance(key, str) and key else state["request_id"])
        state["model_version"] = chosen.classifier.version
        state["model_arm"] = chosen.arm
        if chosen.arm != routing.CHAMPION or self.core.holder.release is not None:
            state["trailers"] = (("x-model-version", chosen.classifier.version), ("x-model-arm", chosen.arm))
        return chosen


class _Health(health.aio.HealthServicer):  # type: ignore[misc,name-defined,unused-ignore]
    """``grpc.health.v1.Health``: SERVING while the service is ready (a model loaded, not draining), for the
    whole server ("") and for the inference service; answered from the model holder at each check."""

    def __init__(self, core: Core) -> None:
        super().__init__()
        self._holder = core.holder

    async def Check(self, request: health_pb2.HealthCheckRequest, context: _Context) -> Any:
        if request.service in ("", SERVICE):
            serving = health_pb2.HealthCheckResponse.SERVING if self._holder.ready else (
                health_pb2.HealthCheckResponse.NOT_SERVING)
            await self.set(request.service, serving)
        return await super().Check(request, context)


class GrpcServer:
    """The gRPC server of one worker, on the app's event loop: started after the model loads, stopped with
    the HTTP drain (new calls refused, in-flight ones given ``graceful_timeout`` seconds)."""

    def __init__(self, core: Core, tokens: Tokens, access_log: AccessLog | None) -> None:
        self.core = core
        self.settings = core.settings
        self.service = InferenceService(core, tokens, access_log)
        self._server: aio.Server | None = None
        self._stopping: asyncio.Future[None] | None = None
        self.port = 0

    async def start(self) -> None:
        settings = self.settings
        server = aio.server(options=[
            ("grpc.max_receive_message_length", settings.max_batch_body_bytes),
            ("grpc.max_send_message_length", -1),
            # several workers each listen on the port (the kernel spreads the connections); one worker alone
            # must not share its port with a stray process
            ("grpc.so_reuseport", int(settings.workers > 1)),
        ])
        handlers = self.service.handlers()
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        server.add_registered_method_handlers(SERVICE, handlers)
        health_pb2_grpc.add_HealthServicer_to_server(_Health(self.core), server)
        if settings.grpc_reflection:
            server.add_generic_rpc_handlers((_LazyReflection(),))
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        try:
            self.port = server.add_insecure_port(f"{host}:{settings.grpc_port}")
        except RuntimeError as exc:  # grpc says only "Failed to bind"
            raise OSError(f"cannot listen for gRPC on {host}:{settings.grpc_port} ({exc})") from None
        await server.start()
        self._server = server
        log.info("gRPC (Open Inference Protocol) on %s:%d", host, self.port)

    async def stop(self, grace: float | None = None) -> None:
        """Refuse new calls, let in-flight ones finish within ``grace`` seconds (default
        ``graceful_timeout``); the same stop however often it is called."""
        if self._server is None:
            return
        if self._stopping is None:
            grace = self.settings.graceful_timeout if grace is None else grace
            self._stopping = asyncio.ensure_future(self._server.stop(grace))
        await asyncio.shield(self._stopping)


#: The reflection service's name (``grpc_reflection.v1alpha.reflection.SERVICE_NAME``, a test holds them equal).
REFLECTION_SERVICE: Final = "grpc.reflection.v1alpha.ServerReflection"


class _LazyReflection(grpc.GenericRpcHandler):
    """Server reflection over the three services this port serves, loaded by its first call.

    grpcio-reflection (its servicer, its messages and the descriptor pool it answers from) is ~0.8 MB of a
    worker's resident memory that only a tool such as grpcurl ever uses (docs/grpc.md, "Cost"): it is imported
    when such a call arrives, not at start-up.  The protocol's messages live in a pool of their own
    (proto/generate.sh says why), so reflection gets a pool holding exactly these files."""

    def __init__(self) -> None:
        self._handler: grpc.GenericRpcHandler | None = None

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        method: str = handler_call_details.method
        if not method.startswith(f"/{REFLECTION_SERVICE}/"):
            return None
        if self._handler is None:
            self._handler = _reflection_handler()
        return self._handler.service(handler_call_details)


def _reflection_handler() -> grpc.GenericRpcHandler:
    from google.protobuf import descriptor_pool
    from grpc_reflection.v1alpha import reflection, reflection_pb2

    pool = descriptor_pool.DescriptorPool()
    for file in (pb.DESCRIPTOR, health_pb2.DESCRIPTOR, reflection_pb2.DESCRIPTOR):
        pool.AddSerializedFile(file.serialized_pb)
    servicer = reflection.aio.ReflectionServicer((SERVICE, health.SERVICE_NAME, REFLECTION_SERVICE), pool=pool)
    # as the generated add_ServerReflectionServicer_to_server registers it
    handlers = {"ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )}
    return grpc.method_handlers_generic_handler(REFLECTION_SERVICE, handlers)


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    return " <- ".join(f"{os.path.basename(f.filename)}:{f.lineno} in {f.name}" for f in reversed(frames[-8:]))
