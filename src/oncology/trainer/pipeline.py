"""The training job: load and validate data, train, gate, publish, optionally promote."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from oncology import datasets, gate
from oncology.settings import TrainSettings
from oncology.trainer import data
from oncology.trainer.train import TrainingResult, train
from oncology_model.bundle import KPIS, METADATA, MODEL
from oncology_model.errors import OncologyError
from oncology_model.registry import CHAMPION, ModelRegistry
from oncology_model.storage import Store, open_existing_store, open_store

log = logging.getLogger(__name__)


class GateFailed(OncologyError):
    def __init__(self, version: str, reasons: list[str], kpis: dict[str, Any]) -> None:
        super().__init__(f"version {version} failed the quality gate: {'; '.join(reasons)}")
        self.version, self.reasons, self.kpis = version, reasons, kpis


@dataclass
class Outcome:
    version: str
    kpis: dict[str, Any]
    promoted: bool
    #: False when an existing version already holds this very model: nothing new was published
    published: bool = True
    #: the dataset version trained on (``--dataset``), as the metadata records it
    dataset_version: dict[str, Any] | None = None


def load_data(settings: TrainSettings) -> data.Dataset:
    """The raw file of ``settings.data``, or the dataset version ``settings.dataset`` of the store: its data file,
    checked against the sha256 its lineage records, and described by it (number, outcome cases)."""
    if settings.dataset is None:
        return data.load(settings.data)
    found = datasets.resolve(open_existing_store(settings.store), settings.dataset)
    dataset = data.load(found.uri)
    if dataset.sha256 != found.lineage["data"]["sha256"]:
        raise OncologyError(f"{found.uri}: sha256 {dataset.sha256} differs from the {found.lineage['data']['sha256']} "
                            f"its lineage records: the dataset version was changed after it was written")
    outcomes = found.lineage["outcomes"]
    return replace(dataset, dataset_version={
        "version": found.version,
        "lineage": f"{datasets.PREFIX}/{found.version}/{datasets.LINEAGE}",
        "raw": found.lineage["raw"],
        "outcome_cases": outcomes["cases"],
        "outcome_malignant": outcomes["malignant"],
        "outcome_cases_by_model_version": outcomes["by_model_version"],
    })


def run_training(settings: TrainSettings, interactive: bool = False, console: Console | None = None) -> Outcome:
    dataset = load_data(settings)
    log.info(
        "data %s: %d rows, %d complete (%d with a missing value excluded), sha256 %s",
        dataset.source, dataset.rows_read, len(dataset), dataset.rows_missing, dataset.sha256[:12],
    )
    store = open_store(settings.store)
    store.check_writable()  # a store that cannot take the result fails now, not after the training
    registry = ModelRegistry(store)
    provisional = registry.next_version()  # the registry assigns the real one when it publishes
    log.info("training (seed %d)", settings.seed)

    if interactive:
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, transient=True,
        ) as bar:
            task = bar.add_task("training", total=None)
            result = train(dataset, settings, provisional,
                           lambda d, t, what: bar.update(task, completed=d, total=t, description=what))
    else:
        last = [0]

        def log_progress(done: int, total: int, what: str) -> None:  # a line per tenth done, each its own fit
            decile = done * 10 // total
            if decile > last[0]:
                last[0] = decile
                log.info("%3d%% (%d of %d fits) %s", done * 100 // total, done, total, what)

        result = train(dataset, settings, provisional, log_progress)

    if reasons := gate.failures(result.kpis, settings):
        raise GateFailed(provisional, reasons, result.kpis)
    same = identical_version(registry, result)
    if same is not None:
        log.info("version %s already holds this very model (same data, same settings): nothing published", same)
        version, published = same, False
    else:
        version = registry.publish_next(result.files_for).version
        published = True
        log.info("published %s/models/%s", registry.store, version)
    promoted = False
    if settings.promote and registry.state()["aliases"].get(CHAMPION) != version:
        registry.promote(version)
        promoted = True
        log.info("champion -> %s", version)
    if published or promoted:
        _write_dashboard(store)
    kpis = result.kpis if published else registry.load(version).kpis
    return Outcome(version, dict(kpis), promoted, published, dataset.dataset_version)


def identical_version(registry: ModelRegistry, result: TrainingResult) -> str | None:
    """A published version that holds the same model from the same data with the same settings, if any.

    Training is deterministic: the same data and settings give the same parameters, decision
    threshold, referral band and figures.  Such a run adds nothing, so it is not published again.
    """
    def fingerprint(files: Mapping[str, bytes]) -> tuple[Any, ...]:
        metadata, kpis = json.loads(files[METADATA]), json.loads(files[KPIS])
        kpis.pop("version", None)
        return (files[MODEL], metadata.get("data", {}).get("sha256"), metadata.get("training"),
                metadata.get("threshold"), metadata.get("referral"), kpis)

    mine = fingerprint(result.files)
    for version in reversed(registry.versions()):
        try:
            files = registry.load(version).files
        except OncologyError:
            continue  # a version that fails verification is nobody's twin
        if fingerprint(files) == mine:
            return version
    return None


def _write_dashboard(store: Store) -> None:
    """The dashboard page, written into the store after every new version or promotion."""
    from oncology.monitoring.report import write_report

    try:
        log.info("dashboard: %s/%s", store, write_report(store))
    except OncologyError as exc:  # the model is published: a dashboard that fails is reported, not fatal
        log.warning("the dashboard was not written (%s); the model is published", exc)
