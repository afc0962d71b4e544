"""Outcomes in the monitoring wing: the bulk import as a user runs it, the join with the prediction log
whatever the delay, realized figures with intervals that cover the truth, verification bias, and the
check's exit codes and the files it writes."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from oncology.monitoring.outcomes import chunk_metrics, join, verification
from oncology.outcomes import CONFLICTS_PREFIX, OutcomeBook
from oncology.settings import OutcomeSettings
from oncology_model.storage import LocalStore
from outcome_support import T0, Logged, fallen_log, post, simulated, write_log, write_outcomes
from support import fast_env

ONCOLOGY = str(Path(sys.executable).parent / "oncology")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ONCOLOGY, *args], capture_output=True, text=True, timeout=120,
                          env={"PATH": str(Path(sys.executable).parent), "COLUMNS": "200"})


def outcome_files(store: Path) -> list[str]:
    s = LocalStore(store)
    return s.list("monitoring/")


# ---- import ------------------------------------------------------------------------------------------

GOOD_CSV = ("request_id,outcome,observed_at,source\n"
            "a-1,malignant,2025-03-01T10:00:00+01:00,lab-1\n"
            "a-2,2,2025-03-02T10:00:00Z,lab-1\n")


def test_import_a_csv_file_records_once_and_reports_orphans(tmp_path: Path) -> None:
    store = tmp_path / "store"
    write_log(LocalStore(store), [Logged("a-1", "1.0.1", T0, 0.9)])
    (tmp_path / "o.csv").write_text(GOOD_CSV)
    done = run("outcomes", "import", str(tmp_path / "o.csv"), "--store", str(store))
    assert done.returncode == 0, done.stderr
    assert "2 outcome(s) recorded, 0 already recorded" in done.stdout
    assert "1 orphan(s)" in done.stdout and "a-2" in done.stdout  # a-1 has a logged prediction, a-2 not (yet)
    again = run("outcomes", "import", str(tmp_path / "o.csv"), "--store", str(store))
    assert again.returncode == 0 and "0 outcome(s) recorded, 2 already recorded" in again.stdout
    book = OutcomeBook(LocalStore(store))
    assert book.read_claim("a-2").outcome == "benign"  # type: ignore[union-attr]


def test_import_into_a_store_folder_that_does_not_exist_is_refused_and_creates_nothing(tmp_path: Path) -> None:
    """A mistyped --store: the outcomes would land in a new folder with no prediction to join (as `check` says)."""
    (tmp_path / "o.csv").write_text(GOOD_CSV)
    done = run("outcomes", "import", str(tmp_path / "o.csv"), "--store", str(tmp_path / "stroe"))
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"{tmp_path / 'stroe'}: no such store folder (a mistyped --store" in " ".join(done.stderr.split())
    assert not (tmp_path / "stroe").exists()


def test_import_json_lines(tmp_path: Path) -> None:
    lines = [{"request_id": "j-1", "outcome": 4, "observed_at": "2025-03-01T10:00:00-05:00", "source": "export"},
             {"request_id": "j-2", "outcome": "benign", "observed_at": "2025-03-01T10:00:00+00:00", "source": "export"}]
    (tmp_path / "o.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    (tmp_path / "s").mkdir()
    done = run("outcomes", "import", str(tmp_path / "o.jsonl"), "--store", str(tmp_path / "s"))
    assert done.returncode == 0, done.stderr
    assert "2 outcome(s) recorded" in done.stdout


BAD_CSV = ("request_id,outcome,observed_at,source\n"
           "b-1,malignant,2025-03-01T10:00:00+01:00,lab-1\n"
           "b-2,benign,2025-03-01T10:00:00,lab-1\n"  # no zone
           "b-3,cancer,2025-03-01T10:00:00Z,lab-1\n"  # unknown outcome
           "b-4,benign,2999-03-01T10:00:00Z,lab-1\n"  # in the future
           "b-5,benign\n")  # malformed


def test_a_file_with_bad_rows_writes_nothing_and_names_each_row_and_field(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text(BAD_CSV)
    (tmp_path / "s").mkdir()
    done = run("outcomes", "import", str(tmp_path / "bad.csv"), "--store", str(tmp_path / "s"))
    assert done.returncode == 2
    message = " ".join(done.stderr.split())
    assert "4 bad row(s), nothing written" in message
    assert "row 2 (line 3), field observed_at" in message and "timezone" in message
    assert "row 3 (line 4), field outcome" in message
    assert "row 4 (line 5), field observed_at" in message and "in the future" in message
    assert "row 5 (line 6), field row" in message
    assert not any((tmp_path / "s").iterdir())


def test_skip_invalid_records_the_good_rows_and_reports_the_skipped(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text(BAD_CSV)
    (tmp_path / "s").mkdir()
    done = run("outcomes", "import", str(tmp_path / "bad.csv"), "--store", str(tmp_path / "s"), "--skip-invalid")
    assert done.returncode == 0, done.stderr
    assert "1 outcome(s) recorded" in done.stdout and "4 row(s) skipped" in done.stdout
    assert "skipped row 3 (line 4), field outcome" in " ".join(done.stdout.split())
    assert OutcomeBook(LocalStore(tmp_path / "s")).read_claim("b-1") is not None


def test_a_different_outcome_in_a_file_is_a_named_error_listing_both(tmp_path: Path) -> None:
    store = tmp_path / "s"
    post(LocalStore(store), [("c-1", "malignant", datetime(2025, 3, 1, tzinfo=UTC))], source="lab-1")
    (tmp_path / "o.csv").write_text("request_id,outcome,observed_at,source\nc-2,benign,2025-03-01T10:00:00Z,lab-2\n"
                                    "c-1,benign,2025-03-02T10:00:00Z,lab-2\n")
    done = run("outcomes", "import", str(tmp_path / "o.csv"), "--store", str(store))
    assert done.returncode == 1
    out = " ".join(done.stdout.split())
    assert "conflict at row 2: request id c-1 already has outcome malignant" in out and "benign (observed" in out
    assert "1 conflict(s) refused" in out
    assert OutcomeBook(LocalStore(store)).read_claim("c-1").outcome == "malignant"  # type: ignore[union-attr]
    assert len(LocalStore(store).list(CONFLICTS_PREFIX + "/")) == 1


@pytest.mark.parametrize(("text", "says"), [
    ("", "o.csv: empty: not even the header request_id,outcome,observed_at,source"),
    ("\n \n", "o.jsonl: empty: no JSON object (one outcome a line: request_id, outcome, observed_at, source)"),
    ("request_id;outcome;observed_at;source\nd-1;4;2025-03-01T10:00:00Z;l\n",
     "o.csv: the columns are separated by semicolons; the file must be CSV with commas"),
    ("request_id\toutcome\tobserved_at\tsource\nd-1\t4\t2025-03-01T10:00:00Z\tl\n",
     "o.csv: the columns are separated by tabs; the file must be CSV with commas"),
    ("Request_ID,Outcome,observed_at,source\nd-1,4,2025-03-01T10:00:00Z,l\n",
     "o.csv: the header's names are lower case: Request_ID -> request_id, Outcome -> outcome"),
])
def test_a_spreadsheet_export_gone_wrong_is_refused_with_what_to_do(tmp_path: Path, text: str, says: str) -> None:
    """An empty export, another separator or capitalised names: not "0 recorded", nor "patient data" columns."""
    name = says.split(":")[0]  # o.csv, or o.jsonl for the empty JSON Lines export
    (tmp_path / name).write_text(text)
    (tmp_path / "s").mkdir()
    done = run("outcomes", "import", str(tmp_path / name), "--store", str(tmp_path / "s"))
    assert done.returncode == 2, done.stdout
    assert says in " ".join(done.stderr.split()) and "patient data" not in done.stderr
    assert not any((tmp_path / "s").iterdir())


def test_a_time_in_a_spreadsheets_own_format_is_refused_with_the_form_to_write(tmp_path: Path) -> None:
    (tmp_path / "o.csv").write_text("request_id,outcome,observed_at,source\ne-1,benign,05/12/2026 10:00,lab\n"
                                    "e-2,benign,2026-12-05 10:00,lab\n")
    (tmp_path / "s").mkdir()
    done = run("outcomes", "import", str(tmp_path / "o.csv"), "--store", str(tmp_path / "s"))
    assert done.returncode == 2
    message = " ".join(done.stderr.split())
    form = "(write ISO 8601 with a time zone, e.g. 2026-12-05T10:00:00+01:00)"
    assert "row 1 (line 2), field observed_at: '05/12/2026 10:00': Input should be a valid datetime" in message
    assert message.count(form) == 2 and "timezone info " + form in message, message


def test_a_column_beyond_the_join_is_refused(tmp_path: Path) -> None:
    (tmp_path / "o.csv").write_text("request_id,outcome,observed_at,source,patient_name\nd-1,4,2025-03-01T10:00:00Z,l,Jane\n")
    done = run("outcomes", "import", str(tmp_path / "o.csv"), "--store", str(tmp_path / "s"))
    assert done.returncode == 2 and "patient_name" in done.stderr
    assert not (tmp_path / "s").exists()


# ---- the join --------------------------------------------------------------------------------------


def test_outcomes_join_the_version_that_answered_whatever_the_delay(tmp_path: Path) -> None:
    """Predictions over 120 days (120 date partitions, two versions); outcomes 1, 30 and 200 days later."""
    store = LocalStore(tmp_path)
    logged = [Logged(f"r{i}", "1.0.1" if i < 60 else "1.0.2", T0 + timedelta(days=i, hours=i % 24), (i % 10) / 10)
              for i in range(120)]
    write_log(store, logged)
    write_log(store, [Logged("batch", "1.0.1", T0, 0.2), Logged("batch", "1.0.1", T0, 0.7)], writer="b")
    delays = {p.request_id: (1, 30, 200)[i % 3] for i, p in enumerate(logged)}
    post(store, [(p.request_id, "malignant" if p.probability > 0.5 else "benign", p.ts + timedelta(days=delays[p.request_id]))
                 for p in logged] + [("orphan", "benign", T0), ("batch", "benign", T0)])
    joined = join(store, "month")
    assert joined.labelled == 120
    answered = {p.request_id: p.version for p in logged}
    assert {r: v for r, v in zip(joined.request_id, joined.version)} == answered
    got = dict(zip(joined.request_id, np.round(joined.delay_days, 6)))
    assert got == {r: float(d) for r, d in delays.items()}
    assert joined.orphans == 1 and joined.orphan_examples == ["orphan"]
    assert joined.ambiguous_outcomes == 1  # the batch's request id names two predictions
    assert {row["version"] for row in joined.coverage} == {"1.0.1", "1.0.2"}


def test_the_join_reads_compacted_days_from_parquet_and_the_others_from_json_lines_with_the_same_figures(
        tmp_path: Path) -> None:
    """The join is a query on the data plane's relation: with some days compacted into Parquet and the others
    not, every figure of the check is the one of the JSON Lines alone; first with the compacted days' JSON Lines
    kept (each prediction read once, not twice), then with them expired (the compacted days read from Parquet)."""
    from oncology.monitoring.compaction import compact, expire
    from oncology.monitoring.engine.layout import plan
    from oncology.monitoring.outcomes import check, labelled_rows

    store, _ = simulated(tmp_path / "store", 3000, seed=8, days=20, verify_benign=0.4)
    settings = OutcomeSettings(store=str(tmp_path / "store"), outcomes_period="week")
    now = datetime(2026, 1, 1, tzinfo=UTC)
    before = check(store, settings, now, write=False).report
    rows_before = labelled_rows(store)
    days = sorted({T0.date() + timedelta(days=k) for k in range(21)})
    assert all(done.manifest is not None for done in compact(store, now, days[::2]))  # every other day
    todo = plan(store, days)
    assert len(todo.parquet) == 11 and len(todo.jsonl) == 10  # mixed: Parquet parts and JSON Lines objects
    for stage in ("JSON Lines kept", "JSON Lines of the compacted days expired"):
        if stage.endswith("expired"):
            assert len(expire(store, now.date())) == 11
        after = check(store, settings, now, write=False).report
        assert after == before, stage
        assert after["labelled"] > 1000 and after["ambiguous_outcomes"] == 0
        assert labelled_rows(store) == rows_before, stage


def test_a_shadowed_request_joins_the_version_that_answered_it_also_once_compacted(tmp_path: Path) -> None:
    """In a shadow release the candidate's score is logged under the request id of the champion's answer
    (arm "shadow"): it is no answer, so the outcome joins the champion's line, and is not ambiguous."""
    from oncology.monitoring.compaction import compact
    from oncology.monitoring.outcomes import join

    store = LocalStore(tmp_path / "store")
    answered = [Logged(f"s-{i}", "1.0.1", T0 + timedelta(days=i % 2, minutes=i), 0.9 if i % 3 else 0.1)
                for i in range(12)]
    shadows = [Logged(p.request_id, "1.0.2", p.ts, 0.5, arm="shadow") for p in answered]
    canary = [Logged("c-1", "1.0.2", T0, 0.9, arm="candidate")]  # a canary's answer is an answer
    write_log(store, [*answered, *shadows, *canary])
    write_outcomes(store, [(p.request_id, "malignant", p.ts + timedelta(days=3)) for p in [*answered, *canary]])
    for stage in ("JSON Lines", "the first day compacted"):
        if stage != "JSON Lines":
            assert all(done.manifest is not None
                       for done in compact(store, datetime(2026, 1, 1, tzinfo=UTC), [T0.date()]))
        joined = join(store, "month")
        assert joined.ambiguous_outcomes == 0 and joined.orphans == 0, stage
        assert sorted(zip(joined.request_id, joined.version, strict=True)) == sorted(
            [(p.request_id, "1.0.1") for p in answered] + [("c-1", "1.0.2")]), stage
        assert sum(row["predictions"] for row in joined.coverage) == 13, stage  # the shadows' lines are not counted


