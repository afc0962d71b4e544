"""Facts about this project's checkout that several steps need: where it is, and which commit it is at."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Final

#: The repository's root in a checkout (in an installed wheel: where the checkout would be).
REPO_ROOT: Final = Path(__file__).resolve().parents[2]


def git_commit() -> str:
    """The code's commit, with ``-dirty`` when tracked files have changes; outside a git checkout,
    ``ONCOLOGY_GIT_COMMIT`` (set when an image is built) or ``unknown``."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT, capture_output=True, text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("ONCOLOGY_GIT_COMMIT", "unknown")
    return commit + ("-dirty" if dirty else "")
