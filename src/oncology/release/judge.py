"""The judge's statistics: the candidate against the champion over the same window, one verdict.

Tests (each one-sided where only one direction harms):

- errors: a two-proportion z-test of the candidate's error rate against the champion's (worse only);
- latency: the Mann-Whitney rank test of the request latencies (candidate slower only), and the
  candidate's median at least ``latency_margin_ms`` above the champion's (a difference nobody
  would notice is not a reason to roll back, however significant);
- prediction mix (malignant share) and referral share: chi-square tests of the 2x2 tables;
- shadow (paired, same requests): the share of requests the candidate calls benign where the champion
  called malignant (the costly direction) must stay at or under ``max_costly_share``.

The false-rollback budget ``alpha`` belongs to the whole release: each of its steps gets an equal
part, split again over the tests of the step by fixed weights (weighted Bonferroni: half to the
prediction mix, the most telling of a model's change, a fifth each to the referral share and the
errors, a tenth to the latency, which also needs its margin), so that identical versions are rolled
back in at most ``alpha`` of releases however many steps they take.  Verdicts:

- hold: an arm has fewer than ``min_requests`` requests in the window (no verdict on thin data);
  past the step's deadline, a hold becomes a roll back (never a promotion by default);
- roll back: any test significant in the harmful direction, or the costly share over its bound;
- promote: enough requests in both arms and none of the above.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
from scipy import stats  # type: ignore[import-untyped]  # scipy ships no type stubs

from oncology.settings import ReleaseSettings

PROMOTE: Final = "promote"
HOLD: Final = "hold"
ROLLBACK: Final = "rollback"
#: The tests a step spends its part of alpha on, and the share of it each gets (they sum to 1).
WEIGHTS: Final = {"prediction_mix": 0.5, "referral_share": 0.2, "errors": 0.2, "latency": 0.1}
#: At most this many request ids of costly disagreements go into the evidence.
MAX_IDS: Final = 50


@dataclass
class Arm:
    """What one arm did in the window: requests (answered or failed), predicted rows and latencies."""

    version: str
    requests: int = 0
    errors: int = 0
    malignant: int = 0
    benign: int = 0
    referred: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    #: the scoring times as a histogram instead (from the replicas' metrics): (upper bound ms, cumulative count)
    latency_buckets: list[tuple[float, float]] | None = None
    #: when requests, errors and latencies come from the metrics: the requests the prediction log holds (its shares')
    logged_requests: int | None = None

    @property
    def rows(self) -> int:
        return self.malignant + self.benign

    def summary(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "requests": self.requests,
            "errors": self.errors,
            "rows": self.rows,
            "malignant_share": _ratio(self.malignant, self.rows),
            "referred_share": _ratio(self.referred, self.rows),
            "latency_ms_p50": _round(self.latency_quantile(0.5)),
            "latency_ms_p99": _round(self.latency_quantile(0.99)),
            **({"logged_requests": self.logged_requests} if self.logged_requests is not None else {}),
        }

    def latency_quantile(self, q: float) -> float | None:
        """The ``q`` quantile of the scoring times (ms): of the logged times, or interpolated in the histogram's
        bucket as Prometheus's ``histogram_quantile`` does (the highest finite bound if it falls past it)."""
        if self.latency_buckets is None:
            return float(np.quantile(np.asarray(self.latencies_ms, float), q)) if self.latencies_ms else None
        return bucket_quantile(self.latency_buckets, q)


@dataclass
class Paired:
    """Shadow: the requests both versions scored, and where they disagreed."""

    rows: int = 0
    disagree: int = 0
    costly: int = 0  # candidate benign where the champion said malignant
    costly_ids: list[str] = field(default_factory=list)


