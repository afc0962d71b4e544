from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest

from bundle_factory import EXAMPLE, MALIGNANT_EXAMPLE, bundle_files
from oncology_model.bundle import CARD_JSON, CARD_MD, Bundle, Referral
from oncology_model.classifier import Classifier
from oncology_model.datamodel import FEATURES, Decision, Prediction, Tumor
from oncology_model.errors import BundleError, NotFoundError
from oncology_model.registry import ModelRegistry
from oncology_model.storage import LocalStore


@pytest.fixture
def store(tmp_path: Path) -> Path:
    registry = ModelRegistry(LocalStore(tmp_path))
    registry.publish(bundle_files("1.0.1"))
    registry.publish(bundle_files("1.0.2", threshold=0.9))
    registry.promote("1.0.1")
    return tmp_path


def test_from_uri_loads_champion_latest_or_a_version(store: Path) -> None:
    assert Classifier.from_uri(store).version == "1.0.1"
    assert Classifier.from_uri(store, "latest").version == "1.0.2"
    assert Classifier.from_uri(f"file://{store}", "1.0.2").threshold == 0.9


def test_predictions_follow_the_threshold(store: Path) -> None:
    clf = Classifier.from_uri(store)
    benign, malignant = Tumor(**EXAMPLE), Tumor(**MALIGNANT_EXAMPLE)
    assert clf.predict(benign) is Prediction.BENIGN
    assert clf.predict(malignant) is Prediction.MALIGNANT
    assert clf.predict_proba(benign) < clf.threshold <= clf.predict_proba(malignant)
    assert clf.predict_batch([benign, malignant]) == [Prediction.BENIGN, Prediction.MALIGNANT]
    assert clf.predict_proba_batch([benign]) == [clf.predict_proba(benign)]
    assert clf.score_rows([benign.as_row()]) == [clf.predict_proba(benign)]


def test_metadata_and_kpis_are_exposed(store: Path) -> None:
    clf = Classifier.from_uri(store)
    assert clf.metadata["model"]["family"] == "logistic_regression"
    assert clf.kpis["test"]["recall"] == 0.98
    assert "1.0.1" in repr(clf)


def test_from_dir_loads_a_bundle_folder(store: Path) -> None:
    assert Classifier.from_dir(store / "models" / "1.0.2").version == "1.0.2"


def test_an_unknown_version_is_a_clear_error(store: Path) -> None:
    with pytest.raises(NotFoundError, match="9.9.9 is not published"):
        Classifier.from_uri(store, "9.9.9")


def test_a_source_checkout_carries_no_model() -> None:
    with pytest.raises(BundleError, match="carries no model"):
        Classifier()


# ---- referral, explanations, the card ---------------------------------------------------------------

BAND = {"low": 0.05, "high": 0.5}  # around the hand-made model's threshold of 0.3


def classifier(**kwargs: object) -> Classifier:
    return Classifier(Bundle.from_files(bundle_files(**kwargs)))  # type: ignore[arg-type]


def test_a_band_refers_exactly_the_probabilities_from_low_up_to_but_not_including_high() -> None:
    clf = classifier(referral=BAND)
    assert clf.referral == Referral(0.05, 0.5)
    below_low = math.nextafter(0.05, 0)
    below_high = math.nextafter(0.5, 0)
    assert [clf.decide(p) for p in (0.0, below_low, 0.05, 0.3, below_high, 0.5, 1.0)] == [
        Decision.BENIGN, Decision.BENIGN, Decision.REFER, Decision.REFER, Decision.REFER, Decision.MALIGNANT,
        Decision.MALIGNANT,
    ]
    assert clf.decide_many([0.01, 0.05, 0.5]) == [Decision.BENIGN, Decision.REFER, Decision.MALIGNANT]


@pytest.mark.parametrize("referral", [BAND, None])
def test_the_batch_decides_each_probability_as_one_at_a_time(referral: dict[str, float] | None) -> None:
    clf = classifier(referral=referral)
    edges = [0.05, 0.5, clf.threshold]
    probabilities = [*edges, *(math.nextafter(e, 0) for e in edges), *(math.nextafter(e, 1) for e in edges), 0.0, 1.0,
                     0.3, 0.01, math.nan, math.inf, -math.inf, 0, 1, *(i / 997 for i in range(998))]
    expected = [clf.decide(p) for p in probabilities]
    assert clf.decide_many(probabilities) == expected
    assert clf.decide_many(iter(probabilities)) == expected  # any iterable, read once
    assert clf.decide_many(tuple(probabilities)) == expected
    assert clf.decide_many([]) == []


def test_decisions_outside_the_band_are_the_thresholded_prediction() -> None:
    clf = classifier(referral=BAND)
    for i in range(1001):
        p = i / 1000
        decision = clf.decide(p)
        assert decision is Decision.REFER or decision.value == clf.label(p).value, p


