"""Building the ``oncology-model`` wheel that carries one model version.

The wheel's version is the model's version, so ``pip install oncology-model==X`` installs the
model of version X.  The model package's source is copied to a staging folder, the verified
bundle is written into ``oncology_model/_bundle/`` and the version into its pyproject, and the
wheel is built there: the source tree is never modified.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from oncology.project import REPO_ROOT
from oncology_model.classifier import PACKAGED_BUNDLE
from oncology_model.errors import OncologyError
from oncology_model.registry import ModelRegistry
from oncology_model.storage import open_store

MODEL_PROJECT = REPO_ROOT / "model"


class PackagingError(OncologyError):
    """The wheel could not be built."""


def build_model_wheel(store: str, model: str, out_dir: Path) -> Path:
    """Build the wheel of ``model`` (a version or alias) from ``store`` into ``out_dir``."""
    bundle = ModelRegistry(open_store(store)).load(model)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="oncology-wheel-") as tmp:
        src = Path(tmp) / "model"
        shutil.copytree(MODEL_PROJECT, src, ignore=shutil.ignore_patterns("tests", "__pycache__", PACKAGED_BUNDLE, "*.egg-info"))
        target = src / "src" / "oncology_model" / PACKAGED_BUNDLE
        target.mkdir()
        for name, data in bundle.files.items():
            (target / name).write_bytes(data)
        pyproject = src / "pyproject.toml"
        text, count = re.subn(r'(?m)^version = ".*"$', f'version = "{bundle.version}"', pyproject.read_text())
        if count != 1:
            raise PackagingError(f"{MODEL_PROJECT / 'pyproject.toml'}: no single `version = ...` line to set")
        pyproject.write_text(text)
        built = Path(tmp) / "dist"
        proc = subprocess.run(
            [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(built), str(src)],
            capture_output=True, text=True,
        )
        if proc.returncode != 0:
            raise PackagingError(f"building the wheel failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        (wheel,) = built.glob("*.whl")
        final = out_dir / wheel.name
        shutil.copy2(wheel, final)
    return final
