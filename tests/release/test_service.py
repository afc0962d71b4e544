"""A real server process following a release: canary split, sticky routing keys, shadow scoring; every answer,
metric and prediction-log line names its version and arm (REST, V2 and SageMaker routes alike)."""

from __future__ import annotations

import gzip
import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from webservice.conftest import EXAMPLE, MALIGNANT, Server, running_server, stop_server

from oncology.release import plan
from oncology.settings import GateSettings
from oncology_model.registry import ModelRegistry
from oncology_model.release import ReleasePlan, bucket
from oncology_model.storage import LocalStore
from support import poll

ROUTES = ("/predict", "/v2/models/oncology/infer", "/invocations")
#: Every answer of the test, by version and arm (the metrics must count exactly these).
SEEN: Counter[tuple[str, str | None]] = Counter()


def ask(client: httpx.Client, route: str, request_id: str, key: str | None = None,
        tumor: dict[str, int] = EXAMPLE) -> tuple[str, str | None]:
    """One prediction through ``route``; the version and arm the answer names (headers and body agree; outside a
    release the answer names no arm: every answer is the champion's)."""
    headers = {"x-request-id": request_id, **({"x-routing-key": key} if key else {})}
    if route.startswith("/v2"):
        body = {"inputs": [{"name": "tumor", "shape": [1, 9], "datatype": "INT64", "data": list(tumor.values())}]}
        response = client.post(route, json=body, headers=headers)
    else:
        response = client.post(route, json=tumor, headers=headers)
    assert response.status_code == 200, response.text
    version, arm = response.json()["model_version"], response.headers.get("x-model-arm")
    assert response.headers.get("x-model-version", version) == version
    assert ("x-model-version" in response.headers) == (arm is not None)
    if arm is not None:
        SEEN[(version, arm)] += 1
    return version, arm


def wait_for(client: httpx.Client, arm: str, timeout: float = 20) -> None:
    """Until the server follows the new plan: a request answered (or shadowed) as ``arm`` shows it."""
    deadline = time.monotonic() + timeout
    n = 0
    while time.monotonic() < deadline:
        n += 1
        metrics = client.get("/metrics").text
        if f'arm="{arm}"' in metrics and "oncology_release_share{" in metrics and _share(metrics) > 0:
            return
        ask(client, "/predict", f"warmup-{arm}-{n}")
        time.sleep(0.05)
    raise AssertionError(f"the server never served arm {arm}")


def _share(metrics: str) -> float:
    return max((float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith("oncology_release_share{")),
               default=0.0)


def logged(store: Path) -> list[dict[str, object]]:
    lines = []
    for path in sorted(store.glob("monitoring/predictions/date=*/*.jsonl.gz")):
        lines += [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]
    return lines


@pytest.fixture
def server(two_versions: Path, tmp_path: Path) -> Iterator[Server]:
    env = {"ONCOLOGY_STORE": str(two_versions), "ONCOLOGY_RELOAD_INTERVAL": "0.2", "ONCOLOGY_PREDICTION_LOG": "true",
           "ONCOLOGY_PREDICTION_LOG_FLUSH_SECONDS": "3600", "ONCOLOGY_ACCESS_LOG": "false"}
    with running_server(tmp_path, env) as server:
        yield server


def start(store: Path, mode: str, steps: tuple[float, ...]) -> ReleasePlan:
    return plan.start(ModelRegistry(LocalStore(store)), "1.0.2", mode, steps, GateSettings(store=str(store)))


