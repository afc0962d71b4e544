#!/usr/bin/env python3
"""Install Debian's Chromium for browser tests, and the flags it runs headless with here (stdlib only).

Library use::

    from chromium import ensure, HEADLESS_FLAGS
    path = ensure()            # /usr/bin/chromium, installed with apt-get first if missing (as root)

Command line::

    python infra/chromium.py install      # prints the path

Chromium comes from Debian's package ``chromium`` (``infra/lib.sh``'s ``ensure_apt``, about a
minute); no tool may download a browser of its own.  The flags keep it off the network (no background requests, no component
updates, no sync), as the closed network here requires.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from localproc import apt_install

__all__ = ["HEADLESS_FLAGS", "ChromiumError", "ensure", "find"]

#: Headless, no sandbox (root), and nothing that reaches the network by itself.
HEADLESS_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
PACKAGE = "chromium"


class ChromiumError(RuntimeError):
    """Chromium is not installed and could not be installed."""


def find() -> Path | None:
    """Debian's chromium, if installed."""
    for candidate in ("/usr/bin/chromium", shutil.which("chromium")):
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def ensure(timeout: float = 900) -> Path:
    """The path of Debian's chromium, installing the package first when it is missing (needs root)."""
    found = find()
    if found is not None:
        return found
    if os.geteuid() != 0:
        raise ChromiumError(f"chromium is not installed; as root: apt-get install -y {PACKAGE}")
    result = apt_install(PACKAGE, "chromium", timeout)
    found = find()
    if result.returncode != 0 or found is None:
        tail = "\n".join((result.stderr or result.stdout).splitlines()[-5:])
        raise ChromiumError(f"apt-get install {PACKAGE} failed (exit {result.returncode}):\n{tail}")
    return found


def main(argv: list[str]) -> int:
    if argv[1:] != ["install"]:
        print("usage: chromium.py install", file=sys.stderr)
        return 2
    try:
        print(ensure())
    except ChromiumError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
