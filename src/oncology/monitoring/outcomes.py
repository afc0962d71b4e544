"""Outcomes in the monitoring wing: bulk import, the join with the prediction log, realized performance
per model version and chunk with honest intervals, verification bias, and the sequential alarms.

The join is a query on the monitoring data plane (`oncology.monitoring.engine`): the relation ``predictions``
(compacted Parquet where a day has it, JSON Lines for the rest, each prediction once, every object checked
whole first) joined with ``outcomes`` (``monitoring/outcomes/date=*/``): an outcome joins its prediction by
request id whatever the delay between them, and is attributed to the version that answered.  A request id
that names several logged predictions (a batch request, or a client that reused an id) is ambiguous and left
out, counted.  The labelled cases come back as arrays (one per joined outcome); the per-chunk figures and
intervals are vectorised numpy over them.

Intervals (95%): Wilson for proportions (accuracy, recall, specificity, referral share), DeLong for
ROC AUC (on the logit scale), a normal interval for the Brier score.

Verification bias: outcomes mostly exist where a biopsy was done, i.e. for suspicious predictions.
When predicted-benign cases are verified much less often than predicted-malignant ones, the missed
cancers are under-represented among the labelled cases and recall read off them is too high.  The
report then says so and gives the Begg and Greenes estimate: each predicted class's disease rate among
its verified cases, weighted by how many predictions that class had (inverse-probability weighting by
the verification rate of each predicted class; valid when verification depends on the prediction
only), with a delta-method interval on the logit scale.

Realized beside estimated: each chunk's labelled cases also get the label-free CBPE estimate of the drift
check (the version's calibration, from its ``reference.json``), with the interval the estimate would have
if the probabilities were calibrated.  Realized accuracy outside it (|z| > `CALIBRATION_Z`), or a count of
malignant outcomes outside its own, is a calibration alarm: the label-free estimates of that version can
no longer be trusted.  On the labelled cases, so that verification that depends on the prediction does
not bias the comparison.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
from pydantic import TypeAdapter, ValidationError

from oncology import datasets
from oncology.datasets import DatasetVersion
from oncology.monitoring import tables
from oncology.monitoring.engine import queries, relations
from oncology.monitoring.engine.settings import EngineSettings
from oncology.monitoring.sequential import bernoulli_cusum
from oncology.monitoring.upload import default_manifest_base
from oncology.outcomes import PREFIX as OUTCOMES_PREFIX
from oncology.outcomes import Conflict, Intake, OutcomeBook, OutcomeIn, validation_problems
from oncology.settings import OutcomeSettings
from oncology_model.errors import ConflictError, OncologyError
from oncology_model.storage import Store

CHECKS_PREFIX: Final = "monitoring/outcome-checks"
#: The newest check's verdicts (replaced by each check): the service reads it for its metrics.
LATEST_CHECK: Final = f"{CHECKS_PREFIX}/latest.json"
REALIZED: Final = tables.REALIZED
REALIZED_TABLE_PREFIX: Final = tables.table_prefix(REALIZED).rstrip("/")
COLUMNS: Final = ("request_id", "outcome", "observed_at", "source")
Z: Final = 1.959963984540054
_record = TypeAdapter(OutcomeIn)
#: Records handed to the store at a time by an import.
_BATCH: Final = 1000

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


# ---- bulk import ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    row: int  # 1-based data row (the header is not a row)
    line: int  # 1-based line of the file
    field: str
    value: Any
    reason: str

    def message(self) -> str:
        shown = "" if self.value is None else f" {self.value!r}:"
        return f"row {self.row} (line {self.line}), field {self.field}:{shown} {self.reason}"


@dataclass
class Parsed:
    rows: list[tuple[int, int, OutcomeIn]] = field(default_factory=list)  # (row, line, record)
    problems: list[Problem] = field(default_factory=list)


class InvalidFile(OncologyError):
    """A file of outcomes with bad rows; nothing was written."""

    def __init__(self, name: str, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        shown = "; ".join(p.message() for p in problems[:20])
        more = f" (and {len(problems) - 20} more)" if len(problems) > 20 else ""
        rows = len({p.row for p in problems})
        super().__init__(f"{name}: {rows} bad row(s), nothing written: {shown}{more}; fix them, or pass "
                         "--skip-invalid to record the good rows and report the bad ones")


def file_format(name: str) -> Literal["csv", "jsonl"]:
    suffixes = PurePosixPath(name.removesuffix(".gz")).suffixes
    if suffixes and suffixes[-1].lower() == ".csv":
        return "csv"
    if suffixes and suffixes[-1].lower() in {".jsonl", ".ndjson", ".json"}:
        return "jsonl"
    raise OncologyError(f"{name}: cannot tell the format from the name; use .csv or .jsonl, or pass --format")


def parse_file(data: bytes, name: str, fmt: Literal["csv", "jsonl"] | None = None) -> Parsed:
    """Every row of a CSV (header ``request_id,outcome,observed_at,source``) or JSON Lines file, validated."""
    fmt = fmt or file_format(name)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise OncologyError(f"{name}: not UTF-8 text (invalid byte at offset {exc.start})") from None
    parsed = Parsed()
    for row, line, obj in (_csv_rows(text, name) if fmt == "csv" else _jsonl_rows(text, name)):
        if isinstance(obj, Problem):
            parsed.problems.append(obj)
            continue
        try:
            parsed.rows.append((row, line, _record.validate_json(json.dumps(obj))))
        except ValidationError as exc:
            parsed.problems += [Problem(row, line, f, v, r) for f, v, r in validation_problems(exc)]
    return parsed


def _csv_rows(text: str, name: str) -> Iterator[tuple[int, int, Any]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:  # an empty file: most likely a failed or truncated export, not "no outcomes"
        raise OncologyError(f"{name}: empty: not even the header {','.join(COLUMNS)}")
    header = [h.strip() for h in header]
    if sorted(header) != sorted(COLUMNS):
        _explain_header(header, name)
        extra, missing = sorted(set(header) - set(COLUMNS)), sorted(set(COLUMNS) - set(header))
        raise OncologyError(
            f"{name}: the header must name exactly {', '.join(COLUMNS)}"
            + (f"; not allowed (no patient data beyond the join's): {', '.join(extra)}" if extra else "")
            + (f"; missing: {', '.join(missing)}" if missing else ""))
    row = 0
    for cells in reader:
        line = reader.line_num
        if not any(c.strip() for c in cells):
            continue
        row += 1
        if len(cells) != len(header):
            yield row, line, Problem(row, line, "row", None, f"{len(cells)} cells where the header has {len(header)}")
            continue
        obj: dict[str, Any] = dict(zip(header, (c.strip() for c in cells)))
        if obj["outcome"] in {"2", "4"}:  # the UCI codes, as CSV writes them
            obj["outcome"] = int(obj["outcome"])
        yield row, line, obj


def _explain_header(header: list[str], name: str) -> None:
    """Refuse the two headers a spreadsheet export gives by mistake with what to do, rather than as columns
    beyond the join: another separator (';' or a tab: one cell naming them all), or the names in capitals."""
    if len(header) == 1:
        for sep, called in ((";", "semicolons"), ("\t", "tabs")):
            if sorted(h.strip() for h in header[0].split(sep)) == sorted(COLUMNS):
                raise OncologyError(f"{name}: the columns are separated by {called}; the file must be CSV with commas "
                                    f"(header {','.join(COLUMNS)})")
    if sorted(h.lower() for h in header) == sorted(COLUMNS):
        wrong = ", ".join(f"{h} -> {h.lower()}" for h in header if h != h.lower())
        raise OncologyError(f"{name}: the header's names are lower case: {wrong}")


def _jsonl_rows(text: str, name: str) -> Iterator[tuple[int, int, Any]]:
    row = 0
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        row += 1
        try:
            obj = json.loads(raw)
        except ValueError as exc:
            yield row, line, Problem(row, line, "row", None, f"not a JSON object ({exc})")
            continue
        if not isinstance(obj, dict):
            yield row, line, Problem(row, line, "row", None, "not a JSON object")
            continue
        yield row, line, obj
    if row == 0:  # as an empty CSV: most likely a failed or truncated export, not "no outcomes"
        raise OncologyError(f"{name}: empty: no JSON object (one outcome a line: {', '.join(COLUMNS)})")


@dataclass
class Imported:
    created: int = 0
    unchanged: int = 0
    conflicts: list[tuple[int, Conflict]] = field(default_factory=list)  # (row, conflict)
    skipped: list[Problem] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)  # request ids with no logged prediction (yet)
    files: list[str] = field(default_factory=list)


def import_outcomes(store: Store, parsed: Parsed, name: str, skip_invalid: bool = False) -> Imported:
    """Record a parsed file's outcomes; nothing at all if a row is bad, unless ``skip_invalid``."""
    if parsed.problems and not skip_invalid:
        raise InvalidFile(name, parsed.problems)
    book = OutcomeBook(store)
    done = Imported(skipped=list(parsed.problems))
    for start in range(0, len(parsed.rows), _BATCH):
        batch = parsed.rows[start:start + _BATCH]
        intake: Intake = book.record([record for _, _, record in batch])
        done.created += len(intake.created)
        done.unchanged += len(intake.unchanged)
        done.conflicts += [(batch[c.index][0], c) for c in intake.conflicts]
        done.files += intake.files
    done.orphans = orphans(store, sorted({record.request_id for _, _, record in parsed.rows}))
    return done