@dataclass
class Verdict:
    action: str
    reasons: list[str]
    tests: dict[str, dict[str, Any]]
    arms: dict[str, dict[str, Any]]
    paired: dict[str, Any] | None = None

    def evidence(self, window: dict[str, str], plan: dict[str, Any]) -> dict[str, Any]:
        """What goes into the alias history with the decision."""
        return {"verdict": self.action, "reasons": self.reasons, "window": window, "plan": plan,
                "arms": self.arms, "tests": self.tests, **({"paired": self.paired} if self.paired else {})}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def bucket_quantile(buckets: Sequence[tuple[float, float]], q: float) -> float | None:
    """The ``q`` quantile of a cumulative histogram [(upper bound, count)], linear inside its bucket."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside > 0 else 1.0)
        lower, below = bound, count
    return lower


def binned_rank_test(candidate: Sequence[tuple[float, float]], champion: Sequence[tuple[float, float]]) -> float:
    """One-sided p-value of "the candidate is slower" from two histograms with the same bounds: the Mann-Whitney U
    of the binned times (the times of one bucket tied), normal approximation with the tie correction."""
    a = np.diff([0.0, *(c for _, c in candidate)])
    b = np.diff([0.0, *(c for _, c in champion)])
    if a.shape != b.shape:
        raise ValueError("the two histograms have different buckets")
    n1, n2 = float(a.sum()), float(b.sum())
    n = n1 + n2
    if n1 <= 0 or n2 <= 0:
        return 1.0
    below = np.concatenate([[0.0], np.cumsum(b)[:-1]])
    u = float(np.sum(a * (below + b / 2)))  # pairs (candidate, champion) where the candidate is slower; ties half
    ties = a + b
    variance = n1 * n2 / 12 * ((n + 1) - float(np.sum(ties**3 - ties)) / (n * (n - 1)))
    if variance <= 0:
        return 1.0
    return float(stats.norm.sf((u - n1 * n2 / 2) / math.sqrt(variance)))


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 6) if b else None


def test_alpha(settings: ReleaseSettings, steps: int, test: str) -> float:
    """The level of one test of one step: its weight of the release's alpha over its steps."""
    return settings.release_alpha * WEIGHTS[test] / max(steps, 1)


def errors_test(champion: Arm, candidate: Arm) -> float:
    """One-sided p-value of "the candidate fails more often" (pooled two-proportion z-test)."""
    n1, n2 = candidate.requests, champion.requests
    if not n1 or not n2:
        return 1.0
    x1, x2 = candidate.errors, champion.errors
    pooled = (x1 + x2) / (n1 + n2)
    if pooled in (0.0, 1.0):
        return 1.0
    z = (x1 / n1 - x2 / n2) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return float(stats.norm.sf(z))


def latency_test(champion: Arm, candidate: Arm) -> tuple[float, float]:
    """One-sided Mann-Whitney p-value of "the candidate is slower", and the difference of medians (ms): on the
    logged times, or on the histograms when both arms have them (the replicas' metrics)."""
    if candidate.latency_buckets is not None and champion.latency_buckets is not None:
        mine, theirs = candidate.latency_quantile(0.5), champion.latency_quantile(0.5)
        if mine is None or theirs is None:
            return 1.0, 0.0
        return binned_rank_test(candidate.latency_buckets, champion.latency_buckets), mine - theirs
    a, b = np.asarray(candidate.latencies_ms, float), np.asarray(champion.latencies_ms, float)
    if not a.size or not b.size:
        return 1.0, 0.0
    p = float(stats.mannwhitneyu(a, b, alternative="greater").pvalue) if np.ptp(np.concatenate([a, b])) > 0 else 1.0
    return p, float(np.median(a) - np.median(b))


def share_test(a_yes: int, a_n: int, b_yes: int, b_n: int) -> float:
    """Chi-square p-value of a 2x2 table (yes / no by arm); 1 when a margin is empty."""
    table = np.array([[a_yes, a_n - a_yes], [b_yes, b_n - b_yes]], dtype=float)
    if (table.sum(axis=0) == 0).any() or (table.sum(axis=1) == 0).any():
        return 1.0
    return float(stats.chi2_contingency(table, correction=False).pvalue)


