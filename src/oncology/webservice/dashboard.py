"""``GET /dashboard``: the latest dashboard page that monitoring wrote into the store.

The page is built by ``oncology.monitoring.report`` (after training and after each drift run) and
written once to ``monitoring/report/report-<YYYYMMDDTHHMMSSZ>.html``; the service only lists and reads
the store, so it needs no plotting library and no numpy.  Knows no HTTP beyond raising `APIError`s.
"""

from __future__ import annotations

import re
from typing import Final

from oncology.webservice import errors
from oncology_model.errors import NotFoundError, StoreUnavailable
from oncology_model.storage import Store, open_existing_store

REPORT_PREFIX: Final = "monitoring/report/"
HTML: Final = b"text/html; charset=utf-8"
_REPORT_KEY = re.compile(r"^monitoring/report/report-\d{8}T\d{6}Z\.html$")


def latest_report(store: Store) -> tuple[str, bytes] | None:
    """The newest report's key and bytes, or None when the store holds none.

    The names carry the UTC time in a fixed-width form, so the newest sorts last as text.
    """
    keys = [key for key in store.list(REPORT_PREFIX) if _REPORT_KEY.match(key)]
    for key in sorted(keys, reverse=True):
        try:
            return key, store.read(key)
        except NotFoundError:  # removed between the listing and the read: the next newest
            continue
    return None


class Dashboard:
    """The dashboard of the store the service reads (``None``: serving the wheel's model, no store)."""

    def __init__(self, store_uri: str | None) -> None:
        self.store_uri = store_uri
        self._store: Store | None = None

    def page(self) -> bytes:
        """The latest page's bytes; `errors.NotFound` (404) when there is none, `errors.NotReady` (503)
        when the store cannot be reached right now.  Blocking: call it in a thread."""
        if self.store_uri is None:
            raise errors.NotFound("no dashboard: the service runs from the installed wheel, without a store")
        try:
            if self._store is None:
                self._store = open_existing_store(self.store_uri)
            found = latest_report(self._store)
        except StoreUnavailable as exc:
            raise errors.NotReady(f"the store cannot be reached for the dashboard: {exc}") from exc
        except NotFoundError as exc:
            raise errors.NotFound(f"no dashboard: {exc}") from exc
        if found is None:
            raise errors.NotFound(
                f"no dashboard in the store yet ({REPORT_PREFIX}): it is written after training and after each drift run"
            )
        return found[1]
