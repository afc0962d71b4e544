"""What the handlers of every protocol share: the core, bearer-token authorization, and scoring that
notes the served version for the access log.  One floor below the protocol modules, so that none of
them reaches back into `app`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from oncology.webservice import errors, routing, schemas
from oncology.webservice.auth import Tokens
from oncology.webservice.core import Core, Scored
from oncology.webservice.transport import Handler, Req
from oncology_model.classifier import Classifier

#: A route: method, path template, handler.
Route = tuple[str, str, Handler]


class Handlers:
    """The base of each protocol's handlers."""

    def __init__(self, core: Core, tokens: Tokens) -> None:
        self.core = core
        self.settings = core.settings
        self._tokens = tokens
        self._pinned: dict[str, routing.Route] = {}  # the route to each version a request named, made once

    def routes(self) -> list[Route]:
        """This protocol's routes."""
        raise NotImplementedError

    def authorize(self, req: Req) -> None:
        """401 unless tokens are off or the request carries ``Authorization: Bearer <a current token>``."""
        if not self._tokens.enabled:
            return
        scheme, _, token = req.headers.get(b"authorization", b"").partition(b" ")
        if scheme.lower() != b"bearer" or not self._tokens.accepts(token.strip()):
            raise errors.Unauthorized("a valid `Authorization: Bearer <token>` header is required")

    def route(self, req: Req, champion: Classifier, pinned: bool = False) -> routing.Route:
        """Who answers: routed by the ``x-routing-key`` header (else the request id) while a release is under
        way; ``pinned``: the client named the version, which answers.  While a release is under way (and when
        pinned) the answer names its version and arm in headers; outside, every answer is the champion's (the
        headers cost ~3% of single-row throughput, benchmarks/release.py)."""
        release = self.core.holder.release
        state = req.state
        if release is None and not pinned:  # no release: the champion, as before releases
            state["model_version"] = champion.version  # for the access log
            state["model_arm"] = routing.CHAMPION
            return routing.Route(champion, routing.CHAMPION, None)
        if pinned or release is None:
            chosen = self._pinned.get(champion.version)
            if chosen is None or chosen.classifier is not champion:
                if len(self._pinned) >= 4:  # only the champion and a candidate can be named: keep no older model alive
                    self._pinned.clear()
                chosen = self._pinned[champion.version] = routing.named(champion, routing.PINNED)
        elif release.everyone:  # a share of 100%: no key to read
            chosen = release.route_all(champion)
        else:
            key = req.headers.get(b"x-routing-key")
            chosen = release.route(champion, key.decode("latin-1") if key else state["request_id"])
        state["model_version"] = chosen.classifier.version  # for the access log and the answer's headers
        state["model_arm"] = chosen.arm
        state["model_headers"] = chosen.headers
        return chosen

    @staticmethod
    def named(req: Req) -> list[tuple[bytes, bytes]]:
        """The answer's headers naming its version and arm (``x-model-version``, ``x-model-arm``) while a release is
        under way (or the request pinned its version); none outside one (every answer is the champion's)."""
        return [*req.state.get("model_headers", ())]

    def score(self, req: Req, classifier: Classifier, rows: Iterable[Sequence[int]], pinned: bool = False) -> Scored:
        chosen = self.route(req, classifier, pinned)
        return self.core.score(req.route, req.request_id, chosen.classifier, rows, chosen.arm, chosen.shadow)

    def results(self, req: Req, classifier: Classifier, rows: Iterable[Sequence[int]],
                explain: bool = False) -> list[schemas.Result] | list[schemas.ExplainedResult]:
        chosen = self.route(req, classifier)
        return self.core.results(req.route, req.request_id, chosen.classifier, rows, explain, chosen.arm, chosen.shadow)
