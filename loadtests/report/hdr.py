"""Exact latency histograms (HdrHistogram) in microseconds, and how they travel and merge.

Locust keeps response times rounded to whole milliseconds below 100 ms
(and coarser above), which erases the sub-millisecond differences between
the sharing modes.  Every latency here is recorded unrounded, in
microseconds, with three significant digits (a value is off by at most
0.1 %), from 1 us to one hour.  Histograms are shipped between processes
in HdrHistogram's standard compressed base64 encoding, and percentiles of
a group of runs are always read from the *merged* histogram, never by
averaging per-run percentiles (percentiles do not average).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 3_600_000_000
SIGNIFICANT_DIGITS = 3
#: The percentiles every summary reports.
SUMMARY_PERCENTILES = {"p50_ms": 50.0, "p90_ms": 90.0, "p99_ms": 99.0, "p999_ms": 99.9}


def new() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def to_us(ms: float) -> int:
    """Milliseconds (float, unrounded) to the integer microseconds a histogram holds."""
    return min(HIGHEST_US, max(LOWEST_US, round(ms * 1000.0)))


def record_ms(hist: HdrHistogram, ms: float) -> None:
    hist.record_value(to_us(ms))


def encode(hist: HdrHistogram) -> str:
    return bytes(hist.encode()).decode("ascii")


def decode(text: str) -> HdrHistogram:
    """Decode into a fresh histogram with this module's range (so it merges with any other)."""
    out = new()
    if text:
        out.add(HdrHistogram.decode(text.encode("ascii")))
    return out


def merge(hists: Iterable[HdrHistogram]) -> HdrHistogram:
    out = new()
    for h in hists:
        out.add(h)
    return out


def count(hist: HdrHistogram) -> int:
    return int(hist.get_total_count())


def percentiles_ms(hist: HdrHistogram, percentiles: list[float]) -> list[float | None]:
    """Latencies at several percentiles (0-100), in ms; ``None`` each for an empty histogram.

    Same definition as ``HdrHistogram.get_value_at_percentile`` (the highest
    value equivalent to the bucket holding the target count), computed with
    one cumulative sum over the counts instead of a Python loop per query,
    which is what makes a report of hundreds of histograms take seconds.
    """
    n = count(hist)
    if n == 0:
        return [None] * len(percentiles)
    cum = np.cumsum(np.ctypeslib.as_array(hist.counts)[: hist.counts_len])
    out: list[float | None] = []
    for p in percentiles:
        target = hist.get_target_count_at_percentile(p)
        index = min(int(np.searchsorted(cum, target)), hist.counts_len - 1)
        value = hist.get_value_from_index(index)
        value = (
            hist.get_highest_equivalent_value(value) if p else hist.get_lowest_equivalent_value(value)
        )
        out.append(float(value) / 1000.0)
    return out


def percentile_ms(hist: HdrHistogram, percentile: float) -> float | None:
    """The latency at ``percentile`` (0-100) in ms; ``None`` for an empty histogram."""
    return percentiles_ms(hist, [percentile])[0]


_MIDPOINTS: list[Any] = []


def _midpoints(hist: HdrHistogram) -> Any:
    """Each bucket's median-equivalent value (the same for every histogram made by ``new``)."""
    if not _MIDPOINTS:
        _MIDPOINTS.append(
            np.array(
                [
                    lo + ((hi - lo + 1) >> 1)
                    for lo, hi in (
                        (hist.get_lowest_equivalent_value(v), hist.get_highest_equivalent_value(v))
                        for v in (hist.get_value_from_index(i) for i in range(hist.counts_len))
                    )
                ],
                dtype=np.float64,
            )
        )
    return _MIDPOINTS[0]


def mean_ms(hist: HdrHistogram) -> float | None:
    """Mean as HdrHistogram computes it (bucket midpoints), without its per-bucket Python loop."""
    n = count(hist)
    if n == 0:
        return None
    counts = np.ctypeslib.as_array(hist.counts)[: hist.counts_len].astype(np.float64)
    return float(np.dot(counts, _midpoints(hist))) / n / 1000.0


def summary(hist: HdrHistogram) -> dict[str, Any]:
    """Count, min, mean, max and the summary percentiles, in ms (``None`` when empty)."""
    n = count(hist)
    out: dict[str, Any] = {"count": n}
    values = percentiles_ms(hist, list(SUMMARY_PERCENTILES.values()))
    out.update(zip(SUMMARY_PERCENTILES, values, strict=True))
    out["min_ms"] = float(hist.get_min_value()) / 1000.0 if n else None
    out["max_ms"] = float(hist.get_max_value()) / 1000.0 if n else None
    out["mean_ms"] = mean_ms(hist)
    return out


def spectrum_points(max_nines: float = 4.0, per_decade: int = 24) -> list[float]:
    """Percentiles evenly spaced in "nines" (0, 90, 99, 99.9 ...), for a percentile spectrum."""
    steps = int(max_nines * per_decade)
    return [100.0 * (1.0 - 10.0 ** (-i / per_decade)) for i in range(steps + 1)]


def spectrum(hist: HdrHistogram, max_nines: float | None = None) -> list[tuple[float, float]]:
    """(percentile, latency ms) pairs up to the percentile the sample size supports.

    With n samples nothing beyond ``1 - 1/n`` is measured, so the curve stops
    there instead of repeating the maximum.
    """
    n = count(hist)
    if n == 0:
        return []
    supported = math.log10(n) if n > 1 else 0.0
    nines = supported if max_nines is None else min(max_nines, supported)
    points = spectrum_points(max(nines, 0.0))
    return [(p, v) for p, v in zip(points, percentiles_ms(hist, points), strict=True) if v is not None]
