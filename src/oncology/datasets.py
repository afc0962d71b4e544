"""Dataset versions in the store: the raw data plus the labelled cases that outcomes gave, for retraining.

Written by the monitoring wing (``oncology outcomes dataset``, `oncology.monitoring.outcomes.build_dataset`),
read by the trainer (``oncology train --dataset N``): this module sits one floor below both, so that neither
imports the other.  In the store, each version is written once, as a group whose commit point is its lineage::

    datasets/<n>/breast-cancer-wisconsin.data    the raw file as it is, then one row per labelled case
    datasets/<n>/lineage.json                    what it was made of (see `oncology.monitoring.outcomes`)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Final

from oncology_model.errors import NotFoundError, OncologyError
from oncology_model.storage import Store

PREFIX: Final = "datasets"
LINEAGE: Final = "lineage.json"
LATEST: Final = "latest"


class DatasetNotFound(OncologyError):
    """No such dataset version in the store."""


@dataclass(frozen=True)
class DatasetVersion:
    version: str
    uri: str  # the data file, as the trainer reads it
    key: str  # the data file's key in the store
    lineage: dict[str, Any]
    created: bool = False  # by `build_dataset`: False when the newest version already held exactly these rows

    @property
    def outcome_cases(self) -> int:
        return int(self.lineage["outcomes"]["cases"])


def versions(store: Store) -> list[int]:
    """The dataset versions whose lineage (the commit point) exists, oldest first."""
    found = set()
    for key in store.list(PREFIX + "/"):
        parts = key.split("/")
        if len(parts) == 3 and parts[1].isdigit() and parts[2] == LINEAGE:
            found.add(int(parts[1]))
    return sorted(found)


def resolve(store: Store, version: str) -> DatasetVersion:
    """Dataset version ``version`` (a number, or ``latest``) of ``store``, with its lineage."""
    if version != LATEST and not re.fullmatch(r"[1-9][0-9]*", version):
        raise OncologyError(f"a dataset version is a number (1, 2, ...) or 'latest', not {version!r}")
    known = versions(store)
    if version == LATEST:
        if not known:
            raise DatasetNotFound(f"{store} has no dataset version: make one with `oncology outcomes dataset`")
        version = str(known[-1])
    if int(version) not in known:
        shown = ", ".join(map(str, known)) or "none"
        raise DatasetNotFound(f"{store} has no dataset version {version} (versions: {shown}); "
                              "make one with `oncology outcomes dataset`")
    key = f"{PREFIX}/{version}/{LINEAGE}"
    try:
        lineage = json.loads(store.read(key))
        data_key = f"{PREFIX}/{version}/{lineage['data']['file']}"
        lineage["outcomes"]["cases"]
    except (NotFoundError, ValueError, KeyError, TypeError) as exc:
        raise OncologyError(f"{store}/{key}: not a dataset lineage ({type(exc).__name__}: {exc})") from None
    return DatasetVersion(version, f"{store.uri}/{data_key}", data_key, lineage)