def test_canary_splits_by_the_hash_of_the_routing_key(server: Server, two_versions: Path) -> None:
    SEEN.clear()
    n, share = 600, 0.3
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert ask(client, "/predict", "before") == ("1.0.1", None)  # no release: the champion, no arm to name
        started = start(two_versions, "canary", (share,))
        wait_for(client, "candidate")
        answers = {f"req-{i}": ask(client, ROUTES[i % 3], f"req-{i}") for i in range(n)}
        # one patient's repeated requests (routing key) stay on one version, whatever their request ids
        sticky = {ask(client, ROUTES[i % 3], f"sticky-{i}", key="patient-7") for i in range(30)}
        metrics = client.get("/metrics").text
    # every request where the hash of its key puts it: the candidate's share of them, within a binomial bound
    for request_id, (version, arm) in answers.items():
        inside = bucket(started.id, request_id) < share
        assert (version, arm) == (("1.0.2", "candidate") if inside else ("1.0.1", "champion")), request_id
    on_candidate = sum(arm == "candidate" for _, arm in answers.values())
    assert abs(on_candidate - n * share) < 4 * (n * share * (1 - share)) ** 0.5
    assert len(sticky) == 1
    # each route reached both arms
    assert {(ROUTES[int(r.split("-")[1]) % 3], arm) for r, (_, arm) in answers.items()} == {
        (route, arm) for route in ROUTES for arm in ("champion", "candidate")}
    # the metrics count each arm's requests exactly as answered; the dashboard's release panels read these
    assert {(v, a): _counted(metrics, str(a), v) for v, a in SEEN} == {k: float(c) for k, c in SEEN.items()}
    for name in ("oncology_arm_predictions_total{", "oncology_arm_scoring_seconds_bucket{"):
        assert f'{name}arm="candidate"' in metrics or any(
            line.startswith(name) and 'arm="candidate"' in line for line in metrics.splitlines()), name


def test_a_v2_request_naming_its_version_is_answered_by_it_and_named_pinned(server: Server, two_versions: Path) -> None:
    """``/v2/models/oncology/versions/{v}/infer``: that version answers, never routed, arm "pinned" in its headers,
    outside a release and in one (a canary at 100%, where every other request goes to the candidate)."""
    body = {"inputs": [{"name": "tumor", "shape": [1, 9], "datatype": "INT64", "data": list(EXAMPLE.values())}]}

    def pinned(client: httpx.Client, version: str) -> tuple[str, str, str]:
        response = client.post(f"/v2/models/oncology/versions/{version}/infer", json=body)
        assert response.status_code == 200, response.text
        return response.json()["model_version"], response.headers["x-model-version"], response.headers["x-model-arm"]

    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert pinned(client, "1.0.1") == ("1.0.1", "1.0.1", "pinned")
        start(two_versions, "canary", (1.0,))
        wait_for(client, "candidate")
        assert ask(client, "/predict", "all-in") == ("1.0.2", "candidate")
        for _ in range(2):  # the route made for the first is the second's
            assert pinned(client, "1.0.1") == ("1.0.1", "1.0.1", "pinned")
            assert pinned(client, "1.0.2") == ("1.0.2", "1.0.2", "pinned")
        assert ask(client, "/v2/models/oncology/infer", "all-in-v2") == ("1.0.2", "candidate")


def _counted(metrics: str, arm: str, version: str) -> float:
    for line in metrics.splitlines():
        if line.startswith("oncology_arm_requests_total{") and f'arm="{arm}"' in line and f'version="{version}"' in line \
                and 'outcome="ok"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_the_canary_and_its_arms_are_in_the_prediction_log(server: Server, two_versions: Path) -> None:
    SEEN.clear()
    with httpx.Client(base_url=server.url, timeout=10) as client:
        before = {f"before-{i}": ask(client, ROUTES[i % 3], f"before-{i}") for i in range(6)}
        start(two_versions, "canary", (0.5,))
        wait_for(client, "candidate")
        answers = {f"log-{i}": ask(client, ROUTES[i % 3], f"log-{i}") for i in range(60)}
    stop_server(server)  # the log is written on shutdown
    lines = {line["request_id"]: line for line in logged(two_versions)}
    for request_id in before:  # before the release: the lines as before releases, no arm and no latency
        assert ("arm" in lines[request_id], "latency_ms" in lines[request_id]) == (False, False), lines[request_id]
    for request_id, (version, arm) in answers.items():
        line = lines[request_id]
        assert (line["model_version"], line.get("arm", "champion")) == (version, arm)  # "champion" is left out
        assert isinstance(line["latency_ms"], float) and line["latency_ms"] > 0


