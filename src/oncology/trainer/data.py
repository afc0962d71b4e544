"""Reading and validating the raw UCI file.

The file is a headerless CSV of 11 fields: sample id, the nine features of `FEATURES` (1-10,
``?`` when missing) and the class (2 benign, 4 malignant).  Every problem is reported with its
line number; nothing is silently dropped except rows with a missing value, which are counted
(the service requires all nine features, so the model is trained on complete rows).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from oncology.project import REPO_ROOT
from oncology_model.bundle import sha256
from oncology_model.datamodel import FEATURES, SCORE_MAX, SCORE_MIN, Prediction
from oncology_model.errors import OncologyError
from oncology_model.storage import read_uri

DATA_FILE: Final = "breast-cancer-wisconsin.data"


def _bundled_data() -> Path:
    """The bundled copy: in a checkout, data/raw/; in an installed wheel, <prefix>/share/oncology/data/."""
    checkout = REPO_ROOT / "data" / "raw" / "breast-cancer-wisconsin" / DATA_FILE
    installed = Path(sys.prefix) / "share" / "oncology" / "data" / DATA_FILE
    return checkout if checkout.is_file() or not installed.is_file() else installed


BUNDLED_DATA: Final = _bundled_data()
#: sha256 of UCI's file, as recorded in data/raw/breast-cancer-wisconsin/README.md
BUNDLED_DATA_SHA256: Final = "402c585309c399237740f635ef9919dc512cca12cbeb20de5e563a4593f22b64"
MISSING: Final = "?"
N_FIELDS: Final = 2 + len(FEATURES)
MAX_REPORTED: Final = 20


class DataError(OncologyError):
    """The raw data is malformed; the message lists the lines at fault."""


@dataclass(frozen=True)
class Dataset:
    """Complete rows of the raw file, ready for training."""

    source: str
    sha256: str
    ids: npt.NDArray[np.int64]
    X: npt.NDArray[np.float64]
    y: npt.NDArray[np.int64]  # 1 = malignant
    rows_read: int
    rows_missing: int
    #: when the file is a dataset version of the store: its number, lineage key and what came from outcomes
    dataset_version: dict[str, Any] | None = None

    def __len__(self) -> int:
        return len(self.y)


def load(uri: str | Path | None = None) -> Dataset:
    """Read and validate the raw data at ``uri`` (default: the bundled copy, checksum verified)."""
    if uri is None or Path(str(uri)).resolve() == BUNDLED_DATA:
        data = read_uri(BUNDLED_DATA)
        if sha256(data) != BUNDLED_DATA_SHA256:
            raise DataError(
                f"{BUNDLED_DATA}: sha256 {sha256(data)} differs from UCI's {BUNDLED_DATA_SHA256}: "
                "the raw data was changed; restore it with `git checkout data/raw`"
            )
        return parse(data, str(BUNDLED_DATA))
    return parse(read_uri(uri), str(uri))


def parse(data: bytes, source: str = "<data>") -> Dataset:
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise DataError(f"{source}: not an ASCII text file (byte {exc.start})") from exc
    errors: list[str] = []
    ids: list[int] = []
    rows: list[list[int]] = []
    labels: list[int] = []
    missing = 0
    lines = text.splitlines()
    for number, line in enumerate(lines, start=1):
        problem, parsed = _parse_line(line)
        if problem:
            errors.append(f"line {number}: {problem}")
            if len(errors) > MAX_REPORTED:
                break
        elif parsed is None:
            missing += 1
        else:
            sample_id, features, label = parsed
            ids.append(sample_id)
            rows.append(features)
            labels.append(label)
    if errors:
        more = " (and more)" if len(errors) > MAX_REPORTED else ""
        raise DataError(f"{source}: {len(errors[:MAX_REPORTED])} malformed row(s){more}:\n  " + "\n  ".join(errors[:MAX_REPORTED]))
    if not rows:
        raise DataError(f"{source}: no complete rows")
    y = np.array(labels, dtype=np.int64)
    if len(set(labels)) < 2:
        raise DataError(f"{source}: both classes (2 and 4) are needed to train; found only {set(labels)}")
    return Dataset(
        source=source,
        sha256=sha256(data),
        ids=np.array(ids, dtype=np.int64),
        X=np.array(rows, dtype=np.float64),
        y=y,
        rows_read=len(lines),
        rows_missing=missing,
    )


def _parse_line(line: str) -> tuple[str | None, tuple[int, list[int], int] | None]:
    """(problem, row); row is None for a well-formed row with a missing value."""
    fields = line.strip().split(",")
    if len(fields) != N_FIELDS:
        return f"expected {N_FIELDS} comma-separated fields, found {len(fields)}", None
    if not fields[0].strip().isdigit():
        return f"sample id {fields[0]!r} is not a whole number", None
    values: list[int] = []
    has_missing = False
    for name, raw in zip(FEATURES, fields[1:-1]):
        raw = raw.strip()
        if raw == MISSING:
            has_missing = True
            continue
        if not raw.isdigit() or not SCORE_MIN <= int(raw) <= SCORE_MAX:
            return f"{name} is {raw!r}, expected a whole number {SCORE_MIN}-{SCORE_MAX} or {MISSING!r}", None
        values.append(int(raw))
    label_raw = fields[-1].strip()
    try:
        label = Prediction.from_class(int(label_raw)) if label_raw.isdigit() else Prediction.from_class(label_raw)
    except ValueError:
        return f"class is {label_raw!r}, expected 2 (benign) or 4 (malignant)", None
    if has_missing:
        return None, None
    return None, (int(fields[0]), values, int(label is Prediction.MALIGNANT))


#: What is known of the bundled UCI file (data/raw/breast-cancer-wisconsin/README.md and .names).
UCI_PROVENANCE: Final = {
    "name": "Breast Cancer Wisconsin (Original), UCI Machine Learning Repository dataset 15",
    "doi": "https://doi.org/10.24432/C5HP4Z",
    "creator": "Dr. William H. Wolberg, University of Wisconsin Hospitals, Madison, Wisconsin, USA",
    "site": "one site: University of Wisconsin Hospitals, Madison (fine-needle aspirates of breast masses)",
    "collected": "January 1989 to November 1991, in 8 groups",
    "licence": "CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/)",
}


def describe(dataset: Dataset) -> dict[str, object]:
    """The facts about the data that a model card reports; provenance only when it is UCI's file."""
    ids, counts = np.unique(dataset.ids, return_counts=True)
    return {
        "uri": dataset.source,
        "sha256": dataset.sha256,
        "rows_read": dataset.rows_read,
        "rows_used": len(dataset),
        "rows_with_missing_values_excluded": dataset.rows_missing,
        "class_counts": {"benign": int(np.sum(dataset.y == 0)), "malignant": int(np.sum(dataset.y == 1))},
        "sample_ids": int(len(ids)),
        "rows_sharing_a_sample_id": int(np.sum(counts[counts > 1])),
        "provenance": dict(UCI_PROVENANCE) if dataset.sha256 == BUNDLED_DATA_SHA256 else None,
        **({"dataset_version": dataset.dataset_version} if dataset.dataset_version is not None else {}),
    }
