"""The SageMaker hosting contract (the same image, on managed hosting): /ping and /invocations.
Thin handlers over `Core`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from oncology.webservice import errors, schemas
from oncology.webservice.handlers import Handlers, Route
from oncology.webservice.transport import JSON, Reply, Req, json_reply


class SageMaker(Handlers):
    def routes(self) -> list[Route]:
        return [
            ("GET", "/ping", self.ping),
            ("POST", "/invocations", self.invocations),
        ]

    async def ping(self, req: Req) -> Reply:
        """SageMaker health check: 200 once a verified model is loaded (as /readyz)."""
        return json_reply(self.core.readiness())

    async def invocations(self, req: Req) -> Reply:
        """SageMaker inference: one tumor (JSON object), a JSON array of tumors, or CSV rows of nine values."""
        self.authorize(req)
        limit = self.settings.max_batch_body_bytes
        single = False
        rows: Iterable[Sequence[int]]
        media = req.media_type()
        if media == b"text/csv":
            rows = schemas.decode_csv(await req.body(limit), self.settings.max_batch)
        elif media != JSON:
            shown = "missing" if media is None else media.decode("latin-1")
            raise errors.UnsupportedMediaType(f"the body must be application/json or text/csv, not {shown}")
        else:
            body = await req.body(limit)
            schemas.refuse_empty(body, "a JSON tumor object or an array of them")
            single = body.lstrip()[:1] != b"["
            rows = [schemas.decode_tumor(body)] if single else schemas.decode_tumors(body, self.settings.max_batch)
        results = self.results(req, self.core.classifier(), rows)
        return Reply(schemas.encode(results[0] if single else results), headers=self.named(req))