def test_parts_compacted_before_the_arm_column_read_as_the_champions(tmp_path: Path) -> None:
    """A store compacted before the prediction log had an ``arm`` (every part without the column, or some):
    its rows are the champion's answers, and the join reads the same as from JSON Lines."""
    import duckdb

    from oncology.monitoring.compaction import compact
    from oncology.monitoring.engine.layout import PARQUET_PREFIX
    from oncology.monitoring.outcomes import join

    store = LocalStore(tmp_path / "store")
    logged = [Logged(f"o-{i}", "1.0.1", T0 + timedelta(days=i % 3, minutes=i), 0.9 if i % 3 else 0.1) for i in range(30)]
    write_log(store, logged)
    write_outcomes(store, [(p.request_id, "malignant", p.ts + timedelta(days=5)) for p in logged])
    expected = sorted(zip(*(lambda j: (j.request_id, j.version))(join(store, "month")), strict=True))
    assert len(expected) == 30
    days = sorted({p.ts.date() for p in logged})
    assert all(done.manifest is not None for done in compact(store, datetime(2026, 1, 1, tzinfo=UTC), days))
    parts = sorted((tmp_path / "store" / PARQUET_PREFIX).glob("date=*/part-*.parquet"))
    assert len(parts) == 3
    for stage, old in (("one part old", parts[:1]), ("every part old", parts[1:])):
        for part in old:  # as an earlier compaction wrote it: the same rows, no arm column
            part.rename(part.with_suffix(".tmp"))
            duckdb.sql(f"COPY (SELECT * EXCLUDE (arm) FROM read_parquet('{part.with_suffix('.tmp')}')) "
                       f"TO '{part}' (FORMAT parquet)")
            part.with_suffix(".tmp").unlink()
            assert "arm" not in duckdb.sql(f"SELECT * FROM read_parquet('{part}')").columns
        joined = join(store, "month")
        assert joined.ambiguous_outcomes == 0 and joined.orphans == 0, stage
        assert sorted(zip(joined.request_id, joined.version, strict=True)) == expected, stage


