"""Sequential alarms on realized performance: a Bernoulli CUSUM per model version and metric.

Not a threshold re-checked on every run: each labelled case, in the order the outcomes arrived, adds
its log-likelihood ratio of "the error rate is ``p1``" against "it is ``p0``" to a running sum that
never goes below zero; the alarm is the first case at which the sum reaches ``h``.  Every run
recomputes the same path from the same ordered cases, so running the check daily (or hourly) does not
multiply the chances of a false alarm: the false-alarm rate is a property of ``h`` and the number of
cases, not of the number of looks.

For malignant recall the events are misses among malignant outcomes (in control ``p0 = 1 - 0.98``,
alarm ``p1 = 1 - 0.90``); for specificity, false alarms among benign outcomes.  With ``h = 9`` the
seeded simulations of tests/monitoring/test_sequential.py measure: recall falling from 0.98 to 0.90
is detected after about 100 malignant cases on average; with no change, fewer than 1% of runs alarm
within 1,000 labelled cases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

#: The decision threshold of the CUSUM (see the module's figures).
DEFAULT_H = 9.0


@dataclass(frozen=True)
class CusumResult:
    """The CUSUM of one stream of cases."""

    n: int  # cases seen
    events: int  # of which events (misses, false alarms)
    statistic: float  # the sum after the last case
    peak: float  # its highest value
    alarm_at: int | None  # 1-based index of the case at which it first reached h; None if never
    h: float
    p0: float
    p1: float

    @property
    def alarm(self) -> bool:
        return self.alarm_at is not None

    def as_dict(self) -> dict[str, object]:
        return {"n": self.n, "events": self.events, "statistic": round(self.statistic, 4), "peak": round(self.peak, 4),
                "alarm": self.alarm, "alarm_at": self.alarm_at, "h": self.h, "p0": self.p0, "p1": self.p1}


def bernoulli_cusum(events: npt.ArrayLike, p0: float, p1: float, h: float = DEFAULT_H) -> CusumResult:
    """The upper CUSUM of a 0/1 sequence for a rise of the event rate from ``p0`` to ``p1`` (0 < p0 < p1 < 1)."""
    if not 0 < p0 < p1 < 1:
        raise ValueError(f"a CUSUM needs 0 < p0 < p1 < 1, not p0={p0}, p1={p1}")
    x = np.asarray(events, dtype=bool)
    up, down = math.log(p1 / p0), math.log((1 - p1) / (1 - p0))
    increments = np.where(x, up, down)
    # S_t = max(0, S_{t-1} + z_t) = C_t - min(0, min_{s<=t} C_s), with C the plain cumulative sum
    cumulative = np.cumsum(increments)
    floor = np.minimum.accumulate(np.minimum(cumulative, 0.0))
    path = cumulative - floor
    crossed = np.flatnonzero(path >= h)
    return CusumResult(
        n=int(x.size), events=int(x.sum()), statistic=float(path[-1]) if x.size else 0.0,
        peak=float(path.max()) if x.size else 0.0, alarm_at=int(crossed[0]) + 1 if crossed.size else None,
        h=h, p0=p0, p1=p1,
    )
