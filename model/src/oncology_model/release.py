"""A release under way, as the registry's alias document records it: the plan that every replica
follows and that the release judge moves on.

The alias document (``registry/aliases.json``, see `oncology_model.registry`) holds, besides the
aliases and their history, at most one release::

    {"aliases": {"champion": "1.0.2", "candidate": "1.0.3"},
     "release": {"id": "9f1c...", "version": "1.0.3", "champion": "1.0.2", "mode": "canary",
                 "steps": [0.05, 0.25, 0.5], "step": 0,
                 "started_at": "2026-12-05T08:00:00+00:00", "step_started_at": "2026-12-05T08:00:00+00:00"},
     "history": [...]}

- ``canary``: the candidate answers the share ``steps[step]`` of the requests; after the last step
  it becomes the champion.
- ``shadow``: the champion answers every request; the candidate also scores the share
  ``steps[0]`` of them, off the answer path, for comparison only.

Which requests: those whose routing key falls in the share (`bucket`), so one key stays on one
version for the whole release (the shares only grow), while another release draws another sample.
Standard library only: the service, the judge and the command line all read it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from oncology_model.errors import RegistryError

#: The alias of the version under release; set while a release is under way, removed when it ends.
CANDIDATE: Final = "candidate"
#: The key of the plan in the alias document.
RELEASE_KEY: Final = "release"
CANARY: Final = "canary"
SHADOW: Final = "shadow"
MODES: Final = (CANARY, SHADOW)


@dataclass(frozen=True)
class ReleasePlan:
    id: str
    version: str
    champion: str
    mode: str
    steps: tuple[float, ...]
    step: int
    started_at: str
    step_started_at: str
    #: `bucket` for this release (not part of the plan's value: set up once per plan object)
    bucket: Callable[[str], float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "bucket", bucketer(self.id))
        problems = []
        if self.mode not in MODES:
            problems.append(f"mode {self.mode!r} is not one of {', '.join(MODES)}")
        if not self.steps or any(not (isinstance(s, float | int) and 0 < s <= 1) for s in self.steps):
            problems.append(f"steps {list(self.steps)} must be shares in (0, 1]")
        elif any(b <= a for a, b in zip(self.steps, self.steps[1:])):
            problems.append(f"steps {list(self.steps)} must grow")
        if self.mode == SHADOW and len(self.steps) != 1:
            problems.append("a shadow release has one share")
        if not (isinstance(self.step, int) and 0 <= self.step < max(len(self.steps), 1)):
            problems.append(f"step {self.step!r} is not an index of steps")
        for name in ("started_at", "step_started_at"):
            try:
                if datetime.fromisoformat(getattr(self, name)).tzinfo is None:
                    problems.append(f"{name} has no time zone")
            except (TypeError, ValueError):
                problems.append(f"{name} {getattr(self, name)!r} is not an ISO 8601 time")
        if problems:
            raise RegistryError(f"release plan {self.id}: {'; '.join(problems)}")

    @property
    def share(self) -> float:
        """The share of requests the candidate answers (canary) or scores (shadow) now."""
        return float(self.steps[self.step])

    @property
    def last_step(self) -> bool:
        return self.step == len(self.steps) - 1

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "version": self.version, "champion": self.champion, "mode": self.mode,
                "steps": list(self.steps), "step": self.step, "started_at": self.started_at,
                "step_started_at": self.step_started_at}

    @classmethod
    def from_dict(cls, value: Any, where: str = "the alias document") -> ReleasePlan:
        """The plan in ``value``; `RegistryError` naming what is wrong (and ``where``) otherwise."""
        if not isinstance(value, dict):
            raise RegistryError(f"{where}: the release plan is not an object")
        try:
            return cls(
                id=str(value["id"]), version=str(value["version"]), champion=str(value["champion"]),
                mode=value["mode"], steps=tuple(value["steps"]), step=value["step"],
                started_at=value["started_at"], step_started_at=value["step_started_at"],
            )
        except (KeyError, TypeError) as exc:
            raise RegistryError(f"{where}: the release plan lacks or mistypes {exc}") from None


def current_plan(state: dict[str, Any], where: str = "the alias document") -> ReleasePlan | None:
    """The release under way in an alias document, or None."""
    value = state.get(RELEASE_KEY)
    return None if value is None else ReleasePlan.from_dict(value, where)


def bucketer(release_id: str) -> Callable[[str], float]:
    """`bucket` for one release, its keyed hash set up once (the service calls it on every request)."""
    keyed = hashlib.blake2b(digest_size=8, key=release_id.encode()[:64])

    def bucket_of(key: str) -> float:
        h = keyed.copy()
        h.update(key.encode("utf-8", "surrogateescape"))
        return int.from_bytes(h.digest(), "big") / 2.0**64

    return bucket_of


def within(release_id: str, share: float) -> Callable[[str], bool]:
    """``lambda key: bucket(release_id, key) < share``, the same answer for every key, for less: the digest's
    eight bytes are compared with those of `first_reaching` ``share`` (found once), with no number made of them.
    A share of 1 or more takes every key, with no hash."""
    if share >= 1.0:  # every request (a hash of 2**64 - 1024 or more rounds to 1.0; a share of 1 takes them too)
        return lambda key: True
    limit = first_reaching(share)
    if limit == 0:
        return lambda key: False
    bound = limit.to_bytes(8, "big")  # big-endian bytes of one length order as their numbers do
    copy = hashlib.blake2b(digest_size=8, key=release_id.encode()[:64]).copy

    def inside(key: str) -> bool:
        h = copy()
        try:
            h.update(key.encode())
        except UnicodeEncodeError:  # a lone surrogate: the same bytes as `bucket` hashes
            h.update(key.encode("utf-8", "surrogateescape"))
        return h.digest() < bound

    return inside


def first_reaching(share: float) -> int:
    """The least 64-bit value ``x`` (or 2**64) whose `bucket` ``x / 2.0**64`` is at least ``share``: `bucket`'s
    values below ``share`` are exactly those of ``x < first_reaching(share)`` (the division rounds, monotonically)."""
    low, high = 0, 2**64  # the answer is in [low, high]: high / 2.0**64 == 1.0 reaches any share up to 1
    if share > 1.0:
        return high
    while low < high:
        middle = (low + high) // 2
        if middle / 2.0**64 >= share:
            high = middle
        else:
            low = middle + 1
    return low


def bucket(release_id: str, key: str) -> float:
    """Where a routing key falls in [0, 1) for a release: the same key, the same place, in every replica
    (BLAKE2b of the key, keyed by the release id, as a fraction of 2**64)."""
    return bucketer(release_id)(key)
