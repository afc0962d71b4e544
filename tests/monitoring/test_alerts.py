"""deploy/monitoring/, checked for real: the alerting rules with promtool (syntax and unit tests), the
Grafana dashboard's queries, and a real Prometheus scraping real `oncology serve` processes until
the alerts that the service's own failures should raise are firing."""

from __future__ import annotations

import json
import re
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import prometheus  # infra/prometheus.py: tests/conftest.py puts infra/ on sys.path
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient
from webservice.conftest import EXAMPLE, Server, running_server, start_server, stop_server

from oncology.monitoring.outcomes import check
from oncology.settings import OutcomeSettings, ServeSettings
from oncology.webservice.app import create_app
from oncology_model.registry import ModelRegistry
from oncology_model.storage import LocalStore
from outcome_support import simulated

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"
RULES = MONITORING / "alerts.yml"
RULE_TESTS = MONITORING / "alerts.test.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
README = MONITORING / "README.md"
#: Written by the prediction log (not in the service yet): the rules and the dashboard may name it.
PREDICTION_LOG_DROPPED = "oncology_prediction_log_dropped_total"
#: Counted only while a release is under way (tests/release/test_service.py checks them there).
RELEASE_ONLY = {"oncology_arm_requests_total", "oncology_arm_predictions_total", "oncology_arm_scoring_seconds_bucket",
                "oncology_arm_scoring_seconds_sum", "oncology_arm_scoring_seconds_count"}
#: Series that Prometheus itself writes for every target.
PROMETHEUS_SERIES = {"up"}
#: The dashboard's Grafana variables, replaced by values a query can take.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$job": ".*", "$instance": ".*"}
#: The real test runs the real rules with every duration divided by this (5m -> 10s, 1d -> 48m).
TIME_SCALE = 30
SCRAPE_SECONDS = 1


def _alerts() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"] if "alert" in rule]


@pytest.fixture(scope="module")
def promtool() -> Any:
    """promtool, from Debian's prometheus package (installed by infra/prometheus.py when missing)."""
    prometheus.ensure_installed()
    return prometheus.promtool


# ---- the rules, offline --------------------------------------------------------------------------


def test_the_rules_pass_promtool_check(promtool: Any) -> None:
    done = promtool("check", "rules", RULES)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in done.stdout


def test_the_rules_pass_their_promtool_unit_tests(promtool: Any) -> None:
    done = promtool("test", "rules", RULE_TESTS)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_a_unit_test_that_fires_it_and_one_that_does_not() -> None:
    cases = [case for test in yaml.safe_load(RULE_TESTS.read_text())["tests"] for case in test.get("alert_rule_test", [])]
    for alert in _alerts():
        name = alert["alert"]
        assert any(c["alertname"] == name and c.get("exp_alerts") for c in cases), f"nothing fires {name}"
        assert any(c["alertname"] == name and not c.get("exp_alerts") for c in cases), f"no quiet case for {name}"


