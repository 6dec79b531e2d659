"""Is a difference between two modes real?  Medians over trials with bootstrap intervals.

Each trial gives one value per mode (say its p99).  The trials of the
modes are interleaved in rounds, so round ``i`` of plain and round ``i`` of
sealed ran back to back under the same machine conditions; the difference
is taken within each round (paired) and its median is the estimate, which
cancels the slow drift a shared machine shows.  The 95 % interval is the
percentile bootstrap of that median: resample the rounds with replacement,
take the median, repeat.  An interval that contains zero means the trials
cannot tell the modes apart: "no significant difference".

With few trials the bootstrap of a median is coarse (with 5 rounds the
interval is about [smallest, largest] difference), so a difference is only
called real when every round agrees on its sign: deliberately conservative.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

NO_DIFFERENCE = "no significant difference"
DEFAULT_RESAMPLES = 10_000


@dataclass(frozen=True)
class Difference:
    """``b - a``: its estimate (median) and bootstrap interval, in the values' unit."""

    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    paired: bool
    confidence: float

    @property
    def significant(self) -> bool:
        if self.ci_low is None or self.ci_high is None:
            return False
        return self.ci_low > 0 or self.ci_high < 0

    @property
    def verdict(self) -> str:
        if self.estimate is None or self.ci_low is None:
            return "not enough trials"
        if not self.significant:
            return NO_DIFFERENCE
        return "higher" if self.estimate > 0 else "lower"

    def as_dict(self, unit_digits: int = 3) -> dict[str, object]:
        def r(x: float | None) -> float | None:
            return None if x is None else round(x, unit_digits)

        return {
            "estimate": r(self.estimate),
            "ci_low": r(self.ci_low),
            "ci_high": r(self.ci_high),
            "n": self.n,
            "paired": self.paired,
            "confidence": self.confidence,
            "significant": self.significant,
            "verdict": self.verdict,
        }


def bootstrap_difference(
    a: Sequence[float],
    b: Sequence[float],
    *,
    paired: bool = True,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> Difference:
    """Median of ``b - a`` over trials with a percentile-bootstrap interval.

    ``paired``: ``a[i]`` and ``b[i]`` come from the same round (needs equal
    lengths); otherwise the estimate is ``median(b) - median(a)`` and each
    side is resampled on its own.  A fixed ``seed`` makes a report repeatable.
    """
    if not 0 < confidence < 1:
        raise ValueError("confidence must be in (0, 1)")
    if paired and len(a) != len(b):
        raise ValueError("paired samples need the same number of trials")
    n = min(len(a), len(b))
    if n == 0:
        return Difference(None, None, None, 0, paired, confidence)
    rng = np.random.default_rng(seed)
    alpha = (1.0 - confidence) / 2.0
    if paired:
        d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
        estimate = float(np.median(d))
        if n < 2:
            return Difference(estimate, None, None, n, paired, confidence)
        idx = rng.integers(0, n, size=(resamples, n))
        medians = np.median(d[idx], axis=1)
    else:
        xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        estimate = float(statistics.median(b) - statistics.median(a))
        if min(len(a), len(b)) < 2:
            return Difference(estimate, None, None, n, paired, confidence)
        ma = np.median(xa[rng.integers(0, len(xa), size=(resamples, len(xa)))], axis=1)
        mb = np.median(xb[rng.integers(0, len(xb), size=(resamples, len(xb)))], axis=1)
        medians = mb - ma
    low, high = np.quantile(medians, [alpha, 1.0 - alpha])
    return Difference(estimate, float(low), float(high), n, paired, confidence)


@dataclass(frozen=True)
class Estimate:
    """One quantity's median over trials, with a percentile-bootstrap interval."""

    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    confidence: float

    def as_dict(self, digits: int = 3) -> dict[str, object]:
        def r(x: float | None) -> float | None:
            return None if x is None else round(x, digits)

        return {
            "estimate": r(self.estimate),
            "ci_low": r(self.ci_low),
            "ci_high": r(self.ci_high),
            "n": self.n,
            "confidence": self.confidence,
        }


def bootstrap_median(
    values: Sequence[float],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """Median of per-trial values (CPU per share, a ratio) and its bootstrap interval."""
    if not 0 < confidence < 1:
        raise ValueError("confidence must be in (0, 1)")
    n = len(values)
    if n == 0:
        return Estimate(None, None, None, 0, confidence)
    x = np.asarray(values, dtype=float)
    estimate = float(np.median(x))
    if n < 2:
        return Estimate(estimate, None, None, n, confidence)
    rng = np.random.default_rng(seed)
    medians = np.median(x[rng.integers(0, n, size=(resamples, n))], axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(medians, [alpha, 1.0 - alpha])
    return Estimate(estimate, float(low), float(high), n, confidence)
