"""GET /dashboard's store-reading part: the newest report's bytes, or the one error shape's 404/503."""

from __future__ import annotations

from pathlib import Path

import pytest

from oncology.webservice import dashboard, errors
from oncology_model.errors import StoreUnavailable
from oncology_model.storage import LocalStore


def test_the_newest_report_is_served_and_other_keys_are_ignored(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.create("monitoring/report/report-20261130T235959Z.html", b"<html>older</html>")
    store.create("monitoring/report/report-20261201T080000Z.html", b"<html>newest</html>")
    store.create("monitoring/report/report-latest.html", b"not a report name")
    store.create("monitoring/report/report-20261202T000000Z.html.tmp", b"not a report name either")
    assert dashboard.latest_report(store) == ("monitoring/report/report-20261201T080000Z.html", b"<html>newest</html>")
    assert dashboard.Dashboard(str(tmp_path)).page() == b"<html>newest</html>"


def test_no_report_no_store_and_a_missing_store_folder_are_404s(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.create("models/1.0.1/MANIFEST.json", b"{}")
    assert dashboard.latest_report(store) is None
    with pytest.raises(errors.NotFound, match="no dashboard in the store yet"):
        dashboard.Dashboard(str(tmp_path)).page()
    with pytest.raises(errors.NotFound, match="installed wheel"):
        dashboard.Dashboard(None).page()
    with pytest.raises(errors.NotFound, match="no such store folder"):
        dashboard.Dashboard(str(tmp_path / "missing")).page()
    assert errors.NotFound.status == 404


def test_an_unreachable_store_is_a_503(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(self: LocalStore, prefix: str) -> list[str]:
        raise StoreUnavailable("cannot reach the S3 server (EndpointConnectionError)")

    monkeypatch.setattr(LocalStore, "list", unreachable)
    with pytest.raises(errors.NotReady, match="cannot be reached") as info:
        dashboard.Dashboard(str(tmp_path)).page()
    assert info.value.status == 503


def test_the_service_serves_the_dashboard_that_training_wrote(client, trained_store: Path) -> None:  # type: ignore[no-untyped-def]
    reports = sorted((trained_store / "monitoring" / "report").glob("report-*.html"))
    assert reports, "training writes the dashboard into the store"
    answer = client.get("/dashboard")
    assert answer.status_code == 200 and answer.headers["content-type"] == "text/html; charset=utf-8"
    assert answer.content == reports[-1].read_bytes()