def test_shadow_the_champion_answers_and_both_predictions_are_logged(server: Server, two_versions: Path) -> None:
    SEEN.clear()
    with httpx.Client(base_url=server.url, timeout=10) as client:
        start(two_versions, "shadow", (1.0,))
        wait_for(client, "shadow")
        tumors = [EXAMPLE, MALIGNANT]
        answers = {f"sh-{i}": ask(client, ROUTES[i % 3], f"sh-{i}", tumor=tumors[i % 2]) for i in range(90)}
    stop_server(server)  # the candidate scores off the answer path; the server finishes those scorings on shutdown
    assert set(answers.values()) == {("1.0.1", "champion")}  # the candidate never answers in shadow
    by_request: dict[str, dict[str, dict[str, object]]] = {}
    for line in logged(two_versions):
        by_request.setdefault(str(line["request_id"]), {})[str(line.get("arm", "champion"))] = line
    for request_id in answers:
        both = by_request[request_id]
        assert set(both) == {"champion", "shadow"}
        assert (both["champion"]["model_version"], both["shadow"]["model_version"]) == ("1.0.1", "1.0.2")
        assert both["champion"]["inputs"] == both["shadow"]["inputs"]
        assert both["champion"]["prediction"] == both["shadow"]["prediction"]  # the same model under two versions


class _Broken:
    """A candidate's scorer that fails (a fault injected into a real candidate: no trained model fails on cue)."""

    def proba_many(self, rows: object) -> list[float]:
        raise RuntimeError("the candidate's model failed")


def test_the_access_log_and_every_answer_name_the_arm_a_failed_candidate_included(two_versions: Path) -> None:
    import io

    from starlette.testclient import TestClient

    from oncology.settings import ServeSettings
    from oncology.webservice.accesslog import AccessLog
    from oncology.webservice.app import create_app
    from oncology.webservice.metrics import Metrics
    from oncology.webservice.model import ModelHolder

    settings = ServeSettings(store=str(two_versions), reload_interval=0)
    stream = io.BytesIO()
    access_log = AccessLog(stream)
    holder = ModelHolder(settings)
    with TestClient(create_app(settings, holder, Metrics(), access_log), raise_server_exceptions=False) as client:
        answers = {f"out-{i}": ask(client, ROUTES[i % 3], f"out-{i}") for i in range(6)}  # type: ignore[arg-type]
        start(two_versions, "canary", (0.5,))
        holder.follow_release()
        assert holder.release is not None
        answers |= {f"in-{i}": ask(client, ROUTES[i % 3], f"in-{i}") for i in range(60)}  # type: ignore[arg-type]
        candidate = holder.release.candidate
        candidate._scorer = _Broken()  # type: ignore[assignment]
        failed = {}
        for i in range(40):
            route = ROUTES[i % 3]
            body = ({"inputs": [{"name": "tumor", "shape": [1, 9], "datatype": "INT64", "data": list(EXAMPLE.values())}]}
                    if route.startswith("/v2") else EXAMPLE)
            response = client.post(route, json=body, headers={"x-request-id": f"bad-{i}"})
            if response.status_code == 500:  # the candidate's share: it names itself on the error too
                assert (response.headers["x-model-version"], response.headers["x-model-arm"]) == ("1.0.2", "candidate")
                failed[f"bad-{i}"] = ("1.0.2", "candidate")
            else:
                assert response.status_code == 200 and response.headers["x-model-arm"] == "champion", response.text
                answers[f"bad-{i}"] = ("1.0.1", "champion")
        assert failed, "no request of 40 went to the candidate at 50%"
    access_log.flush()
    lines = {line["request_id"]: line for line in map(json.loads, stream.getvalue().splitlines())}
    for request_id, (version, arm) in {**answers, **failed}.items():
        line = lines[request_id]
        # outside a release the answers name no arm (every one is the champion's); the access log says champion
        assert (line["model_version"], line["arm"]) == (version, arm or "champion"), line
        assert line["status"] == (500 if request_id in failed else 200)


