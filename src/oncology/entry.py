"""The ``oncology`` console script.

``oncology serve ...`` runs through `oncology.serving`, which loads only what the service needs (and Typer only
for help or a usage error); every other command line (``oncology --help``, ``oncology train``...) through the
whole command tree in `oncology.cli`.  A serving worker (and each worker that ``--workers`` spawns, which
imports this module again) so carries no command it will never run: about 4 MB of resident memory a worker,
measured in docs/grpc.md.
"""

from __future__ import annotations

import sys


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        from oncology.serving import main as serve

        serve(sys.argv[2:])
    else:
        from oncology.cli import app

        app()
