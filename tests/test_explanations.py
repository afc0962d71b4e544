"""`Classifier.explain` on every complete row of the UCI data, for every model family the trainer can
choose: the baseline plus the contributions is the model's log-odds, to 1e-9, against the fitted
scikit-learn estimator's own log-odds (``decision_function``) and against ``predict_proba``."""

from __future__ import annotations

import math

import numpy as np
import pytest

from oncology.trainer import data
from oncology.trainer.train import candidates, export
from oncology_model.bundle import Bundle
from oncology_model.classifier import Classifier
from oncology_model.datamodel import FEATURES, Tumor

FAMILIES = candidates(seed=42)


@pytest.fixture(scope="module")
def dataset() -> data.Dataset:
    return data.load()


@pytest.mark.parametrize("candidate", FAMILIES, ids=[c.name for c in FAMILIES])
def test_contributions_add_up_to_the_estimators_log_odds_on_every_row(dataset: data.Dataset, candidate) -> None:  # type: ignore[no-untyped-def]
    estimator = candidate.make().fit(dataset.X, dataset.y)
    metadata = {"version": "1.0.1", "features": list(FEATURES), "threshold": 0.5}
    clf = Classifier(Bundle.from_files(Bundle.assemble("1.0.1", export(estimator), metadata, {})))
    tumors = [Tumor(**dict(zip(FEATURES, map(int, row)))) for row in dataset.X]
    assert len(tumors) == 683
    explanations = clf.explain_batch(tumors)
    # the estimator's log-odds: for both logistic regression and (binary) LDA, predict_proba is the
    # logistic function of decision_function
    log_odds = estimator.decision_function(dataset.X)
    assert np.allclose(estimator.predict_proba(dataset.X)[:, 1], 1 / (1 + np.exp(-log_odds)), rtol=0, atol=1e-12)
    probabilities = clf.predict_proba_batch(tumors)
    for e, z, p in zip(explanations, log_odds, probabilities):
        total = e.baseline + math.fsum(e.contributions.values())
        assert abs(total - z) < 1e-9
        assert abs(e.log_odds - z) < 1e-9
        assert e.probability == p
        assert abs(1 / (1 + math.exp(-total)) - p) < 1e-12
        if 1e-6 < p < 1 - 1e-6:  # beyond, 1 - p keeps too few digits for logit(p) to be a 1e-9 reference
            assert abs(total - (math.log(p) - math.log1p(-p))) < 1e-9
    # the baseline is the intercept: the log-odds of the training-mean tumor
    assert all(e.baseline == estimator.named_steps["model"].intercept_.ravel()[0] for e in explanations)
    assert estimator.decision_function(dataset.X.mean(axis=0, keepdims=True))[0] == pytest.approx(explanations[0].baseline, abs=1e-12)
