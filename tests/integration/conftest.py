"""The S3 tests race the same processes as the model package's tests: make those helpers importable."""

from __future__ import annotations

import sys
from pathlib import Path

MODEL_TESTS = Path(__file__).resolve().parents[2] / "model" / "tests"
if str(MODEL_TESTS) not in sys.path:
    sys.path.append(str(MODEL_TESTS))