def orphans(store: Store, request_ids: Sequence[str], engine: EngineSettings | None = None) -> list[str]:
    """The request ids that name no logged prediction (yet)."""
    if not request_ids:
        return []
    view = relations.predictions(store, settings=engine)
    try:
        con = view.con
        con.execute("CREATE TEMP TABLE wanted AS SELECT unnest(?::VARCHAR[]) AS request_id", [list(request_ids)])
        rows = con.execute("SELECT w.request_id FROM wanted w ANTI JOIN predictions p USING (request_id) ORDER BY 1").fetchall()
    finally:
        view.con.close()
    return [r[0] for r in rows]


# ---- the join --------------------------------------------------------------------------------------


@dataclass
class Joined:
    """Every logged prediction with its outcome, if any; as arrays."""

    period: str
    # labelled cases, sorted by version then prediction time
    request_id: npt.NDArray[Any]
    version: npt.NDArray[Any]
    chunk_period: npt.NDArray[Any]
    ts: FloatArray  # epoch seconds
    probability: FloatArray
    predicted_malignant: BoolArray
    referred: BoolArray
    malignant: BoolArray
    delay_days: FloatArray
    received: FloatArray  # epoch seconds
    # counts of every prediction (labelled or not) by version, period, prediction and decision
    coverage: list[dict[str, Any]]
    orphans: int = 0
    orphan_examples: list[str] = field(default_factory=list)
    ambiguous_outcomes: int = 0
    #: prediction-log objects left out because they cannot be read whole (named by the engine)
    unreadable_files: list[str] = field(default_factory=list)

    @property
    def labelled(self) -> int:
        return int(self.probability.size)


