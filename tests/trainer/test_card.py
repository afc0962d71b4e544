"""The model card's figures are the bundle's KPIs, in both of its forms."""

from __future__ import annotations

import json
import re

from oncology.trainer import card
from oncology_model.bundle import Bundle
from support import Traced


def _table(markdown: str, header: str) -> list[list[str]]:
    """The rows of the Markdown table whose header row starts with ``header``."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {header} |"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_card_json_carries_the_bundles_own_figures(traced: Traced) -> None:
    bundle = Bundle.from_files(traced.result.files)
    assert bundle.card is not None
    c, kpis, meta = bundle.card, bundle.kpis, bundle.metadata
    assert c["evaluation"] == {"cv": kpis["cv"], "test": kpis["test"], "cv_tuned_on_own_folds": kpis["cv_tuned_on_own_folds"]}
    assert c["families"] == kpis["families"] and c["threshold_table"] == kpis["threshold_table"]
    assert c["targets"] == kpis["targets"]
    assert c["referral"] == {**meta["referral"], "cv": kpis["referral"]["cv"], "test": kpis["referral"]["test"]}
    assert c["threshold"] == meta["threshold"] == kpis["threshold"]
    assert c["data"] == meta["data"] and c["model"] == meta["model"] and c["version"] == bundle.version
    assert c["limitations"] and c["reporting_problems"] and "not a diagnosis" in c["intended_use"]["not_for"].lower()


def test_card_markdown_shows_the_bundles_figures(traced: Traced) -> None:
    bundle = Bundle.from_files(traced.result.files)
    md = bundle.card_markdown
    assert md is not None
    kpis, f = bundle.kpis, card.fmt
    test_rows = {row[0]: row[1:] for row in _table(md, "KPI | test")}
    cv_rows = {row[0]: row[1] for row in _table(md, "KPI | nested CV mean ± std")}
    for key, label in card.KPI_LABELS.items():
        lo, hi = kpis["test"]["ci"][key]
        assert test_rows[label] == [f(kpis["test"][key]), f"[{f(lo)}, {f(hi)}]"], key
        assert cv_rows[label] == f"{f(kpis['cv']['mean'][key])} ± {f(kpis['cv']['std'][key])}", key
    cm = kpis["test"]["confusion_matrix"]
    matrix = {row[0]: row[1:] for row in _table(md, "actual")}
    assert matrix["benign"] == [str(cm["tn"]), str(cm["fp"])] and matrix["malignant"] == [str(cm["fn"]), str(cm["tp"])]
    referral = {row[0]: row[1:] for row in _table(md, "figure | nested CV mean ± std")}
    for key, label in card.REFERRAL_LABELS.items():
        r = kpis["referral"]
        assert referral[label][0] == f"{f(r['cv']['mean'][key])} ± {f(r['cv']['std'][key])}"
        assert referral[label][1] == f(r["test"][key])
    assert f"[{f(r['low'])}, {f(r['high'])})" in md
    table = _table(md, "threshold")
    assert len(table) == len(kpis["threshold_table"])
    for row, entry in zip(table, kpis["threshold_table"]):
        assert row[0].startswith(f(entry["threshold"])) and ("(chosen)" in row[0]) == entry["chosen"]
        assert row[1:] == [f(entry["cv"]["recall"]), f(entry["cv"]["specificity"]), f(entry["test"]["recall"]),
                           f(entry["test"]["specificity"])]
    families = _table(md, "family")
    assert [row[0] for row in families] == [fam["label"] for fam in kpis["families"]]
    for row, fam in zip(families, kpis["families"]):
        assert row[5] == f"{f(fam['cv']['mean']['roc_auc'])} ± {f(fam['cv']['std']['roc_auc'])}"


def test_card_markdown_covers_every_section_the_issue_asks_for(traced: Traced) -> None:
    md = traced.result.files["card.md"].decode()
    headings = re.findall(r"^#+ (.+)$", md, flags=re.M)
    for section in ("Intended use", "Data", "Evaluation", "Threshold trade-off", "Referral band", "Families compared",
                    "What these figures can and cannot show", "Limitations", "Reporting problems"):
        assert section in headings
    for fact in ("not a diagnosis", "CC BY 4.0", "1989", "683 used", "repeated sample ids", "single historical site",
                 "no demographic data", "not selectable"):
        assert fact.lower() in md.lower(), fact


def test_the_card_is_a_pure_function_of_metadata_and_kpis(traced: Traced) -> None:
    meta, kpis = traced.result.metadata, traced.result.kpis
    assert card.files(meta, kpis) == {name: traced.result.files[name] for name in ("card.md", "card.json")}
    changed = {**kpis, "test": {**kpis["test"], "accuracy": 0.5}}
    assert "| accuracy | 0.5000 |" in card.markdown(meta, changed)


def test_the_card_names_a_local_data_file_by_its_name_alone(traced: Traced) -> None:
    md = traced.result.files["card.md"].decode()
    uri = json.loads(traced.result.files["metadata.json"])["data"]["uri"]
    assert uri.startswith("/") and uri not in md  # the trainer's own folders stay out of the card
    assert f"- File: breast-cancer-wisconsin.data (sha256 {traced.dataset.sha256})" in md
    assert card.shown_uri("file:///srv/data/x.data") == "x.data"
    assert card.shown_uri("s3://bucket/raw/x.data") == "s3://bucket/raw/x.data"  # a shared location is worth naming


def test_the_card_says_what_a_recall_difference_is_in_cases(traced: Traced) -> None:
    kpis = traced.result.kpis
    n_mal = kpis["cv"]["n_malignant"]
    assert 150 < n_mal < 200  # the training part's malignant cases, each scored once per repeat
    show = card.what_the_figures_show(kpis)
    assert f"by {card.fmt(1 / n_mal)}" in show[0] and f"about {0.012 * n_mal:.1f} cases" in show[0]
    md = traced.result.files["card.md"].decode()
    assert all(item in md for item in show)
    bundle_card = Bundle.from_files(traced.result.files).card
    assert bundle_card is not None and bundle_card["threshold_rank"] == traced.result.metadata["threshold_rank"]
    spread = {row[0]: row[1:] for row in _table(md, "figure | repeat 1")}
    recall = kpis["cv"]["by_repeat"]["recall"]
    assert spread[card.KPI_LABELS["recall"]] == [*(card.fmt(v) for v in recall), card.fmt(max(recall) - min(recall))]
