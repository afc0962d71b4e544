"""The queries, once, as DuckDB SQL over named objects: both engines run these texts (Dask one per task).

- `records`: every line of the given JSON Lines objects and every row of the given Parquet parts, typed and
  checked: ``file, date, line_bytes, blank, valid, error, ts, request_id, model_version, route, <nine features>,
  probability, prediction, decision, arm, latency_ms, malignant``.  ``valid`` is the prediction log's record rule (as
  `oncology.monitoring.prediction_log` applies it line by line): a JSON object with a ``ts`` carrying a UTC
  offset, a string ``model_version``, the nine features as whole scores 1-10, a JSON number ``probability``
  in [0, 1] and ``prediction`` benign or malignant.  ``error``: a failed scoring (`error_rule`), neither valid
  nor malformed.  Compacted Parquet rows were checked when written: predictions and failed scorings.
- `predictions`: the valid records (the relation other queries start from).
- `partials`: drift's additive counts per object and model version (the unit Dask fans out).
- `requests`: the release judge's evidence, per request id and arm (errors included).
- `lines`: per JSON Lines object its lines, decompressed bytes and non-blank lines, without parsing the JSON
  (the integrity check of `oncology.monitoring.engine.relations` and of compaction).
- `outcomes`: the recorded outcomes (``oncology.outcomes``' JSON Lines), one per request id: the first received.
- `outcome_join`: every outcome with the logged predictions of its request id (the relation the outcome check,
  the orphan count and the retraining dataset start from).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Final

from oncology.monitoring.engine.table import COLUMNS, ERROR
from oncology_model.datamodel import FEATURES, SCORE_MAX, SCORE_MIN

CLASSES: Final = ("benign", "malignant")
#: A byte that is never part of a JSON Lines line (JSON escapes control characters): each line is one column.
_NO_DELIMITER: Final = "\\x01"
_INPUTS: Final = '"inputs": {' + ", ".join(f'"{name}": "DOUBLE"' for name in FEATURES) + "}"
_STRUCTURE: Final = (
    '{"ts": "VARCHAR", "request_id": "VARCHAR", "model_version": "JSON", "route": "VARCHAR", '
    + _INPUTS + ', "probability": "JSON", "prediction": "VARCHAR", "decision": "VARCHAR", "arm": "VARCHAR", '
    '"latency_ms": "JSON"}'
)
#: The arm of a line that names none (outside a release the service omits it): the champion's.
CHAMPION_ARM: Final = "champion"
#: The arm whose lines were scored off the answer path (a shadow release): not answers, so never joined to outcomes.
SHADOW_ARM: Final = "shadow"
#: What the counts need: the strings they never read are not extracted (about a tenth of a line's parse).
_COUNTED: Final = '{"ts": "VARCHAR", "model_version": "JSON", ' + _INPUTS + ', "probability": "JSON", "prediction": "VARCHAR"}'
#: The columns of a compacted Parquet part, in order (with ``date`` from its ``date=`` folder).
PARQUET_COLUMNS: Final = tuple(c.name for c in COLUMNS)


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _list(urls: Sequence[str]) -> str:
    return "[" + ", ".join(literal(u) for u in urls) + "]"


def _score(name: str) -> str:
    value = f"j.inputs.{name}"
    return (f"CASE WHEN {value} BETWEEN {SCORE_MIN} AND {SCORE_MAX} AND {value} = floor({value}) "
            f"THEN CAST({value} AS TINYINT) END AS {name}")


def _lines(urls: Sequence[str]) -> str:
    """Each line of the gzip JSON Lines objects as one VARCHAR column ``line``, with ``filename`` and ``date``."""
    return (
        f"read_csv({_list(urls)}, columns = {{'line': 'VARCHAR'}}, header = false, delim = E'{_NO_DELIMITER}', "
        "quote = '', escape = '', auto_detect = false, filename = true, hive_partitioning = true, "
        "hive_types = {'date': DATE}, compression = 'gzip')"
    )


def lines(jsonl: Sequence[str], parquet: Sequence[str] = ()) -> str:
    """Per object, without parsing its JSON: ``file, lines, bytes`` (what a JSON Lines object's lines
    decompress to, for the integrity check; NULL for Parquet) and ``nonblank`` (the lines that are not blank;
    a Parquet part's rows)."""
    nonblank = "CASE WHEN starts_with(line, '{') THEN 1 WHEN coalesce(trim(line), '') = '' THEN 0 ELSE 1 END"
    parts = ([f"SELECT filename AS file, count(*) AS lines, sum(coalesce(strlen(line), 0) + 1) AS bytes, "
              f"sum({nonblank}) AS nonblank FROM {_lines(jsonl)} GROUP BY ALL"] if jsonl else []) + (
             [f"SELECT filename AS file, count(*) AS lines, CAST(NULL AS BIGINT) AS bytes, count(*) AS nonblank "
              f"FROM read_parquet({_list(parquet)}, filename = true) GROUP BY ALL"] if parquet else [])
    if not parts:
        raise ValueError("lines() needs at least one object to read")
    return " UNION ALL ".join(f"({p})" for p in parts)


def jsonl_records(urls: Sequence[str], counted_only: bool = False) -> str:
    """The lines of gzip JSON Lines objects (``urls``, each under a ``date=`` folder) as typed records; with
    ``counted_only``, ``request_id``, ``route`` and ``decision`` are left NULL (not parsed)."""
    parsed = (
        "SELECT filename AS file, date, line, "
        # one parse a line: TRY gives NULL for a line that is not JSON; a scalar or an array gives a struct of NULLs
        f"TRY(from_json(line, {literal(_COUNTED if counted_only else _STRUCTURE)})) AS j "
        f"FROM {_lines(urls)}"
    )
    typed = (
        "SELECT file, date, coalesce(strlen(line), 0) + 1 AS line_bytes, "
        # trim only the lines that are not JSON (trimming every line costs as much as parsing it)
        "CASE WHEN j IS NULL THEN coalesce(trim(line), '') = '' ELSE false END AS blank, "
        "CASE WHEN j.ts LIKE '%+__:__' OR j.ts LIKE '%-__:__' OR j.ts LIKE '%Z' THEN TRY_CAST(j.ts AS TIMESTAMPTZ) END AS ts, "
        + ("CAST(NULL AS VARCHAR) AS request_id, " if counted_only else "j.request_id AS request_id, ")
        + "CASE WHEN json_type(j.model_version) = 'VARCHAR' THEN j.model_version ->> '$' END AS model_version, "
        + ("CAST(NULL AS VARCHAR) AS route, " if counted_only else "j.route AS route, ")
        + ", ".join(_score(name) for name in FEATURES) + ", "
        "CASE WHEN json_type(j.probability) IN ('DOUBLE', 'UBIGINT', 'BIGINT') THEN CAST(j.probability AS DOUBLE) END AS probability, "
        "j.prediction AS prediction, "
        + ("CAST(NULL AS VARCHAR) AS decision, CAST(NULL AS VARCHAR) AS arm, CAST(NULL AS DOUBLE) AS latency_ms "
           if counted_only else
           f"j.decision AS decision, coalesce(j.arm, '{CHAMPION_ARM}') AS arm, "
           "CASE WHEN json_type(j.latency_ms) IN ('DOUBLE', 'UBIGINT', 'BIGINT') THEN CAST(j.latency_ms AS DOUBLE) END "
           "AS latency_ms ")
        + f"FROM ({parsed})"
    )
    valid = " AND ".join(
        ["ts IS NOT NULL", "model_version IS NOT NULL", f"prediction IN {CLASSES!r}", "probability BETWEEN 0 AND 1"]
        + [f"{name} IS NOT NULL" for name in FEATURES]
    )
    return (f"SELECT *, coalesce({valid}, false) AS valid, {error_rule()} AS error, "
            f"prediction = 'malignant' AS malignant FROM ({typed})")


def error_rule() -> str:
    """A line that records a request the model failed to score (`table.ERROR`): a time with its UTC offset, a
    string model version and ``"prediction": "error"`` (its inputs and probability are null).  Not a prediction
    (``valid`` is false), not malformed either: compaction keeps it, the release judge counts it."""
    return f"coalesce(ts IS NOT NULL AND model_version IS NOT NULL AND prediction = {literal(ERROR)}, false)"


def parquet_records(urls: Sequence[str]) -> str:
    """The rows of compacted Parquet parts, in the shape of `jsonl_records` (no line sizes): the predictions
    ``valid``, the failed scorings ``error`` (checked when written, as every row)."""
    return (
        "SELECT filename AS file, date, CAST(NULL AS BIGINT) AS line_bytes, false AS blank, "
        + ", ".join(f"coalesce(arm, '{CHAMPION_ARM}') AS arm" if c == "arm" else c for c in PARQUET_COLUMNS)
        + f", prediction IN {CLASSES!r} AS valid, prediction = {literal(ERROR)} AS error, "
        "prediction = 'malignant' AS malignant "
        # a part compacted before the arm and the latency were columns reads as the champion's, with no latency:
        # union_by_name gives it NULLs beside newer parts, and the empty relation naming the columns gives it them
        # when no part has them at all
        f"FROM (SELECT * FROM read_parquet({_list(urls)}, filename = true, hive_partitioning = true, "
        "hive_types = {'date': DATE}, union_by_name = true) "
        "UNION ALL BY NAME SELECT CAST(NULL AS VARCHAR) AS arm, CAST(NULL AS DOUBLE) AS latency_ms WHERE false)"
    )


def records(jsonl: Sequence[str], parquet: Sequence[str], counted_only: bool = False) -> str:
    """`jsonl_records` and `parquet_records` together (either list may be empty, not both)."""
    parts = ([jsonl_records(jsonl, counted_only)] if jsonl else []) + ([parquet_records(parquet)] if parquet else [])
    if not parts:
        raise ValueError("records() needs at least one object to read")
    return " UNION ALL BY NAME ".join(f"({p})" for p in parts)


def predictions(jsonl: Sequence[str], parquet: Sequence[str]) -> str:
    """The valid records (the predictions; failed scorings left out): ``date, ts, request_id, model_version, route,
    <nine features>, probability, prediction, decision, arm, latency_ms, malignant, file`` (``arm``: champion,
    candidate, shadow or pinned; champion where a line names none)."""
    columns = ", ".join(("date", *PARQUET_COLUMNS, "malignant", "file"))
    return f"SELECT {columns} FROM ({records(jsonl, parquet)}) WHERE valid"


def probability_bin(edges: Sequence[float], column: str = "probability") -> str:
    """The bin of ``column`` among ``edges`` as drift's histograms bin it (``numpy.searchsorted(edges, p,
    'right') - 1``, clipped to the bins), exactly: one comparison with each inner edge."""
    inner = [f"WHEN {column} < CAST({float(e)!r} AS DOUBLE) THEN {k}" for k, e in enumerate(edges[1:-1])]
    return f"CASE {' '.join(inner)} ELSE {len(edges) - 2} END" if inner else "0"


def partials(
    jsonl: Sequence[str], parquet: Sequence[str], since: datetime, until: datetime, edges: Sequence[float], version: str,
) -> str:
    """Per object and model version, additive counts: ``lines``, ``bytes`` (the bytes the lines decompress
    to, for the integrity check), ``malformed``; of the valid records with ``since <= ts < until``: ``n`` and
    ``malignant``; and of those of ``version`` only (the one drift compares; the others' are not computed):
    a histogram (MAP score -> count) per feature, and histograms of the probability bin (``bins``,
    ``malignant_bins``).  ``version`` is NULL on the row of an object's lines outside the window or not
    valid."""
    window = f"valid AND ts >= TIMESTAMPTZ {literal(since.isoformat())} AND ts < TIMESTAMPTZ {literal(until.isoformat())}"
    histograms = ", ".join(f"histogram({name}) FILTER (mine) AS {name}" for name in FEATURES)
    return (
        f"WITH c AS (SELECT *, {window} AS counted FROM ({records(jsonl, parquet, True)})), "
        f"r AS (SELECT *, counted AND model_version = {literal(version)} AS mine, "
        # the bin of the rows of the version only (a CASE evaluates its THEN on the rows it selects)
        f"CASE WHEN counted AND model_version = {literal(version)} THEN {probability_bin(edges)} END AS bin FROM c) "
        "SELECT file, CASE WHEN counted THEN model_version END AS version, count(*) AS lines, "
        "sum(line_bytes) AS bytes, count(*) FILTER (NOT valid AND NOT error AND NOT blank) AS malformed, "
        "count(*) FILTER (counted) AS n, count(*) FILTER (counted AND malignant) AS malignant, "
        f"{histograms}, histogram(bin) FILTER (mine) AS bins, "
        "histogram(bin) FILTER (mine AND malignant) AS malignant_bins "
        "FROM r GROUP BY ALL"
    )


def requests(jsonl: Sequence[str], parquet: Sequence[str], since: datetime, until: datetime,
             versions: Sequence[str]) -> str:
    """The release judge's evidence: per request id and arm, of the records (predictions and failed scorings) of
    ``versions`` with ``since <= ts < until``: ``request_id, arm, model_version, error`` (a failed scoring among
    them), ``latency_ms`` (0 where none is logged), ``predictions, decisions`` (the rows' labels, ordered by the
    rows' inputs and then the label: a batch's rows in one order in both arms of a shadow pair, whatever the
    order they were read in), ``malformed`` (0); and one more row, ``arm`` NULL, whose ``malformed`` counts the
    lines that are neither a record nor blank."""
    window = f"ts >= TIMESTAMPTZ {literal(since.isoformat())} AND ts < TIMESTAMPTZ {literal(until.isoformat())}"
    # each row as one string that sorts as its inputs then its label (a score 1-10 as one letter): sorting these
    # lists costs a third of an aggregate with ORDER BY (0.46 s against 1.54 s for 59,000 requests)
    key = "concat(" + ", ".join(f"chr(64 + {name})" for name in FEATURES) + ", ':', prediction, ':', decision)"
    grouped = (
        f"WITH r AS ({records(jsonl, parquet)}) "
        "SELECT request_id, arm, min(model_version) AS model_version, bool_or(error) AS error, "
        f"coalesce(max(latency_ms), 0.0) AS latency_ms, list_sort(list({key}) FILTER (valid)) AS rows, 0 AS malformed "
        f"FROM r WHERE (valid OR error) AND request_id IS NOT NULL AND {window} "
        f"AND model_version IN ({', '.join(literal(v) for v in versions)}) GROUP BY request_id, arm "
        "UNION ALL SELECT NULL, NULL, NULL, NULL, NULL, NULL, "
        "count(*) FILTER (NOT valid AND NOT error AND NOT blank) FROM r"
    )
    return (
        "SELECT request_id, arm, model_version, error, latency_ms, "
        "coalesce(list_transform(rows, x -> split_part(x, ':', 2)), []) AS predictions, "
        "coalesce(list_transform(rows, x -> split_part(x, ':', 3)), []) AS decisions, malformed "
        f"FROM ({grouped})"
    )


#: The columns of an outcome record (`oncology.outcomes.Stored`).
_OUTCOME_COLUMNS: Final = ("{'request_id': 'VARCHAR', 'outcome': 'VARCHAR', 'observed_at': 'TIMESTAMPTZ', "
                           "'source': 'VARCHAR', 'received_at': 'TIMESTAMPTZ'}")


def outcomes(urls: Sequence[str]) -> str:
    """The outcome records of the JSON Lines objects ``urls``: ``request_id, outcome, observed_at, received_at``,
    one per request id (the first received: the one its claim holds; a retried batch writes its records again).
    Lines that are not outcome records are left out."""
    if not urls:
        return ("SELECT CAST(NULL AS VARCHAR) AS request_id, CAST(NULL AS VARCHAR) AS outcome, "
                "CAST(NULL AS TIMESTAMPTZ) AS observed_at, CAST(NULL AS TIMESTAMPTZ) AS received_at WHERE false")
    return (
        f"SELECT request_id, outcome, observed_at, received_at FROM read_json({_list(urls)}, "
        f"format = 'newline_delimited', columns = {_OUTCOME_COLUMNS}, ignore_errors = true, hive_partitioning = false) "
        f"WHERE request_id IS NOT NULL AND observed_at IS NOT NULL AND outcome IN {CLASSES!r} "
        "QUALIFY row_number() OVER (PARTITION BY request_id ORDER BY received_at, outcome) = 1"
    )


def outcome_join(predictions: str = "predictions", outcomes: str = "outcomes") -> str:
    """Each outcome with every logged prediction of its request id, whatever the delay between them (a hash join
    whose build side is the outcomes, so the log is read once, in a stream): ``request_id, model_version, ts,
    probability, prediction, decision, <nine features>, outcome, observed_at, received_at, n`` where ``n`` is
    how many logged predictions the request id names (more than one: ambiguous, a batch request or a reused id).
    A shadow's line (scored off the answer path, under the request id of the champion's answer) is no answer:
    left out, so a shadowed request joins the version that answered it."""
    return (
        "SELECT p.request_id, p.model_version, p.ts, p.probability, p.prediction, p.decision, "
        + ", ".join(f"p.{name}" for name in FEATURES)
        + ", o.outcome, o.observed_at, o.received_at, count(*) OVER (PARTITION BY p.request_id) AS n "
        f"FROM {predictions} p JOIN {outcomes} o ON p.request_id = o.request_id WHERE p.arm <> '{SHADOW_ARM}'"
    )