# ---- realized figures ------------------------------------------------------------------------------


def test_chunk_figures_are_the_textbook_ones() -> None:
    rng = np.random.default_rng(3)
    y = rng.random(400) < 0.4
    p = np.clip(np.where(y, rng.normal(0.7, 0.2, 400), rng.normal(0.3, 0.2, 400)), 0, 1)
    predicted, referred = p >= 0.5, (p > 0.45) & (p < 0.55)
    f = chunk_metrics(p, predicted, referred, y, np.full(400, 3.0), min_malignant=20)
    tp, tn = int((predicted & y).sum()), int((~predicted & ~y).sum())
    assert f["accuracy"]["value"] == pytest.approx((tp + tn) / 400)
    assert f["recall"]["value"] == pytest.approx(tp / y.sum())
    assert f["specificity"]["value"] == pytest.approx(tn / (~y).sum())
    assert f["roc_auc"]["value"] == pytest.approx(roc_auc_score(y, p))
    assert f["brier"]["value"] == pytest.approx(np.mean((p - y) ** 2))
    assert f["referral_share"]["value"] == pytest.approx(referred.mean())
    for name in ("accuracy", "recall", "specificity", "roc_auc", "brier", "referral_share"):
        assert f[name]["low"] < f[name]["value"] < f[name]["high"], name
    few = chunk_metrics(p[:30], predicted[:30], referred[:30], y[:30], np.zeros(30), min_malignant=20)
    assert few["recall"]["value"] is None and "fewer than 20" in few["recall"]["note"]


