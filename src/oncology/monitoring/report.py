"""The dashboard: one self-contained HTML page built from the store.

What it shows, and where each part comes from (keys relative to the store's root)::

    models/<v>/kpis.json, metadata.json     KPIs across versions (held-out test, its 95% CI when
                                            the trainer wrote one, and the CV mean +- std)
    models/<champion>/evaluation.json       the champion's held-out predictions (optional): its
                                            confusion matrix, ROC and calibration curves
    monitoring/coverage/<suite>/<suite>-coverage-<v>.json   unit-test and whole-suite coverage
    registry/aliases.json                   the champion, and the timeline of promotions and rollbacks
    monitoring/drift/drift-<YYYYMMDDTHHMMSSZ>.json          the latest drift report

Older versions without ``evaluation.json`` or coverage are shown without those charts, not as an error.
The page is written to ``monitoring/report/report-<YYYYMMDDTHHMMSSZ>.html`` (`write_report`), which
the web service serves at ``GET /dashboard`` (`oncology.webservice.dashboard`).

Charts are Vega-Lite specifications built with Altair; the Vega, Vega-Lite and Vega-Embed JavaScript
is inlined (from ``vl-convert-python``, which ships them), so the page works with no network.
"""

from __future__ import annotations

import html
import json
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any, Final, SupportsFloat, SupportsInt

from oncology_model.bundle import CARD_MD, EVALUATION, KPIS, METADATA, dump_json
from oncology_model.errors import NotFoundError, OncologyError, RegistryError
from oncology_model.registry import CHAMPION, MODELS_PREFIX, ModelRegistry, version_key
from oncology_model.storage import Store

log = logging.getLogger(__name__)

REPORT_PREFIX: Final = "monitoring/report/"
DRIFT_PREFIX: Final = "monitoring/drift/"
#: The newest outcome check's verdicts, naming its report (written by oncology.monitoring.outcomes).
OUTCOME_CHECK_LATEST: Final = "monitoring/outcome-checks/latest.json"
COVERAGE_PREFIX: Final = "monitoring/coverage/"
#: Coverage suites in the store, and how the page names them.
COVERAGE_SUITES: Final[Mapping[str, str]] = {"unittest": "unit tests", "test": "whole suite"}
#: The KPIs charted across versions: key in kpis.json, label.
KPI_CHARTS: Final = (
    ("accuracy", "accuracy"),
    ("recall", "malignant recall"),
    ("specificity", "specificity"),
    ("roc_auc", "ROC AUC"),
    ("brier", "Brier score (lower is better)"),
)
#: The most bins of the calibration chart, and the fewest cases each bin must hold (equal-count bins).
CALIBRATION_BINS: Final = 10
CALIBRATION_MIN_CASES: Final = 20
TIMESTAMP_FORMAT: Final = "%Y%m%dT%H%M%SZ"

_DRIFT_KEY = re.compile(r"^monitoring/drift/drift-\d{8}T\d{6}Z\.json$")
_COVERAGE_KEY = re.compile(r"^monitoring/coverage/(?P<suite>[a-z]+)/(?P=suite)-coverage-(?P<version>\d+(?:\.\d+)*)\.json$")
_TEST_SERIES, _CV_SERIES = "held-out test (95% CI)", "CV mean ± std"


class ReportError(OncologyError):
    """The report cannot be built (its evaluation data is malformed, say)."""


# ---- what the trainer stores with each version -----------------------------------------------------


def evaluation_from(
    y: Iterable[SupportsInt], proba: Iterable[SupportsFloat], ids: Iterable[SupportsInt | str]
) -> dict[str, Any]:
    """The content of a bundle's ``evaluation.json``: the held-out test labels (1 = malignant), malignant
    probabilities and sample ids, as plain JSON numbers (numpy arrays are accepted).

    The trainer stores it with each version (``Bundle.assemble(..., extra={EVALUATION: dump_json(...)})``);
    the dashboard draws the confusion matrix, ROC and calibration curves from it.
    """
    labels = [int(v) for v in y]
    probabilities = [float(p) for p in proba]
    sample_ids = [v if isinstance(v, str) else int(v) for v in ids]
    if not len(labels) == len(probabilities) == len(sample_ids):
        raise ValueError(f"y, proba and ids differ in length ({len(labels)}, {len(probabilities)}, {len(sample_ids)})")
    if bad := sorted({v for v in labels if v not in (0, 1)}):
        raise ValueError(f"labels must be 0 (benign) or 1 (malignant), not {bad[:5]}")
    if any(not (math.isfinite(p) and 0.0 <= p <= 1.0) for p in probabilities):
        raise ValueError("probabilities must be finite and within [0, 1]")
    return {"test": {"y": labels, "proba": probabilities, "ids": sample_ids}}


def evaluation_file(y: Iterable[SupportsInt], proba: Iterable[SupportsFloat], ids: Iterable[SupportsInt | str]) -> bytes:
    """`evaluation_from` as the bytes of the bundle file (canonical JSON)."""
    return dump_json(evaluation_from(y, proba, ids))


# ---- curves, in plain Python (the test set is small) -----------------------------------------------


def confusion(y: Sequence[int], proba: Sequence[float], threshold: float) -> dict[str, int]:
    """tn, fp, fn, tp of malignant predictions ``proba >= threshold``."""
    counts = {"tn": 0, "fp": 0, "fn": 0, "tp": 0}
    for label, p in zip(y, proba):
        counts[("t" if (p >= threshold) == (label == 1) else "f") + ("p" if p >= threshold else "n")] += 1
    return counts