def join(store: Store, period: str = "month", engine: EngineSettings | None = None) -> Joined:
    """The prediction log joined with the outcomes, by request id, whatever the delay: queries on the monitoring
    data plane's relations (`engine.relations`: compacted Parquet where a day has it, JSON Lines for the rest,
    each prediction once).  The join, the coverage counts per version and period, the orphans and the ambiguous
    request ids are DuckDB queries; the labelled cases come back as arrays (one row per joined outcome)."""
    if period not in {"day", "week", "month", "quarter", "year"}:
        raise ValueError(f"unknown period {period!r}")
    view = relations.with_outcomes(store, relations.predictions(store, settings=engine))
    con = view.con
    bucket = f"strftime(date_trunc('{period}', ts AT TIME ZONE 'UTC'), '%Y-%m-%d')"
    try:
        con.execute(f"CREATE TEMP TABLE matched AS {queries.outcome_join()}")
        labelled = con.execute(f"""
            SELECT request_id, model_version AS version, {bucket} AS period, epoch(ts) AS ts, probability,
                   prediction = 'malignant' AS predicted_malignant, decision = 'refer' AS referred,
                   outcome = 'malignant' AS malignant, (epoch(observed_at) - epoch(ts)) / 86400.0 AS delay_days,
                   epoch(received_at) AS received
            FROM matched WHERE n = 1 ORDER BY version, ts, request_id""").fetchnumpy()
        # every prediction, labelled or not, by version, period, predicted class and decision; the labelled ones
        # of each cell from the (small) matched table
        coverage = con.execute(f"""
            WITH every AS (
                SELECT model_version AS version, {bucket} AS period, prediction, decision, count(*) AS predictions
                FROM predictions WHERE arm <> '{queries.SHADOW_ARM}' GROUP BY ALL),
            known AS (
                SELECT model_version AS version, {bucket} AS period, prediction, decision, count(*) AS labelled
                FROM matched WHERE n = 1 GROUP BY ALL)
            SELECT version, period, prediction, decision, predictions, coalesce(labelled, 0) AS labelled
            FROM every LEFT JOIN known USING (version, period, prediction, decision) ORDER BY ALL""").fetchall()
        (orphan_count,) = con.execute(
            "SELECT count(*) FROM outcomes ANTI JOIN matched USING (request_id)").fetchone() or (0,)
        examples = [r[0] for r in con.execute(
            "SELECT request_id FROM outcomes ANTI JOIN matched USING (request_id) "
            "ORDER BY received_at DESC, request_id LIMIT 20").fetchall()]
        (ambiguous,) = con.execute("SELECT count(DISTINCT request_id) FROM matched WHERE n > 1").fetchone() or (0,)
    finally:
        con.close()

    def arr(name: str, dtype: Any) -> Any:
        return np.asarray(labelled[name], dtype=dtype)

    return Joined(
        period=period, request_id=arr("request_id", object), version=arr("version", object), chunk_period=arr("period", object), ts=arr("ts", np.float64),
        probability=arr("probability", np.float64), predicted_malignant=arr("predicted_malignant", bool),
        referred=arr("referred", bool), malignant=arr("malignant", bool), delay_days=arr("delay_days", np.float64),
        received=arr("received", np.float64),
        coverage=[dict(zip(("version", "period", "prediction", "decision", "predictions", "labelled"), r)) for r in coverage],
        orphans=int(orphan_count), orphan_examples=examples, ambiguous_outcomes=int(ambiguous),
        unreadable_files=sorted(view.skipped),
    )