def test_95_percent_intervals_cover_the_truth_in_at_least_93_percent_of_simulated_chunks() -> None:
    """1,000 chunks of 300 labelled cases from a model whose population figures are known (scores drawn from
    two Beta distributions; truths from 2 million draws)."""
    rng = np.random.default_rng(20261205)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.random(n) < 0.35
        return np.where(y, rng.beta(5, 1.6, n), rng.beta(1.6, 5, n)), y

    p, y = draw(2_000_000)
    pred, refer = p >= 0.5, (p >= 0.4) & (p < 0.6)
    truth = {"accuracy": np.mean(pred == y), "recall": np.mean(pred[y]), "specificity": np.mean(~pred[~y]),
             "brier": np.mean((p - y) ** 2), "referral_share": np.mean(refer),
             "roc_auc": np.mean(rng.choice(p[y], 2_000_000) > rng.choice(p[~y], 2_000_000))}
    covered = dict.fromkeys(truth, 0)
    chunks = 1000
    for _ in range(chunks):
        p, y = draw(300)
        f = chunk_metrics(p, p >= 0.5, (p >= 0.4) & (p < 0.6), y, np.zeros(300), min_malignant=20)
        for name, value in truth.items():
            covered[name] += f[name]["low"] <= value <= f[name]["high"]
    shares = {name: n / chunks for name, n in covered.items()}
    assert all(share >= 0.93 for share in shares.values()), shares


