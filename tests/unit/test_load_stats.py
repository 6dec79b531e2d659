"""Load-test arithmetic on known data: HDR percentiles and merging, bootstrap, timetables, SLO.

No Locust here (it would monkey-patch this process): these are the pure
parts the load tests and the report stand on.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from loadtests.load.arrivals import Arrivals
from loadtests.report import hdr
from loadtests.report.recorder import Merger, Recorder, SegmentData
from loadtests.report.slo import Slo, judge
from loadtests.report.stats import NO_DIFFERENCE, bootstrap_difference

#: Three significant digits: any value is within 0.1 % (plus one microsecond of rounding).
TOL = 0.001


def exact_percentile(sorted_values: list[float], p: float) -> float:
    """The value at percentile ``p`` as HdrHistogram defines it (the ceil(p*n)-th smallest)."""
    import math

    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def test_percentiles_match_known_data() -> None:
    values_ms = [i / 100.0 for i in range(1, 100_001)]  # 0.01 ms .. 1000 ms, uniform
    h = hdr.new()
    for v in values_ms:
        hdr.record_ms(h, v)
    assert hdr.count(h) == len(values_ms)
    for p in (50.0, 90.0, 99.0, 99.9, 99.99):
        got, want = hdr.percentile_ms(h, p), exact_percentile(values_ms, p)
        assert got is not None and abs(got - want) <= want * TOL + 0.001, (p, got, want)
    s = hdr.summary(h)
    assert s["min_ms"] == pytest.approx(0.01, abs=0.001)
    assert s["max_ms"] == pytest.approx(1000.0, rel=TOL)
    assert s["mean_ms"] == pytest.approx(500.005, rel=TOL)


def test_sub_millisecond_differences_survive() -> None:
    """What Locust's rounding loses: 0.31 ms and 0.47 ms stay apart."""
    a, b = hdr.new(), hdr.new()
    for _ in range(100):
        hdr.record_ms(a, 0.31)
        hdr.record_ms(b, 0.47)
    assert hdr.percentile_ms(a, 50) == pytest.approx(0.31, abs=0.001)
    assert hdr.percentile_ms(b, 50) == pytest.approx(0.47, abs=0.001)


def test_merge_equals_one_histogram_of_everything() -> None:
    rng = random.Random(7)
    parts = [[rng.lognormvariate(1.0, 0.8) for _ in range(n)] for n in (1000, 2500, 17)]
    hists = []
    for values in parts:
        h = hdr.new()
        for v in values:
            hdr.record_ms(h, v)
        hists.append(hdr.decode(hdr.encode(h)))  # as shipped between processes
    merged = hdr.merge(hists)
    whole = hdr.new()
    for v in (v for values in parts for v in values):
        hdr.record_ms(whole, v)
    assert hdr.count(merged) == sum(len(p) for p in parts)
    for p in (50.0, 99.0, 99.9, 100.0):
        assert hdr.percentile_ms(merged, p) == hdr.percentile_ms(whole, p)


def test_empty_histogram_and_spectrum() -> None:
    empty = hdr.new()
    assert hdr.percentile_ms(empty, 50) is None and hdr.spectrum(empty) == []
    assert hdr.count(hdr.decode(hdr.encode(empty))) == 0
    h = hdr.new()
    for v in range(1, 1001):
        hdr.record_ms(h, float(v))
    points = hdr.spectrum(h, max_nines=4.0)
    assert points[0][0] == 0.0 and points[-1][0] <= 99.9 + 1e-9  # n=1000 supports 3 nines
    assert [v for _, v in points] == sorted(v for _, v in points)


