"""Every import points down: the ground floor (settings, the family names) imports no wing of the
package, and monitoring, which reads what the trainer wrote to the store, never imports the trainer.
Read from the source (lazy imports inside functions count too)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "oncology"
WINGS = ("oncology.trainer", "oncology.monitoring", "oncology.webservice", "oncology.cli")


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports, wherever the import stands."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return found


def upward(path: Path, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(m for m in imported(path) if m.startswith(forbidden))


@pytest.mark.parametrize("module", ["settings.py", "pipeline_settings.py", "model_families.py", "gate.py", "project.py"])
def test_the_ground_floor_imports_no_wing(module: str) -> None:
    assert upward(PACKAGE / module, WINGS) == []


@pytest.mark.parametrize("path", sorted((PACKAGE / "monitoring").glob("*.py")), ids=lambda p: p.name)
def test_monitoring_never_imports_the_trainer(path: Path) -> None:
    assert upward(path, ("oncology.trainer",)) == []


def test_the_check_sees_an_import_inside_a_function(tmp_path: Path) -> None:
    planted = tmp_path / "settings.py"
    planted.write_text("def check():\n    from oncology.trainer.families import FAMILY\n    return FAMILY\n")
    assert upward(planted, WINGS) == ["oncology.trainer.families", "oncology.trainer.families.FAMILY"]