def test_verification_bias_naive_recall_is_off_and_the_corrected_interval_covers_the_truth() -> None:
    """Biopsies for 90% of predicted-malignant cases and 5% of predicted-benign ones; 300 seeded populations."""
    rng = np.random.default_rng(7)
    covered = naive_off = 0
    reps = 300
    for _ in range(reps):
        n = 5000
        truth = rng.random(n) < 0.35
        predicted = np.where(truth, rng.random(n) < 0.93, rng.random(n) < 0.06)
        verified = rng.random(n) < np.where(predicted, 0.9, 0.05)
        real = (predicted & truth).sum() / truth.sum()
        v = verification(int(predicted.sum()), int((predicted & verified).sum()), int((predicted & verified & truth).sum()),
                         int((~predicted).sum()), int((~predicted & verified).sum()), int((~predicted & verified & truth).sum()),
                         ratio=0.5)
        assert v["biased"] and "cannot be read off" in v["note"]
        naive_off += not v["naive_recall"]["low"] <= real <= v["naive_recall"]["high"]
        covered += v["corrected_recall"]["low"] <= real <= v["corrected_recall"]["high"]
    assert naive_off / reps > 0.9  # the labelled cases alone say recall ~0.995
    assert covered / reps >= 0.93


def test_the_check_reports_verification_bias_end_to_end(tmp_path: Path) -> None:
    store, real = simulated(tmp_path, 6000, seed=11, recall=0.93, specificity=0.94, verify_malignant=0.9,
                            verify_benign=0.05)
    from oncology.monitoring.outcomes import check

    report = check(store, OutcomeSettings(store=str(tmp_path)), write=False).report
    bias = report["versions"]["1.0.1"]["verification"]
    assert bias["biased"]
    assert bias["naive_recall"]["value"] > real["recall"] + 0.04
    assert bias["corrected_recall"]["low"] <= real["recall"] <= bias["corrected_recall"]["high"]
    unbiased = simulated(tmp_path / "all", 3000, seed=12, verify_benign=0.9, verify_malignant=0.9)[0]
    assert not check(unbiased, OutcomeSettings(), write=False).report["versions"]["1.0.1"]["verification"]["biased"]


# ---- the check ---------------------------------------------------------------------------------------


def fallen(tmp_path: Path, recall_after: float) -> Path:
    """A version whose recall is 0.98 for 300 malignant cases, then ``recall_after``; every case verified."""
    fallen_log(LocalStore(tmp_path), recall_after)
    return tmp_path


def test_a_check_where_every_outcome_is_ambiguous_says_so_and_how_to_avoid_it(tmp_path: Path) -> None:
    store = tmp_path / "store"
    # the same request ids logged twice (a client that reused its X-Request-Id), then one outcome for each
    twice = [Logged(f"r-{i}", "1.0.1", T0 + timedelta(minutes=i + j), 0.8) for j in (0, 100) for i in range(3)]
    write_log(LocalStore(store), twice)
    write_outcomes(LocalStore(store), [(f"r-{i}", "malignant", T0 + timedelta(days=1)) for i in range(3)])
    done = run("outcomes", "check", "--store", str(store))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "(0 orphan(s), 3 ambiguous)" in done.stderr
    assert "3 ambiguous outcome(s) left out" in done.stdout and "own id" in done.stdout