# ---- intervals ---------------------------------------------------------------------------------------


def wilson(k: int, n: int, z: float = Z) -> dict[str, Any]:
    """A proportion with its Wilson score interval."""
    if n == 0:
        return {"value": None, "low": None, "high": None, "n": 0}
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return {"value": p, "low": max(0.0, centre - half), "high": min(1.0, centre + half), "n": n}


def delong_auc(positives: FloatArray, negatives: FloatArray, z: float = Z) -> dict[str, Any]:
    """ROC AUC with DeLong's variance, its interval on the logit scale (inside [0, 1] near the edges)."""
    m, n = positives.size, negatives.size
    if m < 2 or n < 2:
        return {"value": None, "low": None, "high": None, "n": int(m + n)}
    neg, pos = np.sort(negatives), np.sort(positives)
    below = np.searchsorted(neg, positives, "left")
    ties = np.searchsorted(neg, positives, "right") - below
    v10 = (below + 0.5 * ties) / n  # each positive: the share of negatives it outranks
    above = m - np.searchsorted(pos, negatives, "right")
    ties01 = np.searchsorted(pos, negatives, "right") - np.searchsorted(pos, negatives, "left")
    v01 = (above + 0.5 * ties01) / m  # each negative: the share of positives that outrank it
    auc = float(v10.mean())
    variance = float(v10.var(ddof=1) / m + v01.var(ddof=1) / n)
    if auc in (0.0, 1.0) or variance <= 0:
        # a perfect (or perfectly wrong) separation: DeLong's variance is 0; the rule of three on the worse class
        edge = 3.0 / min(m, n)
        low, high = (1.0 - edge, 1.0) if auc >= 0.5 else (0.0, edge)
        return {"value": auc, "low": max(0.0, low), "high": min(1.0, high), "n": int(m + n)}
    logit, se = math.log(auc / (1 - auc)), math.sqrt(variance) / (auc * (1 - auc))
    return {"value": auc, "low": 1 / (1 + math.exp(-(logit - z * se))), "high": 1 / (1 + math.exp(-(logit + z * se))),
            "n": int(m + n)}


def mean_interval(values: FloatArray, z: float = Z) -> dict[str, Any]:
    n = values.size
    if n < 2:
        return {"value": float(values.mean()) if n else None, "low": None, "high": None, "n": int(n)}
    mean, se = float(values.mean()), float(values.std(ddof=1) / math.sqrt(n))
    return {"value": mean, "low": max(0.0, mean - z * se), "high": min(1.0, mean + z * se), "n": int(n)}


# ---- realized performance --------------------------------------------------------------------------


def chunk_metrics(probability: FloatArray, predicted: BoolArray, referred: BoolArray, malignant: BoolArray,
                  delay_days: FloatArray, min_malignant: int) -> dict[str, Any]:
    """Realized figures of one chunk of labelled cases, each with its 95% interval."""
    n = int(probability.size)
    positives = int(malignant.sum())
    tp = int((predicted & malignant).sum())
    tn = int((~predicted & ~malignant).sum())
    out: dict[str, Any] = {
        "labelled": n, "malignant": positives, "benign": n - positives,
        "accuracy": wilson(tp + tn, n),
        "specificity": wilson(tn, n - positives),
        "roc_auc": delong_auc(probability[malignant], probability[~malignant]),
        "brier": mean_interval((probability - malignant) ** 2),
        "referral_share": wilson(int(referred.sum()), n),
        "label_delay_days": {
            "median": float(np.median(delay_days)) if n else None,
            "p90": float(np.quantile(delay_days, 0.9)) if n else None,
            "negative": int((delay_days < 0).sum()),  # observed before the prediction: a data problem upstream
        },
    }
    if positives >= min_malignant:
        out["recall"] = wilson(tp, positives)
    else:
        out["recall"] = {"value": None, "low": None, "high": None, "n": positives,
                         "note": f"not reported: {positives} malignant outcome(s), fewer than {min_malignant}"}
    return out


def _groups(keys: npt.NDArray[Any]) -> Iterator[tuple[Any, slice]]:
    """Runs of equal keys of a sorted array, as slices."""
    if keys.size == 0:
        return
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    ends = np.r_[starts[1:], keys.size]
    for s, e in zip(starts, ends):
        yield keys[s], slice(int(s), int(e))