class _FailsOnTens:
    """A candidate's real scorer that fails on rows whose first value is 10 (a fault injected on cue)."""

    def __init__(self, scorer: object) -> None:
        self.scorer = scorer

    def proba_many(self, rows: list[list[int]]) -> list[float]:
        if any(row[0] == 10 for row in rows):
            raise ValueError("the candidate fails on this row")
        return self.scorer.proba_many(rows)  # type: ignore[attr-defined, no-any-return]


def test_shadow_scores_the_queued_requests_together_and_blames_a_failure_on_its_request_only(
        two_versions: Path, tmp_path: Path) -> None:
    import asyncio
    import itertools

    from oncology.settings import ServeSettings
    from oncology.webservice import predlog, routing
    from oncology.webservice.core import Core
    from oncology.webservice.metrics import Metrics
    from oncology.webservice.model import ModelHolder

    start(two_versions, "shadow", (1.0,))
    settings = ServeSettings(store=str(two_versions), reload_interval=0, prediction_log=True,
                             prediction_log_flush_seconds=3600)
    metrics = Metrics()
    holder = ModelHolder(settings)
    holder.load()
    assert holder.release is not None and holder.classifier is not None
    champion, candidate = holder.classifier, holder.release.candidate
    candidate._scorer = _FailsOnTens(candidate._scorer)  # type: ignore[assignment]
    # a clock one second further at every line made: the shadow's lines must take the time of the champion's
    ticks = itertools.count(1_800_000_000)
    log = predlog.PredictionLog(LocalStore(two_versions), "test", flush_seconds=3600, metrics=metrics,
                                clock=lambda: float(next(ticks)))
    core = Core(settings, holder, metrics, log)
    calls = []
    real = candidate.score_rows
    candidate.score_rows = lambda rows: calls.append(len(rows)) or real(rows)  # type: ignore[method-assign]
    good, bad = list(EXAMPLE.values()), list(MALIGNANT.values())
    requests = [("/predict", f"q-{i}", [bad if i == 3 else good]) for i in range(8)]
    requests.append(("/predict/batch", "q-batch", [good, good, good]))

    async def answer(requests: list[tuple[str, str, list[list[int]]]]) -> None:
        for route, request_id, rows in requests:  # answered in one turn of the loop; the shadow's pass comes after
            core.score(route, request_id, champion, rows, routing.CHAMPION, candidate)
        assert calls == []
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    asyncio.run(answer(requests))
    # one call for every queued row; it failed (row 3): each request scored alone
    assert calls == [11, *[1] * 8, 3]
    log.close()
    every = logged(two_versions)
    lines = {(line["request_id"], line.get("arm", "champion"), n): line
             for (request_id, arm), group in itertools.groupby(every, lambda line: (line["request_id"], line.get("arm")))
             for n, line in enumerate(group)}
    assert lines[("q-3", "shadow", 0)]["prediction"] == "error"
    assert all(lines[(f"q-{i}", "shadow", 0)]["prediction"] == "benign" for i in range(8) if i != 3)
    assert [lines[("q-batch", "shadow", n)]["prediction"] for n in range(3)] == ["benign"] * 3
    for (request_id, arm, n), line in lines.items():  # each pair's lines: the same request, row and time
        if arm == "shadow" and line["prediction"] != "error":
            answered = lines[(request_id, "champion", n)]
            assert {k: line[k] for k in ("ts", "route", "inputs")} == {k: answered[k] for k in ("ts", "route", "inputs")}
            assert (line["model_version"], answered["model_version"]) == ("1.0.2", "1.0.1")
    assert len({line["ts"] for line in every}) > 9  # the clock did move between the requests
    exposed = metrics.exposition().decode()
    assert 'oncology_arm_requests_total{arm="shadow",outcome="error",version="1.0.2"} 1.0' in exposed
    assert 'oncology_arm_requests_total{arm="shadow",outcome="ok",version="1.0.2"} 8.0' in exposed
    # without a failure: one call for all, each request its own lines and its share of the time
    calls.clear()
    asyncio.run(answer([("/predict", f"ok-{i}", [good]) for i in range(5)]))
    assert calls == [5]
    # one-row requests only (the hot routes' queue): a failure, too, is blamed on its request only
    calls.clear()
    asyncio.run(answer([("/predict", f"one-{i}", [bad if i == 2 else good]) for i in range(4)]))
    assert calls == [4, 1, 1, 1, 1]
    exposed = metrics.exposition().decode()
    assert 'oncology_arm_requests_total{arm="shadow",outcome="error",version="1.0.2"} 2.0' in exposed
    assert 'oncology_arm_requests_total{arm="shadow",outcome="ok",version="1.0.2"} 16.0' in exposed



