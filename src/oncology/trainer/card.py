"""The model card of a version: a pure function of its metadata and KPIs.

Every figure on the card is read from ``metadata.json`` and ``kpis.json`` as they go into the
bundle, so the card cannot disagree with them: ``card.json`` carries the same objects, and
``card.md`` formats them with `fmt`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

from oncology_model.bundle import CARD_JSON, CARD_MD, dump_json

FORMAT = "oncology-model-card/1"

KPI_LABELS = {
    "accuracy": "accuracy",
    "recall": "malignant recall (sensitivity)",
    "specificity": "specificity",
    "precision": "precision",
    "f1": "F1",
    "roc_auc": "ROC AUC",
    "brier": "Brier score (lower is better)",
}
REFERRAL_LABELS = {
    "referred": "share of cases referred",
    "recall_not_referred": "malignant recall among cases not referred",
    "specificity_not_referred": "specificity among cases not referred",
    "accuracy_not_referred": "accuracy among cases not referred",
}

INTENDED_USE = {
    "purpose": "Decision support for the review of fine-needle-aspirate cytology of breast masses: from the nine "
    "cytology scores a cytologist assigns (1-10 each), the probability that the mass is malignant, a benign or "
    "malignant answer at the decision threshold, and 'refer for review' when the probability falls in the "
    "referral band.",
    "users": "Clinicians and cytologists, as a second reader next to their own assessment.",
    "not_for": "Not a diagnosis and not a replacement for histology or a clinician's judgement; not for other "
    "specimen types, other scoring schemes, image features, or screening of people without a breast mass.",
}
LIMITATIONS = (
    "A single historical site: every sample comes from one hospital (University of Wisconsin Hospitals, Madison) "
    "between 1989 and 1991; performance elsewhere, today, with other cytologists or other preparation methods is unknown.",
    "Nine cytology scores only: the model sees nothing else (no imaging, history or histology), and the scores are "
    "subjective; another cytologist's scores may differ.",
    "No demographic data (age, sex, ethnicity) is recorded, so performance in subgroups cannot be measured and any "
    "difference between them would go unnoticed.",
    "A small data set (683 complete rows, about 240 malignant): the confidence intervals are wide, and the held-out "
    "test set has few malignant cases.",
    "Rows with a missing score were left out (16, mostly 'bare nuclei'): the model needs all nine scores.",
    "Probabilities are calibrated to this data's class balance (about 35% malignant); where malignancy is rarer, "
    "the same probability overstates the risk.",
)
REPORTING = (
    "Report a doubtful or wrong prediction, a change in the case mix, or a defect to the team that owns the "
    "oncology repository (ml-platform) by opening an issue there. Quote the model version and, for a prediction, "
    "the request id (the X-Request-ID response header). Never include patient-identifying data."
)


def fmt(value: float) -> str:
    """How every figure is written on the card."""
    return f"{value:.4f}"


def pm(summary: Mapping[str, Any], name: str) -> str:
    return f"{fmt(summary['mean'][name])} ± {fmt(summary['std'][name])}"


def shown_uri(uri: str) -> str:
    """A data file as the card names it: a local file by its name alone (the card travels, in the wheel and on the
    dashboard, and the trainer's folders are nobody's business there), a remote one by its URI."""
    scheme = uri.split("://", 1)[0] if "://" in uri else ""
    return uri if scheme and scheme != "file" else PurePosixPath(uri.removeprefix("file://")).name


def ci(interval: list[float]) -> str:
    return f"[{fmt(interval[0])}, {fmt(interval[1])}]"


def build(metadata: Mapping[str, Any], kpis: Mapping[str, Any]) -> dict[str, Any]:
    """The machine-readable card (``card.json``)."""
    training = metadata["training"]
    return {
        "format": FORMAT,
        "version": metadata["version"],
        "created_at": metadata["created_at"],
        "intended_use": INTENDED_USE,
        "model": metadata["model"],
        "threshold": metadata["threshold"],
        "threshold_rule": metadata["threshold_rule"],
        "threshold_rank": metadata["threshold_rank"],
        "referral": {**metadata["referral"], "cv": kpis["referral"]["cv"], "test": kpis["referral"]["test"]},
        "data": metadata["data"],
        "evaluation": {"cv": kpis["cv"], "test": kpis["test"], "cv_tuned_on_own_folds": kpis["cv_tuned_on_own_folds"]},
        "threshold_table": kpis["threshold_table"],
        "families": kpis["families"],
        "selection": {
            "rule": training["selection"],
            "chosen": metadata["model"]["name"],
            "why": why_chosen(metadata, kpis),
            "candidates": training["candidates"],
        },
        "targets": kpis["targets"],
        "what_the_figures_show": what_the_figures_show(kpis),
        "limitations": list(LIMITATIONS),
        "reporting_problems": REPORTING,
        "provenance": {"code": metadata["code"], "libraries": metadata["libraries"], "seed": training["seed"]},
    }


#: The figures whose spread between the repeats of the outer CV the card shows.
SPREAD = ("accuracy", "recall", "specificity", "roc_auc")
SPREAD_REFERRAL = ("referred", "recall_not_referred")


def what_the_figures_show(kpis: Mapping[str, Any]) -> list[str]:
    """What the nested-CV and test figures can and cannot tell apart, in cases rather than decimals."""
    cv, test = kpis["cv"], kpis["test"]
    n_mal = cv["n_malignant"]
    one = 1 / n_mal
    recall_by_repeat = cv["by_repeat"]["recall"]
    spread = max(recall_by_repeat) - min(recall_by_repeat)
    lo, hi = test["ci"]["recall"]
    test_mal = test["confusion_matrix"]["tp"] + test["confusion_matrix"]["fn"]
    found = [
        f"Each repeat of the outer CV scores every one of the {cv['n']} training cases once, {n_mal} of them malignant: "
        f"one missed cancer moves a repeat's malignant recall by {fmt(one)}, so a recall difference of 0.012 is about "
        f"{0.012 * n_mal:.1f} cases.",
        f"Between the {cv['repeats']} repeats, which differ only in how the cases are shuffled into folds, the mean "
        f"malignant recall ranges from {fmt(min(recall_by_repeat))} to {fmt(max(recall_by_repeat))} "
        f"({spread * n_mal:.1f} cases): a target met or missed by less than that is not a difference these data can "
        "show, and neither is a comparison of two procedures whose figures differ by less.",
        f"The held-out test set has {test_mal} malignant cases: its malignant recall {fmt(test['recall'])} has the 95% "
        f"interval {ci([lo, hi])}; a single version's test figures cannot tell models apart whose recall differs by "
        "less than that width.",
        "The figures can show that the procedure (family, hyper-parameters, threshold and band, all chosen on inner "
        "folds) holds up on cases no choice has seen, and how much it varies with the split; they cannot show how "
        "the model does at another site, with other cytologists, or on a population with another share of "
        "malignant cases.",
    ]
    return found


def why_chosen(metadata: Mapping[str, Any], kpis: Mapping[str, Any]) -> str:
    """Why this family: from the side-by-side nested-CV figures, whatever they are."""
    chosen = metadata["model"]["name"]
    cv = kpis["cv"]
    parts = [
        f"The service scores a code-free linear bundle, so only linear families can be published. Among them, "
        f"{chosen} has the lowest inner-CV Brier score within one standard error (simplest first) on the whole "
        f"training part. The selection procedure scored by nested CV has ROC AUC {pm(cv, 'roc_auc')} and Brier "
        f"{pm(cv, 'brier')}."
    ]
    for fam in kpis["families"]:
        if fam["selectable"]:
            continue
        f_cv = fam["cv"]
        d_auc = f_cv["mean"]["roc_auc"] - cv["mean"]["roc_auc"]
        d_brier = f_cv["mean"]["brier"] - cv["mean"]["brier"]
        noise = max(f_cv["std"]["brier"], cv["std"]["brier"])
        verdict = (
            "better" if d_brier < -noise else "worse" if d_brier > noise else "within one fold standard deviation"
        )
        parts.append(
            f"{fam['label']} (not selectable): ROC AUC {pm(f_cv, 'roc_auc')} ({d_auc:+.4f}), Brier {pm(f_cv, 'brier')} "
            f"({d_brier:+.4f}): {verdict} in Brier score."
        )
    return " ".join(parts)


def _dataset_lines(version: Mapping[str, Any] | None) -> list[str]:
    """The card's lines on a dataset version (``oncology train --dataset``): what the file is made of."""
    if version is None:
        return []
    by_version = ", ".join(f"{n} from version {v}" for v, n in sorted(version["outcome_cases_by_model_version"].items()))
    return [
        f"- Dataset version: {version['version']} ({version['lineage']}): the raw file {shown_uri(version['raw']['uri'])} "
        f"(sha256 {version['raw']['sha256']}) as it is, plus {version['outcome_cases']} labelled case(s) from outcomes "
        f"({version['outcome_malignant']} malignant" + (f"; predicted by {by_version}" if by_version else "") + "): "
        "each a logged prediction's features with its biopsy outcome as the class",
    ]


