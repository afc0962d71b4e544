"""Versions as a registry, kept in the store itself.

Layout (relative to the store's root)::

    models/<version>/model.json, metadata.json, kpis.json, MANIFEST.json
    registry/aliases.json        {"aliases": {"champion": "1.0.3"}, "history": [...], "release": {...}}

A version exists once its ``MANIFEST.json`` does (written last).  ``latest`` is the highest
published version; ``champion`` is an alias moved by `promote` and `rollback`, and every move is
recorded (when, from, to, action, and an id).  The alias document is one object, replaced whole by
compare-and-swap (`Store.swap`): of concurrent moves none is lost, each retries on the state the
others left; `transact` makes any such change (a release's plan, `oncology_model.release`, with
the ``candidate`` alias).  `publish_next` assigns the version number at publish time, so concurrent trainers
get distinct, complete versions.
"""

from __future__ import annotations

import json
import random
import re
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

from oncology_model.bundle import MANIFEST, Bundle, dump_json
from oncology_model.errors import BundleError, ConflictError, NotFoundError, RegistryError
from oncology_model.storage import Store

#: Model versions are ``<series>.<n>``; n counts up from 1 in each store.
VERSION_SERIES: Final = "1.0"
MODELS_PREFIX: Final = "models"
ALIASES_KEY: Final = "registry/aliases.json"
CHAMPION: Final = "champion"
LATEST: Final = "latest"
_VERSION = re.compile(r"^\d+(\.\d+)*$")
#: How often an alias move or a publication is retried after losing a race to another writer.
ATTEMPTS: Final = 50


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


