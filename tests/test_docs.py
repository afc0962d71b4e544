"""The README is the front door: short, and every link in it leads somewhere.  The docs site (docs/, mkdocs.yml)
documents every setting.  `make test` also builds the site with `mkdocs build --strict`, which checks the
links between its pages."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from pydantic_settings import BaseSettings

from oncology.monitoring.drift_cli import DriftSettings
from oncology.monitoring.engine.settings import EngineSettings
from oncology.settings import OutcomeSettings, ReleaseSettings, RetrainSettings, ServeSettings, TrainSettings
from support import make_env

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
#: "a few hundred lines at most": the front door, not the manual
README_MAX_LINES = 250

_INLINE = re.compile(r"(?<!!)\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_CODE = re.compile(r"`[^`\n]*`")


def links(markdown: str) -> list[str]:
    """Every link target of a Markdown text (inline, image and reference links), outside code."""
    text = _CODE.sub("", _FENCE.sub("", markdown))
    return [m.group(1) for pattern in (_INLINE, _IMAGE, _REFERENCE) for m in pattern.finditer(text)]


def _anchors(markdown: str) -> set[str]:
    """The anchors of a Markdown file's headings, as GitHub and MkDocs' toc make them."""
    found = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", _FENCE.sub("", markdown), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


def broken_links(page: Path, root: Path = REPO) -> list[str]:
    """The links of ``page`` that lead nowhere: a relative path to no file or folder in ``root``'s tree, a path
    that leaves the tree, or an anchor that no heading of the target (a Markdown file) makes."""
    broken = []
    for target in links(page.read_text(encoding="utf-8")):
        parts = urlsplit(target)
        if parts.scheme or parts.netloc or target.startswith("mailto:"):
            continue  # an external address: not checked (no network in the tests)
        path = (page.parent / unquote(parts.path)).resolve() if parts.path else page.resolve()
        if not path.is_relative_to(root.resolve()) or not path.exists():
            broken.append(f"{target}: no such file")
        elif parts.fragment and path.suffix == ".md" and parts.fragment not in _anchors(path.read_text(encoding="utf-8")):
            broken.append(f"{target}: no heading makes the anchor #{parts.fragment}")
    return broken


def test_every_link_of_the_readme_leads_to_a_file_of_the_repository() -> None:
    found = links(README.read_text(encoding="utf-8"))
    assert len(found) >= 20, found  # the front door links the docs: the parser finds them
    assert broken_links(README) == []


def test_the_readme_links_every_part_of_the_documentation() -> None:
    targets = {urlsplit(t).path for t in links(README.read_text(encoding="utf-8"))}
    for page in ("docs/index.md", "docs/tutorial.md"):
        assert page in targets, f"README.md does not link {page}"
    for part in ("how-to", "reference", "explanation"):
        assert any(t.startswith(f"docs/{part}/") for t in targets), f"README.md links no page of docs/{part}/"


def test_the_readme_stays_a_front_door() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/"
    text = "\n".join(lines)
    for promise in ("make run", "make test", "make docs", "/dashboard"):
        assert promise in text, f"README.md does not mention {promise}"


@pytest.mark.parametrize(
    "markdown, expected",
    [
        ("see [the guide](docs/nowhere.md)", ["docs/nowhere.md: no such file"]),
        ("[a](docs/tutorial.md#no-such-heading)", ["docs/tutorial.md#no-such-heading: no heading makes the anchor #no-such-heading"]),
        ("![shot](docs/missing.png)", ["docs/missing.png: no such file"]),
        ("[ref]: docs/gone.md", ["docs/gone.md: no such file"]),
        ("[up](../outside.md)", ["../outside.md: no such file"]),
        ("[ok](docs/tutorial.md) [ok](docs/how-to/release.md#the-release-itself) [web](https://example.org/x.md)", []),
        ("[here](#two-commands) [there](#nowhere)", ["#nowhere: no heading makes the anchor #nowhere"]),
        ("`[not a link](docs/nowhere.md)` and\n```\n[nor this](docs/nowhere.md)\n```", []),
    ],
)
def test_a_broken_link_is_found(tmp_path: Path, markdown: str, expected: list[str]) -> None:
    (tmp_path / "docs" / "how-to").mkdir(parents=True)
    (tmp_path / "docs" / "tutorial.md").write_text("# Tutorial\n\n## 1. Train\n", encoding="utf-8")
    (tmp_path / "docs" / "how-to" / "release.md").write_text("# Release\n\n## The release itself\n", encoding="utf-8")
    readme = tmp_path / "README.md"
    readme.write_text(f"# project\n\n## Two commands\n\n{markdown}\n", encoding="utf-8")
    assert broken_links(readme, root=tmp_path) == expected


SETTINGS = [TrainSettings, ServeSettings, DriftSettings, OutcomeSettings, ReleaseSettings, EngineSettings, RetrainSettings]


def _documented_defaults(page: str) -> dict[str, list[str]]:
    """Each variable of the settings page's tables, with the default column of each of its rows."""
    rows: dict[str, list[str]] = {}
    for variable, default in re.findall(r"^\| `(ONCOLOGY_[A-Z0-9_]+)` \| ([^|]*) \|", page, re.MULTILINE):
        rows.setdefault(variable, []).append(default.strip())
    return rows


def _as_documented(value: object) -> str | None:
    """A field's default as the page writes it in backquotes, or None for one the page writes in words (unset)."""
    if value is None or value == []:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _same(text: str | None) -> str | None:
    """A number as one spelling (0.90, 0.9 and 9e-1 alike); other text as it is."""
    try:
        return None if text is None else repr(float(text))
    except ValueError:
        return text


