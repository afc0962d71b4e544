from __future__ import annotations

import hashlib
import json
import math
import operator
import random

import pytest

from bundle_factory import bundle_files
from oncology_model.bundle import (
    CARD_JSON,
    CARD_MD,
    KPIS,
    MANIFEST,
    METADATA,
    MODEL,
    Bundle,
    LinearScorer,
    Referral,
    make_manifest,
)
from oncology_model.datamodel import FEATURES
from oncology_model.errors import BundleError


def test_a_complete_bundle_loads_with_its_version_threshold_and_kpis(files: dict[str, bytes]) -> None:
    bundle = Bundle.from_files(files)
    assert bundle.version == "1.0.1"
    assert bundle.threshold == 0.3
    assert bundle.kpis["test"]["accuracy"] == 0.97


def test_the_manifest_lists_the_sha256_and_size_of_every_file(files: dict[str, bytes]) -> None:
    manifest = json.loads(files[MANIFEST])
    assert set(manifest["files"]) == {MODEL, METADATA, KPIS}
    for name, entry in manifest["files"].items():
        assert entry == {"sha256": hashlib.sha256(files[name]).hexdigest(), "size": len(files[name])}, name


@pytest.mark.parametrize("name", [MODEL, METADATA, KPIS])
def test_an_altered_file_is_refused(files: dict[str, bytes], name: str) -> None:
    data = bytearray(files[name])
    data[10] = ord("7") if data[10] != ord("7") else ord("8")
    with pytest.raises(BundleError, match=f"{name}: sha256 does not match"):
        Bundle.from_files({**files, name: bytes(data)})


def test_a_truncated_file_is_refused(files: dict[str, bytes]) -> None:
    with pytest.raises(BundleError, match="model.json: size .* truncated"):
        Bundle.from_files({**files, MODEL: files[MODEL][:-20]})


@pytest.mark.parametrize("name", [MODEL, METADATA, KPIS, MANIFEST])
def test_a_missing_file_is_refused(files: dict[str, bytes], name: str) -> None:
    with pytest.raises(BundleError, match=f"{name}.*missing"):
        Bundle.from_files({k: v for k, v in files.items() if k != name})


def test_an_unlisted_file_is_refused(files: dict[str, bytes]) -> None:
    with pytest.raises(BundleError, match="not in the manifest: payload.py"):
        Bundle.from_files({**files, "payload.py": b"import os"})


def test_a_consistent_but_invalid_model_is_refused() -> None:
    with pytest.raises(BundleError, match="non-zero scale"):
        Bundle.from_files(bundle_files(scale=[0.0] * 9))


def test_a_manifest_rewritten_for_a_changed_threshold_still_needs_a_valid_threshold() -> None:
    files = bundle_files(threshold=1.5)
    with pytest.raises(BundleError, match="threshold"):
        Bundle.from_files(files)


def test_version_mismatch_between_manifest_and_metadata_is_refused(files: dict[str, bytes]) -> None:
    content = {k: v for k, v in files.items() if k != MANIFEST}
    with pytest.raises(BundleError, match="version"):
        Bundle.from_files({**content, MANIFEST: make_manifest("9.9.9", content)})


def test_linear_scorer_is_the_logistic_of_the_standardised_score(files: dict[str, bytes]) -> None:
    scorer = Bundle.from_files(files).scorer
    row = [1, 2, 3, 4, 5, 6, 7, 8, 9]
    z = sum(0.8 * (x - 3.0) / 2.0 for x in row) - 1.0
    assert scorer.proba(row) == pytest.approx(1 / (1 + math.exp(-z)), rel=1e-12)
    assert scorer.proba_many([row, row]) == [scorer.proba(row)] * 2
    # the batch path (the service's) gives each row's `proba` to the bit, on both sides of z = 0
    rows = [[x] * 9 for x in range(1, 11)] + [row, row[::-1]]
    assert {scorer.log_odds(r) >= 0 for r in rows} == {True, False}
    assert scorer.proba_many(rows) == [scorer.proba(r) for r in rows]
    assert 0.0 < scorer.proba([1] * 9) < scorer.proba([10] * 9) < 1.0


