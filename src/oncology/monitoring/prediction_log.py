"""Reading the prediction log from the store, for drift.

Layout (written by the web service): ``monitoring/predictions/date=YYYY-MM-DD/<writer>-<seq>.jsonl.gz``,
gzip JSON Lines, one object per prediction::

    {"ts": "2026-12-01T21:40:00.123+00:00", "request_id": "...", "model_version": "1.0.3", "route": "/predict",
     "inputs": {"clump_thickness": 5, ...all nine}, "probability": 0.03, "prediction": "benign", "decision": "benign"}

A window ``[since, until)`` reads the ``date=`` partitions from the day before ``since`` to the day of
``until`` (a writer may file a record under the day it flushed it), and keeps the records whose ``ts`` is
in the window.  A line that is not such a record, and a file that cannot be decompressed (a writer that
died mid-file), are skipped and counted, never fatal: the rest of the window is still worth checking.  A
failed scoring's line (``"prediction": "error"``, no inputs) is no prediction and not malformed: counted apart.
"""

from __future__ import annotations

import gzip
import json
import logging
import operator
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from oncology_model.datamodel import FEATURES, SCORE_MAX, SCORE_MIN
from oncology_model.storage import Store

PREFIX: Final = "monitoring/predictions"
log = logging.getLogger(__name__)


def partition(day: datetime) -> str:
    return f"{PREFIX}/date={day:%Y-%m-%d}/"


@dataclass
class Logged:
    """The records of one model version in a window, as arrays; and what else was seen."""

    version: str
    X: npt.NDArray[np.int64]
    proba: npt.NDArray[np.float64]
    malignant: npt.NDArray[np.bool_]
    files: int = 0
    #: records in the window of other versions, by version
    other_versions: Counter[str] = field(default_factory=Counter)
    malformed: int = 0
    #: lines recording a failed scoring (``"prediction": "error"``): not predictions, not malformed either
    errors: int = 0
    unreadable_files: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.proba)


def read(store: Store, since: datetime, until: datetime, version: str) -> Logged:
    """The logged predictions of ``version`` with ``since <= ts < until`` (both timezone-aware)."""
    rows: list[tuple[int, ...]] = []
    proba: list[float] = []
    malignant: list[bool] = []
    logged = Logged(version, np.empty((0, len(FEATURES)), np.int64), np.empty(0), np.empty(0, bool))
    day = (since - timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    while day <= until:
        for key in store.list(partition(day)):
            if not key.endswith(".jsonl.gz"):
                continue
            try:
                text = gzip.decompress(store.read(key))
            except (OSError, EOFError, zlib.error) as exc:
                log.warning("%s/%s: cannot be decompressed (%s); skipped", store, key, exc)
                logged.unreadable_files.append(key)
                continue
            logged.files += 1
            for record in _records(text):
                if record is None:
                    logged.malformed += 1
                    continue
                if record is _ERROR:
                    logged.errors += 1
                    continue
                ts, record_version, row, p, is_malignant = record
                if not since <= ts < until:
                    continue
                if record_version != version:
                    logged.other_versions[record_version] += 1
                    continue
                rows.append(row)
                proba.append(p)
                malignant.append(is_malignant)
        day += timedelta(days=1)
    if rows:
        logged.X = np.array(rows, dtype=np.int64)
        logged.proba = np.array(proba, dtype=np.float64)
        logged.malignant = np.array(malignant, dtype=bool)
    return logged


_Record = tuple[datetime, str, tuple[int, ...], float, bool]
#: What `_parse` gives for the record of a failed scoring: a time with its offset, a string version, prediction "error".
_ERROR: Final[_Record] = (datetime.min, "", (), 0.0, False)
_row: Final = operator.itemgetter(*FEATURES)
_SCORES: Final = frozenset(range(SCORE_MIN, SCORE_MAX + 1))


def _records(text: bytes) -> Iterator[_Record | None]:
    """The file's records, None for each line that is not one.  The file is decoded as one JSON array
    (one call instead of one per line: most of the time of a large window); line by line only if that fails."""
    lines = [line for line in text.splitlines() if line.strip()]
    try:
        objects: list[Any] = json.loads(b"[" + b",".join(lines) + b"]")
    except ValueError:
        for line in lines:
            try:
                obj = json.loads(line)
            except ValueError:
                yield None
            else:
                yield _parse(obj)
    else:
        yield from map(_parse, objects)


def _parse(obj: Any) -> _Record | None:
    try:
        if obj["prediction"] == "error":
            stamp = datetime.fromisoformat(obj["ts"])
            return _ERROR if stamp.tzinfo is not None and isinstance(obj["model_version"], str) else None
        ts = datetime.fromisoformat(obj["ts"])
        row = _row(obj["inputs"])
        p = obj["probability"]
        prediction = obj["prediction"]
        version = obj["model_version"]
    except (ValueError, KeyError, TypeError):
        return None
    if ts.tzinfo is None or not isinstance(version, str) or prediction not in ("benign", "malignant"):
        return None
    if not _SCORES.issuperset(row):  # the service logs validated whole scores; anything else is not a record
        return None
    if type(p) not in (float, int) or not 0.0 <= p <= 1.0:
        return None
    return ts, version, row, float(p), prediction == "malignant"