def verification(predicted_all: int, verified: int, malignant_verified: int, benign_predicted_all: int,
                 benign_verified: int, malignant_among_benign_verified: int, ratio: float,
                 z: float = Z) -> dict[str, Any]:
    """Coverage by predicted class, whether it biases the naive figures, and the Begg-Greenes correction.

    ``predicted_all``/``verified``/``malignant_verified``: predicted-malignant cases, how many have an
    outcome, how many of those are malignant; the ``benign`` ones likewise for predicted-benign cases.
    """
    n_pos, n_neg = predicted_all, benign_predicted_all
    v_pos = verified / n_pos if n_pos else None
    v_neg = benign_verified / n_neg if n_neg else None
    out: dict[str, Any] = {
        "coverage_predicted_malignant": v_pos, "coverage_predicted_benign": v_neg,
        "naive_recall": wilson(malignant_verified, malignant_verified + malignant_among_benign_verified),
        "naive_specificity": wilson(benign_verified - malignant_among_benign_verified,
                                    benign_verified - malignant_among_benign_verified + verified - malignant_verified),
    }
    biased = v_pos is not None and v_neg is not None and v_pos > 0 and v_neg < ratio * v_pos
    out["biased"] = biased
    if biased:
        out["note"] = (f"predicted-benign cases are verified far less often ({v_neg:.1%}) than predicted-malignant ones "
                       f"({v_pos:.1%}): recall cannot be read off the labelled cases as they are (missed cancers are "
                       "under-represented among them); the corrected estimate weights each predicted class by its "
                       "verification rate (Begg and Greenes)")
    if not (n_pos and n_neg and verified and benign_verified):
        return out
    # Begg-Greenes: P(T+) from every prediction, P(D+|T+) and P(D+|T-) from the verified cases of each class
    pi = n_pos / (n_pos + n_neg)
    p1 = _rate(malignant_verified, verified)
    p0 = _rate(malignant_among_benign_verified, benign_verified)
    n_all = n_pos + n_neg
    var_pi = 1 / (n_all * pi * (1 - pi))
    sens_logit = math.log(pi * p1) - math.log((1 - pi) * p0)
    sens_var = var_pi + (1 - p1) / (verified * p1) + (1 - p0) / (benign_verified * p0)
    spec_logit = math.log((1 - pi) * (1 - p0)) - math.log(pi * (1 - p1))
    spec_var = var_pi + p0 / (benign_verified * (1 - p0)) + p1 / (verified * (1 - p1))

    def back(logit: float, var: float) -> dict[str, Any]:
        se = math.sqrt(var)
        return {"value": _expit(logit), "low": _expit(logit - z * se), "high": _expit(logit + z * se)}

    out["corrected_recall"] = back(sens_logit, sens_var)
    out["corrected_specificity"] = back(spec_logit, spec_var)
    return out