class ModelRegistry:
    """Published model versions and their aliases in one store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def versions(self) -> list[str]:
        """Published (complete) versions, oldest first."""
        found = []
        for key in self.store.list(f"{MODELS_PREFIX}/"):
            parts = key.split("/")
            if len(parts) == 3 and parts[2] == MANIFEST and _VERSION.fullmatch(parts[1]):
                found.append(parts[1])
        return sorted(found, key=version_key)

    def next_version(self) -> str:
        """The version after the highest one that holds any object, published or not.

        A version abandoned halfway on S3 (files and its claim, no manifest) stays taken: nobody
        else may write into it.
        """
        series = version_key(VERSION_SERIES)
        taken = set()
        for key in self.store.list(f"{MODELS_PREFIX}/"):
            parts = key.split("/")
            if len(parts) == 3 and _VERSION.fullmatch(parts[1]):
                taken.add(parts[1])
        numbers = [version_key(v)[-1] for v in taken if version_key(v)[:-1] == series]
        return f"{VERSION_SERIES}.{max(numbers, default=0) + 1}"

    def publish(self, files: Mapping[str, bytes]) -> Bundle:
        """Verify a bundle's files and publish them as its version (fixed by the bundle).

        Refused with `ConflictError` (a `RegistryError`) if that version is already published or is
        being published by another writer; `publish_next` picks a free version instead.
        """
        bundle = Bundle.from_files(files, where="new bundle")
        if not _VERSION.fullmatch(bundle.version):
            raise RegistryError(f"version {bundle.version!r} is not of the form N.N.N")
        self.store.publish(f"{MODELS_PREFIX}/{bundle.version}", files, commit=MANIFEST)
        return bundle

    def publish_next(self, build: Callable[[str], Mapping[str, bytes]], attempts: int = ATTEMPTS) -> Bundle:
        """Publish a new bundle under the next free version, chosen now; returns the published bundle.

        ``build(version)`` returns the bundle's files for that version (its metadata, KPIs and card
        carry the version, so they are assembled per attempt; keep the expensive work, training,
        outside ``build``).  Concurrent publishers all get distinct versions, each complete with
        exactly its own files:

        - the version's commit point is created exclusively: locally the version folder is staged
          and renamed into place (a rename onto a non-empty folder is refused); on S3 the version is
          first claimed with a conditional create (``If-None-Match: *``), so a loser is refused
          before it uploaded anything into the version, and only the winner uploads, reads back and
          finally creates ``MANIFEST.json`` (conditional again);
        - a loser gets `ConflictError` from the store and retries with the next version, up to
          ``attempts`` times (then `RegistryError`).

        A publisher that dies halfway leaves no visible version (no manifest).  On S3 its claim
        stays, so that version number is skipped (a gap) rather than shared.
        """
        version = self.next_version()
        for _ in range(attempts):
            files = build(version)
            bundle = Bundle.from_files(files, where=f"new bundle for {version}")
            if bundle.version != version:
                raise RegistryError(f"build({version!r}) returned a bundle of version {bundle.version}")
            try:
                self.store.publish(f"{MODELS_PREFIX}/{version}", files, commit=MANIFEST)
                return bundle
            except ConflictError:
                version = max(_bump(version), self.next_version(), key=version_key)
        raise RegistryError(f"{self.store}: lost the race for {attempts} versions in a row; try again")

    def _published(self, shown: int = 5) -> str:
        """The newest published versions, for a message that names a version that is not one of them."""
        versions = self.versions()
        if not versions:
            return "none is published yet"
        newest = ", ".join(reversed(versions[-shown:]))
        return f"published: {newest}" + (f" and {len(versions) - shown} older" if len(versions) > shown else "")

    def resolve(self, ref: str) -> str:
        """The version that ``ref`` (a version, ``latest`` or an alias) names now."""
        if ref == LATEST:
            versions = self.versions()
            if not versions:
                raise NotFoundError(f"{self.store}: no model version has been published yet")
            return versions[-1]
        if _VERSION.fullmatch(ref):
            if not self.store.exists(f"{MODELS_PREFIX}/{ref}/{MANIFEST}"):
                raise NotFoundError(f"{self.store}: model version {ref} is not published ({self._published()})")
            return ref
        aliases = self.state()["aliases"]
        version = aliases.get(ref)
        if version is None and ref == CHAMPION:
            raise NotFoundError(f"{self.store}: alias {ref!r} is not set (promote a version first)")
        if version is None:
            known = ", ".join(sorted({CHAMPION, *aliases}))
            raise NotFoundError(
                f"{self.store}: {ref!r} is not a model version (N.N.N), {LATEST!r} or an alias ({known})"
            )
        return str(version)

    def load(self, ref: str) -> Bundle:
        version = self.resolve(ref)
        where = f"{self.store}/{MODELS_PREFIX}/{version}"
        files = self.store.read_dir(f"{MODELS_PREFIX}/{version}")
        if not files:
            raise BundleError(f"{where}: the bundle's files are missing")
        return Bundle.from_files(files, where=where)

    def kpis(self, version: str) -> dict[str, Any]:
        data = self.store.read(f"{MODELS_PREFIX}/{version}/kpis.json")
        value: dict[str, Any] = json.loads(data)
        return value

    def state(self) -> dict[str, Any]:
        try:
            state: dict[str, Any] = json.loads(self.store.read(ALIASES_KEY))
        except NotFoundError:
            return {"aliases": {}, "history": []}
        return state

    def _tagged_state(self) -> tuple[dict[str, Any], str | None]:
        try:
            data, tag = self.store.read_tagged(ALIASES_KEY)
        except NotFoundError:
            return {"aliases": {}, "history": []}, None
        state: dict[str, Any] = json.loads(data)
        return state, tag

    def transact(self, change: Callable[[dict[str, Any]], list[dict[str, Any]]], what: str) -> list[dict[str, Any]]:
        """Change the alias document by compare-and-swap; returns the moves ``change`` recorded.

        ``change(state)`` edits the document it is given (aliases, and any other key such as the
        release plan) and returns the moves to record in its history, each a dict with at least
        ``alias``, ``action``, ``from`` and ``to`` (and any evidence); it may raise to refuse the
        change (nothing is written).  Read the document and its tag, apply ``change`` on that
        state, write it back only if the document is unchanged since; if another writer got there
        first, apply ``change`` again on the new state (with a random back-off), at most
        `ATTEMPTS` times.  Of concurrent transactions none is lost, and each decides on the state
        the others left: a change that checks a precondition (no release under way) is refused to
        all writers but one.
        """
        for attempt in range(ATTEMPTS):
            state, tag = self._tagged_state()
            moves = change(state)
            at = datetime.now(UTC).isoformat(timespec="seconds")
            for move in moves:
                move.setdefault("at", at)
                move["id"] = uuid.uuid4().hex
            state["history"].extend(moves)
            document = dump_json(state)
            if self.store.swap(ALIASES_KEY, document, expected=tag):
                return moves
            # A write whose answer was lost and that the client retried looks like a conflict: look
            # for these moves' ids before deciding again, so that a move is never recorded twice.
            ids = {m["id"] for m in moves}
            if ids and ids <= {m.get("id") for m in self._tagged_state()[0]["history"]}:
                return moves
            time.sleep(random.uniform(0, min(0.5, 0.005 * 2**attempt)))  # noqa: S311 - jitter, not security
        raise ConflictError(f"{self.store}/{ALIASES_KEY} kept changing under {ATTEMPTS} attempts to {what}; try again")

    def _move(self, alias: str, action: str, target: Callable[[dict[str, Any]], str]) -> dict[str, Any]:
        """Move ``alias`` to ``target(state)`` by compare-and-swap of the alias document (`transact`)."""

        def change(state: dict[str, Any]) -> list[dict[str, Any]]:
            to = target(state)
            move = {"alias": alias, "action": action, "from": state["aliases"].get(alias), "to": to}
            state["aliases"][alias] = to
            return [move]

        return self.transact(change, f"{action} {alias}")[0]

    def promote(self, version: str, alias: str = CHAMPION) -> dict[str, Any]:
        """Point ``alias`` at a published version once its bundle verifies; returns the recorded move.

        The bundle is loaded first (manifest and every file's sha256): a tampered or incomplete
        version is refused with `BundleError` naming the file, and the alias does not move.
        """
        version = self.resolve(version)
        self.load(version)

        def target(state: dict[str, Any]) -> str:
            if state["aliases"].get(alias) == version:
                raise RegistryError(f"{alias} is already {version}")
            return version

        return self._move(alias, "promote", target)

    def rollback(self, alias: str = CHAMPION) -> dict[str, Any]:
        """Move ``alias`` back to the version it had before its latest promotion still in force.

        That version is verified (as in `promote`) before the alias moves.
        """

        def target(state: dict[str, Any]) -> str:
            stack: list[str] = []
            for move in state["history"]:
                if move["alias"] != alias:
                    continue
                if move["action"] == "promote":
                    stack.append(move["to"])
                elif move["action"] == "rollback" and stack:
                    stack.pop()
            if len(stack) < 2:
                raise RegistryError(f"{alias} has no earlier version to roll back to")
            self.load(stack[-2])
            return stack[-2]

        return self._move(alias, "rollback", target)

    def history(self, alias: str | None = None) -> list[dict[str, Any]]:
        """Every alias move, oldest first (of ``alias`` only if given)."""
        return [m for m in self.state()["history"] if alias is None or m["alias"] == alias]


def _bump(version: str) -> str:
    *head, last = version.split(".")
    return ".".join([*head, str(int(last) + 1)])
