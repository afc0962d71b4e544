"""The `oncology` command as a user runs it: a real process, real files."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
import typer.main
from hypothesis import given, settings
from hypothesis import strategies as st

from oncology import serve_cli, serving
from oncology.settings import GateSettings
from support import fast_env

ONCOLOGY = [str(Path(sys.executable).parent / "oncology")]


def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ONCOLOGY_", "AWS_"))}
    full = {**base, **fast_env(), "COLUMNS": "160", **(env or {})}
    return subprocess.run([*ONCOLOGY, *args], capture_output=True, text=True, env=full, cwd=cwd, timeout=300)


def test_train_prints_the_version_and_kpis_and_settings_come_from_env(tmp_path: Path) -> None:
    proc = run("train", env={"ONCOLOGY_STORE": str(tmp_path / "s"), "ONCOLOGY_PROMOTE": "true"})
    assert proc.returncode == 0, proc.stderr
    assert "published model version 1.0.1" in proc.stdout
    assert "champion is now 1.0.1" in proc.stdout
    for label in ("accuracy", "malignant recall", "specificity", "ROC AUC", "Brier", "confusion", "test 95% CI",
                  "nested CV 1x3-fold, 3-fold inner", "referral band [", "share referred", "families compared"):
        assert label in proc.stdout, label
    progress = [line.split(" oncology.trainer.pipeline: ", 1)[1] for line in proc.stderr.splitlines()
                if re.search(r" oncology\.trainer\.pipeline: +\d+% ", line)]  # plain lines when not on a terminal
    percents = [int(line.split("%")[0]) for line in progress]
    assert percents == sorted(set(percents)) and percents[-1] == 100 and 0 not in percents, progress
    counts = [re.search(r"\((\d+) of (\d+) fits\) (fitted .+ on (outer fold \d+ of \d+|the whole training part)|"
                        r"evaluated .+)$", line) for line in progress]
    assert all(counts), progress  # each line names its fit: how many are done, which, and on which rows
    assert [int(c[1]) for c in counts if c] == sorted({int(c[1]) for c in counts if c}), progress
    # the targets are reported as what they are, and the gate the model passed is named with its minimums
    assert "target not met" not in proc.stdout
    if "reporting targets not met" in proc.stdout:
        assert "they do not decide publication or promotion, the quality gate does" in " ".join(proc.stdout.split())
    gate = GateSettings()
    assert (f"quality gate passed: held-out test and nested-CV mean each with accuracy >= {gate.gate_min_accuracy}, "
            f"malignant recall >= {gate.gate_min_recall}, specificity >= {gate.gate_min_specificity}, ROC AUC >= "
            f"{gate.gate_min_roc_auc}") in " ".join(proc.stdout.split())
    listed = run("models", "list", "--store", str(tmp_path / "s"))
    assert "1.0.1" in listed.stdout and "champion" in listed.stdout


def test_the_default_store_is_a_folder_in_the_working_directory(tmp_path: Path) -> None:
    proc = run("train", "--seed", "3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "store" / "models" / "1.0.1" / "MANIFEST.json").is_file()


def test_malformed_data_is_reported_with_line_number_and_nothing_is_published(tmp_path: Path) -> None:
    bad = tmp_path / "bad.data"
    bad.write_text("1000025,5,1,1,1,2,1,3,1,1,2\n1000026,5,1,1,1,2,12,3,1,1,2\n")
    proc = run("train", "--data", str(bad), "--store", str(tmp_path / "s"))
    assert proc.returncode == 2
    assert "line 2: bare_nuclei is '12'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "s" / "models").exists()


def test_a_failed_gate_exits_non_zero_with_the_reason(tmp_path: Path) -> None:
    proc = run("train", "--store", str(tmp_path / "s"), env={"ONCOLOGY_GATE_MIN_ROC_AUC": "0.9999"})
    assert proc.returncode == 1
    assert "failed the quality gate and was not published" in proc.stderr and "roc_auc" in proc.stderr
    assert not (tmp_path / "s" / "models").exists()


def test_promote_checks_the_gate_and_rollback_needs_history(trained_store: Path, tmp_path: Path) -> None:
    import shutil

    store = tmp_path / "copy"
    shutil.copytree(trained_store, store)
    refused = run("models", "promote", "1.0.1", "--store", str(store), env={"ONCOLOGY_GATE_MIN_ACCURACY": "1.0"})
    assert refused.returncode == 1 and "fails the quality gate" in refused.stderr
    back = run("models", "rollback", "--store", str(store))
    assert back.returncode == 2 and "no earlier version" in back.stderr
    missing = run("models", "promote", "4.5.6", "--store", str(store))
    assert missing.returncode == 2 and "4.5.6 is not published" in missing.stderr
    history = run("models", "history", "--store", str(store))
    assert "promote" in history.stdout and "1.0.1" in history.stdout


@pytest.mark.parametrize("uri", ["ftp://x/y", "s3://"])
def test_a_bad_store_uri_is_a_clear_error(uri: str, tmp_path: Path) -> None:
    proc = run("models", "list", "--store", uri)
    assert proc.returncode == 2 and "error:" in proc.stderr and "Traceback" not in proc.stderr


def test_models_show_prints_the_model_card_of_a_version_or_alias(trained_store: Path) -> None:
    card = (trained_store / "models" / "1.0.1" / "card.md").read_text()
    for ref in ("1.0.1", "champion", "latest"):
        proc = run("models", "show", ref, "--store", str(trained_store))
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == card
    missing = run("models", "show", "4.5.6", "--store", str(trained_store))
    assert missing.returncode == 2 and "4.5.6 is not published" in missing.stderr and missing.stdout == ""


def test_a_version_without_a_card_is_a_clear_error(trained_store: Path, tmp_path: Path) -> None:
    """A version published before model cards existed: the same bundle without its card files."""
    from oncology_model.bundle import KPIS, METADATA, MODEL, make_manifest
    from oncology_model.registry import ModelRegistry
    from oncology_model.storage import LocalStore

    files = {name: (trained_store / "models" / "1.0.1" / name).read_bytes() for name in (MODEL, METADATA, KPIS)}
    ModelRegistry(LocalStore(tmp_path)).publish({**files, "MANIFEST.json": make_manifest("1.0.1", files)})
    proc = run("models", "show", "1.0.1", "--store", str(tmp_path))
    assert proc.returncode == 2 and "has no model card" in proc.stderr and "Traceback" not in proc.stderr


def test_a_bad_training_setting_is_one_line_and_exit_2(tmp_path: Path) -> None:
    proc = run("train", "--store", str(tmp_path / "s"), env={"ONCOLOGY_FAMILIES": "svm_rbf"})
    assert proc.returncode == 2 and "at least one linear" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("command", [["models", "list"], ["models", "history"], ["models", "rollback"],
                                     ["models", "promote", "1.0.1"], ["models", "show", "champion"]])
def test_a_mistyped_store_folder_is_an_error_not_an_empty_store(tmp_path: Path, command: list[str]) -> None:
    proc = run(*command, "--store", str(tmp_path / "nonexistent"))
    assert proc.returncode == 2, proc.stdout
    assert f"{tmp_path / 'nonexistent'}: no such store folder" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stdout == ""
    assert not (tmp_path / "nonexistent").exists()  # reading never creates the store


def test_promote_takes_a_version_or_latest_and_rollback_and_history_name_their_store(
    trained_store: Path, tmp_path: Path
) -> None:
    import shutil

    store = tmp_path / "copy"
    shutil.copytree(trained_store, store)
    for ref in ("champion", "1.0.1\n", "v1", ""):
        proc = run("models", "promote", ref, "--store", str(store))
        assert proc.returncode == 2 and "promote takes a version (N.N.N) or 'latest'" in proc.stderr, (ref, proc.stderr)
    back = run("models", "rollback", "--store", str(store))
    assert back.returncode == 2 and f"{store}: champion has no earlier version" in back.stderr
    history = run("models", "history", "--store", str(store))
    assert history.returncode == 0 and str(store) in "".join(history.stdout.split())  # the title may wrap


def test_promote_reads_the_gate_from_the_verified_bundle(trained_store: Path, tmp_path: Path) -> None:
    import json
    import shutil

    store = tmp_path / "copy"
    shutil.copytree(trained_store, store)
    kpis = store / "models" / "1.0.1" / "kpis.json"  # altered figures, the manifest left as it was
    kpis.write_text(json.dumps({**json.loads(kpis.read_text()), "note": "edited"}))
    proc = run("models", "promote", "latest", "--store", str(store))
    assert proc.returncode == 2 and "kpis.json" in proc.stderr and "champion in" not in proc.stdout


def test_training_the_same_data_and_settings_again_publishes_nothing_and_names_the_twin(tmp_path: Path) -> None:
    store = tmp_path / "s"
    first = run("train", "--store", str(store))
    assert first.returncode == 0 and "published model version 1.0.1" in first.stdout, first.stderr
    again = run("train", "--store", str(store), "--promote")
    assert again.returncode == 0, again.stderr
    assert "version 1.0.1 in" in again.stdout and "already holds this very model" in again.stdout
    assert "champion is now 1.0.1" in again.stdout  # --promote still promotes the twin
    assert sorted(p.name for p in (store / "models").iterdir()) == ["1.0.1"]
    other = run("train", "--store", str(store), "--seed", "5")  # other settings: a new version
    assert other.returncode == 0 and "published model version 1.0.2" in other.stdout, other.stderr


def test_train_checks_the_store_can_be_written_before_it_trains(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    proc = run("train", "--store", str(tmp_path / "file" / "store"))
    assert proc.returncode == 2 and "cannot write" in proc.stderr, proc.stderr
    assert "fitting" not in proc.stderr and "%" not in proc.stderr  # it failed before any training


def test_trainers_publishing_at_once_get_distinct_complete_versions(tmp_path: Path) -> None:
    from oncology_model.registry import ModelRegistry
    from oncology_model.storage import LocalStore

    store = tmp_path / "s"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ONCOLOGY_", "AWS_"))}
    procs = [
        subprocess.Popen([*ONCOLOGY, "train", "--store", str(store), "--seed", str(seed)],
                         env={**base, **fast_env()}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for seed in (11, 12, 13)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-500:] for _, err in outs]
    registry = ModelRegistry(LocalStore(store))
    assert registry.versions() == ["1.0.1", "1.0.2", "1.0.3"]
    seeds = sorted(registry.load(v).metadata["training"]["seed"] for v in registry.versions())
    assert seeds == [11, 12, 13]  # each version complete (verified on load) and each trainer's own


def test_promoting_the_champion_again_is_a_no_op_that_says_so(trained_store: Path, tmp_path: Path) -> None:
    import shutil

    store = tmp_path / "copy"
    shutil.copytree(trained_store, store)
    aliases = (store / "registry" / "aliases.json").read_bytes()
    again = run("models", "promote", "1.0.1", "--store", str(store))
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == f"champion in {store} is already 1.0.1: nothing to change" and again.stderr == ""
    assert (store / "registry" / "aliases.json").read_bytes() == aliases  # no move recorded
    latest = run("models", "promote", "latest", "--store", str(store))
    assert latest.returncode == 0 and "already 1.0.1" in latest.stdout


def test_history_shows_a_first_promotion_as_from_nothing_not_none(trained_store: Path) -> None:
    history = run("models", "history", "--store", str(trained_store), env={"COLUMNS": "200"})
    assert history.returncode == 0, history.stderr
    (row,) = [line for line in history.stdout.splitlines() if "promote" in line]
    assert "None" not in history.stdout and re.search(r"promote\W+–\W+1\.0\.1", row), row


def test_an_unknown_alias_names_what_can_be_shown_instead_of_asking_to_promote(trained_store: Path) -> None:
    proc = run("models", "show", "foo", "--store", str(trained_store))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == (f"error: {trained_store}: 'foo' is not a model version (N.N.N), 'latest' or an "
                                   "alias (champion)")


def _commands() -> list[tuple[list[str], object]]:
    """Every command of `oncology`, by the words that run it."""
    import typer

    from oncology.cli import app

    found: list[tuple[list[str], object]] = []

    def walk(command: object, path: list[str]) -> None:
        found.append((path, command))
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return found


def test_every_help_shows_each_options_default_flags_without_a_type_and_arguments_plainly() -> None:
    from typer.core import TyperArgument, TyperOption
    from typer.testing import CliRunner

    commands = _commands()
    assert len(commands) > 10
    for path, command in commands:
        shown = CliRunner().invoke(__import__("oncology.cli").cli.app, [*path, "--help"], env={"COLUMNS": "250"})
        assert shown.exit_code == 0, (path, shown.output)
        text = re.sub(r"\s+", " ", shown.output)
        assert "<bool>" not in shown.output, path  # a flag takes no value
        usage = shown.output.split("Usage: ", 1)[1].splitlines()[0]
        assert "{" not in usage, usage
        for param in getattr(command, "params", []):
            if isinstance(param, TyperArgument):
                assert f" {param.metavar} " in f"{usage} " and param.metavar.isupper(), (path, usage)
            if not isinstance(param, TyperOption) or param.name in {"help", "install_completion", "show_completion"}:
                continue
            row = next((line for line in shown.output.splitlines() if f" {param.opts[0]} " in line), None)
            assert row is not None and "default:" in row, (path, param.opts, row)
        assert "[env: ONCOLOGY_STORE; default: ./store" in text or "--store" not in text, path


def test_every_help_shows_each_paragraph_of_its_text_unbroken() -> None:
    """A sentence wrapped in the docstring's source is not broken mid-line in --help (Typer keeps the line breaks
    of the paragraphs after the first); on a wide terminal each paragraph is one line."""
    import inspect

    from typer.testing import CliRunner

    from oncology.clihelp import reflow

    broken = []
    for path, command in _commands():
        shown = CliRunner().invoke(__import__("oncology.cli").cli.app, [*path, "--help"], env={"COLUMNS": "1000"})
        assert shown.exit_code == 0, (path, shown.output)
        lines = [" ".join(line.split()) for line in shown.output.splitlines()]
        source = inspect.cleandoc(getattr(command, "help", None) or "").partition("\f")[0]
        for paragraph in source.split("\n\n"):
            if paragraph and not paragraph.startswith("\b") and " ".join(paragraph.split()) not in lines:
                broken.append((path, paragraph[:60]))
    assert broken == []
    assert reflow("One.\n\nTwo, wrapped\n  here.\n\n\bkept\nas is\f\nhidden\nlines") == (
        "One.\n\nTwo, wrapped here.\n\n\bkept\nas is\f\nhidden\nlines")


@pytest.mark.parametrize(("setting", "value", "named"), [
    ("ONCOLOGY_MAX_BATCH", "many", "max_batch: Input should be a valid integer"),
    ("ONCOLOGY_PORT", "99999", "port: Input should be less than or equal to 65535"),
])
def test_serve_names_a_bad_setting_in_one_line(tmp_path: Path, setting: str, value: str, named: str) -> None:
    """As train and the other commands say it: `error: <setting>: <what is wrong>`, no pydantic dump and no link."""
    done = run("serve", "--store", str(tmp_path), env={setting: value})
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {named}"), done.stderr
    assert "pydantic" not in done.stderr and "validation error" not in done.stderr


@pytest.mark.parametrize("args", [("serve", "--help"), ("serve", "--port", "abc"), ("serve", "--bogus"),
                                  ("serve", "extra"), ("serve", "--store", "/nonexistent/store")])
def test_serve_says_the_same_through_its_lean_entry_as_through_the_whole_command_tree(args: tuple[str, ...]) -> None:
    """``oncology serve`` runs without the rest of the command tree (oncology.entry): same help, same errors."""
    lean = run(*args)
    whole = subprocess.run([sys.executable, "-c", "from oncology.cli import app; app(prog_name='oncology')", *args],
                           capture_output=True, text=True, timeout=60,
                           env={**{k: v for k, v in os.environ.items() if not k.startswith(("ONCOLOGY_", "AWS_"))},
                                **fast_env(), "COLUMNS": "160"})
    assert (lean.returncode == 0) == (args[-1] == "--help")
    assert (lean.returncode, lean.stdout, lean.stderr) == (whole.returncode, whole.stdout, whole.stderr)
    assert lean.stdout + lean.stderr  # it said something


# ---- a plain `oncology serve` line is read without Typer (oncology.serving), exactly as Typer reads it ---------

_VALUES = st.one_of(st.from_regex(r"[0-9]{1,5}", fullmatch=True), st.text(max_size=5),
                    st.sampled_from(["-1", "", "٣", "8_080", " 80", "+80", "0x10", "--port", "a=b", "/srv/models"]))
_WORDS = st.lists(st.one_of(
    st.sampled_from([*serving.OPTIONS, "--help", "--bogus", "--", "--grpc_port", "-h"]),
    st.builds("{}={}".format, st.sampled_from(list(serving.OPTIONS)), _VALUES),
    _VALUES,
), max_size=8)


def _typer_reads(args: list[str]) -> dict[str, object] | None:
    """The options Typer hands to ``serve`` for ``oncology serve ARGS``; None for help or a usage error."""
    command = typer.main.get_command(serve_cli.app).commands["serve"]  # type: ignore[attr-defined]
    try:
        with command.make_context("serve", list(args)) as ctx:
            return {k: v for k, v in ctx.params.items() if v is not None}
    except (click.exceptions.Exit, click.UsageError):
        return None


@given(_WORDS)
@settings(max_examples=400, deadline=None)
def test_serve_reads_a_plain_line_as_typer_does_and_leaves_every_other_to_typer(args: list[str]) -> None:
    plain = serving.plain_options(args)
    if plain is not None:
        assert plain == _typer_reads(args), args


@pytest.mark.parametrize("args", [[], ["--port", "8080"], ["--store=/srv/models", "--grpc-port", "9000", "--workers", "2",
                                                           "--host", "0.0.0.0", "--model", "latest", "--port=08080"]])
def test_serve_reads_the_usual_lines_without_typer(args: list[str]) -> None:
    assert serving.plain_options(args) == _typer_reads(args) is not None


@pytest.mark.parametrize("args", [["--help"], ["--port", "abc"], ["--port", "-1"], ["--bogus"], ["extra"], ["--store"],
                                  ["--port", "1", "--port", "2"], ["--port", "٣"], ["--store", ""]])
def test_serve_leaves_help_usage_errors_and_unusual_values_to_typer(args: list[str]) -> None:
    assert serving.plain_options(args) is None
