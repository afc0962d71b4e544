from __future__ import annotations

import pytest

from bundle_factory import bundle_files


@pytest.fixture
def files() -> dict[str, bytes]:
    return bundle_files()