def logistic(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def test_the_batch_path_scores_every_row_as_proba_does_to_the_bit_and_refuses_a_row_of_another_length() -> None:
    # distinct weights of both signs: a term out of order or a weight on the wrong feature changes the bits
    rng = random.Random(18)
    mean, scale = [rng.uniform(1, 6) for _ in FEATURES], [rng.uniform(0.5, 3) for _ in FEATURES]
    coef = [rng.uniform(-2, 2) for _ in FEATURES]
    scorer = LinearScorer({"mean": mean, "scale": scale, "coef": coef, "intercept": -0.7})
    weights = [c / s for c, s in zip(coef, scale)]  # the folded model, as the scorer folds it
    offset = -0.7 - sum(m / s * c for m, s, c in zip(mean, scale, coef))
    rows: list[list[float]] = [[rng.randint(1, 10) for _ in FEATURES] for _ in range(3000)]
    rows += [[rng.uniform(-20, 20) for _ in FEATURES] for _ in range(3000)]  # floats, far on both sides of z = 0
    rows += [[0] * len(FEATURES), [-0.0] * len(FEATURES)]
    # the reference: the logistic of offset + the products added left to right (what `proba` computes)
    expected = [logistic(offset + sum(map(operator.mul, weights, row))) for row in rows]
    assert scorer.proba_many(rows) == expected == [scorer.proba(row) for row in rows]
    assert [p.hex() for p in scorer.proba_many(iter(rows))] == [p.hex() for p in expected]  # any iterable of rows
    assert scorer.proba_many([]) == []
    for row in ([1] * (len(FEATURES) - 1), [1] * (len(FEATURES) + 1)):
        with pytest.raises(ValueError, match="unpack"):
            scorer.proba_many([row])


def test_a_bundle_without_referral_or_card_loads_as_older_versions_do(files: dict[str, bytes]) -> None:
    bundle = Bundle.from_files(files)
    assert bundle.referral is None
    assert bundle.card is None and bundle.card_markdown is None


def test_the_referral_band_and_the_card_are_read_from_the_bundle() -> None:
    card = {"version": "1.0.1", "intended_use": "decision support"}
    files = bundle_files(
        referral={"low": 0.05, "high": 0.5},
        extra={CARD_MD: "# Model card\n\u00b5 ok\n".encode(), CARD_JSON: json.dumps(card).encode()},
    )
    bundle = Bundle.from_files(files)
    assert bundle.referral == Referral(0.05, 0.5)
    assert bundle.card == card
    assert bundle.card_markdown == "# Model card\n\u00b5 ok\n"
    assert [bundle.referral.refers(p) for p in (0.0499, 0.05, 0.3, 0.4999, 0.5)] == [False, True, True, True, False]


@pytest.mark.parametrize(
    ("band", "reason"),
    [
        ({"low": 0.4, "high": 0.5}, "low <= threshold"),
        ({"low": 0.05, "high": 0.2}, "threshold .* <= high"),
        ({"low": -0.1, "high": 0.5}, "0 <= low"),
        ({"low": 0.05, "high": 1.5}, "high <= 1"),
        ({"low": 0.05}, "referral band is malformed"),
        ({"low": "x", "high": 0.5}, "referral band is malformed"),
    ],
)
def test_a_referral_band_that_does_not_hold_the_threshold_is_refused(band: dict[str, object], reason: str) -> None:
    with pytest.raises(BundleError, match=f"metadata.json: .*{reason}"):
        Bundle.from_files(bundle_files(referral=band))


def test_a_card_that_is_not_json_is_refused_with_its_name() -> None:
    with pytest.raises(BundleError, match="card.json: not valid JSON"):
        Bundle.from_files(bundle_files(extra={CARD_JSON: b"{oops"}))


def test_only_known_optional_files_can_be_assembled_or_listed(files: dict[str, bytes]) -> None:
    with pytest.raises(BundleError, match="not bundle files: run.sh"):
        bundle_files(extra={"run.sh": b"rm -rf /"})
    content = {k: v for k, v in files.items() if k != MANIFEST} | {"run.sh": b"rm -rf /"}
    with pytest.raises(BundleError, match="lists files a bundle does not hold: run.sh"):
        Bundle.from_files({**content, MANIFEST: make_manifest("1.0.1", content)})
