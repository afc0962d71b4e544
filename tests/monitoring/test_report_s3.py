"""The dashboard against a real S3 server (SeaweedFS): written once with a conditional put, served back."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from report_store import coverage, drift, publish

from oncology.monitoring import report
from oncology.webservice.dashboard import Dashboard, latest_report
from oncology_model.registry import ModelRegistry
from oncology_model.storage import open_store
from support import S3

pytestmark = pytest.mark.s3


def test_the_report_of_an_s3_store_is_written_once_and_served(s3: S3) -> None:
    uri = f"s3://{s3.bucket}/dashboard-{uuid.uuid4().hex[:8]}"
    store = open_store(uri)
    publish(store, "1.0.1", 1, new_format=False, evaluation=False)
    publish(store, "1.0.2", 2, new_format=True, evaluation=True)
    coverage(store, "unittest", "1.0.2", 82.0)
    ModelRegistry(store).promote("1.0.2")
    drift(store, "20261201T120000Z")
    moment = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)

    first = report.write_report(store, now=moment)
    coverage(store, "test", "1.0.2", 90.0)  # the second page differs
    second = report.write_report(store, now=moment)  # the same second: the next name (If-None-Match refused the first)
    assert (first, second) == ("monitoring/report/report-20261201T120000Z.html", "monitoring/report/report-20261201T120001Z.html")
    page = store.read(second).decode()
    for needle in ('id="chart-roc"', 'id="chart-coverage"', 'id="chart-drift"', '<span class="badge" id="champion-version">1.0.2</span>'):
        assert needle in page
    assert latest_report(store) == (second, store.read(second))
    assert Dashboard(uri).page() == store.read(second)
