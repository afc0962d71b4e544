"""The Open Inference Protocol (V2, as KServe and Triton speak it), with Triton's binary tensor data
extension.  Thin handlers over `Core`; the wire shapes are in `schemas`."""

from __future__ import annotations

from importlib import metadata as importlib_metadata
from typing import Any

from oncology.webservice import errors, schemas
from oncology.webservice.auth import Tokens
from oncology.webservice.core import Core
from oncology.webservice.handlers import Handlers, Route
from oncology.webservice.transport import JSON, OCTETS, Reply, Req, json_reply
from oncology_model.classifier import Classifier
from oncology_model.datamodel import FEATURES

MODEL_PATH = "/v2/models/{model_name}"
VERSION_PATH = "/v2/models/{model_name}/versions/{model_version}"


class V2(Handlers):
    def __init__(self, core: Core, tokens: Tokens) -> None:
        super().__init__(core, tokens)
        self._server_version = importlib_metadata.version("oncology")

    def routes(self) -> list[Route]:
        return [
            ("GET", "/v2", self.server_metadata),
            ("GET", "/v2/health/live", self.live),
            ("GET", "/v2/health/ready", self.ready),
            *(route for prefix in (MODEL_PATH, VERSION_PATH) for route in (
                ("GET", prefix, self.model_metadata),
                ("GET", f"{prefix}/ready", self.model_ready),
                ("POST", f"{prefix}/infer", self.infer),
            )),
        ]

    def _model(self, req: Req) -> Classifier:
        name = req.path_params.get("model_name", schemas.V2_MODEL)
        classifier = self.core.classifier()
        version = req.path_params.get("model_version")
        release = self.core.holder.release
        if release is not None and version == release.candidate.version and name == schemas.V2_MODEL:
            return release.candidate  # a release's candidate, asked for by its version
        if name != schemas.V2_MODEL or (version is not None and version != classifier.version):
            shown = name + (f" version {version}" if version else "")
            raise errors.NotFound(f"model {shown} is not served here (serving {schemas.V2_MODEL} {classifier.version})")
        return classifier

    async def server_metadata(self, req: Req) -> Reply:
        return json_reply({"name": "oncology", "version": self._server_version, "extensions": ["binary_tensor_data"]})

    async def live(self, req: Req) -> Reply:
        return json_reply({"live": True})

    async def ready(self, req: Req) -> Reply:
        if not self.core.holder.ready:
            raise errors.NotReady("not ready")
        return json_reply({"ready": True})

    async def model_ready(self, req: Req) -> Reply:
        self._model(req)
        return await self.ready(req)

    async def model_metadata(self, req: Req) -> Reply:
        classifier = self._model(req)
        return json_reply({
            "name": schemas.V2_MODEL,
            "versions": [classifier.version],
            "platform": f"oncology/{classifier.metadata.get('model', {}).get('family', 'unknown')}",
            "inputs": [{"name": schemas.V2_INPUT, "datatype": "INT64", "shape": [-1, len(FEATURES)],
                        "parameters": {"features": list(FEATURES)}}],
            "outputs": [{"name": name, "datatype": dtype, "shape": [-1]} for name, dtype in schemas.V2_OUTPUTS.items()],
        })

    async def infer(self, req: Req) -> Reply:
        self.authorize(req)
        classifier = self._model(req)
        header = req.headers.get(b"inference-header-content-length")
        if header is None:  # V2 clients (tritonclient among them) send JSON without a content type
            body = await req.json_body(self.settings.max_batch_body_bytes, untyped_ok=True)
            header_length = None
        else:  # Triton's binary tensor data extension: the JSON, then the tensors' bytes
            if not (header.isascii() and header.isdigit()):
                raise errors.BadRequest("Inference-Header-Content-Length must be a whole number of bytes")
            media = req.media_type()
            if media not in (None, JSON, OCTETS):
                raise errors.UnsupportedMediaType(
                    f"a binary inference request is application/octet-stream, not {media.decode('latin-1')}")
            body = await req.body(self.settings.max_batch_body_bytes)
            header_length = int(header)
        infer, rows = schemas.decode_v2(body, self.settings.max_batch, header_length)
        pinned = "model_version" in req.path_params  # the client named the version: no routing
        probabilities, labels, decisions = self.score(req, classifier, rows, pinned)
        values: dict[str, list[Any]] = {"label": labels, "probability": probabilities, "decision": decisions}
        wanted = [o.name for o in infer.outputs] if infer.outputs else list(values)
        outputs: list[dict[str, Any]] = []
        binaries: list[bytes] = []
        for name in wanted:
            datatype = schemas.V2_OUTPUTS[name]
            output: dict[str, Any] = {"name": name, "shape": [len(labels)], "datatype": datatype}
            if schemas.wants_binary(infer, name):
                raw = schemas.binary_tensor(datatype, values[name])
                output["parameters"] = {"binary_data_size": len(raw)}
                binaries.append(raw)
            else:
                output["data"] = values[name]
            outputs.append(output)
        answer: dict[str, Any] = {"model_name": schemas.V2_MODEL, "model_version": req.state["model_version"],
                                  "outputs": outputs}
        if infer.id is not None:
            answer["id"] = infer.id
        if not binaries:
            return Reply(schemas.encode(answer), headers=self.named(req))
        head = schemas.encode(answer)
        return Reply(b"".join([head, *binaries]), media_type=OCTETS,
                     headers=[(b"inference-header-content-length", b"%d" % len(head)), *self.named(req)])