def test_recorder_payloads_merge_to_exact_counts() -> None:
    workers = [Recorder(), Recorder()]
    merger = Merger()
    made = 0
    for i, rec in enumerate(workers):
        for k in range(300 + 100 * i):
            rec.record("seg-1", "plain:send", 1.0 + k / 1000, ok=True)
            rec.record("seg-1", "plain:total", 5.0 + k / 100, ok=k % 50 != 0, second=k // 100)
            rec.flow("seg-1", "plain", "started")
            made += 2
        merger.add(rec.drain())  # a periodic report ...
        rec.record("seg-1", "plain:send", 2.0, ok=True)
        made += 1
        merger.add(rec.drain("seg-1"))  # ... and the final flush
        assert rec.drain() == {"segments": {}}
    data = merger.take("seg-1")
    assert data.total_count() == made == sum(r.recorded_total for r in workers)
    assert data.fails["plain:total"] == 6 + 8
    assert data.flows["plain"]["started"] == 700
    assert sum(hdr.count(h) for h in data.timeline["plain:total"].values()) == hdr.count(
        data.hists["plain:total"]
    )
    again = SegmentData.from_json(data.to_json())
    assert again.total_count() == made


def test_bootstrap_marks_a_real_difference() -> None:
    rng = random.Random(1)
    plain = [10.0 + rng.gauss(0, 0.3) for _ in range(7)]
    sealed = [p + 2.0 + rng.gauss(0, 0.3) for p in plain]
    d = bootstrap_difference(plain, sealed)
    assert d.significant and d.verdict == "higher"
    assert d.ci_low is not None and d.ci_high is not None
    assert 0 < d.ci_low <= d.estimate <= d.ci_high  # type: ignore[operator]
    assert d.estimate == pytest.approx(2.0, abs=0.5)


def test_bootstrap_null_difference_spans_zero() -> None:
    rng = random.Random(2)
    a = [20.0 + rng.gauss(0, 1.0) for _ in range(7)]
    b = [20.0 + rng.gauss(0, 1.0) for _ in range(7)]
    d = bootstrap_difference(a, b)
    assert not d.significant and d.verdict == NO_DIFFERENCE
    assert d.ci_low is not None and d.ci_high is not None and d.ci_low <= 0 <= d.ci_high
    unpaired = bootstrap_difference(a, b[:5], paired=False)
    assert unpaired.verdict == NO_DIFFERENCE


def test_bootstrap_with_too_few_trials_claims_nothing() -> None:
    d = bootstrap_difference([1.0], [5.0])
    assert d.estimate == 4.0 and not d.significant and d.verdict == "not enough trials"
    with pytest.raises(ValueError):
        bootstrap_difference([1.0, 2.0], [1.0])


def test_open_model_timetable() -> None:
    a = Arrivals()
    assert a.claim(0.0) is None
    a.configure("s", 10.0, t0=100.0, offset_s=0.05)  # worker 1 of 2 at 20/s in total
    slots = [a.claim(0.0) for _ in range(3)]
    assert [round(s.intended, 6) for s in slots if s] == [100.05, 100.15, 100.25]
    first = slots[0]
    assert first is not None and a.is_current(first)
    a.stop()
    assert not a.is_current(first) and a.claim(0.0) is None  # stale: never started
    a.configure("u", 4.0, t0=10.0, until=11.0)  # one second at 4/s offers exactly 4 flows
    assert len([s for s in iter(lambda: a.claim(0.0), None)]) == 4
    a.configure("t", 0.0, t0=0.0, closed=True)
    closed = a.claim(42.0)
    assert closed is not None and closed.intended == 42.0 and closed.segment == "t"


def _segment(latencies_ms: list[float], started: int, failed: int) -> SegmentData:
    rec = Recorder()
    for v in latencies_ms:
        rec.record("s", "sealed:total", v, ok=True)
    for _ in range(started):
        rec.flow("s", "sealed", "started")
    for _ in range(started - failed):
        rec.flow("s", "sealed", "completed")
    for _ in range(failed):
        rec.flow("s", "sealed", "failed")
    m = Merger()
    m.add(rec.drain())
    return m.take("s")


@pytest.mark.parametrize(
    "latency,started,failed,procs,meets,problem",
    [
        (20.0, 100, 0, {"cpu_pct": 30.0}, True, None),
        (80.0, 100, 0, {"cpu_pct": 30.0}, False, None),  # too slow
        (20.0, 100, 2, {"cpu_pct": 30.0}, False, None),  # 2 % errors
        (20.0, 60, 0, {"cpu_pct": 30.0}, False, "achieved"),  # generator fell short
        (20.0, 100, 0, {"cpu_pct": 97.0}, True, "generator CPU"),  # valid SLO, flagged
        (20.0, 100, 0, {"cpu_pct": 10.0, "machine_cpu_pct": 99.0}, True, "machine CPU"),
        # One pause of the generator longer than the SLO's bound: flagged as a stall.
        (
            80.0,
            100,
            0,
            {"cpu_pct": 10.0, "loop_lag": {"p99_ms": 2.0, "max_ms": 220.0}},
            False,
            "stalled",
        ),
        (20.0, 100, 0, {"cpu_pct": 10.0, "loop_lag": {"p99_ms": 2.0, "max_ms": 40.0}}, True, None),
    ],
)
def test_slo_verdicts(
    latency: float, started: int, failed: int, procs: dict[str, Any], meets: bool, problem: str | None
) -> None:
    data = _segment([latency] * (started - failed), started, failed)
    v = judge(Slo(p99_ms=50.0, error_pct=0.1), "sealed", 10.0, 10.0, data, [procs])
    assert v.meets_slo is meets
    assert (problem is None and not v.problems) or any(problem in p for p in v.problems if problem)
    assert v.generator_stalled is (problem == "stalled")


def test_a_step_missed_while_the_generator_stalled_runs_once_more() -> None:
    """The driver re-runs a missed step once if the generator itself stalled past the SLO's
    bound (its p99 then measures the generator), within its budget of such retries."""
    from loadtests.report.slo import StallRetries, Verdict

    def verdict(meets: bool, stalled: bool) -> Verdict:
        return Verdict("plain", 60, 600, 600, 0, 60, 60, 0, 9, 10, False, 20, meets, [], 1.0, stalled)

    retries = StallRetries(1)
    runs = [verdict(False, True), verdict(True, False), verdict(False, True), verdict(False, False)]
    ran: list[int] = []

    def segment() -> Verdict:
        ran.append(1)
        return runs.pop(0)

    assert retries.run(segment).meets_slo  # a stalled miss, then a clean pass: the pass counts
    assert len(ran) == 2 and retries.left == 0
    assert not retries.run(segment).meets_slo  # stalled again, but no retry left
    assert len(ran) == 3
    retries.left = 1
    assert not retries.run(segment).meets_slo  # a miss with no stall is a miss
    assert len(ran) == 4 and retries.left == 1
