"""One real training of every family (FAST settings), traced, shared by the trainer's tests."""

from __future__ import annotations

import pytest

from oncology.trainer import data
from oncology.trainer.selection import Trace
from oncology.trainer.train import train
from support import ALL_FAMILIES, Traced, fast_settings


@pytest.fixture(scope="session")
def dataset() -> data.Dataset:
    return data.load()


@pytest.fixture(scope="session")
def traced(dataset: data.Dataset, tmp_path_factory: pytest.TempPathFactory) -> Traced:
    settings = fast_settings(tmp_path_factory.mktemp("unused"), families=ALL_FAMILIES)
    trace = Trace()
    return Traced(dataset, settings, train(dataset, settings, "1.0.1", trace=trace), trace)
