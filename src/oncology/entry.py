"""The ``oncology`` console script.

``oncology serve ...`` runs through `oncology.serve_cli`, which loads only what the service needs; every other
command line (``oncology --help``, ``oncology train``...) through the whole command tree in `oncology.cli`.
A serving worker (and each worker that ``--workers`` spawns, which imports this module again) so carries no
command it will never run: about 3 MB of resident memory a worker, measured in docs/grpc.md.
"""

from __future__ import annotations

import sys


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        from oncology.serve_cli import app
    else:
        from oncology.cli import app
    app()