def _anchors(markdown: str) -> set[str]:
    """GitHub's anchors of the markdown's headings."""
    headings = re.findall(r"^#+\s+(.+?)\s*$", markdown, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_every_alert_waits_has_a_severity_and_points_to_its_runbook() -> None:
    anchors = _anchors(README.read_text())
    for alert in _alerts():
        name = alert["alert"]
        assert re.fullmatch(r"\d+[smh]", alert.get("for", "")), f"{name} has no `for:`"
        assert alert["labels"]["severity"] in {"warning", "critical"}, name
        notes = alert["annotations"]
        assert notes["summary"] and notes["description"], name
        page, _, anchor = notes["runbook"].partition("#")
        assert page == "deploy/monitoring/README.md" and anchor == name.lower(), notes["runbook"]
        assert anchor in anchors, f"README.md has no section {name} (for {notes['runbook']})"


# ---- the metrics they name exist -----------------------------------------------------------------

_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (label matchers, groupings and functions set aside)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals (label values, regexes)
    expr = re.sub(r"\{[^}]*\}", " ", expr)  # label matchers
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # ranges
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][\w:]*)\b(?!\s*\()", expr):
        name = match.group(1)
        if name.lower() not in _KEYWORDS:
            names.add(name)
    return names


def test_metric_names_are_read_from_expressions() -> None:
    expr = ('sum by (job, le) (rate(a_bucket{route=~"/x|y", le!="1"}[5m])) / on(job) group_left(v) b_total '
            '> 0.05 and max(c) or absent(d offset 1h) unless e == bool 1')
    assert metric_names(expr) == {"a_bucket", "b_total", "c", "d", "e"}


@pytest.fixture(scope="module")
def store(trained_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the trained store (1.0.1, champion) that tests may tamper with."""
    copy = tmp_path_factory.mktemp("monitoring") / "store"
    shutil.copytree(trained_store, copy)
    return copy


@pytest.fixture(scope="module")
def exported(trained_store: Path, tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Every series name a real `oncology serve` exports once it has answered predictions, errors and probes, taken
    outcomes (one of them a conflict) and read a real outcome check's verdicts."""
    tmp = tmp_path_factory.mktemp("exported")
    outcome_store, _ = simulated(tmp / "outcomes", 300, seed=1)
    check(outcome_store, OutcomeSettings(store=str(tmp / "outcomes")))  # writes monitoring/outcome-checks/latest.json
    env = {"ONCOLOGY_STORE": str(trained_store), "ONCOLOGY_OUTCOMES": "true", "ONCOLOGY_OUTCOMES_STORE": str(tmp / "outcomes")}
    with running_server(tmp, env) as server:
        assert httpx.post(f"{server.url}/predict", json=EXAMPLE).status_code == 200
        assert httpx.post(f"{server.url}/predict", json={}).status_code == 422
        assert httpx.get(f"{server.url}/readyz").status_code == 200
        record = {"request_id": "x", "outcome": 4, "observed_at": "2025-01-01T00:00:00Z", "source": "lab"}
        assert httpx.post(f"{server.url}/outcomes", json=[record]).status_code == 200
        assert httpx.post(f"{server.url}/outcomes", json=[{**record, "outcome": 2}]).status_code == 409
        deadline = time.monotonic() + 20
        while "oncology_outcome_alarm{" not in (text := httpx.get(f"{server.url}/metrics").text):
            assert time.monotonic() < deadline, "the outcome check's verdicts were never exported"
            time.sleep(0.1)
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


def test_the_rules_name_only_metrics_the_service_exports(exported: set[str]) -> None:
    allowed = exported | PROMETHEUS_SERIES | {PREDICTION_LOG_DROPPED}
    for alert in _alerts():
        unknown = metric_names(alert["expr"]) - allowed
        assert not unknown, f"{alert['alert']} names {unknown}, which the service does not export"


def test_the_readiness_metric_follows_what_readyz_answers(trained_store: Path) -> None:
    app = create_app(ServeSettings(store=str(trained_store)))
    with TestClient(app) as client:
        assert "oncology_ready 1.0" in client.get("/metrics").text
        app.holder.draining = True  # what SIGTERM does
        assert client.get("/readyz").status_code == 503
        assert "oncology_ready 0.0" in client.get("/metrics").text


# ---- the Grafana dashboard -----------------------------------------------------------------------


def _dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL with the Grafana variables replaced) of every query of every panel."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel.get("targets"), f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, f"panel {panel['title']!r}: unknown variable in {target['expr']}"
            queries.append((panel["title"], expr))
    return queries


def test_the_dashboard_is_laid_out_on_grafanas_grid() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "job", "instance"} <= variables
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, panel["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]


def test_every_dashboard_query_parses(promtool: Any, tmp_path: Path) -> None:
    """promtool checks PromQL only inside rule files: one recording rule per panel query."""
    queries = _dashboard_queries()
    rules = {"groups": [{"name": "grafana-dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": expr} for i, (_, expr) in enumerate(queries)
    ]}]}
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(rules))
    done = promtool("check", "rules", path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(queries)} rules found" in done.stdout


def test_the_dashboard_shows_every_metric_and_only_metrics_that_exist(exported: set[str]) -> None:
    allowed = exported | PROMETHEUS_SERIES | {PREDICTION_LOG_DROPPED} | RELEASE_ONLY
    shown: set[str] = set()
    for title, expr in _dashboard_queries():
        names = metric_names(expr)
        assert names, f"panel {title!r}: no metric in {expr}"
        assert not names - allowed, f"panel {title!r} names {names - allowed}, which the service does not export"
        shown |= names
    wanted = {
        "oncology_http_requests_total", "oncology_http_request_duration_seconds_bucket", "oncology_predictions_total",
        "oncology_model_info", "oncology_model_reloads_total", "oncology_ready", PREDICTION_LOG_DROPPED,
        "oncology_http_shed_total", "oncology_arm_requests_total", "oncology_arm_predictions_total",
        "oncology_arm_scoring_seconds_sum",
    }
    assert wanted <= shown, f"no panel shows {wanted - shown}"


