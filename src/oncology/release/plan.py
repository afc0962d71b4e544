"""Starting, advancing and ending a release: every change is one compare-and-swap of the registry's
alias document (`ModelRegistry.transact`), so of concurrent starts exactly one wins, and a judge
acts only on the very release (and step) it judged.

The plan's format is `oncology_model.release.ReleasePlan`; the service follows it.  Every change
is recorded in the alias history (``oncology models history``), the judge's with its evidence.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from oncology import gate
from oncology.settings import GateSettings
from oncology_model.errors import RegistryError
from oncology_model.registry import CHAMPION, ModelRegistry
from oncology_model.release import CANARY, CANDIDATE, RELEASE_KEY, SHADOW, ReleasePlan, current_plan

#: The canary steps when none are given: 5% -> 25% -> 50% -> champion.
DEFAULT_STEPS = (0.05, 0.25, 0.5)


class ReleaseConflict(RegistryError):
    """The release changed (or ended) since it was read: nothing was done."""


def parse_steps(text: str) -> tuple[float, ...]:
    """``"5,25,50"`` (percent) or ``"0.05,0.25,0.5"`` (shares) as shares; `ValueError` naming the bad part."""
    parts = [p.strip().rstrip("%") for p in text.split(",") if p.strip()]
    if not parts:
        raise ValueError("--canary needs at least one step, e.g. 5,25,50 (percent of requests)")
    values = []
    for part in parts:
        try:
            values.append(float(part))
        except ValueError:
            raise ValueError(f"--canary step {part!r} is not a number") from None
    if values == [1.0] and "%" not in text:  # 1% or 100% (refused below): no typo to guess
        raise ValueError("--canary 1 is ambiguous: write 1% for one request in a hundred (a step of 100% is refused)")
    percent = any(v > 1 for v in values)
    shares = tuple(v / 100 if percent else v for v in values)
    for text_value, share in zip(parts, shares):
        if not 0 < share <= 1:
            raise ValueError(f"--canary step {text_value!r} is not a share of requests in (0, 100%]")
    if any(b <= a for a, b in zip(shares, shares[1:])):
        raise ValueError(f"--canary steps must grow: {', '.join(parts)}")
    if shares[-1] >= 1:  # the judge compares the two arms over a step: at 100% the champion's arm stays empty
        raise ValueError(f"--canary step {parts[-1]!r} sends every request to the candidate: the champion keeps none "
                         "to compare with, so the judge could only hold, then roll back at the deadline; end below "
                         "100% (promoting the last step makes the candidate champion), e.g. 5,25,50")
    return shares


def parse_share(text: str) -> float:
    """``"100"``/``"100%"`` (percent) or ``"0.5"`` (a share), for --shadow."""
    try:
        value = float(text.strip().rstrip("%"))
    except ValueError:
        raise ValueError(f"--shadow {text!r} is not a share of requests") from None
    share = value / 100 if value > 1 or text.strip().endswith("%") else value
    if not 0 < share <= 1:
        raise ValueError(f"--shadow {text!r} is not a share of requests in (0, 100%]")
    return share


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def start(registry: ModelRegistry, version: str, mode: str, steps: Sequence[float], gate_settings: GateSettings) -> ReleasePlan:
    """Start releasing ``version`` (canary through ``steps``, or shadow at ``steps[0]``).

    The version must pass the quality gate (as for promote), differ from the champion, and no other
    release may be under way: of concurrent starts exactly one succeeds; the others get a
    `RegistryError` naming the release that did.
    """
    version = registry.resolve(version)
    bundle = registry.load(version)  # verified: manifest, sizes and sha256 of every file
    if reasons := gate.failures(bundle.kpis, gate_settings):
        raise RegistryError(f"version {version} fails the quality gate: {'; '.join(reasons)}")
    if mode == SHADOW and len(steps) != 1:
        raise RegistryError("a shadow release takes one share")
    plans: list[ReleasePlan] = []

    def change(state: dict[str, Any]) -> list[dict[str, Any]]:
        plans.clear()
        if (running := current_plan(state)) is not None:
            raise RegistryError(
                f"release {running.id} of {running.version} ({running.mode}, started {running.started_at}) is under way: "
                "wait for its end or `oncology release abort` it first"
            )
        champion = state["aliases"].get(CHAMPION)
        if champion is None:
            raise RegistryError("there is no champion to release against: promote a version first")
        if champion == version:
            raise RegistryError(f"{version} is already the champion")
        now = _now()
        plan = ReleasePlan(uuid.uuid4().hex[:12], version, champion, mode, tuple(float(s) for s in steps), 0, now, now)
        plans.append(plan)
        state[RELEASE_KEY] = plan.to_dict()
        state["aliases"][CANDIDATE] = version
        return [{"alias": CANDIDATE, "action": "start", "from": None, "to": version, "at": now,
                 "release": plan.id, "plan": {"mode": mode, "steps": list(plan.steps), "champion": champion}}]

    registry.transact(change, f"start a release of {version}")
    return plans[-1]


def _running(state: dict[str, Any], release_id: str | None, step: int | None) -> ReleasePlan:
    plan = current_plan(state)
    if plan is None:
        raise ReleaseConflict("no release is under way" + (f" (release {release_id} has ended)" if release_id else ""))
    if release_id is not None and plan.id != release_id:
        raise ReleaseConflict(f"release {release_id} has ended; release {plan.id} of {plan.version} is under way now")
    if step is not None and plan.step != step:
        raise ReleaseConflict(f"release {plan.id} moved to step {plan.step + 1} meanwhile; judged step {step + 1}")
    return plan


def _end(state: dict[str, Any], plan: ReleasePlan) -> None:
    state.pop(RELEASE_KEY, None)
    if state["aliases"].get(CANDIDATE) == plan.version:
        del state["aliases"][CANDIDATE]


def abort(registry: ModelRegistry, reason: str = "aborted by hand") -> dict[str, Any]:
    """End the release under way without promoting; the champion stays.  `RegistryError` if none is."""

    def change(state: dict[str, Any]) -> list[dict[str, Any]]:
        plan = _running(state, None, None)
        _end(state, plan)
        return [{"alias": CANDIDATE, "action": "abort", "from": plan.version, "to": None, "release": plan.id,
                 "reason": reason}]

    return registry.transact(change, "abort the release")[0]


def promote(registry: ModelRegistry, release_id: str, step: int, evidence: Mapping[str, Any]) -> dict[str, Any]:
    """The judge's "promote": the next step, or after the last one the candidate becomes champion.

    Acts only if the release and its step are still the ones judged (`ReleaseConflict` otherwise).
    """

    def change(state: dict[str, Any]) -> list[dict[str, Any]]:
        plan = _running(state, release_id, step)
        if not plan.last_step:
            now = _now()
            moved = ReleasePlan(**{**plan.to_dict(), "steps": plan.steps, "step": plan.step + 1, "step_started_at": now})
            state[RELEASE_KEY] = moved.to_dict()
            return [{"alias": CANDIDATE, "action": "step", "from": plan.version, "to": plan.version, "at": now,
                     "release": plan.id, "share": f"{plan.share:g} -> {moved.share:g}", "evidence": dict(evidence)}]
        previous = state["aliases"].get(CHAMPION)
        _end(state, plan)
        state["aliases"][CHAMPION] = plan.version
        return [{"alias": CHAMPION, "action": "promote", "from": previous, "to": plan.version, "release": plan.id,
                 "evidence": dict(evidence)}]

    return registry.transact(change, f"promote release {release_id}")[0]


def roll_back(registry: ModelRegistry, release_id: str, step: int, evidence: Mapping[str, Any]) -> dict[str, Any]:
    """The judge's "roll back": the release ends, the candidate alias goes, the champion stays."""

    def change(state: dict[str, Any]) -> list[dict[str, Any]]:
        plan = _running(state, release_id, step)
        _end(state, plan)
        return [{"alias": CANDIDATE, "action": "rollback", "from": plan.version, "to": None, "release": plan.id,
                 "evidence": dict(evidence)}]

    return registry.transact(change, f"roll back release {release_id}")[0]


def status(registry: ModelRegistry) -> tuple[ReleasePlan | None, list[dict[str, Any]]]:
    """The release under way (or None) and the history of releases (the candidate alias's moves)."""
    state = registry.state()
    return current_plan(state), [m for m in state["history"] if m["alias"] == CANDIDATE or m.get("release")]


__all__ = ["CANARY", "DEFAULT_STEPS", "SHADOW", "ReleaseConflict", "abort", "parse_share", "parse_steps", "promote",
           "roll_back", "start", "status"]