def _expit(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _rate(k: int, n: int) -> float:
    """k/n; half a case on each side when that is 0 or 1 (a class with no disease among its verified cases still
    has a finite log and variance)."""
    return k / n if 0 < k < n else (k + 0.5) / (n + 1)


#: |z| beyond which realized and CBPE-estimated figures of a chunk disagree (two-sided p ~ 0.001 per test).
CALIBRATION_Z: Final = 3.29


def calibrations(store: Store, versions: Sequence[str]) -> dict[str, FloatArray | str]:
    """Each version's calibration curve (per probability bin, with the bins' edges appended), from its
    ``reference.json`` in the store's registry; or why there is none."""
    from oncology.monitoring import drift
    from oncology_model.bundle import REFERENCE
    from oncology_model.registry import ModelRegistry

    registry = ModelRegistry(store)
    out: dict[str, FloatArray | str] = {}
    for version in versions:
        try:
            data = registry.load(version).files.get(REFERENCE)
        except OncologyError as exc:
            out[version] = f"model version {version} cannot be read from {store}: {exc}"
            continue
        if data is None:
            out[version] = f"model version {version} has no {REFERENCE} (trained before drift references were kept)"
            continue
        reference = drift.Reference.parse(json.loads(data), f"{store}/models/{version}/{REFERENCE}")
        edges = np.asarray(reference.probability.edges, dtype=np.float64)
        out[version] = np.concatenate([drift.calibration(reference), edges])
    return out


def cbpe_beside(probability: FloatArray, predicted: BoolArray, malignant: BoolArray, curve: FloatArray) -> dict[str, Any]:
    """The CBPE estimate of a chunk's accuracy, malignant count and recall beside the realized figures, with the
    estimate's 95% interval under calibration and the z of the realized figure against it."""
    bins = (curve.size - 1) // 2
    calibrated, edges = curve[:bins], curve[bins:]
    c = calibrated[np.clip(np.searchsorted(edges, probability, side="right") - 1, 0, bins - 1)]
    n = int(probability.size)
    right = np.where(predicted, c, 1.0 - c)  # the chance each answer is right, if calibrated
    out: dict[str, Any] = {}
    for name, estimated, realized_, variance in (
        ("accuracy", float(right.sum()), float((predicted == malignant).sum()), float((right * (1 - right)).sum())),
        ("malignant", float(c.sum()), float(malignant.sum()), float((c * (1 - c)).sum())),
    ):
        se = math.sqrt(variance)
        z = (realized_ - estimated) / se if se > 0 else 0.0
        scale = n if name == "accuracy" else 1
        out[name] = {"estimated": estimated / scale, "low": (estimated - Z * se) / scale,
                     "high": (estimated + Z * se) / scale, "realized": realized_ / scale, "z": z}
    out["recall"] = {"estimated": float(c[predicted].sum() / c.sum()) if c.sum() > 0 else None,
                     "realized": float((predicted & malignant).sum() / malignant.sum()) if malignant.any() else None}
    out["disagree"] = any(abs(out[k]["z"]) > CALIBRATION_Z for k in ("accuracy", "malignant"))
    return out


def realized(joined: Joined, settings: OutcomeSettings, store: Store | None = None) -> dict[str, Any]:
    """Per version: chunks with their realized figures (and, with the registry's ``store``, the CBPE estimate
    beside them), coverage, verification bias and the alarms."""
    versions: dict[str, Any] = {}
    coverage_by_version: dict[str, list[dict[str, Any]]] = {}
    for row in joined.coverage:
        coverage_by_version.setdefault(row["version"], []).append(row)
    curves = calibrations(store, sorted(coverage_by_version)) if store is not None else {}
    for version, rows in coverage_by_version.items():
        versions[version] = _version_report(joined, version, rows, settings, curves.get(version))
    return versions


def _version_report(joined: Joined, version: str, coverage: list[dict[str, Any]], settings: OutcomeSettings,
                    curve: FloatArray | str | None = None) -> dict[str, Any]:
    mask = joined.version == version
    idx = np.flatnonzero(mask)
    probability, predicted = joined.probability[idx], joined.predicted_malignant[idx]
    referred, malignant, delay = joined.referred[idx], joined.malignant[idx], joined.delay_days[idx]
    chunks = []
    size = settings.outcomes_chunk_size
    keys = np.arange(idx.size) // size if size else joined.chunk_period[idx]

    def label(key: Any) -> str:
        return f"cases {key * size + 1}-{min((key + 1) * size, idx.size)}" if size else str(key)

    for key, part in _groups(keys):
        figures = chunk_metrics(probability[part], predicted[part], referred[part], malignant[part], delay[part],
                                settings.outcomes_min_malignant)
        if isinstance(curve, np.ndarray):
            figures["cbpe"] = cbpe_beside(probability[part], predicted[part], malignant[part], curve)
        period_start, period_end = joined.ts[idx][part].min(), joined.ts[idx][part].max()
        chunks.append({"chunk": label(key), "first_prediction": _iso(period_start), "last_prediction": _iso(period_end),
                       **figures})
    by_class: dict[str, dict[str, int]] = {}
    by_decision: dict[str, dict[str, int]] = {}
    by_period: dict[str, dict[str, int]] = {}
    for row in coverage:
        for table, key in ((by_class, row["prediction"]), (by_decision, row["decision"]), (by_period, row["period"])):
            entry = table.setdefault(key, {"predictions": 0, "labelled": 0})
            entry["predictions"] += int(row["predictions"])
            entry["labelled"] += int(row["labelled"])
    for table in (by_class, by_decision, by_period):
        for entry in table.values():
            entry["coverage"] = entry["labelled"] / entry["predictions"] if entry["predictions"] else None  # type: ignore[assignment]
    pos, neg = by_class.get("malignant", {}), by_class.get("benign", {})
    bias = verification(
        pos.get("predictions", 0), int(predicted.sum()), int((predicted & malignant).sum()),
        neg.get("predictions", 0), int((~predicted).sum()), int((~predicted & malignant).sum()),
        settings.outcomes_verification_ratio,
    )
    order = np.lexsort((joined.ts[idx], joined.received[idx]))  # the order the outcomes became known
    m_sorted, pred_sorted = malignant[order], predicted[order]
    recall_cusum = bernoulli_cusum(~pred_sorted[m_sorted], 1 - settings.outcomes_recall_in_control,
                                   1 - settings.outcomes_recall_alarm, settings.outcomes_cusum_h)
    spec_cusum = bernoulli_cusum(pred_sorted[~m_sorted], 1 - settings.outcomes_specificity_in_control,
                                 1 - settings.outcomes_specificity_alarm, settings.outcomes_cusum_h)
    return {
        "predictions": sum(e["predictions"] for e in by_class.values()),
        "labelled": int(idx.size),
        "coverage": {"by_prediction": by_class, "by_decision": by_decision, "by_period": by_period},
        "verification": bias,
        "chunking": f"every {settings.outcomes_chunk_size} labelled cases" if settings.outcomes_chunk_size
        else f"calendar {joined.period} of the prediction",
        "chunks": chunks,
        "alarms": {"recall": recall_cusum.as_dict(), "specificity": spec_cusum.as_dict(),
                   "calibration": _calibration_alarm(chunks, curve)},
    }


def _calibration_alarm(chunks: list[dict[str, Any]], curve: FloatArray | str | None) -> dict[str, Any]:
    if not isinstance(curve, np.ndarray):
        return {"alarm": False, "alarm_at": None, "checked": False, "note": curve or "no registry to read from",
                "statistic": None, "h": CALIBRATION_Z}
    off = [c for c in chunks if c["cbpe"]["disagree"]]
    worst = max((abs(c["cbpe"][k]["z"]) for c in chunks for k in ("accuracy", "malignant")), default=0.0)
    return {"alarm": bool(off), "alarm_at": off[0]["chunk"] if off else None, "checked": True,
            "chunks": [c["chunk"] for c in off], "statistic": round(worst, 3), "h": CALIBRATION_Z}


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(float(epoch), UTC).isoformat(timespec="seconds")


# ---- the check -------------------------------------------------------------------------------------


@dataclass
class Check:
    report: dict[str, Any]
    key: str | None  # where the report was written
    table_key: str | None

    @property
    def status(self) -> str:
        return str(self.report["status"])

    @property
    def exit_code(self) -> int:
        return {"ok": 0, "alarm": 1, "nothing": 2}[self.status]


def check(store: Store, settings: OutcomeSettings, now: datetime | None = None, write: bool = True) -> Check:
    """Join, measure, test; write the report (and the flat table) once into the store."""
    now = now or datetime.now(UTC)
    joined = join(store, settings.outcomes_period)
    versions = realized(joined, settings, store)
    alarms = [f"{v}: {name} (CUSUM reached {a['h']} at labelled case {a['alarm_at']})" if name != "calibration" else
              f"{v}: calibration (realized and CBPE-estimated figures disagree, |z| up to {a['statistic']}, in "
              f"{', '.join(a['chunks'])}: the label-free estimates of this version cannot be trusted)"
              for v, r in versions.items() for name, a in r["alarms"].items() if a["alarm"]]
    status = "nothing" if joined.labelled == 0 else ("alarm" if alarms else "ok")
    report = {
        "checked_at": now.isoformat(timespec="seconds"),
        "store": str(store),
        "status": status,
        "alarms": alarms,
        "labelled": joined.labelled,
        "orphans": {"count": joined.orphans, "examples": joined.orphan_examples,
                    "note": "outcomes whose request id names no logged prediction (yet): they join when it appears"},
        "ambiguous_outcomes": joined.ambiguous_outcomes,
        "unreadable_files": joined.unreadable_files,  # log objects cut short, skipped (ONCOLOGY_ON_CORRUPT=skip)
        "settings": settings.model_dump(exclude={"store"}),
        "versions": versions,
    }
    if not write:
        return Check(report, None, None)
    content = json.dumps(report, indent=2, sort_keys=True, default=str).encode()
    stamp = f"{now:%Y%m%dT%H%M%SZ}-{hashlib.sha256(content).hexdigest()[:8]}"
    key = f"{CHECKS_PREFIX}/date={now:%Y-%m-%d}/check-{stamp}.json"
    store.create(key, content)
    table_key = f"{REALIZED_TABLE_PREFIX}/date={now:%Y-%m-%d}/realized-{stamp}.csv"
    store.create(table_key, realized_table(report))
    manifest = tables.quicksight_manifest(REALIZED, default_manifest_base(store))  # file://... for a folder
    # the table's QuickSight manifest, once: where it names another base (`--manifest-base` of `oncology monitoring
    # upload` or `promotions`), it is left so (ConflictError: it holds other bytes)
    with contextlib.suppress(ConflictError):
        store.create(tables.manifest_key(REALIZED), manifest)
    store.write(LATEST_CHECK, json.dumps(latest_summary(report, key), sort_keys=True).encode())
    return Check(report, key, table_key)


def latest_summary(report: dict[str, Any], key: str) -> dict[str, Any]:
    """What the service exports as metrics (``oncology_outcome_alarm``): the newest check's verdicts, and where
    its report is.  The one object a check replaces; the reports themselves are written once."""
    return {
        "checked_at": report["checked_at"], "report": key, "status": report["status"],
        "alarms": [{"version": version, "metric": metric, "alarm": a["alarm"], "statistic": a["statistic"], "h": a["h"]}
                   for version, r in sorted(report["versions"].items()) for metric, a in sorted(r["alarms"].items())],
    }


TABLE_COLUMNS: Final = ("checked_at", "version", "chunking", "chunk", "first_prediction", "last_prediction", "metric",
                        "value", "low", "high", "n")
_TABLE_METRICS: Final = ("accuracy", "recall", "specificity", "roc_auc", "brier", "referral_share")


def realized_table(report: dict[str, Any]) -> bytes:
    """The report's realized figures as one flat CSV: a row per (version, chunk, metric)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(TABLE_COLUMNS)
    checked = datetime.fromisoformat(report["checked_at"]).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    for version, r in sorted(report["versions"].items()):
        for chunk in r["chunks"]:
            for metric in _TABLE_METRICS:
                f = chunk[metric]
                writer.writerow([checked, version, r["chunking"], chunk["chunk"], chunk["first_prediction"],
                                 chunk["last_prediction"], metric, *(_cell(f.get(k)) for k in ("value", "low", "high")),
                                 f.get("n")])
    return out.getvalue().encode()


def _cell(value: Any) -> str:
    return "" if value is None else f"{value:.6g}"


# ---- retraining: the joined cases as a new dataset version ------------------------------------------

#: Sample ids of outcome rows start here, far above the UCI file's (which are below 14 million).
OUTCOME_ID_BASE: Final = 900_000_000


def labelled_rows(store: Store, engine: EngineSettings | None = None) -> list[tuple[str, str, tuple[int, ...], bool]]:
    """Every labelled, unambiguous case: (request id, version, the nine logged features, malignant); the outcome
    join on the data plane (`engine.queries.outcome_join`), whose features are whole scores 1-10 (the log's
    record rule)."""
    from oncology_model.datamodel import FEATURES

    view = relations.with_outcomes(store, relations.predictions(store, settings=engine))
    try:
        rows = view.con.execute(
            f"SELECT request_id, model_version, {', '.join(FEATURES)}, outcome = 'malignant' "
            f"FROM ({queries.outcome_join()}) WHERE n = 1 ORDER BY request_id").fetchall()
    finally:
        view.con.close()
    return [(request_id, version, tuple(int(v) for v in values), bool(malignant))
            for request_id, version, *values, malignant in rows]


def build_dataset(store: Store, raw: bytes, raw_uri: str, data_file: str, now: datetime | None = None) -> DatasetVersion:
    """A new dataset version: the raw file as it is (never edited), then one row per labelled case (its logged
    features, its outcome as the class), with its lineage; written once as a group under ``datasets/<n>/``, the
    data as ``data_file``.  The caller checks that ``raw`` is a file the trainer reads (`oncology outcomes
    dataset` parses it with the trainer's parser: monitoring never imports the trainer)."""
    from oncology_model.bundle import sha256

    now = now or datetime.now(UTC)
    cases = labelled_rows(store)
    lines = [f"{OUTCOME_ID_BASE + i},{','.join(map(str, row))},{4 if malignant else 2}\n"
             for i, (_, _, row, malignant) in enumerate(cases)]
    data = raw + (b"" if raw.endswith(b"\n") or not raw else b"\n") + "".join(lines).encode()
    existing = datasets.versions(store)
    if existing:
        newest = datasets.resolve(store, str(existing[-1]))
        if store.exists(newest.key) and sha256(store.read(newest.key)) == sha256(data):
            return replace(newest, created=False)
    # numbered past every folder there is, committed or not (a run that died before its lineage left its data file)
    taken = {int(k.split("/")[1]) for k in store.list(datasets.PREFIX + "/") if k.count("/") >= 2 and k.split("/")[1].isdigit()}
    version = str(max(taken | set(existing), default=0) + 1)
    by_version: dict[str, int] = {}
    for _, v, _, _ in cases:
        by_version[v] = by_version.get(v, 0) + 1
    lineage = {
        "dataset_version": version,
        "created_at": now.isoformat(timespec="seconds"),
        "data": {"file": data_file, "sha256": sha256(data)},
        "raw": {"uri": raw_uri, "sha256": sha256(raw), "rows": raw.count(b"\n")},
        "outcomes": {
            "cases": len(cases), "malignant": sum(m for *_, m in cases), "by_model_version": by_version,
            "sample_ids": [OUTCOME_ID_BASE, OUTCOME_ID_BASE + len(cases) - 1] if cases else None,
            "request_ids_sha256": sha256("\n".join(r for r, *_ in cases).encode()),
            "batches": store.list(OUTCOMES_PREFIX + "/"),  # the outcome files joined (each written once)
        },
    }
    prefix = f"{datasets.PREFIX}/{version}"
    store.publish(prefix, {data_file: data, datasets.LINEAGE: json.dumps(lineage, indent=2).encode()},
                  commit=datasets.LINEAGE)
    return DatasetVersion(version, f"{store.uri}/{prefix}/{data_file}", f"{prefix}/{data_file}", lineage, True)