def judge(champion: Arm, candidate: Arm, settings: ReleaseSettings, steps: int = 1,
          paired: Paired | None = None, past_deadline: bool = False) -> Verdict:
    """One verdict on one window; see the module's documentation."""
    arms = {"champion": champion.summary(), "candidate": candidate.summary()}
    counts = [champion.requests, candidate.requests]
    least = min(counts)
    logged = [a.logged_requests for a in (champion, candidate) if a.logged_requests is not None]
    if logged and min(logged) < least:  # the shares' tests read the prediction log, which may lag the metrics
        least = min(logged)
    if least < settings.release_min_requests:
        shown = f"{least} requests in the thinner arm, fewer than the {settings.release_min_requests} needed"
        if logged and least == min(logged) and least < min(counts):
            shown += " (in the prediction log; the metrics count more: the log is flushed every few seconds)"
        if past_deadline:
            return Verdict(ROLLBACK, [f"inconclusive past the step's deadline: {shown}"], {}, arms)
        return Verdict(HOLD, [shown], {}, arms)
    tests: dict[str, dict[str, Any]] = {}
    reasons: list[str] = []

    p, alpha = errors_test(champion, candidate), test_alpha(settings, steps, "errors")
    tests["errors"] = {"test": "two-proportion z (candidate worse)", "p": p, "alpha": alpha,
                       "candidate": candidate.errors, "champion": champion.errors}
    if p < alpha:
        reasons.append(f"more errors: {candidate.errors}/{candidate.requests} against {champion.errors}/{champion.requests}"
                       f" (p={p:.2g} < {alpha:.2g})")

    (p, diff), alpha = latency_test(champion, candidate), test_alpha(settings, steps, "latency")
    margin = settings.release_latency_margin_ms
    tests["latency"] = {"test": "Mann-Whitney U (candidate slower)", "p": p, "alpha": alpha,
                        "median_difference_ms": round(diff, 3), "margin_ms": margin}
    if p < alpha and diff > margin:
        reasons.append(f"slower: median {diff:+.1f} ms (margin {margin:g} ms, p={p:.2g} < {alpha:.2g})")

    # the two shares of the answers, each by a chi-square test: (test name, count, its share's key, how a difference reads)
    for name, count, key, differs in (("prediction_mix", "malignant", "malignant_share", "prediction mix differs: malignant share"),
                                        ("referral_share", "referred", "referred_share", "referral share differs:")):
        p = share_test(getattr(candidate, count), candidate.rows, getattr(champion, count), champion.rows)
        alpha = test_alpha(settings, steps, name)
        tests[name] = {"test": f"chi-square 2x2 ({count} share)", "p": p, "alpha": alpha,
                       "candidate": arms["candidate"][key], "champion": arms["champion"][key]}
        if p < alpha:
            reasons.append(f"{differs} {arms['candidate'][key]} against {arms['champion'][key]} "
                           f"(p={p:.2g} < {alpha:.2g})")

    shown_pairs = None
    if paired is not None:
        share = paired.costly / paired.rows if paired.rows else 0.0
        bound = settings.release_max_costly_share
        shown_pairs = {"rows": paired.rows, "disagree": paired.disagree, "costly": paired.costly,
                       "costly_share": round(share, 6), "bound": bound, "costly_request_ids": paired.costly_ids[:MAX_IDS]}
        if share > bound:
            reasons.append(f"candidate calls benign where the champion called malignant in {paired.costly} of "
                           f"{paired.rows} paired predictions ({share:.2%} > {bound:.2%})")
    return Verdict(ROLLBACK if reasons else PROMOTE, reasons, tests, arms, shown_pairs)


def simulate_arm(rng: np.random.Generator, version: str, requests: int, malignant: float = 0.35, referred: float = 0.05,
                 error_rate: float = 0.001, latency_ms: float = 5.0, extra_ms: float = 0.0) -> Arm:
    """A seeded arm of ``requests`` one-row requests: the tests' and the documentation's simulations."""
    errors = int(rng.binomial(requests, error_rate))
    answered = requests - errors
    n_malignant = int(rng.binomial(answered, malignant))
    latencies: Sequence[float] = (rng.lognormal(math.log(latency_ms), 0.3, answered) + extra_ms).tolist()
    return Arm(version, requests, errors, n_malignant, answered - n_malignant, int(rng.binomial(answered, referred)),
               list(latencies))
