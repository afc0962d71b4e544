"""`oncology release start/status/abort`: the plan in the registry, moved only by compare-and-swap."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from racing import START_LINE, start_together
from typer.testing import CliRunner

from oncology.cli import app
from oncology.release import plan
from oncology.settings import GateSettings
from oncology_model.errors import RegistryError
from oncology_model.registry import ModelRegistry
from oncology_model.release import CANDIDATE, ReleasePlan, bucket, current_plan, first_reaching, within
from oncology_model.storage import LocalStore, S3Store, open_store
from support import S3, copy_versions

runner = CliRunner()


def cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_start_sets_the_candidate_alias_and_records_the_plan(two_versions: Path) -> None:
    code, out = cli("release", "start", "1.0.2", "--canary", "5,25,50", "--store", str(two_versions))
    assert code == 0, out
    assert "canary 5% -> 25% -> 50%" in out
    registry = ModelRegistry(LocalStore(two_versions))
    state = registry.state()
    assert state["aliases"] == {"champion": "1.0.1", CANDIDATE: "1.0.2"}
    running = current_plan(state)
    assert running is not None
    assert (running.version, running.champion, running.mode, running.steps, running.step) == (
        "1.0.2", "1.0.1", "canary", (0.05, 0.25, 0.5), 0)
    assert registry.history()[-1]["action"] == "start"
    code, out = cli("release", "status", "--json", "--store", str(two_versions))
    assert code == 0
    assert json.loads(out)["release"]["id"] == running.id


def test_status_before_any_release_says_so_and_how_to_start_one(two_versions: Path) -> None:
    code, out = cli("release", "status", "--store", str(two_versions))
    assert code == 0, out
    assert out.splitlines() == ["no release under way", "no release decisions yet (`oncology release start VERSION` "
                                "starts one)"]
    assert cli("release", "start", "1.0.2", "--store", str(two_versions))[0] == 0
    code, out = cli("release", "status", "--store", str(two_versions))
    assert code == 0 and "release decisions" in out and "no release decisions yet" not in out, out


def test_one_release_at_a_time_and_abort_ends_it(two_versions: Path) -> None:
    assert cli("release", "start", "1.0.2", "--shadow", "100%", "--store", str(two_versions))[0] == 0
    code, out = cli("release", "start", "1.0.2", "--store", str(two_versions))
    assert code == 1 and "is under way" in out
    code, out = cli("release", "abort", "--store", str(two_versions))
    assert code == 0, out
    state = ModelRegistry(LocalStore(two_versions)).state()
    assert current_plan(state) is None and state["aliases"] == {"champion": "1.0.1"}
    assert state["history"][-1]["action"] == "abort"
    code, out = cli("release", "abort", "--store", str(two_versions))
    assert code == 1 and "no release is under way" in out
    code, out = cli("models", "history", "--store", str(two_versions))
    assert code == 0 and "abort" in out and "candidate" in out
    # the flat promotions table of the reporting tools takes the release's moves (the abort's "to" is none)
    code, out = cli("monitoring", "promotions", "--store", str(two_versions))
    assert code == 0, out
    rows = (two_versions / "monitoring/tables/promotions/version=1.0.2").glob("promotion-*.csv")
    assert sorted(p.read_text().splitlines()[1].split(",")[2:5] for p in rows) == [
        ["abort", "1.0.2", ""], ["start", "", "1.0.2"]]


def test_the_gate_applies_as_for_promote(two_versions: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONCOLOGY_GATE_MIN_ACCURACY", "0.9999")
    code, out = cli("release", "start", "1.0.2", "--store", str(two_versions))
    assert code == 1 and "fails the quality gate" in out and "accuracy" in out
    assert current_plan(ModelRegistry(LocalStore(two_versions)).state()) is None


@pytest.mark.parametrize(("args", "message"), [
    (("--canary", "50,25"), "must grow"),
    (("--canary", "5,x"), "'x' is not a number"),
    (("--canary", "0,5"), "'0' is not a share"),
    (("--canary", "1"), "--canary 1 is ambiguous: write 1% for one request in a hundred (a step of 100% is refused)"),
    (("--canary", "50,100%"), "--canary step '100' sends every request to the candidate: the champion keeps none"),
    (("--canary", "0.5,1"), "--canary step '1' sends every request to the candidate"),
    (("--canary", "100%"), "end below 100% (promoting the last step makes the candidate champion)"),
    (("--shadow", "150%"), "not a share of requests"),
    (("--canary", "5", "--shadow", "1"), "not both"),
])
def test_bad_plans_are_refused_naming_the_option(two_versions: Path, args: tuple[str, ...], message: str) -> None:
    code, out = cli("release", "start", "1.0.2", *args, "--store", str(two_versions))
    assert code == 2 and message in out
    assert current_plan(ModelRegistry(LocalStore(two_versions)).state()) is None


def test_the_champion_itself_and_unknown_versions_are_refused(two_versions: Path) -> None:
    code, out = cli("release", "start", "1.0.1", "--store", str(two_versions))
    assert code == 1 and "already the champion" in out
    code, out = cli("release", "start", "1.0.9", "--store", str(two_versions))
    assert code == 1 and "not published" in out


def test_the_judge_acts_only_on_the_release_and_step_it_judged(two_versions: Path) -> None:
    registry = ModelRegistry(LocalStore(two_versions))
    started = plan.start(registry, "1.0.2", "canary", (0.1, 0.5), GateSettings(store=str(two_versions)))
    with pytest.raises(plan.ReleaseConflict, match="has ended"):
        plan.promote(registry, "someotherid", 0, {})
    plan.promote(registry, started.id, 0, {"verdict": "promote"})
    with pytest.raises(plan.ReleaseConflict, match="moved to step 2"):
        plan.roll_back(registry, started.id, 0, {})
    move = plan.promote(registry, started.id, 1, {"verdict": "promote"})
    assert (move["alias"], move["action"], move["from"], move["to"]) == ("champion", "promote", "1.0.1", "1.0.2")
    state = registry.state()
    assert state["aliases"] == {"champion": "1.0.2"} and current_plan(state) is None
    registry.rollback()  # `oncology models rollback` still knows the champion's previous version
    assert registry.resolve("champion") == "1.0.1"


def test_routing_buckets_are_uniform_and_stable() -> None:
    keys = [f"patient-{i}" for i in range(20_000)]
    values = [bucket("r1", k) for k in keys]
    assert values == [bucket("r1", k) for k in keys]
    inside = sum(v < 0.25 for v in values)
    assert abs(inside - 5000) < 4 * (20_000 * 0.25 * 0.75) ** 0.5  # binomial, 4 sigma
    other = [bucket("r2", k) < 0.25 for k in keys]  # another release draws another sample
    assert sum(a and b for a, b in zip((v < 0.25 for v in values), other)) < 0.25 * inside + 4 * 40
    with pytest.raises(RegistryError, match="must grow"):
        ReleasePlan("x", "1.0.2", "1.0.1", "canary", (0.5, 0.1), 0, "2026-01-01T00:00:00+00:00",
                    "2026-01-01T00:00:00+00:00")



def test_the_service_s_share_test_routes_every_key_as_its_bucket_does() -> None:
    """`within` (what the service asks per request) answers ``bucket(id, key) < share`` for every key: ASCII,
    non-ASCII, a lone surrogate (a header decoded as Latin-1 cannot hold one; a gRPC key or a log's id might), empty;
    and its bound is the exact first 64-bit value whose bucket reaches the share, so no key near it is misrouted."""
    keys = [f"{i:016x}" for i in range(0, 2**64, 2**64 // 20_000)] + [f"patient-{i}" for i in range(5_000)]
    keys += ["", "\u4e2d", "patient-\udc80", *(f"é-{i}" for i in range(200))]
    for share in (0.01, 0.05, 0.25, 1 / 3, 0.5, 0.999, 1e-19, 2**-64):
        inside = within("r1", share)
        assert [inside(k) for k in keys] == [bucket("r1", k) < share for k in keys], share
        limit = first_reaching(share)
        assert limit / 2.0**64 >= share > (limit - 1) / 2.0**64, share
    assert all(within("r1", 1.0)(k) for k in keys)  # the whole traffic, hashed or not
    assert not any(within("r1", 0.0)(k) for k in keys)
    assert first_reaching(1.0) == 2**64 - 2**10  # the values from here on divide to 1.0: no bucket below 1 holds them

RACER = """
import json, sys
from oncology.release import plan
from oncology.settings import GateSettings
from oncology_model.registry import ModelRegistry
from oncology_model.storage import open_store
from oncology_model.errors import RegistryError
registry = ModelRegistry(open_store(sys.argv[1]))
registry.state()  # the S3 client is built and connected before the start line
""" + START_LINE + """
try:
    started = plan.start(registry, sys.argv[3], "canary", (0.05, 0.5), GateSettings(store=sys.argv[1]))
    print(json.dumps({"won": started.id, "version": started.version}))
except RegistryError as exc:
    print(json.dumps({"refused": str(exc)}))
"""


def test_concurrent_starts_on_s3_exactly_one_wins(trained_store: Path, s3: S3, tmp_path: Path) -> None:
    uri = f"s3://{s3.bucket}/race-{os.urandom(4).hex()}"
    store = open_store(uri)
    assert isinstance(store, S3Store)
    versions = {f"1.0.{n}": None for n in range(2, 6)}
    copy_versions(trained_store, store, versions)
    go = tmp_path / "go"
    outcomes = [o for [o] in start_together(RACER, [[uri, str(go), v] for v in versions for _ in range(2)], go,
                                             env=s3.env())]
    winners = [o for o in outcomes if "won" in o]
    assert len(winners) == 1, outcomes
    assert all("is under way" in o["refused"] for o in outcomes if "refused" in o)
    state = ModelRegistry(store).state()
    running = current_plan(state)
    assert running is not None and running.id == winners[0]["won"]
    assert state["aliases"][CANDIDATE] == winners[0]["version"]
    assert [m["action"] for m in state["history"]].count("start") == 1