@pytest.mark.parametrize("settings", SETTINGS)
def test_every_setting_is_documented_with_its_default(settings: type[BaseSettings]) -> None:
    page = (REPO / "docs" / "reference" / "settings.md").read_text(encoding="utf-8")
    documented = _documented_defaults(page)
    missing = [f"ONCOLOGY_{name.upper()}" for name in settings.model_fields if f"ONCOLOGY_{name.upper()}" not in documented]
    assert missing == [], f"docs/reference/settings.md does not document {missing}"
    wrong = []
    for name, field in settings.model_fields.items():
        if field.default_factory is not None:
            continue  # computed where it runs (serve's store): the page says in words what it depends on
        expected = _same(_as_documented(field.default))
        shown = [_same(cell.split("`")[1]) if cell.count("`") >= 2 else None for cell in documented[f"ONCOLOGY_{name.upper()}"]]
        if expected not in shown:
            wrong.append(f"ONCOLOGY_{name.upper()}: {shown} (the code: {expected or 'unset'})")
    assert wrong == [], f"docs/reference/settings.md shows a default the code does not have: {wrong}"


def test_a_wrong_or_missing_default_is_found() -> None:
    page = "| `ONCOLOGY_SEED` | `41` | x |\n| `ONCOLOGY_DATA` | unset | y |\n| `ONCOLOGY_STORE` | `store` | z |\n"
    assert _documented_defaults(page) == {"ONCOLOGY_SEED": ["`41`"], "ONCOLOGY_DATA": ["unset"], "ONCOLOGY_STORE": ["`store`"]}
    values: list[object] = [None, False, 0.1, 5.0, 60, ("a", "b"), []]
    assert [_as_documented(v) for v in values] == [None, "false", "0.1", "5", "60", "a,b", None]
    assert [_same(t) for t in ("0.90", "5", "1048576", "month", None)] == ["0.9", "5.0", "1048576.0", "month", None]


def _docs_build_command(site: Path) -> list[str]:
    """The docs build exactly as `make test` runs it, writing into ``site``."""
    proc = subprocess.run(["make", "--no-print-directory", "-n", "test"], cwd=REPO, env=make_env(), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if "mkdocs build" in line]
    assert len(lines) == 1, f"make test builds the docs once: {lines}"
    words = shlex.split(lines[0].split("||")[0])
    env_words = [w for w in words if re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", w)]
    command = words[len(env_words):]
    assert Path(command[0]).name == "mkdocs" and "--strict" in command, command
    site_at = command.index("--site-dir") + 1
    command[site_at] = str(site)
    return command


def _build(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    mkdocs = REPO / command[0] if not Path(command[0]).is_absolute() else Path(command[0])
    return subprocess.run([str(mkdocs), *command[1:]], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_the_docs_build_of_make_test_passes_on_the_docs_and_fails_on_a_broken_link(tmp_path: Path) -> None:
    command = _docs_build_command(tmp_path / "site")
    ok = _build(command, REPO)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert (tmp_path / "site" / "index.html").is_file() and (tmp_path / "site" / "tutorial" / "index.html").is_file()
    # the same build on a copy of the docs with one broken link and one broken anchor fails, naming both
    copy = tmp_path / "copy"
    shutil.copytree(REPO / "docs", copy / "docs")
    shutil.copy(REPO / "mkdocs.yml", copy / "mkdocs.yml")
    with (copy / "docs" / "tutorial.md").open("a", encoding="utf-8") as page:
        page.write("\nSee [a page](how-to/no-such-page.md) and [a section](reference/cli.md#no-such-section).\n")
    broken = _build(command, copy)
    assert broken.returncode != 0
    assert "how-to/no-such-page.md" in broken.stderr and "#no-such-section" in broken.stderr, broken.stderr


def test_the_docs_build_needs_no_network() -> None:
    # Material's theme loads Google Fonts unless told not to; the site must build and read offline
    config = (REPO / "mkdocs.yml").read_text(encoding="utf-8")
    assert re.search(r"^\s+font:\s*false\b", config, re.MULTILINE), "mkdocs.yml: theme.font must be false"
    assert not re.search(r"^\s+-\s*(privacy|social)\b", config, re.MULTILINE), "plugins that fetch at build time"


CLI_REFERENCE = REPO / "docs" / "reference" / "cli.md"


def undocumented_commands(reference: str) -> list[str]:
    """The commands of `oncology` (each group's subcommands, not hidden) that ``reference`` does not name as
    ``oncology GROUP COMMAND``."""
    import typer

    from oncology.cli import app

    def walk(command: object, path: str) -> list[str]:
        subcommands = getattr(command, "commands", None)
        if subcommands is None:
            return [path]
        return [leaf for name, sub in subcommands.items() if not getattr(sub, "hidden", False)
                for leaf in walk(sub, f"{path} {name}")]

    return [path for path in walk(typer.main.get_command(app), "oncology") if path not in reference]


def test_the_cli_reference_names_every_command() -> None:
    assert undocumented_commands(CLI_REFERENCE.read_text(encoding="utf-8")) == []


def test_a_command_missing_from_the_cli_reference_is_found() -> None:
    reference = CLI_REFERENCE.read_text(encoding="utf-8")
    assert undocumented_commands(reference.replace("oncology release judge", "oncology release jdg")) == [
        "oncology release judge"]