def test_a_turn_of_one_row_requests_is_shadowed_pair_by_pair_and_past_the_queue_dropped(two_versions: Path) -> None:
    """More one-row requests in one turn than the shadow queue holds: the first `SHADOW_QUEUE` are scored by the
    candidate after the turn, each logged beside its champion line (same time, route, inputs; the identical
    candidate's probability); the rest are dropped, counted, and not logged as shadow."""
    import asyncio

    from oncology.settings import ServeSettings
    from oncology.webservice import predlog, routing
    from oncology.webservice.core import Core
    from oncology.webservice.metrics import Metrics
    from oncology.webservice.model import ModelHolder

    start(two_versions, "shadow", (1.0,))
    settings = ServeSettings(store=str(two_versions), reload_interval=0)
    metrics = Metrics()
    holder = ModelHolder(settings)
    holder.load()
    assert holder.release is not None and holder.classifier is not None
    champion, candidate = holder.classifier, holder.release.candidate
    log = predlog.PredictionLog(LocalStore(two_versions), "test", flush_seconds=3600, metrics=metrics)
    core = Core(settings, holder, metrics, log)
    extra = 3
    rows = [list(tumor.values()) for tumor in (EXAMPLE, MALIGNANT)]

    async def answer() -> None:
        for i in range(routing.SHADOW_QUEUE + extra):  # one turn: no pass runs before the last
            core.score("/predict", f"r-{i}", champion, [rows[i % 2]], routing.CHAMPION, candidate)
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    asyncio.run(answer())
    assert log.close() and log.errors == []
    lines = {(line["request_id"], line.get("arm", "champion")): line for line in logged(two_versions)}
    for i in range(routing.SHADOW_QUEUE + extra):
        answered = lines[(f"r-{i}", "champion")]
        if i >= routing.SHADOW_QUEUE:
            assert (f"r-{i}", "shadow") not in lines
            continue
        shadow = lines[(f"r-{i}", "shadow")]
        assert {k: shadow[k] for k in ("ts", "route", "inputs", "probability", "prediction", "decision")} == \
            {k: answered[k] for k in ("ts", "route", "inputs", "probability", "prediction", "decision")}
        assert (shadow["model_version"], answered["model_version"]) == ("1.0.2", "1.0.1")
    assert {lines[(f"r-{i}", "champion")]["prediction"] for i in range(2)} == {"benign", "malignant"}
    # one pass: every request's share of the scoring time is the same
    assert len({lines[(f"r-{i}", "shadow")].get("latency_ms") for i in range(routing.SHADOW_QUEUE)}) == 1
    exposed = metrics.exposition().decode()
    assert f"oncology_shadow_dropped_total {float(extra)}" in exposed
    assert f'oncology_arm_requests_total{{arm="shadow",outcome="ok",version="1.0.2"}} {float(routing.SHADOW_QUEUE)}' \
        in exposed
    assert 'oncology_arm_predictions_total{arm="shadow",prediction="malignant",version="1.0.2"} 500.0' in exposed
    # the answers, counted once by the service and once by arm (the shadow's scores are not answers)
    assert 'oncology_predictions_total{prediction="malignant"} 501.0' in exposed
    assert 'oncology_predictions_total{prediction="benign"} 502.0' in exposed
    assert f'oncology_arm_requests_total{{arm="champion",outcome="ok",version="1.0.1"}} {float(routing.SHADOW_QUEUE + extra)}' \
        in exposed
    # the lines' latencies are the arms' scoring times, in milliseconds to the microsecond (truncated)
    seconds = {arm: float(re.search(rf'oncology_arm_scoring_seconds_sum{{arm="{arm}",version="{version}"}} (\S+)',
                                    exposed)[1])  # type: ignore[index]
               for arm, version in (("shadow", "1.0.2"), ("champion", "1.0.1"))}
    shadow_ms = lines[("r-0", "shadow")]["latency_ms"]
    assert 0 <= seconds["shadow"] / routing.SHADOW_QUEUE * 1000 - shadow_ms < 0.001 + 1e-9
    champion_ms = sum(lines[(f"r-{i}", "champion")]["latency_ms"] for i in range(routing.SHADOW_QUEUE + extra))
    assert 0 <= seconds["champion"] * 1000 - champion_ms < 0.001 * (routing.SHADOW_QUEUE + extra)

