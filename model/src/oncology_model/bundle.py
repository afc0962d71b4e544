"""The model bundle: the unit that is stored, versioned and shipped.

A bundle is a flat folder of JSON files:

- ``model.json``: the fitted parameters as plain numbers (no pickle: loading runs no code),
- ``metadata.json``: version, creation time, data checksum, code commit, family, hyper-parameters,
  feature schema, decision threshold, library versions,
- ``kpis.json``: held-out test figures and cross-validation mean/std,
- ``card.md`` and ``card.json`` (optional): the model card, for people and for programs,
- ``MANIFEST.json``: the sha256 and size of every other file.  It is written last, so a version
  is visible only once it is complete.

`Bundle.from_files` verifies the manifest: a missing, extra, truncated or altered file is refused.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import reduce
from operator import add, mul
from pathlib import Path
from typing import Any

from oncology_model.datamodel import FEATURES
from oncology_model.errors import BundleError

MANIFEST = "MANIFEST.json"
MODEL = "model.json"
METADATA = "metadata.json"
KPIS = "kpis.json"
CARD_MD = "card.md"
CARD_JSON = "card.json"
REFERENCE = "reference.json"  # the training distributions that drift checks compare against
CONTENT_FILES = (MODEL, METADATA, KPIS)
#: Files a bundle may carry besides `CONTENT_FILES` (older versions have none of them).
EVALUATION = "evaluation.json"  # the held-out labels and probabilities the dashboard's curves need
OPTIONAL_FILES = (CARD_MD, CARD_JSON, REFERENCE, EVALUATION)
FORMAT = "oncology-bundle/1"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def dump_json(obj: Any) -> bytes:
    """Canonical JSON: sorted keys, floats written exactly (repr round-trips)."""
    return (json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()


def make_manifest(version: str, files: Mapping[str, bytes]) -> bytes:
    entries = {name: {"sha256": sha256(data), "size": len(data)} for name, data in sorted(files.items())}
    return dump_json({"format": FORMAT, "version": version, "files": entries})


class LinearScorer:
    """Scores a standardised linear model: p(malignant) = sigmoid(((x - mean) / scale) . coef + intercept).

    Serves both logistic regression and linear discriminant analysis, whose binary
    probabilities are the logistic function of the same linear score.
    """

    kind = "linear"

    def __init__(self, params: Mapping[str, Any]) -> None:
        try:
            mean = [float(v) for v in params["mean"]]
            scale = [float(v) for v in params["scale"]]
            coef = [float(v) for v in params["coef"]]
            self.intercept = float(params["intercept"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{MODEL}: linear parameters are malformed ({exc!r})") from exc
        n = len(FEATURES)
        if not (len(mean) == len(scale) == len(coef) == n):
            raise BundleError(f"{MODEL}: expected {n} values for mean, scale and coef")
        if any(s == 0 for s in scale) or not all(map(math.isfinite, [*mean, *scale, *coef, self.intercept])):
            raise BundleError(f"{MODEL}: parameters must be finite with non-zero scale")
        self.mean, self.scale, self.coef = mean, scale, coef
        # (x - m) / s . c  ==  x . (c / s) - m / s . c: folded weights make one row a 9-term sum
        self._weights = tuple(c / s for c, s in zip(coef, scale))
        self._offset = self.intercept - sum(m / s * c for m, s, c in zip(mean, scale, coef))
        self._proba_many = _batch_scorer(self._weights, self._offset)

    def proba(self, row: Sequence[float]) -> float:
        """Malignant probability of one row in `FEATURES` order."""
        # reduce, not sum: sum adds floats with compensation from Python 3.12, `proba_many`'s code adds them plainly,
        # left to right; reduce does so on every version, so the two give the same bits wherever the wheel runs
        return _sigmoid(self._offset + reduce(add, map(mul, self._weights, row)))

    def proba_many(self, rows: Iterable[Sequence[float]]) -> list[float]:
        """`proba` of each row, in order, to the bit (the service's batch path): `_batch_scorer`'s code."""
        return self._proba_many(rows)

    def log_odds(self, row: Sequence[float]) -> float:
        """The malignant log-odds of one row: the score whose logistic function `proba` returns."""
        z: float = self._offset + reduce(add, map(mul, self._weights, row))  # (as `proba`)
        return z

    @staticmethod
    def probability(log_odds: float) -> float:
        """The malignant probability of a log-odds (the logistic function), as `proba` computes it."""
        return _sigmoid(log_odds)

    @property
    def baseline(self) -> float:
        """The log-odds of the training-mean tumor (every feature at its training mean): the intercept."""
        return self.intercept

    def contributions(self, row: Sequence[float]) -> list[float]:
        """Each feature's additive share of the log-odds, in `FEATURES` order: coef * (x - mean) / scale.

        ``baseline + sum(contributions(row)) == log_odds(row)`` up to floating-point rounding: for a
        linear model this decomposition is exact (no sampling, no approximation).
        """
        return [c * (x - m) / s for x, m, s, c in zip(row, self.mean, self.scale, self.coef)]


def _batch_scorer(weights: Sequence[float], offset: float) -> Callable[[Iterable[Sequence[float]]], list[float]]:
    """`LinearScorer.proba_many` for these weights: each row unpacked into its values, its score written out as
    ``offset + (w0*x0 + w1*x1 + ...)`` with the weights as constants, and the logistic in the loop.  The same
    operations in the same order as `LinearScorer.proba` (``reduce(add, ...)``: left to right from the first
    product), so the same bits; ~2,000 instructions a row fewer than ``sum(map(mul, weights, row))`` (a call of ``mul`` and a
    step of two iterators a feature).  A row of another length fails (ValueError) instead of scoring a prefix.
    """
    names = [f"x{i}" for i in range(len(weights))]
    terms = " + ".join(f"({w!r}) * {x}" for w, x in zip(weights, names))  # repr: the float back, exactly
    source = (f"def proba_many(rows):\n"
              f"    probabilities = []\n"
              f"    append = probabilities.append\n"
              f"    for {', '.join(names)}, in rows:\n"
              f"        z = ({offset!r}) + ({terms})\n"
              f"        if z >= 0:\n"
              f"            append(1.0 / (1.0 + exp(-z)))\n"
              f"        else:\n"
              f"            e = exp(z)\n"
              f"            append(e / (1.0 + e))\n"
              f"    return probabilities\n")
    namespace: dict[str, Any] = {"exp": math.exp}
    exec(compile(source, "<LinearScorer.proba_many>", "exec"), namespace)  # our own numbers (checked finite), no input
    scorer: Callable[[Iterable[Sequence[float]]], list[float]] = namespace["proba_many"]
    return scorer


def _sigmoid(z: float) -> float:  # (written again in `_batch_scorer`'s loop)
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


SCORERS = {LinearScorer.kind: LinearScorer}


@dataclass(frozen=True)
class Referral:
    """The band of malignant probability within which the answer is "refer for review".

    A probability ``p`` with ``low <= p < high`` is referred; below ``low`` the answer is benign, at
    or above ``high`` malignant.  ``low <= threshold <= high``, so an answer that is not referred is
    the thresholded label.  ``low == high`` is an empty band (nothing is referred).
    """

    low: float
    high: float

    @classmethod
    def from_metadata(cls, value: Any, threshold: float, where: str) -> Referral | None:
        if value is None:
            return None
        try:
            low, high = float(value["low"]), float(value["high"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{where}: referral band is malformed ({exc!r}); expected {{\"low\": p, \"high\": p}}") from exc
        if not (0.0 <= low <= threshold <= high <= 1.0):
            raise BundleError(
                f"{where}: referral band [{low}, {high}) must satisfy 0 <= low <= threshold ({threshold}) <= high <= 1"
            )
        return cls(low, high)

    def refers(self, probability: float) -> bool:
        return self.low <= probability < self.high


@dataclass(frozen=True)
class Bundle:
    """A verified model bundle: its files, parsed metadata and KPIs, and a scorer."""

    files: Mapping[str, bytes]
    version: str
    metadata: Mapping[str, Any]
    kpis: Mapping[str, Any]
    threshold: float
    scorer: LinearScorer
    #: The referral band: malignant probabilities in [low, high) are referred for review.  None for
    #: versions trained before referral existed (they never refer).
    referral: Referral | None = None

    @property
    def card_markdown(self) -> str | None:
        """The model card (Markdown), or None for versions trained before cards existed."""
        data = self.files.get(CARD_MD)
        return None if data is None else data.decode("utf-8")

    @property
    def card(self) -> dict[str, Any] | None:
        """The model card's machine-readable form, or None for versions trained before cards existed."""
        data = self.files.get(CARD_JSON)
        return None if data is None else parse_json_object(data, CARD_JSON)

    @classmethod
    def from_files(cls, files: Mapping[str, bytes], where: str = "bundle") -> Bundle:
        """Verify the manifest against the files, then parse them.  Raises `BundleError`."""
        if MANIFEST not in files:
            raise BundleError(f"{where}: {MANIFEST} is missing: not a complete model bundle")
        manifest = parse_json_object(files[MANIFEST], f"{where}/{MANIFEST}")
        listed = manifest.get("files")
        if manifest.get("format") != FORMAT or not isinstance(listed, dict):
            raise BundleError(f"{where}/{MANIFEST}: unknown bundle format {manifest.get('format')!r}")
        for name in CONTENT_FILES:
            if name not in listed:
                raise BundleError(f"{where}/{MANIFEST}: does not list {name}")
        present = set(files) - {MANIFEST}
        if unknown := sorted(set(listed) - set(CONTENT_FILES) - set(OPTIONAL_FILES)):
            raise BundleError(f"{where}/{MANIFEST}: lists files a bundle does not hold: {', '.join(unknown)}")
        if extra := sorted(present - set(listed)):
            raise BundleError(f"{where}: files not in the manifest: {', '.join(extra)}")
        for name, entry in listed.items():
            if name not in files:
                raise BundleError(f"{where}/{name}: listed in the manifest but missing")
            data = files[name]
            if len(data) != entry.get("size"):
                raise BundleError(
                    f"{where}/{name}: size {len(data)} bytes, manifest says {entry.get('size')}: truncated or altered"
                )
            if sha256(data) != entry.get("sha256"):
                raise BundleError(f"{where}/{name}: sha256 does not match the manifest: the file was altered")
        metadata = parse_json_object(files[METADATA], f"{where}/{METADATA}")
        kpis = parse_json_object(files[KPIS], f"{where}/{KPIS}")
        model = parse_json_object(files[MODEL], f"{where}/{MODEL}")
        version = metadata.get("version")
        if not isinstance(version, str) or version != manifest.get("version"):
            raise BundleError(f"{where}: metadata version {version!r} differs from the manifest's")
        if list(metadata.get("features", [])) != list(FEATURES):
            raise BundleError(f"{where}/{METADATA}: the model's features differ from this package's {FEATURES}")
        scorer_cls = SCORERS.get(str(model.get("kind")))
        if scorer_cls is None:
            raise BundleError(f"{where}/{MODEL}: unknown model kind {model.get('kind')!r}")
        threshold = metadata.get("threshold")
        if not isinstance(threshold, float) or not 0.0 < threshold < 1.0:
            raise BundleError(f"{where}/{METADATA}: decision threshold {threshold!r} is not in (0, 1)")
        for name in OPTIONAL_FILES:
            if name in files and name.endswith(".md"):
                try:
                    files[name].decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise BundleError(f"{where}/{name}: not UTF-8 text ({exc})") from exc
            elif name in files:
                parse_json_object(files[name], f"{where}/{name}")
        return cls(
            files=dict(files),
            version=version,
            metadata=metadata,
            kpis=kpis,
            threshold=threshold,
            scorer=scorer_cls(model),
            referral=Referral.from_metadata(metadata.get("referral"), threshold, f"{where}/{METADATA}"),
        )

    @classmethod
    def from_dir(cls, path: Path) -> Bundle:
        if not path.is_dir():
            raise BundleError(f"{path}: no model bundle there")
        files = {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()}
        return cls.from_files(files, where=str(path))

    @staticmethod
    def assemble(
        version: str,
        model: Mapping[str, Any],
        metadata: Mapping[str, Any],
        kpis: Mapping[str, Any],
        extra: Mapping[str, bytes] | None = None,
    ) -> dict[str, bytes]:
        """The files of a new bundle, manifest included; ``extra`` holds optional files (the card)."""
        if unknown := sorted(set(extra or {}) - set(OPTIONAL_FILES)):
            raise BundleError(f"not bundle files: {', '.join(unknown)} (optional files are {', '.join(OPTIONAL_FILES)})")
        files = {MODEL: dump_json(model), METADATA: dump_json(metadata), KPIS: dump_json(kpis), **(extra or {})}
        files[MANIFEST] = make_manifest(version, files)
        return files


def parse_json_object(data: bytes, where: str) -> dict[str, Any]:
    """``data`` as a JSON object; :class:`BundleError` naming ``where`` if it is not one."""
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{where}: not valid JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise BundleError(f"{where}: expected a JSON object")
    return value