def markdown(metadata: Mapping[str, Any], kpis: Mapping[str, Any]) -> str:
    """The card for people (``card.md``)."""
    data, training, cv, test, referral = metadata["data"], metadata["training"], kpis["cv"], kpis["test"], kpis["referral"]
    prov = data.get("provenance") or {}
    labels = {**KPI_LABELS, **REFERRAL_LABELS}
    counts = data["class_counts"]
    used = data["rows_used"]
    lines = [
        f"# Model card: oncology {metadata['version']}",
        "",
        f"- Created: {metadata['created_at']}; code {metadata['code']['git_commit']}; seed {training['seed']}",
        f"- Model: {metadata['model']['name']} ({metadata['model']['family']})",
        f"- Decision threshold: {fmt(metadata['threshold'])} (malignant at or above); {metadata['threshold_rule']}",
        f"- Referral band: [{fmt(referral['low'])}, {fmt(referral['high'])}) of malignant probability: 'refer for review'",
        f"- Confidence of the threshold: with probability {metadata['threshold_rank']['confidence']:.1%}, at most "
        f"{1 - metadata['threshold_rank']['target_recall']:.1%} of new malignant cases fall below it "
        f"(rank {metadata['threshold_rank']['k']} of {metadata['threshold_rank']['n']})",
        "",
        "## Intended use",
        "",
        INTENDED_USE["purpose"],
        "",
        f"- Users: {INTENDED_USE['users']}",
        f"- Not for: {INTENDED_USE['not_for']}",
        "",
        "## Data",
        "",
        f"- Source: {prov.get('name', 'not the bundled UCI file: provenance unknown')}"
        + (f" ({prov['doi']}); {prov['creator']}" if prov else ""),
        f"- Site and years: {prov.get('site', 'unknown')}; {prov.get('collected', 'unknown')}",
        f"- Licence: {prov.get('licence', 'unknown')}",
        f"- File: {shown_uri(data['uri'])} (sha256 {data['sha256']})",
        *_dataset_lines(data.get("dataset_version")),
        f"- Size: {data['rows_read']} rows; {data['rows_with_missing_values_excluded']} with a missing value left out; "
        f"{used} used",
        f"- Class balance: {counts['benign']} benign ({counts['benign'] / used:.1%}), {counts['malignant']} malignant "
        f"({counts['malignant'] / used:.1%})",
        f"- Repeated sample ids: {data['sample_ids']} distinct ids; {data['rows_sharing_a_sample_id']} rows share an id "
        "with another row, so every split keeps an id's rows on one side",
        f"- Held-out test set: {training['test_split']}, n = {test['n']}, used once, for the figures below",
        "",
        "## Evaluation",
        "",
        f"### Nested cross-validation ({cv['repeats']} x {cv['folds']}-fold outer, {cv['inner_folds']}-fold inner)",
        "",
        "Family, hyper-parameters, threshold and referral band are chosen on the inner folds of each outer "
        "training part; the outer test folds, which no choice has seen, give these figures (mean ± std over "
        f"{cv['repeats'] * cv['folds']} outer folds).",
        "",
        "| KPI | nested CV mean ± std |",
        "| --- | --- |",
        *(f"| {label} | {pm(cv, key)} |" for key, label in KPI_LABELS.items()),
        "",
        f"Each repeat's mean over its {cv['folds']} outer folds (the repeats differ only in the shuffle):",
        "",
        "| figure | " + " | ".join(f"repeat {i + 1}" for i in range(cv["repeats"])) + " | range |",
        "| --- | " + " | ".join("---" for _ in range(cv["repeats"])) + " | --- |",
        *(
            f"| {labels[key]} | " + " | ".join(fmt(v) for v in cv["by_repeat"][key])
            + f" | {fmt(max(cv['by_repeat'][key]) - min(cv['by_repeat'][key]))} |"
            for key in (*SPREAD, *SPREAD_REFERRAL)
        ),
        "",
        "| target | value | met |",
        "| --- | --- | --- |",
        *(f"| {t['name']} {t['op']} {t['target']} | {fmt(t['value'])} | {'yes' if t['met'] else 'no'} |"
          for t in kpis["targets"]),
        "",
        f"### Held-out test set (n = {test['n']})",
        "",
        "95% intervals: Wilson for proportions; percentile bootstrap over sample ids for F1, ROC AUC and Brier.",
        "",
        "| KPI | test | 95% CI |",
        "| --- | --- | --- |",
        *(f"| {label} | {fmt(test[key])} | {ci(test['ci'][key])} |" for key, label in KPI_LABELS.items()),
        "",
        "Confusion matrix at the threshold:",
        "",
        "| actual | predicted benign | predicted malignant |",
        "| --- | --- | --- |",
        f"| benign | {test['confusion_matrix']['tn']} | {test['confusion_matrix']['fp']} |",
        f"| malignant | {test['confusion_matrix']['fn']} | {test['confusion_matrix']['tp']} |",
        "",
        "## Threshold trade-off",
        "",
        "Malignant recall and specificity at fixed thresholds: on the pooled outer-fold probabilities of the nested "
        "CV, and on the test set (the chosen threshold is marked).",
        "",
        "| threshold | CV recall | CV specificity | test recall | test specificity |",
        "| --- | --- | --- | --- | --- |",
        *(
            f"| {fmt(r['threshold'])}{' (chosen)' if r['chosen'] else ''} | {fmt(r['cv']['recall'])} | "
            f"{fmt(r['cv']['specificity'])} | {fmt(r['test']['recall'])} | {fmt(r['test']['specificity'])} |"
            for r in kpis["threshold_table"]
        ),
        "",
        "## Referral band",
        "",
        f"Malignant probability in [{fmt(referral['low'])}, {fmt(referral['high'])}): the answer is 'refer for "
        f"review'; below it benign, at or above it malignant. Rule: {metadata['referral']['rule']}.",
        "",
        "| figure | nested CV mean ± std | test | test 95% CI |",
        "| --- | --- | --- | --- |",
        *(
            f"| {label} | {pm(referral['cv'], key)} | {fmt(referral['test'][key])} | {ci(referral['test']['ci'][key])} |"
            for key, label in REFERRAL_LABELS.items()
        ),
        "",
        f"On the test set {referral['test']['n_referred']} of {referral['test']['n']} cases are referred "
        f"({referral['test']['malignant_referred']} of them malignant); among the others "
        f"{referral['test']['fn_not_referred']} malignant case(s) are missed and {referral['test']['fp_not_referred']} "
        "benign case(s) are called malignant.",
        "",
        "## Families compared",
        "",
        "Each family's hyper-parameters, threshold and band chosen inside each outer fold, as for the published "
        "model; nested CV mean ± std.",
        "",
        "| family | selectable | accuracy | malignant recall | specificity | ROC AUC | Brier | referred | "
        "recall not referred |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *(
            f"| {f['label']} | {'yes' if f['selectable'] else 'no'} | {pm(f['cv'], 'accuracy')} | "
            f"{pm(f['cv'], 'recall')} | {pm(f['cv'], 'specificity')} | {pm(f['cv'], 'roc_auc')} | "
            f"{pm(f['cv'], 'brier')} | {pm(f['cv']['referral'], 'referred')} | "
            f"{pm(f['cv']['referral'], 'recall_not_referred')} |"
            for f in kpis["families"]
        ),
        "",
        *(f"- {f['label']}: {f['note']}" for f in kpis["families"] if not f["selectable"]),
        "",
        f"Why {metadata['model']['name']}: {why_chosen(metadata, kpis)}",
        "",
        "### Against choices tuned on their own folds",
        "",
        "The procedure before nested CV chose the candidate, threshold and band on the same out-of-fold "
        "predictions it then reported; on the same outer folds it gives:",
        "",
        "| KPI | tuned on its own folds | nested CV |",
        "| --- | --- | --- |",
        *(f"| {label} | {pm(kpis['cv_tuned_on_own_folds'], key)} | {pm(cv, key)} |" for key, label in KPI_LABELS.items()),
        *(
            f"| {label} | {pm(kpis['cv_tuned_on_own_folds']['referral'], key)} | {pm(referral['cv'], key)} |"
            for key, label in REFERRAL_LABELS.items()
        ),
        "",
        "## What these figures can and cannot show",
        "",
        *(f"- {item}" for item in what_the_figures_show(kpis)),
        "",
        "## Limitations",
        "",
        *(f"- {item}" for item in LIMITATIONS),
        "",
        "## Reporting problems",
        "",
        REPORTING,
        "",
    ]
    return "\n".join(lines)


def files(metadata: Mapping[str, Any], kpis: Mapping[str, Any]) -> dict[str, bytes]:
    """``card.md`` and ``card.json`` for `Bundle.assemble`'s ``extra``."""
    return {
        CARD_MD: markdown(metadata, kpis).encode(),
        CARD_JSON: dump_json(build(metadata, kpis)),
    }