def test_with_several_workers_each_writes_its_arm_counts_by_the_end_of_the_turn_that_answered(
        two_versions: Path, tmp_path: Path) -> None:
    """One process writes its counts by arm at each scrape; with several, a scrape of one worker reads the others'
    from their files, so each worker writes them once per turn of its loop: every answer is in the files, unscraped."""
    from prometheus_client.multiprocess import MultiProcessCollector

    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    start(two_versions, "canary", (1.0,))  # every request to the candidate
    env = {"ONCOLOGY_STORE": str(two_versions), "ONCOLOGY_RELOAD_INTERVAL": "0.2", "ONCOLOGY_ACCESS_LOG": "false",
           "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}

    def in_the_files() -> dict[str, float]:
        """The candidate's requests counted in each worker's own file, read without a scrape."""
        counts = {}
        for path in metrics_dir.glob("counter_*.db"):
            merged = MultiProcessCollector.merge([str(path)], accumulate=False)
            counts[path.stem] = sum(s.value for m in merged if m.name == "oncology_arm_requests" for s in m.samples
                                    if s.name.endswith("_total") and s.labels.get("arm") == "candidate")
        return counts

    sent = 0
    with running_server(tmp_path, env, "--workers", "2") as server, httpx.Client(base_url=server.url) as client:
        deadline = time.monotonic() + 60
        while sent < 20 or sum(1 for n in in_the_files().values() if n > 0) < 2:  # until both workers answered
            assert time.monotonic() < deadline, f"after {sent} requests: {in_the_files()}"
            response = client.post("/predict", json=EXAMPLE, headers={"connection": "close"})  # either worker
            assert response.status_code == 200 and response.headers["x-model-arm"] == "candidate", response.headers
            sent += 1
        # written at the end of the turn that answered, a moment after the answer left: in the files, never scraped
        poll(lambda: sum(in_the_files().values()) == sent, 10, lambda: f"{sent} answered, in the files: {in_the_files()}",
             interval=0.05)
        assert f'oncology_arm_requests_total{{arm="candidate",outcome="ok",version="1.0.2"}} {float(sent)}' in (
            client.get("/metrics").text)


@pytest.mark.parametrize("band", [{"low": 0.2, "high": 0.9}, None])
def test_a_turn_shadowed_counts_the_answers_of_each_champion_with_their_referrals(
        two_versions: Path, band: dict[str, float] | None) -> None:
    """Turns of one-row requests in a shadow release, answered by a champion with a referral band, then one where a
    hot reload brings another halfway: each version's answers, malignant and referred rows and scoring times are
    counted by arm and by the service, as if counted one by one; the candidate's scores (another band, or none)
    decided as it decides one alone."""
    import asyncio

    from bundle_factory import bundle_files
    from oncology.settings import ServeSettings
    from oncology.webservice import predlog, routing
    from oncology.webservice.core import Core
    from oncology.webservice.metrics import Metrics
    from oncology.webservice.model import ModelHolder
    from oncology_model.bundle import Bundle
    from oncology_model.classifier import Classifier

    start(two_versions, "shadow", (1.0,))
    settings = ServeSettings(store=str(two_versions), reload_interval=0)
    metrics = Metrics()
    holder = ModelHolder(settings)
    holder.load()
    assert holder.release is not None
    banded, other, candidate = (Classifier(Bundle.from_files(bundle_files(version, **model)))  # type: ignore[arg-type]
                                for version, model in (("2.0.1", {"referral": {"low": 0.05, "high": 0.5}}),
                                                       ("2.0.2", {}),
                                                       ("2.1.0", {"referral": band, "threshold": 0.25})))
    log = predlog.PredictionLog(LocalStore(two_versions), "test", flush_seconds=3600, metrics=metrics)
    core = Core(settings, holder, metrics, log)
    rows = [[1] * 9, [3] * 9, [10] * 9]  # with the band: benign, refer, malignant
    answered: list[tuple[str, str, str]] = []

    async def answer() -> None:
        # a turn answered by the banded champion; then one where it is reloaded halfway (the other answers the rest)
        for turn in ([banded] * 30, [banded] * 15 + [other] * 15):
            for i, champion in enumerate(turn, start=len(answered)):
                _, labels, decisions = core.score("/predict", f"r-{i}", champion, [rows[i % 3]], routing.CHAMPION,
                                                  candidate)
                answered.append((champion.version, labels[0], str(decisions[0])))
            await asyncio.sleep(0)
            await asyncio.sleep(0)

    asyncio.run(answer())
    assert log.close() and log.errors == [] and core.shadow.errors == []
    assert {d for v, _, d in answered if v == "2.0.1"} == {"benign", "refer", "malignant"}
    exposed = metrics.exposition().decode()
    for version in ("2.0.1", "2.0.2"):
        mine = [(label, decision) for v, label, decision in answered if v == version]
        for label in ("malignant", "benign"):
            n = sum(1 for got, _ in mine if got == label)
            assert f'oncology_arm_predictions_total{{arm="champion",prediction="{label}",version="{version}"}} ' \
                   f'{float(n)}' in exposed
        assert f'oncology_arm_requests_total{{arm="champion",outcome="ok",version="{version}"}} {float(len(mine))}' \
               in exposed
        assert f'oncology_arm_scoring_seconds_count{{arm="champion",version="{version}"}} {float(len(mine))}' in exposed
    malignant = sum(1 for _, label, _ in answered if label == "malignant")
    assert f'oncology_predictions_total{{prediction="malignant"}} {float(malignant)}' in exposed
    assert f'oncology_predictions_total{{prediction="benign"}} {float(len(answered) - malignant)}' in exposed
    referred = sum(1 for _, _, decision in answered if decision == "refer")
    assert referred > 0 and f"oncology_referrals_total {float(referred)}" in exposed
    # and every request was shadowed, its candidate's prediction and decision as the candidate makes them one by one
    assert f'oncology_arm_requests_total{{arm="shadow",outcome="ok",version="2.1.0"}} {float(len(answered))}' in exposed
    shadows = [line for line in logged(two_versions) if line.get("arm") == "shadow"]
    assert len(shadows) == len(answered)
    assert [(line["prediction"], line["decision"]) for line in shadows] == [
        (str(candidate.label(line["probability"])), str(candidate.decide(line["probability"])))  # type: ignore[arg-type]
        for line in shadows]
    assert {line["decision"] for line in shadows} == ({"benign", "refer", "malignant"} if band else {"benign", "malignant"})
