"""The service's own REST routes: predictions (/predict, /predict/batch), the model and its card,
the dashboard, health, metrics and the documentation.  Thin handlers over `Core`."""

from __future__ import annotations

import asyncio

from oncology.webservice import errors, schemas
from oncology.webservice.auth import Tokens
from oncology.webservice.core import Core
from oncology.webservice.dashboard import HTML as DASHBOARD_HTML
from oncology.webservice.dashboard import Dashboard
from oncology.webservice.handlers import Handlers, Route
from oncology.webservice.openapi import DOCS_HTML, openapi_document
from oncology.webservice.transport import MARKDOWN, Reply, Req, json_reply


class Rest(Handlers):
    def __init__(self, core: Core, tokens: Tokens) -> None:
        super().__init__(core, tokens)
        self._dashboard = Dashboard(self.settings.store)

    def routes(self) -> list[Route]:
        return [
            ("POST", "/predict", self.predict),
            ("POST", "/predict/batch", self.predict_batch),
            ("GET", "/model", self.model),
            ("GET", "/model/card", self.model_card),
            ("GET", "/dashboard", self.dashboard),
            ("GET", "/healthz", self.healthz),
            ("GET", "/readyz", self.readyz),
            ("GET", "/metrics", self.metrics_text),
            ("GET", "/openapi.json", self.openapi),
            ("GET", "/docs", self.docs),
        ]

    async def predict(self, req: Req) -> Reply:
        """Predict one tumor; ``?explain=true`` adds each feature's contribution."""
        self.authorize(req)
        explain = schemas.decode_explain(req.query) if req.query else False
        row = schemas.decode_tumor(await req.json_body(self.settings.max_body_bytes))
        (result,) = self.results(req, self.core.classifier(), [row], explain)
        return Reply(schemas.encode(result), headers=self.named(req))

    async def predict_batch(self, req: Req) -> Reply:
        """Predict a batch of tumors; results in the same order; ``?explain=true`` adds contributions."""
        self.authorize(req)
        explain = schemas.decode_explain(req.query) if req.query else False
        body = await req.json_body(self.settings.max_batch_body_bytes)
        rows = schemas.decode_tumors(body, self.settings.max_batch)
        results = self.results(req, self.core.classifier(), rows, explain)
        return Reply(schemas.encode(results), headers=self.named(req))

    async def model(self, req: Req) -> Reply:
        """The served model's version, metadata, KPIs and referral band."""
        return json_reply(self.core.model_info())

    async def model_card(self, req: Req) -> Reply:
        """The served model's card: JSON (the card and its Markdown), or the Markdown alone for ``Accept: text/markdown``."""
        classifier = self.core.classifier()
        card, markdown = classifier.card, classifier.card_markdown
        if card is None and markdown is None:
            raise errors.NotFound(
                f"model {classifier.version} has no model card (it was trained before model cards existed)"
            )
        if _prefers_markdown(req.headers.get(b"accept", b"")):
            if markdown is None:
                raise errors.NotFound(f"model {classifier.version} has no Markdown card (card.md); ask for JSON")
            return Reply(markdown.encode(), media_type=MARKDOWN)
        return json_reply({"version": classifier.version, "card": card, "markdown": markdown})

    async def dashboard(self, req: Req) -> Reply:
        """The latest monitoring dashboard (HTML) that training and drift runs wrote into the store."""
        return Reply(await asyncio.to_thread(self._dashboard.page), media_type=DASHBOARD_HTML)

    async def healthz(self, req: Req) -> Reply:
        return json_reply({"status": "ok"})

    async def readyz(self, req: Req) -> Reply:
        return json_reply(self.core.readiness())

    async def metrics_text(self, req: Req) -> Reply:
        return Reply(self.core.metrics.exposition(), media_type=b"text/plain; version=0.0.4; charset=utf-8")

    async def openapi(self, req: Req) -> Reply:
        return json_reply(openapi_document(self.settings))

    async def docs(self, req: Req) -> Reply:
        return Reply(DOCS_HTML.encode(), media_type=b"text/html; charset=utf-8")


def _prefers_markdown(accept: bytes) -> bool:
    """Whether an Accept header ranks text/markdown above application/json (JSON wins ties and absence)."""
    quality = {b"application/json": 0.0, b"text/markdown": 0.0}
    for item in accept.split(b","):
        media, *params = (part.strip() for part in item.split(b";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition(b"=")
            if name.strip().lower() == b"q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        media = media.lower()
        targets = quality if media == b"*/*" else [m for m in quality if m == media or media == m.split(b"/")[0] + b"/*"]
        for m in targets:
            quality[m] = max(quality[m], q)
    return quality[b"text/markdown"] > quality[b"application/json"]