def roc_points(y: Sequence[int], proba: Sequence[float]) -> list[dict[str, float]]:
    """The ROC curve: (false positive rate, true positive rate) at every distinct threshold, from
    (0, 0) to (1, 1); empty when one class is absent."""
    positives = sum(1 for v in y if v == 1)
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        return []
    points = [{"fpr": 0.0, "tpr": 0.0, "threshold": 1.0}]
    tp = fp = 0
    pairs = sorted(zip(proba, y), key=lambda pair: -pair[0])
    for i, (p, label) in enumerate(pairs):
        tp += label == 1
        fp += label != 1
        if i + 1 == len(pairs) or pairs[i + 1][0] != p:  # all rows of a tied score move together
            points.append({"fpr": fp / negatives, "tpr": tp / positives, "threshold": p})
    return points


def roc_auc(points: Sequence[Mapping[str, float]]) -> float:
    """The area under a curve of `roc_points` (trapezoids: ties count half)."""
    return sum((b["fpr"] - a["fpr"]) * (a["tpr"] + b["tpr"]) / 2 for a, b in zip(points, points[1:]))


def calibration_bins(y: Sequence[int], proba: Sequence[float], bins: int | None = None) -> list[dict[str, float]]:
    """The reliability curve on equal-count (quantile) bins: the cases sorted by probability and cut into ``bins``
    groups of sizes differing by one at most (by default as many as give each `CALIBRATION_MIN_CASES`, from 2 to
    `CALIBRATION_BINS`; fixed-width bins on a test set of 136 left bins of 1-3 cases, whose share jumps between 0
    and 1).  Per group: its lowest and highest probability, the mean predicted probability, the observed share of
    malignant cases, and the count.  Tied probabilities at a cut may fall on either side of it."""
    pairs = sorted(zip((float(p) for p in proba), (int(v) for v in y)))
    n = len(pairs)
    if n == 0:
        return []
    k = min(n, bins if bins is not None else max(2, min(CALIBRATION_BINS, n // CALIBRATION_MIN_CASES)))
    rows = []
    for i in range(k):
        group = pairs[i * n // k:(i + 1) * n // k]
        size = len(group)
        rows.append({
            "bin": i, "low": group[0][0], "high": group[-1][0], "predicted": sum(p for p, _ in group) / size,
            "observed": sum(label for _, label in group) / size, "n": size,
        })
    return rows


# ---- reading the store -----------------------------------------------------------------------------


@dataclass
class VersionInfo:
    version: str
    created_at: str | None = None
    family: str | None = None
    threshold: float | None = None
    kpis: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None  # why its files could not be read, if they could not


@dataclass
class Curves:
    """The champion's held-out evaluation, drawn as charts."""

    version: str
    threshold: float
    n: int
    confusion: dict[str, int]
    roc: list[dict[str, float]]
    auc: float
    calibration: list[dict[str, float]]


@dataclass
class ReportData:
    store: str
    versions: list[VersionInfo]
    aliases: dict[str, str]
    history: list[dict[str, Any]]
    coverage: dict[str, dict[str, float]]  # version -> suite -> percent covered
    curves: Curves | None
    curves_note: str
    drift: dict[str, Any] | None
    drift_key: str | None
    #: the champion's model card (card.md), None when it has none (trained before cards existed)
    card: str | None = None
    #: the newest outcome check's report (`oncology outcomes check`) and its key, None when none ran
    outcomes: dict[str, Any] | None = None
    outcomes_key: str | None = None

    @property
    def champion(self) -> str | None:
        return self.aliases.get(CHAMPION)


def collect(store: Store, workers: int = 8) -> ReportData:
    """Everything the page shows, read from ``store`` (the per-version reads in parallel: S3 round trips)."""
    registry = ModelRegistry(store)
    versions = registry.versions()
    state = registry.state()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        infos = list(pool.map(lambda v: _version_info(store, v), versions))
        coverage_keys = [k for k in store.list(COVERAGE_PREFIX) if _COVERAGE_KEY.match(k)]
        coverage_reports = list(pool.map(lambda k: (k, _read_json(store, k)), coverage_keys))
    coverage: dict[str, dict[str, float]] = {}
    for key, report in coverage_reports:
        match = _COVERAGE_KEY.match(key)
        percent = (report or {}).get("totals", {}).get("percent_covered")
        if match and match["suite"] in COVERAGE_SUITES and isinstance(percent, int | float):
            coverage.setdefault(match["version"], {})[match["suite"]] = float(percent)
    aliases = {str(k): str(v) for k, v in state.get("aliases", {}).items()}
    curves, note = _champion_curves(store, aliases.get(CHAMPION), {i.version: i for i in infos})
    drift_keys = [k for k in store.list(DRIFT_PREFIX) if _DRIFT_KEY.match(k)]
    drift_key = max(drift_keys) if drift_keys else None  # the timestamp in the name sorts as text
    latest = _read_json(store, OUTCOME_CHECK_LATEST)
    outcomes_key = str(latest["report"]) if isinstance(latest, dict) and isinstance(latest.get("report"), str) else None
    return ReportData(
        store=str(store),
        versions=infos,
        aliases=aliases,
        history=list(state.get("history", [])),
        coverage=coverage,
        curves=curves,
        curves_note=note,
        drift=_read_json(store, drift_key) if drift_key else None,
        drift_key=drift_key,
        card=_read_text(store, f"{MODELS_PREFIX}/{aliases[CHAMPION]}/{CARD_MD}") if CHAMPION in aliases else None,
        outcomes=_read_json(store, outcomes_key) if outcomes_key else None,
        outcomes_key=outcomes_key,
    )


def _read_text(store: Store, key: str) -> str | None:
    try:
        return store.read(key).decode("utf-8")
    except NotFoundError:
        return None
    except UnicodeDecodeError as exc:
        log.warning("%s/%s is not UTF-8 text, left out of the report: %s", store, key, exc)
        return None


def _read_json(store: Store, key: str) -> dict[str, Any] | None:
    try:
        value = json.loads(store.read(key))
    except NotFoundError:
        return None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.warning("%s/%s is not valid JSON, left out of the report: %s", store, key, exc)
        return None
    return value if isinstance(value, dict) else None


def _version_info(store: Store, version: str) -> VersionInfo:
    info = VersionInfo(version)
    metadata = _read_json(store, f"{MODELS_PREFIX}/{version}/{METADATA}")
    kpis = _read_json(store, f"{MODELS_PREFIX}/{version}/{KPIS}")
    if metadata is None or kpis is None:
        info.problem = f"{METADATA} or {KPIS} is missing or unreadable"
        return info
    info.kpis = kpis
    info.created_at = str(metadata.get("created_at", "")) or None
    info.family = str(metadata.get("model", {}).get("family", "")) or None
    threshold = metadata.get("threshold")
    info.threshold = float(threshold) if isinstance(threshold, int | float) else None
    return info


def _champion_curves(store: Store, champion: str | None, infos: Mapping[str, VersionInfo]) -> tuple[Curves | None, str]:
    if champion is None:
        return None, "No champion yet: promote a version to see its curves."
    info = infos.get(champion)
    if info is None or info.threshold is None:
        return None, f"The champion {champion} cannot be read from the store."
    evaluation = _read_json(store, f"{MODELS_PREFIX}/{champion}/{EVALUATION}")
    if evaluation is None:
        return None, (
            f"Version {champion} was published without its held-out predictions ({EVALUATION}): "
            "no ROC or calibration curve for it."
        )
    try:
        test = evaluation["test"]
        y, proba = [int(v) for v in test["y"]], [float(p) for p in test["proba"]]
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("%s/%s/%s/%s is malformed (%r): no curves", store, MODELS_PREFIX, champion, EVALUATION, exc)
        return None, f"The held-out predictions of {champion} ({EVALUATION}) are malformed: no curves."
    roc = roc_points(y, proba)
    return (
        Curves(champion, info.threshold, len(y), confusion(y, proba, info.threshold), roc, roc_auc(roc),
               calibration_bins(y, proba)),
        "",
    )


# ---- the charts --------------------------------------------------------------------------------------


def _x_versions(versions: Sequence[str]) -> Any:
    import altair as alt

    return alt.X(
        "version:O",
        scale=alt.Scale(domain=list(versions)),
        axis=alt.Axis(labelAngle=-45, labelOverlap=False, title="model version"),
    )


def _data(rows: list[dict[str, Any]]) -> Any:
    import altair as alt

    return alt.Data(values=rows)  # type: ignore[no-untyped-call]


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) else None


def p_value_text(value: Any) -> str:
    """A p-value for people: three decimals down to 0.001 (``0.012``), two significant digits below it
    (``1.2e-05``), and ``< 1e-300`` for one that underflowed to 0; ``–`` when there is none."""
    p = _number(value)
    if p is None:
        return "–"
    if p == 0:
        return "< 1e-300"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def mix_psi(mix: Any) -> float | None:
    """The PSI of a drift report's prediction mix (its ``observed`` against its ``reference`` shares), with
    the same `oncology.monitoring.drift.psi` that decided its flag; None when the report does not hold both."""
    if not isinstance(mix, Mapping):
        return None
    observed, reference = mix.get("observed"), mix.get("reference")
    if not isinstance(observed, Mapping) or not isinstance(reference, Mapping):
        return None
    found = [_number(side.get(c)) for side in (observed, reference) for c in ("benign", "malignant")]
    shares = [share for share in found if share is not None]
    if len(shares) != len(found):
        return None
    try:
        from oncology.monitoring.drift import psi
    except ImportError:  # the dashboard alone (oncology[report]) has no scipy: the PSI is left out
        return None
    return float(psi(shares[:2], shares[2:]))


def kpi_rows(infos: Sequence[VersionInfo], key: str) -> list[dict[str, Any]]:
    """The rows of one KPI's chart: per version, the held-out test value (with its CI, when the trainer
    wrote one) and the CV mean with mean +- std."""
    rows = []
    for info in infos:
        test, cv = info.kpis.get("test", {}), info.kpis.get("cv", {})
        value = _number(test.get(key))
        if value is not None:
            ci = test.get("ci", {}).get(key) if isinstance(test.get("ci"), dict) else None
            low, high = (_number(ci[0]), _number(ci[1])) if isinstance(ci, list) and len(ci) == 2 else (None, None)
            rows.append({"version": info.version, "series": _TEST_SERIES, "value": value, "low": _unit(low),
                         "high": _unit(high)})
        mean, std = _number(cv.get("mean", {}).get(key)), _number(cv.get("std", {}).get(key))
        if mean is not None:
            spread = std or 0.0
            rows.append({"version": info.version, "series": _CV_SERIES, "value": mean,
                         "low": _unit(mean - spread), "high": _unit(mean + spread), "std": std})
    return rows


def _unit(value: float | None) -> float | None:
    """A bar's end within [0, 1], where every KPI lies (mean + std of a recall of 0.99 is not 1.01)."""
    return None if value is None else min(max(value, 0.0), 1.0)


def _kpi_chart(infos: Sequence[VersionInfo], key: str, label: str) -> dict[str, Any]:
    import altair as alt

    versions = [i.version for i in infos]
    base = alt.Chart(_data(kpi_rows(infos, key))).encode(
        x=_x_versions(versions),
        color=alt.Color("series:N", scale=alt.Scale(domain=[_TEST_SERIES, _CV_SERIES], range=["#1f6feb", "#d4a017"]),
                        legend=alt.Legend(title=None, orient="bottom")),
    )
    bars = base.mark_rule(strokeWidth=2, opacity=0.7).encode(
        y=alt.Y("low:Q", title=label, scale=alt.Scale(zero=False)), y2="high:Q",
        xOffset=alt.XOffset("series:N"),
    )
    points = base.mark_point(filled=True, size=50).encode(
        y=alt.Y("value:Q"), xOffset=alt.XOffset("series:N"),
        tooltip=[alt.Tooltip("version:O"), alt.Tooltip("series:N"), alt.Tooltip("value:Q", format=".4f"),
                 alt.Tooltip("low:Q", format=".4f"), alt.Tooltip("high:Q", format=".4f")],
    )
    # the line too is offset by series (through the test points): every layer then has the same x step, and Vega
    # has no conflicting band ranges to reconcile (it warned once per chart)
    line = base.transform_filter(alt.datum.series == _TEST_SERIES).mark_line(opacity=0.5).encode(
        y="value:Q", xOffset=alt.XOffset("series:N")
    )
    # with xOffset the step is per series within a version: two series, about 360 px for a few versions
    step = max(7, 180 // max(len(versions), 1))
    chart = alt.layer(bars, line, points).properties(title=label, width=alt.Step(step), height=200)
    return _spec(chart)


def _coverage_chart(versions: Sequence[str], coverage: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    import altair as alt

    rows = [
        {"version": v, "suite": COVERAGE_SUITES[suite], "percent": coverage[v][suite]}
        for v in versions if v in coverage for suite in COVERAGE_SUITES if suite in coverage[v]
    ]
    base = alt.Chart(_data(rows)).encode(
        x=_x_versions(versions),
        y=alt.Y("percent:Q", title="lines covered (%)", scale=alt.Scale(domain=[0, 100])),
        color=alt.Color("suite:N", legend=alt.Legend(title=None, orient="bottom")),
        tooltip=[alt.Tooltip("version:O"), alt.Tooltip("suite:N"), alt.Tooltip("percent:Q", format=".1f")],
    )
    chart = (base.mark_line() + base.mark_point(filled=True, size=50)).properties(
        title="test coverage", width=alt.Step(max(14, 480 // max(len(versions), 1))), height=200
    )
    return _spec(chart)


def _confusion_chart(curves: Curves) -> dict[str, Any]:
    import altair as alt

    c = curves.confusion
    rows = [
        {"actual": actual, "predicted": predicted, "n": c[key]}
        for actual, predicted, key in (("benign", "benign", "tn"), ("benign", "malignant", "fp"),
                                       ("malignant", "benign", "fn"), ("malignant", "malignant", "tp"))
    ]
    base = alt.Chart(_data(rows)).encode(
        x=alt.X("predicted:N", sort=["benign", "malignant"], axis=alt.Axis(labelAngle=0)),
        y=alt.Y("actual:N", sort=["benign", "malignant"]),
    )
    cells = base.mark_rect().encode(color=alt.Color("n:Q", scale=alt.Scale(scheme="blues"), legend=None),
                                    tooltip=["actual:N", "predicted:N", "n:Q"])
    text = base.mark_text(fontSize=20, fontWeight="bold").encode(
        text="n:Q", color=alt.condition(alt.datum.n > max(c.values()) / 2, alt.value("white"), alt.value("black"))
    )
    chart = (cells + text).properties(
        title=f"confusion matrix, {curves.version} (threshold {curves.threshold:.3f}, n={curves.n})", width=220, height=220
    )
    return _spec(chart)


def _diagonal() -> Any:
    import altair as alt

    return alt.Chart(_data([{"x": 0, "y": 0}, {"x": 1, "y": 1}])).mark_line(
        strokeDash=[4, 4], color="#888"
    ).encode(x="x:Q", y="y:Q")


def _roc_chart(curves: Curves) -> dict[str, Any]:
    import altair as alt

    rows = [{**p, "step": i} for i, p in enumerate(curves.roc)]
    curve = alt.Chart(_data(rows)).mark_line(point=True, interpolate="linear").encode(
        x=alt.X("fpr:Q", title="false positive rate (1 - specificity)", scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("tpr:Q", title="true positive rate (malignant recall)", scale=alt.Scale(domain=[0, 1])),
        order="step:Q",
        tooltip=[alt.Tooltip("threshold:Q", format=".4f"), alt.Tooltip("fpr:Q", format=".3f"),
                 alt.Tooltip("tpr:Q", format=".3f")],
    )
    chart = (_diagonal() + curve).properties(title=f"ROC, {curves.version} (AUC {curves.auc:.4f})", width=260, height=260)
    return _spec(chart)


def _calibration_chart(curves: Curves) -> dict[str, Any]:
    import altair as alt

    bins = curves.calibration
    base = alt.Chart(_data(bins)).encode(
        x=alt.X("predicted:Q", title="mean predicted probability of malignancy", scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("observed:Q", title="observed share malignant", scale=alt.Scale(domain=[0, 1])),
        tooltip=[alt.Tooltip("low:Q", title="lowest probability", format=".3f"),
                 alt.Tooltip("high:Q", title="highest probability", format=".3f"), alt.Tooltip("n:Q", title="cases"),
                 alt.Tooltip("predicted:Q", format=".3f"), alt.Tooltip("observed:Q", format=".3f")],
    )
    counts = base.mark_text(dx=12, dy=-8, fontSize=10, color="#59636e").encode(text=alt.Text("n:Q"))
    sizes = sorted({int(b["n"]) for b in bins})
    cases = f"{sizes[0]}" if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}"
    chart = (_diagonal() + base.mark_line() + base.mark_point(filled=True, size=50) + counts).properties(
        title=f"calibration (reliability), {curves.version}: {len(bins)} equal-count bins of {cases} cases",
        width=260, height=260,
    )
    return _spec(chart)


def _timeline_chart(history: Sequence[Mapping[str, Any]], alias: str = CHAMPION) -> dict[str, Any]:
    import altair as alt

    rows = [
        {"at": str(m["at"]), "version": str(m["to"]), "from": str(m.get("from") or "-"), "action": str(m["action"])}
        for m in history if m.get("alias") == alias
    ]
    order = sorted({r["version"] for r in rows}, key=version_key, reverse=True)
    base = alt.Chart(_data(rows)).encode(
        x=alt.X("at:T", title="time (UTC)", scale=alt.Scale(type="utc"),
                axis=alt.Axis(format="%Y-%m-%d %H:%M", labelAngle=-30)),  # a utc scale formats in UTC
        y=alt.Y("version:O", sort=order, title=f"{alias}"),
    )
    step = base.mark_line(interpolate="step-after", color="#999")
    marks = base.mark_point(filled=True, size=120).encode(
        color=alt.Color("action:N", scale=alt.Scale(domain=["promote", "rollback"], range=["#2da44e", "#cf222e"]),
                        legend=alt.Legend(title=None, orient="bottom")),
        shape=alt.Shape("action:N", scale=alt.Scale(domain=["promote", "rollback"], range=["circle", "triangle-down"])),
        tooltip=["at:T", "action:N", "from:N", "version:N"],
    )
    return _spec((step + marks).properties(title=f"{alias} over time", width=560, height=max(120, 24 * len(order))))


def _drift_chart(drift: Mapping[str, Any]) -> dict[str, Any]:
    import altair as alt

    rows = [
        {"feature": name, "psi": _number(f.get("psi")), "flagged": "flagged" if f.get("flagged") else "not flagged"}
        for name, f in sorted(drift.get("features", {}).items()) if isinstance(f, dict)
    ]
    chart = alt.Chart(_data(rows)).mark_bar().encode(
        x=alt.X("psi:Q", title="population stability index (PSI)"),
        y=alt.Y("feature:N", sort="-x", title=None),
        color=alt.Color("flagged:N", scale=alt.Scale(domain=["flagged", "not flagged"], range=["#cf222e", "#8c959f"]),
                        legend=alt.Legend(title=None, orient="bottom")),
        tooltip=["feature:N", alt.Tooltip("psi:Q", format=".4f"), "flagged:N"],
    ).properties(title="feature drift (PSI)", width=360, height=max(120, 22 * len(rows)))
    return _spec(chart)


def _spec(chart: Any) -> dict[str, Any]:
    spec: dict[str, Any] = chart.to_dict()  # validated against the Vega-Lite schema
    return spec


# ---- the page ---------------------------------------------------------------------------------------


@cache
def vega_javascript() -> str:
    """Vega, Vega-Lite and Vega-Embed as one script (defines ``vegaEmbed``), from ``vl-convert-python``.

    vl-convert bundles it on each call (seconds), but the bytes depend only on its version and the
    Vega-Lite version, so the bundle is kept in the user's cache folder (``ONCOLOGY_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/oncology``); a cache that cannot be written only costs the time.
    """
    from importlib import metadata

    import altair as alt
    import vl_convert as vlc

    vl_version = "v" + "_".join(alt.VEGALITE_VERSION.split(".")[:2])
    folder = Path(os.environ.get("ONCOLOGY_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "oncology")
    path = folder / f"vega-embed-vlconvert{metadata.version('vl-convert-python')}-{vl_version}.js"
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        pass
    script: str = vlc.javascript_bundle(None, vl_version=vl_version)  # type: ignore[arg-type]  # None: the default snippet
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(script, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        log.info("cannot cache the Vega bundle in %s (%s); it is rebuilt next time", folder, exc.strerror)
    return script


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1f2328;background:#f6f8fa}
header{background:#0d1117;color:#f0f6fc;padding:18px 28px}
header h1{margin:0 0 4px;font-size:22px}
header .meta{color:#9198a1;font-size:13px}
main{padding:8px 28px 40px;max-width:1500px}
pre{white-space:pre-wrap;font-size:12px}
section{background:#fff;border:1px solid #d1d9e0;border-radius:8px;padding:14px 18px;margin:16px 0}
h2{font-size:17px;margin:0 0 10px}
.charts{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
.charts>.chart{flex:0 0 auto;min-height:40px}
.note{color:#59636e;font-style:italic}
.badge{display:inline-block;padding:2px 10px;border-radius:12px;font-weight:600;background:#ddf4ff;color:#0969da}
.badge.bad{background:#ffebe9;color:#cf222e}.badge.good{background:#dafbe1;color:#1a7f37}
table{border-collapse:collapse;font-size:13px;margin-top:8px}
.scroll{overflow-x:auto}
th,td{border-bottom:1px solid #d1d9e0;padding:4px 10px;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}
tr.champion td{background:#ddf4ff;font-weight:600}
.flagged{color:#cf222e;font-weight:600}
#card-text h1{font-size:17px}#card-text h2{font-size:15px;margin:16px 0 6px}#card-text h3{font-size:14px}
#card-text td,#card-text th{white-space:normal}
"""

_SCRIPT = """
(() => {
  const charts = [...document.querySelectorAll("[data-chart]")];
  if (typeof vegaEmbed !== "function") {  // the inlined bundle is missing or broken: say so, draw nothing
    charts.forEach((el) => { el.dataset.rendered = "failed"; });
    console.error("the Vega bundle did not load: no charts");
    return;
  }
  const specs = JSON.parse(document.getElementById("chart-specs").textContent);
  for (const el of charts) {
    const name = el.dataset.chart;
    vegaEmbed(el, specs[name], {renderer: "svg", actions: false})
      .then(() => { el.dataset.rendered = "true"; })
      .catch((error) => { el.dataset.rendered = "failed"; console.error("chart " + name + ": " + error); });
  }
})();
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _f(value: Any, digits: int = 4) -> str:
    number = _number(value)
    return "–" if number is None else f"{number:.{digits}f}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _chart_div(name: str) -> str:
    return f'<div class="chart" id="chart-{_e(name)}" data-chart="{_e(name)}"></div>'


def render(data: ReportData, generated_at: datetime) -> str:
    """The page (HTML, self-contained) for ``data``."""
    specs: dict[str, dict[str, Any]] = {}
    versions = [i.version for i in data.versions]
    readable = [i for i in data.versions if i.problem is None]
    champion = data.champion
    parts: list[str] = []

    champ_info = next((i for i in data.versions if i.version == champion), None)
    if champion is None:
        parts.append('<section id="champion"><h2>Champion</h2><p class="note">No champion yet: no version has been promoted.</p></section>')
    else:
        test = champ_info.kpis.get("test", {}) if champ_info else {}
        headline = " · ".join(f"{label.split(' (')[0]} {_f(test.get(key))}" for key, label in KPI_CHARTS)
        parts.append(
            f'<section id="champion"><h2>Champion</h2><p><span class="badge" id="champion-version">{_e(champion)}</span> '
            f'{_e(champ_info.family if champ_info and champ_info.family else "")} · held-out test: {_e(headline)}</p></section>'
        )

    kpi_divs = []
    for key, label in KPI_CHARTS:
        specs[f"kpi-{key}"] = _kpi_chart(readable, key, label)
        kpi_divs.append(_chart_div(f"kpi-{key}"))
    parts.append(
        '<section id="kpis"><h2>KPIs across versions</h2><p class="note">Held-out test value (bar: its 95% '
        'confidence interval, for versions whose trainer computed one) beside the cross-validation mean '
        f'(bar: ± one standard deviation).</p><div class="charts">{"".join(kpi_divs)}</div></section>'
    )

    if data.coverage:
        specs["coverage"] = _coverage_chart(versions, data.coverage)
        parts.append(f'<section id="coverage"><h2>Test coverage</h2><div class="charts">{_chart_div("coverage")}</div></section>')
    else:
        parts.append('<section id="coverage"><h2>Test coverage</h2><p class="note">No coverage report in the store yet '
                     f'({_e(COVERAGE_PREFIX)}).</p></section>')

    if data.curves is not None:
        for name, build in (("confusion", _confusion_chart), ("roc", _roc_chart), ("calibration", _calibration_chart)):
            specs[name] = build(data.curves)
        curves_html = f'<div class="charts">{_chart_div("confusion")}{_chart_div("roc")}{_chart_div("calibration")}</div>'
    else:
        cm = (champ_info.kpis.get("test", {}).get("confusion_matrix") if champ_info else None) or {}
        table = ""
        if all(isinstance(cm.get(k), int) for k in ("tn", "fp", "fn", "tp")):
            table = (f'<table id="confusion-table"><tr><th>actual \\ predicted</th><th>benign</th><th>malignant</th></tr>'
                     f'<tr><td>benign</td><td>{cm["tn"]}</td><td>{cm["fp"]}</td></tr>'
                     f'<tr><td>malignant</td><td>{cm["fn"]}</td><td>{cm["tp"]}</td></tr></table>'
                     '<p class="note">Confusion matrix from kpis.json.</p>')
        curves_html = f'<p class="note" id="curves-note">{_e(data.curves_note)}</p>{table}'
    parts.append(f'<section id="evaluation"><h2>Champion on the held-out test set</h2>{curves_html}</section>')

    parts.append(_history_section(data, specs))
    parts.append(_drift_section(data, specs))
    parts.append(_outcomes_section(data, specs))
    parts.append(_card_section(data))
    parts.append(_versions_section(data))

    specs_json = json.dumps(specs, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    when = generated_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    script = vega_javascript().replace("</script", "<\\/script")  # the page's parser must not end the script early
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>oncology dashboard</title><style>{_CSS}</style>"
        f"<script>{script}</script></head><body>"
        f'<header><h1>oncology: model dashboard</h1><div class="meta">store {_e(data.store)} · {_count(len(versions), "version")} · '
        f'champion {_e(champion or "none")} · generated {_e(when)}</div></header><main>{"".join(parts)}</main>'
        f'<script type="application/json" id="chart-specs">{specs_json}</script><script>{_SCRIPT}</script></body></html>\n'
    )


def _history_section(data: ReportData, specs: dict[str, dict[str, Any]]) -> str:
    moves = [m for m in data.history if m.get("alias") == CHAMPION]
    if not moves:
        return '<section id="history"><h2>Promotions and rollbacks</h2><p class="note">No promotion yet.</p></section>'
    specs["timeline"] = _timeline_chart(data.history)
    rows = "".join(
        f'<tr class="{_e(m["action"])}"><td>{_e(m["at"])}</td><td>{_e(m["action"])}</td>'
        f'<td>{_e(m.get("from") or "–")}</td><td>{_e(m["to"])}</td></tr>'
        for m in reversed(moves)
    )
    return (
        f'<section id="history"><h2>Promotions and rollbacks</h2><div class="charts">{_chart_div("timeline")}'
        f'<table id="history-table"><tr><th>at (UTC)</th><th>action</th><th>from</th><th>to</th></tr>{rows}</table>'
        "</div></section>"
    )


def _drift_section(data: ReportData, specs: dict[str, dict[str, Any]]) -> str:
    drift = data.drift
    if drift is None:
        return '<section id="drift"><h2>Drift</h2><p class="note" id="drift-none">No drift run yet.</p></section>'
    drifted = bool(drift.get("drift"))
    window = drift.get("window", {}) if isinstance(drift.get("window"), dict) else {}
    estimated = drift.get("estimated", {}) if isinstance(drift.get("estimated"), dict) else {}
    features = drift.get("features", {}) if isinstance(drift.get("features"), dict) else {}
    if features:
        specs["drift"] = _drift_chart(drift)
    rows = "".join(
        f'<tr class="{"flagged" if f.get("flagged") else ""}"><td>{_e(name)}</td><td>{_f(f.get("psi"))}</td>'
        f'<td>{_f(f.get("chi2"), 2)}</td><td>{_e(p_value_text(f.get("p_value")))}</td>'
        f'<td>{"yes" if f.get("flagged") else "no"}</td></tr>'
        for name, f in sorted(features.items()) if isinstance(f, dict)
    )
    mix = drift.get("prediction_mix")
    mix_text = "–"
    if isinstance(mix, dict):
        observed = mix["observed"] if isinstance(mix.get("observed"), dict) else {}
        reference = mix["reference"] if isinstance(mix.get("reference"), dict) else {}
        psi = mix_psi(mix)
        mix_text = (
            f'malignant share {_f(observed.get("malignant"), 3)} against {_f(reference.get("malignant"), 3)} in training '
            f'(PSI {_f(psi)}, p-value {_e(p_value_text(mix.get("p_value")))}): '
            f'{"flagged" if mix.get("flagged") else "not flagged"}'
        )
        rows += (
            f'<tr class="{"flagged" if mix.get("flagged") else ""}" id="drift-mix-row"><td>prediction mix</td>'
            f'<td>{_f(psi)}</td><td>–</td><td>{_e(p_value_text(mix.get("p_value")))}</td>'
            f'<td>{"yes" if mix.get("flagged") else "no"}</td></tr>'
        )
    thresholds = drift["thresholds"] if isinstance(drift.get("thresholds"), dict) else {}
    rule = f'<p class="note" id="drift-rule">Rule: {_e(thresholds["rule"])}.</p>' if thresholds.get("rule") else ""
    return (
        '<section id="drift"><h2>Drift</h2>'
        f'<p><span class="badge {"bad" if drifted else "good"}" id="drift-verdict">{"drift" if drifted else "no drift"}</span> '
        f'latest run {_e(drift.get("created_at", "?"))} ({_e(data.drift_key)}) on model {_e(drift.get("model_version", "?"))}: '
        f'{_e(drift.get("n", "?"))} predictions from {_e(window.get("since", "?"))} to {_e(window.get("until", "?"))}; '
        f'estimated accuracy {_f(estimated.get("accuracy"), 3)}, '
        f'recall {_f(estimated.get("recall"), 3)} ({_e(estimated.get("method", "?"))}); '
        f'flagged: {_e(", ".join(map(str, drift.get("flagged", []))) or "none")}</p>'
        f'<p id="drift-mix">Prediction mix: {mix_text}.</p>{rule}'
        f'<div class="charts">{_chart_div("drift") if features else ""}'
        f'<table id="drift-table"><tr><th>feature</th><th>PSI</th><th>χ²</th><th>p-value</th><th>flagged</th></tr>{rows}</table>'
        "</div></section>"
    )


#: An absolute local path (a folder of the machine that trained, say): the page shows its last part alone.
_LOCAL_PATH = re.compile(r"(?:\bfile://|(?<![\w/:.~-]))/(?:[^\s/()\[\]|`]+/)+([^\s/()\[\]|`]+)")


def card_html(markdown: str) -> str:
    """A model card's Markdown as HTML, safely: CommonMark and tables, raw HTML shown as text (never markup),
    links only of safe schemes (markdown-it's check), no images (the page loads nothing), and absolute local
    paths cut to their last part (cards written before the trainer stopped naming its own folders)."""
    from markdown_it import MarkdownIt

    parser = MarkdownIt("commonmark", {"html": False}).enable("table").disable("image")
    return str(parser.render(_LOCAL_PATH.sub(r"\1", markdown)))


def _outcomes_chart(outcomes: Mapping[str, Any]) -> dict[str, Any]:
    """Realized malignant recall and accuracy per version and chunk with their 95% intervals, and the CBPE
    estimate of accuracy beside them."""
    import altair as alt

    rows = []
    for version, r in sorted(outcomes.get("versions", {}).items()):
        for chunk in r.get("chunks", []):
            for metric in ("recall", "accuracy"):
                f = chunk.get(metric, {})
                if _number(f.get("value")) is not None:
                    rows.append({"version": version, "chunk": chunk["chunk"], "figure": f"{metric}, realized",
                                 "value": _number(f["value"]), "low": _number(f.get("low")), "high": _number(f.get("high"))})
            cbpe = chunk.get("cbpe", {}).get("accuracy")
            if isinstance(cbpe, dict):
                rows.append({"version": version, "chunk": chunk["chunk"], "figure": "accuracy, CBPE estimate",
                             "value": _number(cbpe.get("estimated")), "low": _number(cbpe.get("low")),
                             "high": _number(cbpe.get("high"))})
    base = alt.Chart(_data(rows)).encode(
        x=alt.X("chunk:N", title="chunk (prediction time)"),
        color=alt.Color("figure:N", legend=alt.Legend(title=None, orient="bottom")),
        xOffset="figure:N",
    )
    bars = base.mark_rule().encode(y=alt.Y("low:Q", title="realized (95% interval)", scale=alt.Scale(zero=False)), y2="high:Q")
    points = base.mark_point(filled=True).encode(
        y="value:Q", tooltip=["version:N", "chunk:N", "figure:N", alt.Tooltip("value:Q", format=".3f"),
                              alt.Tooltip("low:Q", format=".3f"), alt.Tooltip("high:Q", format=".3f")])
    chart = alt.layer(bars, points).properties(width=320, height=200).facet(
        column=alt.Column("version:N", title="model version"))
    return _spec(chart.properties(title="realized performance from outcomes"))


def _outcomes_section(data: ReportData, specs: dict[str, dict[str, Any]]) -> str:
    outcomes = data.outcomes
    if outcomes is None:
        return ('<section id="outcomes"><h2>Outcomes</h2><p class="note" id="outcomes-none">No outcome check yet '
                "(oncology outcomes check).</p></section>")
    versions = outcomes.get("versions", {}) if isinstance(outcomes.get("versions"), dict) else {}
    alarms = [str(a) for a in outcomes.get("alarms", [])]
    rows = []
    for version, r in sorted(versions.items()):
        by_class = r.get("coverage", {}).get("by_prediction", {})
        cover = ", ".join(f"{_e(k)} {_f(v.get('coverage'), 3)}" for k, v in sorted(by_class.items()))
        for chunk in r.get("chunks", []):
            delay = chunk.get("label_delay_days", {})
            cells = "".join(
                f"<td>{_f(chunk.get(m, {}).get('value'), 3)} [{_f(chunk.get(m, {}).get('low'), 3)}, "
                f"{_f(chunk.get(m, {}).get('high'), 3)}]</td>" for m in ("accuracy", "recall", "specificity", "roc_auc"))
            cbpe = chunk.get("cbpe", {}).get("accuracy", {}) if isinstance(chunk.get("cbpe"), dict) else {}
            rows.append(f'<tr class="{"flagged" if chunk.get("cbpe", {}).get("disagree") else ""}"><td>{_e(version)}</td>'
                        f'<td>{_e(chunk.get("chunk"))}</td><td>{_e(chunk.get("labelled"))}</td>{cells}'
                        f'<td>{_f(cbpe.get("estimated"), 3)}</td><td>{_f(delay.get("median"), 1)}</td><td>{cover}</td></tr>')
    if rows:
        specs["outcomes"] = _outcomes_chart(outcomes)
    verdict = "alarm" if alarms else ("no alarm" if outcomes.get("status") == "ok" else "nothing to check")
    return (
        '<section id="outcomes"><h2>Outcomes: realized performance</h2>'
        f'<p><span class="badge {"bad" if alarms else "good"}" id="outcomes-verdict">{_e(verdict)}</span> '
        f'check of {_e(outcomes.get("checked_at", "?"))} ({_e(data.outcomes_key)}): {_e(outcomes.get("labelled", 0))} '
        f'labelled cases; {_e(outcomes.get("orphans", {}).get("count", 0))} orphan outcome(s). '
        f'{_e("; ".join(alarms))}</p>'
        f'<div class="charts">{_chart_div("outcomes") if rows else ""}'
        '<table id="outcomes-table"><tr><th>version</th><th>chunk</th><th>labelled</th><th>accuracy</th><th>recall</th>'
        '<th>specificity</th><th>ROC AUC</th><th>accuracy, CBPE</th><th>median delay (days)</th>'
        f'<th>coverage by prediction</th></tr>{"".join(rows)}</table></div></section>'
    )


def _card_section(data: ReportData) -> str:
    """The champion's model card, rendered (`card_html`: the page runs no code from the store)."""
    if data.card is None:
        note = "No champion yet." if data.champion is None else (
            f"Version {data.champion} has no model card: it was trained before model cards existed.")
        return f'<section id="card"><h2>Model card</h2><p class="note" id="card-none">{_e(note)}</p></section>'
    return (f'<section id="card"><h2>Model card of {_e(data.champion)}</h2>'
            f'<details open><summary>card.md</summary><div class="scroll" id="card-text">{card_html(data.card)}</div>'
            "</details></section>")


def _versions_section(data: ReportData) -> str:
    by_version: dict[str, list[str]] = {}
    for alias, version in data.aliases.items():
        by_version.setdefault(version, []).append(alias)
    head = "".join(f"<th>{_e(label.split(' (')[0])}</th>" for _, label in KPI_CHARTS)
    rows = []
    for info in reversed(data.versions):
        test = info.kpis.get("test", {})
        cov = data.coverage.get(info.version, {})
        cells = "".join(f"<td>{_f(test.get(key))}</td>" for key, _ in KPI_CHARTS)
        rows.append(
            f'<tr class="{"champion" if info.version == data.champion else ""}"><td>{_e(info.version)}</td>'
            f'<td>{_e(", ".join(sorted(by_version.get(info.version, []))))}</td><td>{_e((info.created_at or "–")[:16].replace("T", " "))}</td>'
            f'<td>{_e(info.family or info.problem or "–")}</td>{cells}'
            + "".join(f"<td>{_f(cov.get(s), 1)}</td>" for s in COVERAGE_SUITES)
            + "</tr>"
        )
    cov_head = "".join(f"<th>{_e(label)}, coverage %</th>" for label in COVERAGE_SUITES.values())
    return (
        '<section id="versions"><h2>Versions</h2><div class="scroll"><table id="versions-table"><tr><th>version</th>'
        f'<th>aliases</th><th>created (UTC)</th><th>family</th>{head}{cov_head}</tr>{"".join(rows)}</table></div></section>'
    )


def build_report(store: Store, generated_at: datetime | None = None) -> str:
    """The dashboard page of ``store``, as HTML."""
    return render(collect(store), generated_at or datetime.now(UTC))


def report_key(moment: datetime) -> str:
    return f"{REPORT_PREFIX}report-{moment.astimezone(UTC).strftime(TIMESTAMP_FORMAT)}.html"


def write_report(store: Store, now: datetime | None = None) -> str:
    """Build the page and write it once to ``monitoring/report/report-<UTC time>.html``; returns the key.

    Two reports within the same second take the next free second (a written report is never replaced).
    """
    moment = (now or datetime.now(UTC)).replace(microsecond=0)
    data = collect(store)
    for _ in range(60):
        page = render(data, moment).encode("utf-8")
        key = report_key(moment)
        try:
            store.create(key, page)
        except RegistryError:
            moment += timedelta(seconds=1)
            continue
        log.info("wrote the dashboard to %s/%s (%d bytes)", store, key, len(page))
        return key
    raise ReportError(f"{store}/{REPORT_PREFIX}: no free report name within a minute of {moment:%Y-%m-%d %H:%M:%S}")