def test_a_log_object_cut_short_is_skipped_and_named_by_the_check_or_refused(tmp_path: Path) -> None:
    """docs/outcomes.md: an object cut short is skipped, and named, or refused, per ONCOLOGY_ON_CORRUPT."""
    import gzip

    store = LocalStore(tmp_path / "store")
    whole = [Logged(f"w-{i}", "1.0.1", T0 + timedelta(minutes=i), 0.9 if i % 3 else 0.1) for i in range(60)]
    write_log(store, whole)
    lost = [Logged(f"c-{i}", "1.0.1", T0 + timedelta(minutes=i), 0.9) for i in range(300)]
    body = gzip.compress("".join(json.dumps(p.line()) + "\n" for p in lost).encode())
    cut = f"monitoring/predictions/date={T0:%Y-%m-%d}/cut-00000001.jsonl.gz"  # a writer that died mid-write
    store.create(cut, body[: len(body) // 2])
    write_outcomes(store, [(p.request_id, "malignant" if p.probability > 0.5 else "benign", T0 + timedelta(days=1))
                           for p in whole])
    env = {"PATH": str(Path(sys.executable).parent), "COLUMNS": "200"}
    skipped = subprocess.run([ONCOLOGY, "outcomes", "check", "--store", str(tmp_path / "store")],
                             capture_output=True, text=True, timeout=120, env=env)
    assert skipped.returncode == 0, skipped.stdout + skipped.stderr
    assert f"warning: 1 unreadable log file(s) skipped: {cut}" in " ".join(skipped.stderr.split())
    (key,) = [k for k in store.list("monitoring/outcome-checks/") if "/date=" in k]
    assert json.loads(store.read(key))["unreadable_files"] == [cut]
    refused = subprocess.run([ONCOLOGY, "outcomes", "check", "--store", str(tmp_path / "store")],
                             capture_output=True, text=True, timeout=120, env=env | {"ONCOLOGY_ON_CORRUPT": "refuse"})
    assert refused.returncode == 2 and "cut-00000001.jsonl.gz" in refused.stderr, refused.stdout + refused.stderr


def test_check_exit_codes_and_what_it_writes(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run("outcomes", "check", "--store", str(empty)).returncode == 2

    steady = run("outcomes", "check", "--store", str(fallen(tmp_path / "steady", 0.98)))
    assert steady.returncode == 0, steady.stdout + steady.stderr
    assert "no alarm" in steady.stdout
    # the dashboard the service serves (the newest in the store) is written again, with the realized figures
    # where it wrote, as drift says it: the store's location, then the key
    (dashboard,) = [line.removeprefix("dashboard: ") for line in steady.stdout.splitlines() if line.startswith("dashboard: ")]
    assert dashboard.startswith(f"{tmp_path / 'steady'}/monitoring/"), steady.stdout
    (report_at,) = [line.removeprefix("report: ") for line in steady.stdout.splitlines() if line.startswith("report: ")]
    assert Path(report_at).is_file() and Path(report_at).parent.parent.parent == tmp_path / "steady" / "monitoring", report_at
    page = Path(dashboard).read_text()
    assert "realized performance" in page and "1.0.3" in page

    alarm = run("outcomes", "check", "--store", str(fallen(tmp_path / "fallen", 0.85)), "--chunk-size", "200")
    assert alarm.returncode == 1, alarm.stdout + alarm.stderr
    assert "alarm: 1.0.3: recall" in " ".join(alarm.stderr.split()) and "error" not in alarm.stderr, alarm.stderr
    store = LocalStore(tmp_path / "fallen")
    (key,) = [k for k in store.list("monitoring/outcome-checks/") if "/date=" in k]  # written once; latest.json names it
    report = json.loads(store.read(key))
    latest = json.loads(store.read("monitoring/outcome-checks/latest.json"))
    verdicts = {(a["version"], a["metric"]): a["alarm"] for a in latest["alarms"]}
    assert latest["report"] == key and verdicts == {("1.0.3", "recall"): True, ("1.0.3", "specificity"): False,
                                                    ("1.0.3", "calibration"): False}  # no registry here: unchecked
    assert report["status"] == "alarm" and report["versions"]["1.0.3"]["alarms"]["recall"]["alarm"]
    assert report["versions"]["1.0.3"]["chunks"][0]["chunk"] == "cases 1-200"
    (table,) = store.list("monitoring/tables/realized/")
    rows = list(csv.DictReader(io.StringIO(store.read(table).decode())))
    assert {r["metric"] for r in rows} == {"accuracy", "recall", "specificity", "roc_auc", "brier", "referral_share"}
    assert {r["version"] for r in rows} == {"1.0.3"} and len(rows) == 7 * 6  # 1,400 cases in chunks of 200
    manifest = json.loads(store.read("monitoring/quicksight/realized.manifest.json"))
    # a URI, as the other tables' manifests name a local store (reporting.md): file://..., not a bare path
    assert manifest["fileLocations"][0]["URIPrefixes"] == [f"{store.root.as_uri()}/monitoring/tables/realized/"]
    # a local store reported from its copy in S3 (reporting.md): --manifest-base names the copy in every manifest,
    # the realized table's too, and the next check leaves it so
    moved = run("monitoring", "promotions", "--store", str(tmp_path / "fallen"), "--manifest-base", "s3://bucket/copy")
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert run("outcomes", "check", "--store", str(tmp_path / "fallen"), "--chunk-size", "200").returncode == 1
    for table in ("metrics", "promotions", "realized"):
        manifest = json.loads(store.read(f"monitoring/quicksight/{table}.manifest.json"))
        assert manifest["fileLocations"][0]["URIPrefixes"] == [f"s3://bucket/copy/monitoring/tables/{table}/"], table
    recall_rows = [float(r["value"]) for r in rows if r["metric"] == "recall"]
    assert recall_rows[0] > 0.95 and recall_rows[-1] < 0.9 and all(math.isfinite(v) for v in recall_rows)


def test_the_service_exports_the_newest_checks_alarms(tmp_path: Path, trained_store: Path) -> None:
    """The check writes its verdicts; the service (outcomes on, same store) reads them into oncology_outcome_alarm."""
    import time

    from starlette.testclient import TestClient

    from oncology.monitoring.outcomes import check
    from oncology.settings import ServeSettings
    from oncology.webservice.app import create_app

    store = fallen(tmp_path, 0.85)
    assert check(LocalStore(store), OutcomeSettings()).status == "alarm"
    settings = ServeSettings(store=str(trained_store), outcomes=True, outcomes_store=str(store))
    with TestClient(create_app(settings)) as client:
        deadline = time.monotonic() + 20
        while "oncology_outcome_alarm{" not in (text := client.get("/metrics").text):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert 'oncology_outcome_alarm{metric="recall",model_version="1.0.3"} 1.0' in text
    assert 'oncology_outcome_alarm{metric="specificity",model_version="1.0.3"} 0.0' in text
    assert "oncology_outcome_check_timestamp_seconds 0.0" not in text


@pytest.mark.parametrize(("shrink", "alarm"), [(1.0, False), (0.6, True)])
def test_realized_beside_the_cbpe_estimate_alarms_when_the_probabilities_are_no_longer_calibrated(
        tmp_path: Path, trained_store: Path, shrink: float, alarm: bool) -> None:
    """Outcomes drawn from the version's own calibration (its reference.json) agree with CBPE; outcomes drawn at
    0.6 times those chances (a population where the model over-states the risk) do not."""
    import shutil

    from oncology.monitoring.outcomes import calibrations, check

    shutil.copytree(trained_store, tmp_path / "store")
    store = LocalStore(tmp_path / "store")
    curve = calibrations(store, ["1.0.1"])["1.0.1"]
    assert isinstance(curve, np.ndarray)
    bins = (curve.size - 1) // 2
    rng = np.random.default_rng(17)
    p = rng.random(3000)
    c = curve[:bins][np.clip(np.searchsorted(curve[bins:], p, side="right") - 1, 0, bins - 1)]
    malignant = rng.random(3000) < c * shrink
    logged = [Logged(f"k{i}", "1.0.1", T0 + timedelta(hours=i), float(p[i])) for i in range(3000)]
    write_log(store, logged)
    write_outcomes(store, [(x.request_id, "malignant" if malignant[i] else "benign", x.ts + timedelta(days=5))
                           for i, x in enumerate(logged)])
    report = check(store, OutcomeSettings(store=str(tmp_path / "store")), write=False).report
    version = report["versions"]["1.0.1"]
    first = version["chunks"][0]["cbpe"]
    assert first["accuracy"]["low"] < first["accuracy"]["estimated"] < first["accuracy"]["high"]
    assert version["alarms"]["calibration"]["checked"]
    assert version["alarms"]["calibration"]["alarm"] is alarm
    assert any("1.0.1: calibration" in a for a in report["alarms"]) is alarm


def test_labelled_cases_become_a_dataset_version_with_lineage_that_training_reads(tmp_path: Path) -> None:
    """`oncology outcomes dataset`: the raw file untouched plus one row per labelled case; the trainer reads it, and
    the model it publishes names the dataset version's file."""
    from oncology.trainer import data

    store_dir = tmp_path / "store"
    store = LocalStore(store_dir)
    rng = np.random.default_rng(4)
    uci = data.load()
    rows, truth = uci.X.astype(int), uci.y
    picks = rng.integers(0, len(rows), 60)
    logged = []
    for i, k in enumerate(picks):
        p = Logged(f"d{i}", "1.0.1", T0 + timedelta(days=i), 0.5)
        line = p.line()
        line["inputs"] = dict(zip(data.FEATURES, map(int, rows[k])))
        logged.append(line)
    import gzip as gz
    store.create("monitoring/predictions/date=2025-01-06/w-1.jsonl.gz",
                 gz.compress("".join(json.dumps(x) + "\n" for x in logged).encode()))
    post(store, [(f"d{i}", "malignant" if truth[picks[i]] else "benign", T0 + timedelta(days=100)) for i in range(50)]
         + [("orphan", "benign", T0)])

    done = run("outcomes", "dataset", "--store", str(store_dir))
    assert done.returncode == 0, done.stderr
    assert "dataset version 1 written: the raw data plus 50 labelled case(s)" in " ".join(done.stdout.split())
    again = run("outcomes", "dataset", "--store", str(store_dir))
    assert "dataset version 1 unchanged" in again.stdout  # the same rows: no second version
    lineage = json.loads(store.read("datasets/1/lineage.json"))
    raw = data.BUNDLED_DATA.read_bytes()
    assert lineage["raw"]["sha256"] == data.BUNDLED_DATA_SHA256 and lineage["outcomes"]["cases"] == 50
    assert lineage["outcomes"]["malignant"] == int(truth[picks[:50]].sum()) and lineage["outcomes"]["by_model_version"] == {"1.0.1": 50}
    assert lineage["outcomes"]["batches"] and all(k.startswith("monitoring/outcomes/date=") for k in lineage["outcomes"]["batches"])
    content = store.read("datasets/1/breast-cancer-wisconsin.data")
    assert content.startswith(raw)  # the raw data as it is
    dataset = data.parse(content, "dataset 1")
    assert len(dataset) == len(data.parse(raw).y) + 50
    assert data.BUNDLED_DATA.read_bytes() == raw  # data/raw never edited

    assert f"train on it: oncology train --dataset 1 --store {store_dir}" in " ".join(done.stdout.split())

    gate_off = {f"ONCOLOGY_GATE_MIN_{k}": "0" for k in ("ACCURACY", "RECALL", "SPECIFICITY", "ROC_AUC")}  # not tested here
    env = {"PATH": str(Path(sys.executable).parent), "COLUMNS": "200", **fast_env(), **gate_off}
    trained = subprocess.run([ONCOLOGY, "train", "--dataset", "1", "--store", str(store_dir)], capture_output=True,
                             text=True, timeout=600, env=env)
    assert trained.returncode == 0, trained.stderr
    said = " ".join(trained.stdout.split())
    published = re.search(r"published model version (\S+) to \S+ \(trained on dataset version 1: 50 case\(s\) from "
                          r"outcomes\)", said)
    assert published, said
    version = published.group(1)
    metadata = json.loads(store.read(f"models/{version}/metadata.json"))
    uri = f"{store_dir}/datasets/1/breast-cancer-wisconsin.data"
    assert metadata["data"]["uri"] == uri and metadata["data"]["sha256"] == lineage["data"]["sha256"]
    assert metadata["data"]["dataset_version"] == {
        "version": "1", "lineage": "datasets/1/lineage.json", "raw": lineage["raw"], "outcome_cases": 50,
        "outcome_malignant": lineage["outcomes"]["malignant"], "outcome_cases_by_model_version": {"1.0.1": 50}}
    assert metadata["data"]["rows_read"] == len(data.parse(raw).y) + 16 + 50  # the raw file's rows (16 incomplete)
    card = store.read(f"models/{version}/card.md").decode()
    assert (f"- Dataset version: 1 (datasets/1/lineage.json): the raw file breast-cancer-wisconsin.data (sha256 "
            f"{data.BUNDLED_DATA_SHA256}) as it is, plus 50 labelled case(s) from outcomes") in card


def test_train_on_a_dataset_version_refuses_what_it_cannot_train_on(tmp_path: Path) -> None:
    """A missing version, a word that is no version, --data beside --dataset, a data file changed after its
    lineage was written: each a one-line error and exit 2, nothing trained."""
    (tmp_path / "store").mkdir()
    store = LocalStore(tmp_path / "store")
    missing = run("train", "--dataset", "3", "--store", str(tmp_path / "store"))
    assert missing.returncode == 2 and "has no dataset version 3 (versions: none); make one with `oncology outcomes " \
        "dataset`" in " ".join(missing.stderr.split())
    both = run("train", "--dataset", "1", "--data", "x.data", "--store", str(tmp_path / "store"))
    assert both.returncode == 2 and "not both" in both.stderr
    word = run("train", "--dataset", "newest", "--store", str(tmp_path / "store"))
    assert word.returncode == 2 and "a number (1, 2, ...) or 'latest', not 'newest'" in word.stderr
    from oncology.trainer.data import BUNDLED_DATA

    raw = BUNDLED_DATA.read_bytes()
    store.create("datasets/1/breast-cancer-wisconsin.data", raw + b"900000000,1,1,1,1,1,1,1,1,1,2\n")
    store.create("datasets/1/lineage.json", json.dumps({
        "data": {"file": "breast-cancer-wisconsin.data", "sha256": "0" * 64}, "raw": {}, "outcomes": {"cases": 1}}).encode())
    changed = run("train", "--dataset", "latest", "--store", str(tmp_path / "store"))
    assert changed.returncode == 2 and "differs from the " + "0" * 64 + " its lineage records" in (
        " ".join(changed.stderr.split()))
    assert not store.list("models/")
