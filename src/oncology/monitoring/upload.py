"""Upload a release's monitoring data to the store: coverage reports, test KPIs and the flat tables.

The version being released is a model version (a version, ``champion`` or ``latest``, resolved through
the registry to the concrete version the keys carry).  Keys, relative to the store's root::

    monitoring/coverage/unittest/unittest-coverage-<v>.json   coverage.py JSON of the unit tests
    monitoring/coverage/test/test-coverage-<v>.json           coverage.py JSON of the whole suite
    monitoring/kpis/test-kpis-<v>.json                        the version's kpis.json, byte for byte
    monitoring/tables/metrics/version=<v>/metrics-<v>.csv     its row per metric (see tables.py)
    monitoring/tables/promotions/version=<v>/promotion-<n>.csv  one file per alias move in the registry
    monitoring/quicksight/<table>.manifest.json               the QuickSight manifest of each table

A version's files are written once (`Store.create`): uploading the same bytes again changes nothing,
other bytes are refused before anything is written.  The manifests are not a version's data: they
follow from where the store is read (``manifest_base``), and are replaced whole when that changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from oncology.monitoring import tables
from oncology_model.bundle import KPIS, parse_json_object
from oncology_model.errors import BundleError, NotFoundError, OncologyError, RegistryError
from oncology_model.registry import ModelRegistry
from oncology_model.storage import LocalStore, Store

#: The test suites whose coverage is uploaded: the name in the store and the file `make test` writes.
SUITES: Final[Mapping[str, str]] = {
    "unittest": "unittest-coverage.json",
    "test": "test-coverage.json",
}


class MonitoringError(OncologyError):
    """Monitoring data is missing or malformed."""


def coverage_key(suite: str, version: str) -> str:
    return f"{tables.MONITORING_PREFIX}/coverage/{suite}/{suite}-coverage-{version}.json"


def kpis_key(version: str) -> str:
    return f"{tables.MONITORING_PREFIX}/kpis/test-kpis-{version}.json"


@dataclass
class Outcome:
    """What an upload did: keys created now, and keys that already held the same bytes."""

    version: str
    created: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def default_manifest_base(store: Store) -> str:
    """Where reporting tools find the store: its own URI (``file://`` for a local folder)."""
    return store.root.as_uri() if isinstance(store, LocalStore) else store.uri


def read_coverage(coverage_dir: Path) -> dict[str, bytes]:
    """The coverage.py JSON report of each suite, as `make test` wrote them into ``coverage_dir``."""
    reports: dict[str, bytes] = {}
    for suite, name in SUITES.items():
        path = coverage_dir / name
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise MonitoringError(f"{path}: no coverage report (make test writes it)") from None
        except OSError as exc:
            raise MonitoringError(f"{path}: cannot read ({exc.strerror})") from exc
        report = _json(data, str(path))
        if not isinstance(report.get("totals"), dict) or not isinstance(report.get("files"), dict):
            raise MonitoringError(f"{path}: not a coverage.py JSON report (no totals or files)")
        reports[suite] = data
    return reports


def upload(store: Store, ref: str, coverage: Mapping[str, bytes], manifest_base: str | None = None) -> Outcome:
    """Write version ``ref``'s monitoring files once; refuses, writing nothing, if any holds other bytes."""
    registry = ModelRegistry(store)
    version = registry.resolve(ref)
    bundle = registry.load(version)  # verified against its manifest
    reports = {suite: _json(data, coverage_key(suite, version)) for suite, data in coverage.items()}
    rows = tables.metrics_rows(version, str(bundle.metadata["created_at"]), bundle.kpis, reports)
    objects = {coverage_key(suite, version): data for suite, data in coverage.items()}
    objects[kpis_key(version)] = bundle.files[KPIS]
    objects[tables.metrics_key(version)] = tables.to_csv(tables.METRICS, rows)
    objects.update(_promotion_objects(registry))

    for key, data in objects.items():  # refuse before writing anything
        if _differs(store, key, data):
            raise RegistryError(f"{store.uri}/{key} already exists with other content and cannot be changed")
    outcome = Outcome(version)
    for key, data in objects.items():
        (outcome.created if store.create(key, data) else outcome.unchanged).append(key)
    write_manifests(store, manifest_base or default_manifest_base(store))
    return outcome


def sync_promotions(store: Store, manifest_base: str | None = None) -> Outcome:
    """Write a table file for every alias move not written yet (a promotion may follow the upload)."""
    outcome = Outcome(version="")
    for key, data in _promotion_objects(ModelRegistry(store)).items():
        (outcome.created if store.create(key, data) else outcome.unchanged).append(key)
    write_manifests(store, manifest_base or default_manifest_base(store))
    return outcome


def write_manifests(store: Store, base_uri: str) -> list[str]:
    """Write each table's QuickSight manifest where it is missing or names another location: the metrics and
    promotions tables, and the realized table once an outcome check has written one."""
    written = []
    realized = [tables.REALIZED] if store.list(tables.table_prefix(tables.REALIZED)) else []
    for table in (*tables.COLUMNS, *realized):
        key, data = tables.manifest_key(table), tables.quicksight_manifest(table, base_uri)
        if _current(store, key) != data:
            store.write(key, data)
            written.append(key)
    return written


def _promotion_objects(registry: ModelRegistry) -> dict[str, bytes]:
    return {
        tables.promotion_key(seq, row["to_version"] or row["from_version"]): tables.to_csv(tables.PROMOTIONS, [row])
        for seq, row in tables.promotion_rows(registry.history())
    }


def _current(store: Store, key: str) -> bytes | None:
    try:
        return store.read(key)
    except NotFoundError:
        return None


def _differs(store: Store, key: str, data: bytes) -> bool:
    current = _current(store, key)
    return current is not None and current != data


def _json(data: bytes, where: str) -> dict[str, Any]:
    try:
        return parse_json_object(data, where)
    except BundleError as exc:
        raise MonitoringError(str(exc)) from None
