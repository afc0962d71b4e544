"""The served model: loaded and verified before the service is ready, swapped atomically when the
alias it follows moves.  Knows nothing of HTTP."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

from oncology.settings import ServeSettings
from oncology.webservice.routing import Release
from oncology_model.classifier import Classifier
from oncology_model.errors import OncologyError
from oncology_model.registry import CHAMPION, ModelRegistry, version_key
from oncology_model.release import ReleasePlan, current_plan
from oncology_model.storage import open_existing_store

log = logging.getLogger(__name__)


class ModelHolder:
    """Holds the `Classifier` being served.

    Readers take ``holder.classifier`` once per request and use that object throughout, so a swap
    (one attribute assignment) never mixes two models within a request, and no request waits.
    """

    def __init__(self, settings: ServeSettings, on_reload: Callable[[str, str | None], None] | None = None,
                 on_release: Callable[[Release | None, str | None], None] | None = None) -> None:
        self.settings = settings
        self._on_release = on_release or (lambda release, last_rollback: None)
        self.classifier: Classifier | None = None
        #: The release under way (plan and candidate), when following the champion; replaced whole, like the model.
        self.release: Release | None = None
        #: When the latest release of the candidate alias was rolled back (ISO time), for the metrics.
        self.last_rollback: str | None = None
        self.draining = False
        self._on_reload = on_reload or (lambda result, version: None)
        self._lock = threading.Lock()  # one reload at a time
        self._registry = ModelRegistry(open_existing_store(settings.store)) if settings.store else None

    @property
    def source(self) -> str:
        return f"{self.settings.store} ({self.settings.model})" if self.settings.store else "the installed oncology-model wheel"

    @property
    def follows_alias(self) -> bool:
        """Whether the served version can change: a store and an alias (not a fixed version)."""
        return self._registry is not None and not self.settings.model[:1].isdigit()

    @property
    def follows_releases(self) -> bool:
        """Whether a release can route requests here: the champion of a store is served."""
        return self._registry is not None and self.settings.model == CHAMPION

    @property
    def ready(self) -> bool:
        return self.classifier is not None and not self.draining

    def load(self) -> Classifier:
        """Load the configured model (verified); raises `OncologyError` with the reason."""
        registry = self._registry
        classifier = Classifier() if registry is None else Classifier(registry.load(self.settings.model))
        self.classifier = classifier
        self._on_reload("initial", classifier.version)
        log.info("serving model %s from %s", classifier.version, self.source)
        self.follow_release()
        return classifier

    def count_failure(self) -> None:
        """A load that failed (counted in the reload metrics)."""
        self._on_reload("failure", self.classifier.version if self.classifier else None)

    def refresh(self) -> bool:
        """Follow the alias: load and switch to the version it names now.  True if it switched.

        A bundle that fails verification is not served: the current model keeps serving, and the
        failure is logged and counted.
        """
        if self._registry is None or not self._lock.acquire(blocking=False):
            return False
        try:
            current = self.classifier.version if self.classifier else None
            try:
                wanted = self._registry.resolve(self.settings.model)
                if wanted == current:
                    return False
                candidate = Classifier(self._registry.load(wanted))
            except OncologyError as exc:
                # the line first: whoever sees the failure counted in the metrics finds it in the log already
                log.error("model reload failed, still serving %s: %s", current, exc)
                self._on_reload("failure", current)
                return False
            self.classifier = candidate
            self._on_reload("success", candidate.version)
            direction = "rollback" if current and version_key(wanted) < version_key(current) else "update"
            log.info("model %s -> %s (%s of %s)", current, wanted, direction, self.settings.model)
            return True
        finally:
            try:
                self.follow_release()
            finally:
                self._lock.release()

    def follow_release(self) -> None:
        """Follow the release plan in the registry: load the candidate it names (verified), or drop it.

        A candidate that fails to load is not served (the champion answers everything), counted as a
        failed load and logged; the next refresh tries again.
        """
        if not self.follows_releases or self._registry is None:
            return
        try:
            state = self._registry.state()
            plan = current_plan(state, f"{self.settings.store}")
        except OncologyError as exc:
            log.error("cannot read the release plan, routing unchanged: %s", exc)
            return
        rollbacks = [m["at"] for m in state["history"] if m.get("alias") == "candidate" and m.get("action") == "rollback"]
        self.last_rollback = rollbacks[-1] if rollbacks else None
        try:
            self._follow(plan)
        finally:
            self._on_release(self.release, self.last_rollback)

    def _follow(self, plan: ReleasePlan | None) -> None:
        current = self.release
        if plan is None:
            if current is not None:
                log.info("release %s of %s ended: the champion answers every request", current.plan.id, current.plan.version)
                self.release = None
            return
        assert self._registry is not None  # follows_releases
        if current is not None and current.candidate.version == plan.version:
            if current.plan != plan:
                log.info("release %s of %s: %s at %.0f%%", plan.id, plan.version, plan.mode, plan.share * 100)
                self.release = Release(plan, current.candidate)
            return
        try:
            candidate = Classifier(self._registry.load(plan.version))
        except OncologyError as exc:
            log.error("release %s: candidate %s does not load, the champion answers everything: %s",
                      plan.id, plan.version, exc)
            self._on_reload("failure", self.classifier.version if self.classifier else None)
            self.release = None
            return
        self.release = Release(plan, candidate)
        log.info("release %s of %s: %s at %.0f%%", plan.id, plan.version, plan.mode, plan.share * 100)


#: Seconds between attempts to load the model while the store cannot be reached: doubling, capped.
LOAD_RETRY_FIRST, LOAD_RETRY_MAX = 0.5, 10.0


async def load_with_backoff(holder: ModelHolder) -> None:
    """Retry the first load until it succeeds (the store was down at start-up)."""
    delay = LOAD_RETRY_FIRST
    while holder.classifier is None:
        await asyncio.sleep(delay)
        delay = min(delay * 2, LOAD_RETRY_MAX)
        if holder.classifier is not None:  # the alias follower got there first
            return
        try:
            await asyncio.to_thread(holder.load)
        except OncologyError as exc:
            log.warning("model load failed, still not ready; next attempt in %.1fs: %s", delay, exc)
            holder.count_failure()


async def follow(holder: ModelHolder, interval: float) -> None:
    """Follow the alias every ``interval`` seconds, for ever (until cancelled)."""
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.to_thread(holder.refresh)
        except Exception:  # keep following: a failure is logged, the old model serves on
            log.exception("model refresh crashed")