# ---- a real Prometheus, real services, real alerts -----------------------------------------------

_DURATION = re.compile(r"^(\d+)([smhdw])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _scaled(duration: str, window: bool = False) -> str:
    match = _DURATION.match(duration)
    if match is None:  # 1h30m, subqueries...: teach this function before using them in the rules
        raise ValueError(f"cannot scale the duration {duration!r}")
    seconds = int(match.group(1)) * _SECONDS[match.group(2)] / TIME_SCALE
    if window and seconds < 4 * SCRAPE_SECONDS:  # rate() and increase() need a few samples
        raise ValueError(f"{duration} / {TIME_SCALE} leaves fewer than 4 scrapes in the window")
    return f"{seconds:g}s"


#: A range selector, or a string literal (left alone: a label regex may hold brackets).
_RANGE_OR_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\[([^\]]*)\]')


def _scaled_range(match: re.Match[str]) -> str:
    return match.group(0) if match.group(1) is None else f"[{_scaled(match.group(1), window=True)}]"


def scaled_rules(path: Path) -> str:
    """alerts.yml with every `for:` and every range divided by TIME_SCALE; nothing else changes."""
    data = yaml.safe_load(RULES.read_text())
    for group in data["groups"]:
        assert "interval" not in group, "a group interval would need scaling too"
        for rule in group["rules"]:
            assert " offset " not in rule["expr"], "offsets would need scaling too"
            rule["expr"] = _RANGE_OR_STRING.sub(_scaled_range, rule["expr"])
            if "for" in rule:
                rule["for"] = _scaled(rule["for"])
    text = yaml.safe_dump(data, sort_keys=False)
    path.write_text(text)
    return text


def test_the_scaled_rules_differ_from_the_real_ones_only_in_durations(promtool: Any, tmp_path: Path) -> None:
    text = scaled_rules(tmp_path / "scaled.yml")
    done = promtool("check", "rules", tmp_path / "scaled.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    real = yaml.safe_load(RULES.read_text())
    scaled = yaml.safe_load(text)
    def ranges_blanked(expr: str) -> str:
        return _RANGE_OR_STRING.sub(lambda m: m.group(0) if m.group(1) is None else "[]", expr)

    for group, scaled_group in zip(real["groups"], scaled["groups"], strict=True):
        for rule, scaled_rule in zip(group["rules"], scaled_group["rules"], strict=True):
            assert ranges_blanked(rule["expr"]) == ranges_blanked(scaled_rule["expr"])
            assert {k: v for k, v in rule.items() if k not in ("expr", "for")} == \
                {k: v for k, v in scaled_rule.items() if k not in ("expr", "for")}
    assert _scaled("10m") == "20s" and _scaled("1d") == "2880s"
    assert _RANGE_OR_STRING.sub(_scaled_range, 'rate(x{status=~"[45].."}[5m])') == 'rate(x{status=~"[45].."}[10s])'


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[Server]]:
    """Servers started by the test; every one is stopped at the end, even on failure."""
    started: list[Server] = []
    yield started
    for server in started:
        stop_server(server)


def _address(server: Server) -> str:
    return server.url.removeprefix("http://")