def test_the_band_edges_hold_for_tumors_scored_by_the_model() -> None:
    plain = classifier()
    low, high = (plain.score_rows([r])[0] for r in ((2, 2, 1, 1, 1, 1, 1, 1, 1), (5, 5, 5, 5, 3, 3, 3, 1, 1)))
    assert low < plain.threshold <= high
    clf = classifier(referral={"low": low, "high": high})
    at_low, at_high = Tumor(**dict(zip(FEATURES, (2, 2, 1, 1, 1, 1, 1, 1, 1)))), Tumor(**dict(zip(FEATURES, (5, 5, 5, 5, 3, 3, 3, 1, 1))))
    below = Tumor(**dict(zip(FEATURES, (1,) * 9)))
    assert clf.predict_decision(at_low) is Decision.REFER  # p == low refers
    assert clf.predict_decision(at_high) is Decision.MALIGNANT  # p == high is malignant
    assert clf.predict_decision(below) is Decision.BENIGN
    assert clf.predict_decision_batch([below, at_low, at_high]) == [Decision.BENIGN, Decision.REFER, Decision.MALIGNANT]
    # the labels do not change: a referral is an extra answer, not a different threshold
    assert clf.predict_batch([below, at_low, at_high]) == plain.predict_batch([below, at_low, at_high])


def test_a_model_without_a_band_never_refers() -> None:
    clf = classifier()
    assert clf.referral is None
    for i in range(1001):
        assert clf.decide(i / 1000).value == clf.label(i / 1000).value
    assert clf.decide(clf.threshold) is Decision.MALIGNANT
    assert clf.decide(math.nextafter(clf.threshold, 0)) is Decision.BENIGN


def test_an_empty_band_refers_nothing() -> None:
    clf = classifier(referral={"low": 0.3, "high": 0.3})
    assert clf.decide(0.3) is Decision.MALIGNANT and clf.decide(math.nextafter(0.3, 0)) is Decision.BENIGN


def test_an_explanation_adds_up_to_the_log_odds_of_the_probability() -> None:
    clf = classifier(mean=[1.0, 2, 3, 4, 5, 6, 7, 8, 9], scale=[0.5, 1, 2, 3, 4, 5, 6, 7, 8],
                     coef=[1.5, -0.2, 0.3, 0.0, 0.7, 1.1, -0.4, 0.9, 0.25], intercept=-0.75)
    for row in itertools.product((1, 4, 10), repeat=3):
        tumor = Tumor(**dict(zip(FEATURES, (*row, 2, 3, 5, 7, 9, 10))))
        e = clf.explain(tumor)
        assert e.baseline == -0.75
        assert list(e.contributions) == list(FEATURES)
        assert abs(e.baseline + math.fsum(e.contributions.values()) - e.log_odds) < 1e-12
        p = clf.predict_proba(tumor)
        assert e.probability == p
        assert abs(1 / (1 + math.exp(-(e.baseline + math.fsum(e.contributions.values())))) - p) < 1e-12
        if abs(e.log_odds) < 10:  # beyond, 1 - p has too few digits left for logit(p) to be a reference
            assert abs(e.log_odds - math.log(p / (1 - p))) < 1e-9
    # each contribution is coef * (x - mean) / scale: the first feature at 10, mean 1, scale 0.5, coef 1.5
    e = clf.explain(Tumor(**dict(zip(FEATURES, (10, 1, 1, 1, 1, 1, 1, 1, 1)))))
    assert e.contributions["clump_thickness"] == pytest.approx(1.5 * (10 - 1) / 0.5, rel=1e-15)
    assert e.contributions["marginal_adhesion"] == 0.0  # a zero coefficient contributes nothing


def test_the_training_mean_tumor_has_the_baseline_log_odds() -> None:
    clf = classifier(mean=[4.0] * 9)
    e = clf.explain(Tumor(**dict.fromkeys(FEATURES, 4)))
    assert all(v == 0.0 for v in e.contributions.values())
    assert e.log_odds == pytest.approx(e.baseline, abs=1e-12)


def test_explanation_variants_agree() -> None:
    clf = classifier()
    tumors = [Tumor(**EXAMPLE), Tumor(**MALIGNANT_EXAMPLE)]
    assert clf.explain_batch(tumors) == [clf.explain(t) for t in tumors]
    assert clf.explain_rows([t.as_row() for t in tumors]) == [clf.explain(t) for t in tumors]
    assert clf.explain(tumors[0]) != clf.explain(tumors[1])


def test_the_card_is_exposed_and_absent_for_older_versions() -> None:
    card = {"version": "1.0.1", "intended_use": "decision support"}
    clf = classifier(extra={CARD_JSON: json.dumps(card).encode(), CARD_MD: b"# Model card 1.0.1\n"})
    assert clf.card == card and clf.card_markdown == "# Model card 1.0.1\n"
    old = classifier()
    assert old.card is None and old.card_markdown is None
