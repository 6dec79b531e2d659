"""Did a segment meet the SLO, and did the generator deliver the load it was asked for?

Both the driver (to decide whether the step load goes on) and the report
(to explain each step) judge a segment with the same function, so the
saturation point in the report is the one the run acted on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from loadtests.load.scenarios import TOTAL, key
from loadtests.report import hdr
from loadtests.report.recorder import SegmentData


@dataclass(frozen=True)
class Slo:
    """``p99_ms`` of ``phase`` at most, errors at most ``error_pct`` percent of flows."""

    p99_ms: float = 50.0
    error_pct: float = 0.1
    phase: str = TOTAL
    percentile: float = 99.0
    #: A segment whose generator started fewer than this share of the intended flows
    #: did not apply the target load: it neither passes nor is it a valid measurement.
    min_rate_ratio: float = 0.95
    #: Locust's CPU warning threshold (percent of one core).
    cpu_limit_pct: float = 90.0
    #: Whole-machine CPU above which a trial ran on a saturated machine (percent of all cores).
    machine_limit_pct: float = 95.0
    #: p99 of the generator's event-loop lag (ms) above which flows' clocks slipped too much
    #: to resolve the sub-millisecond differences between modes.
    loop_lag_p99_ms: float = 5.0

    def describe(self) -> str:
        return (
            f"p{self.percentile:g} of {self.phase} <= {self.p99_ms:g} ms and errors <= "
            f"{self.error_pct:g}% of flows, at >= {self.min_rate_ratio:.0%} of the target rate"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "p99_ms": self.p99_ms,
            "error_pct": self.error_pct,
            "phase": self.phase,
            "percentile": self.percentile,
            "min_rate_ratio": self.min_rate_ratio,
            "cpu_limit_pct": self.cpu_limit_pct,
            "machine_limit_pct": self.machine_limit_pct,
            "loop_lag_p99_ms": self.loop_lag_p99_ms,
            "text": self.describe(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Slo:
        return cls(
            float(d["p99_ms"]),
            float(d["error_pct"]),
            str(d.get("phase", TOTAL)),
            float(d.get("percentile", 99.0)),
            float(d.get("min_rate_ratio", 0.95)),
            float(d.get("cpu_limit_pct", 90.0)),
            float(d.get("machine_limit_pct", 95.0)),
            float(d.get("loop_lag_p99_ms", 5.0)),
        )


@dataclass
class Verdict:
    scenario: str
    target_rps: float
    started: int
    completed: int
    failed: int
    achieved_rps: float
    throughput_rps: float
    error_pct: float
    latency_ms: float | None
    cpu_pct: float
    cpu_warning: bool
    machine_cpu_pct: float | None
    meets_slo: bool
    problems: list[str] = field(default_factory=list)
    #: The worst generator process's event-loop lag p99 (ms); None if not measured.
    loop_lag_p99_ms: float | None = None
    #: A generator process's loop stalled longer than the SLO's latency bound: every flow
    #: in flight then read its clock that late, so the latency percentile measures the
    #: generator (the driver runs such a missed step once more).
    generator_stalled: bool = False

    @property
    def rate_ok(self) -> bool:
        return not any(p.startswith("achieved") for p in self.problems)

    @property
    def generator_ok(self) -> bool:
        return not self.cpu_warning

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "target_rps": self.target_rps,
            "started": self.started,
            "completed": self.completed,
            "failed": self.failed,
            "achieved_rps": round(self.achieved_rps, 3),
            "throughput_rps": round(self.throughput_rps, 3),
            "error_pct": round(self.error_pct, 4),
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 3),
            "cpu_pct": round(self.cpu_pct, 1),
            "cpu_warning": self.cpu_warning,
            "machine_cpu_pct": None if self.machine_cpu_pct is None else round(self.machine_cpu_pct, 1),
            "meets_slo": self.meets_slo,
            "problems": list(self.problems),
            "loop_lag_p99_ms": None if self.loop_lag_p99_ms is None else round(self.loop_lag_p99_ms, 3),
            "generator_stalled": self.generator_stalled,
        }


def judge(
    slo: Slo,
    scenario: str,
    target_rps: float,
    duration_s: float,
    data: SegmentData,
    processes: list[dict[str, Any]],
) -> Verdict:
    """The SLO verdict and the validity problems of one scenario in one segment."""
    flows = data.flows.get(scenario, {})
    started, completed, failed = (int(flows.get(k, 0)) for k in ("started", "completed", "failed"))
    achieved = started / duration_s if duration_s > 0 else 0.0
    ok_flows = completed
    throughput = ok_flows / duration_s if duration_s > 0 else 0.0
    finished = completed + failed
    error_pct = 100.0 * failed / finished if finished else 0.0
    hist = data.hists.get(key(scenario, slo.phase))
    latency = hdr.percentile_ms(hist, slo.percentile) if hist is not None else None
    cpu = max((float(p.get("cpu_pct", 0.0)) for p in processes), default=0.0)
    warned = any(bool(p.get("cpu_warning")) for p in processes) or cpu > slo.cpu_limit_pct
    problems = []
    if target_rps > 0 and achieved < slo.min_rate_ratio * target_rps:
        problems.append(f"achieved {achieved:.1f}/s of a {target_rps:g}/s target")
    if warned:
        problems.append(f"generator CPU {cpu:.0f}% (Locust's warning is at {slo.cpu_limit_pct:.0f}%)")
    machine = max(
        (float(p["machine_cpu_pct"]) for p in processes if p.get("machine_cpu_pct") is not None),
        default=None,
    )
    if machine is not None and machine >= slo.machine_limit_pct:
        problems.append(f"machine CPU {machine:.0f}%: the cores were saturated")
    lag = max(
        (float(v) for p in processes if (v := (p.get("loop_lag") or {}).get("p99_ms")) is not None),
        default=None,
    )
    if lag is not None and lag > slo.loop_lag_p99_ms:
        problems.append(
            f"generator loop lag p99 {lag:.1f} ms (bound {slo.loop_lag_p99_ms:g} ms): "
            "flows' clocks slipped"
        )
    stall = max(
        (float(v) for p in processes if (v := (p.get("loop_lag") or {}).get("max_ms")) is not None),
        default=None,
    )
    stalled = stall is not None and stall > slo.p99_ms
    if stalled:
        problems.append(
            f"generator stalled {stall:.0f} ms (over the SLO's {slo.p99_ms:g} ms): "
            "its latency percentile measures the generator"
        )
    if any(int(p.get("undrained", 0)) for p in processes):
        problems.append("flows still running when the segment was collected")
    meets = (
        latency is not None
        and latency <= slo.p99_ms
        and error_pct <= slo.error_pct
        and not any(p.startswith("achieved") for p in problems)
    )
    return Verdict(
        scenario,
        target_rps,
        started,
        completed,
        failed,
        achieved,
        throughput,
        error_pct,
        latency,
        cpu,
        warned,
        machine,
        meets,
        problems,
        lag,
        stalled,
    )


@dataclass
class StallRetries:
    """A step missed while the generator itself stalled longer than the SLO's bound (one
    pause of the Locust processes, seen as every flow in flight finishing late) says
    nothing about the servers: it runs once more, and the retry's verdict counts, within
    ``left`` such retries for the whole step load."""

    left: int

    def run(
        self, segment: Callable[[], Verdict], on_retry: Callable[[], object] = lambda: None
    ) -> Verdict:
        v = segment()
        if not v.meets_slo and v.generator_stalled and self.left > 0:
            self.left -= 1
            on_retry()
            v = segment()
        return v