def test_a_real_prometheus_fires_the_alerts_of_real_failures(
    store: Path, tmp_path: Path, servers: list[Server]
) -> None:
    """Three real services, each failing its own way, scraped by a real Prometheus with the project's rules:

    - healthy: its champion is then moved to a tampered bundle: it keeps serving 1.0.1, and every
      reload fails -> OncologyModelReloadFailing on its instance only.  It also answers a stream of
      bad requests (4xx): OncologyHighErrorRatio counts 5xx only and must stay quiet.
    - draining: SIGTERM with a long drain: it still answers /metrics, /readyz says 503 -> OncologyNotReady.
    - refused: started on a store whose champion fails verification: it exits -> OncologyDown.
    """
    prometheus.ensure_installed()
    env = {"ONCOLOGY_STORE": str(store), "ONCOLOGY_RELOAD_INTERVAL": "0.2"}
    healthy = start_server(tmp_path, env)
    servers.append(healthy)
    # a fixed version: it does not follow the alias that the test moves to a bad bundle
    draining = start_server(tmp_path, {**env, "ONCOLOGY_MODEL": "1.0.1", "ONCOLOGY_DRAIN_SECONDS": "300"})
    servers.append(draining)

    tampered = tmp_path / "tampered-store"
    shutil.copytree(store, tampered)
    model = tampered / "models" / "1.0.1" / "model.json"
    model.write_text(model.read_text().replace("0", "1", 1))
    refused = start_server(tmp_path, {"ONCOLOGY_STORE": str(tampered)}, wait=False)
    servers.append(refused)
    assert refused.proc.wait(timeout=30) != 0, "a champion failing verification must stop the start"
    assert "sha256 does not match" in refused.logs()

    scaled_rules(tmp_path / "rules.yml")
    prom = prometheus.start(
        tmp_path / "prometheus", targets=[_address(s) for s in (healthy, draining, refused)],
        rule_files=[tmp_path / "rules.yml"],
        scrape_interval=f"{SCRAPE_SECONDS}s", evaluation_interval=f"{SCRAPE_SECONDS}s", die_with_parent=True,
    )
    bad_requests = threading.Event()

    def send_bad_requests() -> None:  # 422s: the client's errors, all through the wait
        with httpx.Client(timeout=5) as client:
            while not bad_requests.wait(0.02):
                client.post(f"{healthy.url}/predict", json={"clump_thickness": 11})

    sender = threading.Thread(target=send_bad_requests)
    sender.start()
    try:
        # the bad promotion: a copy of 1.0.1 whose model.json no longer matches its manifest
        shutil.copytree(store / "models" / "1.0.1", store / "models" / "1.0.2")
        bad = store / "models" / "1.0.2" / "model.json"
        bad.write_text(bad.read_text().replace("0", "1", 1))
        registry = ModelRegistry(LocalStore(store))  # promote refuses a tampered bundle: move the alias by
        state = registry.state()  # hand, as if the file had been altered after its promotion
        state["aliases"]["champion"] = "1.0.2"
        registry.store.write("registry/aliases.json", json.dumps(state).encode())

        draining.proc.send_signal(signal.SIGTERM)
        expected = {
            ("OncologyModelReloadFailing", _address(healthy)),
            ("OncologyNotReady", _address(draining)),
            ("OncologyDown", _address(refused)),
        }
        deadline = time.monotonic() + 180
        while True:
            httpx.get(f"{draining.url}/readyz")  # a load balancer's probe: oncology_ready follows its answers
            alerts = prom.alerts()
            firing = {(a["labels"]["alertname"], a["labels"].get("instance")) for a in alerts if a["state"] == "firing"}
            if expected <= firing:
                break
            assert time.monotonic() < deadline, f"not firing: {expected - firing}; alerts: {alerts}\n{prom.log()}"
            time.sleep(0.5)
    finally:
        bad_requests.set()
        sender.join()
        prom.stop()

    by_name: dict[str, list[dict[str, Any]]] = {}
    for alert in alerts:
        by_name.setdefault(alert["labels"]["alertname"], []).append(alert)
    # the 4xx stream ran through the whole wait, longer than the error ratio's (scaled) window and `for:`
    assert "OncologyHighErrorRatio" not in by_name, by_name["OncologyHighErrorRatio"]
    (reload,) = by_name["OncologyModelReloadFailing"]
    assert reload["labels"] == {"alertname": "OncologyModelReloadFailing", "severity": "warning", "job": "oncology",
                                "instance": _address(healthy), "result": "failure"}
    (not_ready,) = by_name["OncologyNotReady"]
    assert not_ready["labels"] == {"alertname": "OncologyNotReady", "severity": "warning", "job": "oncology",
                                   "instance": _address(draining)}
    (down,) = by_name["OncologyDown"]
    assert down["labels"] == {"alertname": "OncologyDown", "severity": "critical", "job": "oncology",
                              "instance": _address(refused)}
    assert down["annotations"]["runbook"] == "deploy/monitoring/README.md#oncologydown"
    # ... and the service did what the alert says: the old model serves on, the failures are logged
    assert httpx.post(f"{healthy.url}/predict", json=EXAMPLE).json()["model_version"] == "1.0.1"
    assert "model reload failed, still serving 1.0.1" in healthy.logs()
