"""Versions as a registry, kept in the store itself.

Layout (relative to the store's root)::

    models/<version>/model.json, metadata.json, kpis.json, MANIFEST.json
    registry/aliases.json        {"aliases": {"champion": "1.0.3"}, "history": [...]}

A version exists once its ``MANIFEST.json`` does (written last).  ``latest`` is the highest
published version; ``champion`` is an alias moved by `promote` and `rollback`, and every move is
recorded (when, from, to, action).  The alias document is one object, replaced whole.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from oncology_model.bundle import MANIFEST, Bundle, dump_json
from oncology_model.errors import BundleError, NotFoundError, RegistryError
from oncology_model.storage import Store

#: Model versions are ``<series>.<n>``; n counts up from 1 in each store.
VERSION_SERIES: Final = "1.0"
MODELS_PREFIX: Final = "models"
ALIASES_KEY: Final = "registry/aliases.json"
CHAMPION: Final = "champion"
LATEST: Final = "latest"
_VERSION = re.compile(r"^\d+(\.\d+)*$")


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
            if len(parts) == 3 and parts[2] == MANIFEST and _VERSION.match(parts[1]):
                found.append(parts[1])
        return sorted(found, key=version_key)

    def next_version(self) -> str:
        series = version_key(VERSION_SERIES)
        taken = [version_key(v)[-1] for v in self.versions() if version_key(v)[:-1] == series]
        return f"{VERSION_SERIES}.{max(taken, default=0) + 1}"

    def publish(self, files: Mapping[str, bytes]) -> Bundle:
        """Verify a bundle's files and publish them as its version; refuses to overwrite."""
        bundle = Bundle.from_files(files, where="new bundle")
        if not _VERSION.match(bundle.version):
            raise RegistryError(f"version {bundle.version!r} is not of the form N.N.N")
        self.store.publish(f"{MODELS_PREFIX}/{bundle.version}", files, commit=MANIFEST)
        return bundle

    def resolve(self, ref: str) -> str:
        """The version that ``ref`` (a version, ``latest`` or an alias) names now."""
        if ref == LATEST:
            versions = self.versions()
            if not versions:
                raise NotFoundError(f"{self.store}: no model version has been published yet")
            return versions[-1]
        if _VERSION.match(ref):
            if not self.store.exists(f"{MODELS_PREFIX}/{ref}/{MANIFEST}"):
                raise NotFoundError(f"{self.store}: model version {ref} is not published")
            return ref
        version = self.state()["aliases"].get(ref)
        if version is None:
            raise NotFoundError(f"{self.store}: alias {ref!r} is not set (promote a version first)")
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

    def _move(self, alias: str, to: str, action: str) -> dict[str, Any]:
        state = self.state()
        move = {
            "alias": alias,
            "action": action,
            "from": state["aliases"].get(alias),
            "to": to,
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        state["aliases"][alias] = to
        state["history"].append(move)
        self.store.write(ALIASES_KEY, dump_json(state))
        return move

    def promote(self, version: str, alias: str = CHAMPION) -> dict[str, Any]:
        """Point ``alias`` at a published version; returns the recorded move."""
        version = self.resolve(version)
        current = self.state()["aliases"].get(alias)
        if current == version:
            raise RegistryError(f"{alias} is already {version}")
        return self._move(alias, version, "promote")

    def rollback(self, alias: str = CHAMPION) -> dict[str, Any]:
        """Move ``alias`` back to the version it had before its latest promotion still in force."""
        stack: list[str] = []
        for move in self.state()["history"]:
            if move["alias"] != alias:
                continue
            if move["action"] == "promote":
                stack.append(move["to"])
            elif move["action"] == "rollback" and stack:
                stack.pop()
        if len(stack) < 2:
            raise RegistryError(f"{alias} has no earlier version to roll back to")
        return self._move(alias, stack[-2], "rollback")

    def history(self, alias: str | None = None) -> list[dict[str, Any]]:
        return [m for m in self.state()["history"] if alias is None or m["alias"] == alias]
