"""The training job: load and validate data, train, gate, publish, optionally promote."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from oncology import gate
from oncology.settings import TrainSettings
from oncology.trainer import data
from oncology.trainer.train import train
from oncology_model.errors import OncologyError
from oncology_model.registry import ModelRegistry
from oncology_model.storage import open_store

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


def run_training(settings: TrainSettings, interactive: bool = False, console: Console | None = None) -> Outcome:
    dataset = data.load(settings.data)
    log.info(
        "data %s: %d rows, %d complete (%d with a missing value excluded), sha256 %s",
        dataset.source, dataset.rows_read, len(dataset), dataset.rows_missing, dataset.sha256[:12],
    )
    registry = ModelRegistry(open_store(settings.store))
    version = registry.next_version()  # reaches the store before the work: a bad store fails fast
    log.info("training version %s (seed %d)", version, settings.seed)

    if interactive:
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, transient=True,
        ) as bar:
            task = bar.add_task("training", total=None)
            result = train(dataset, settings, version, lambda d, t, what: bar.update(task, completed=d, total=t, description=what))
    else:
        last = [-1]

        def log_progress(done: int, total: int, what: str) -> None:
            decile = done * 10 // total
            if decile != last[0]:
                last[0] = decile
                log.info("%3d%% %s", done * 100 // total, what)

        result = train(dataset, settings, version, log_progress)

    if reasons := gate.failures(result.kpis, settings):
        raise GateFailed(version, reasons, result.kpis)
    registry.publish(result.files)
    log.info("published %s/models/%s", registry.store, version)
    promoted = False
    if settings.promote:
        registry.promote(version)
        promoted = True
        log.info("champion -> %s", version)
    return Outcome(version, result.kpis, promoted)
