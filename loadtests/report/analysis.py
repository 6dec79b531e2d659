"""From a run's recorded segments to the comparison: the report's JSON document.

Rules the numbers follow:

* a mode's percentiles come from the histogram *merged* over all its
  trials (percentiles never average); its throughput is successful shares
  over the trials' total time;
* a difference between modes is the median, over rounds, of the per-round
  difference of the trial percentiles (paired: round ``i`` of each mode ran
  back to back), with a bootstrap 95 % interval (loadtests.report.stats);
* the saturation point is the highest step-load rate that met the SLO, as
  judged by loadtests.report.slo during the run;
* a run is valid only if every trial achieved its target rate, the
  generator never hit Locust's CPU warning, and each mode had enough trials.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

from loadtests.load.scenarios import (
    MODES,
    PHASE_LABELS,
    TOTAL,
    VIEW_PREFIX,
    key,
    phases_of,
)
from loadtests.report import floor as floor_mod
from loadtests.report import hdr, headline, server_cost
from loadtests.report.recorder import SegmentData
from loadtests.report.slo import Slo, judge
from loadtests.report.stats import bootstrap_difference

SCHEMA = "pointer-dm/loadtest-report/v1"
MIN_TRIALS = 5
SEGMENTS_FILE = "segments.jsonl"
DRIVER_FILE = "driver.json"
RUN_FILE = "run.json"
#: Percentiles compared between modes: JSON field -> percentile.
DELTAS = {"delta_p50_ms": 50.0, "delta_p99_ms": 99.0, "delta_p999_ms": 99.9}


@dataclass
class Segment:
    segment: str
    kind: str
    mode: str | None
    round: int
    rates: dict[str, float]
    target_rps: float | None
    duration_s: float | None
    started_at: float | None
    processes: list[dict[str, Any]]
    data: SegmentData
    #: Server CPU seconds used during the segment (loadtests.stack.proc_cpu), if measured.
    servers: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Segment:
        return cls(
            doc["segment"],
            doc["kind"],
            doc.get("mode"),
            int(doc.get("round", 0)),
            {k: float(v) for k, v in (doc.get("rates") or {}).items()},
            doc.get("target_rps"),
            doc.get("duration_s"),
            doc.get("started_at"),
            list(doc.get("processes", [])),
            SegmentData.from_json(doc.get("data", {})),
            dict(doc.get("servers") or {}),
        )


@dataclass
class Run:
    segments: list[Segment]
    driver: dict[str, Any]
    meta: dict[str, Any]
    #: The sealed overhead's primitives measured at the run's start (loadtests.report.floor).
    floor: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, directory: Path) -> Run:
        seg_file = directory / SEGMENTS_FILE
        if not seg_file.exists():
            raise FileNotFoundError(f"{seg_file} not found: is {directory} a load-test run?")
        segments = [
            Segment.from_json(json.loads(line))
            for line in seg_file.read_text().splitlines()
            if line.strip()
        ]
        driver = _read_json(directory / DRIVER_FILE)
        meta = _read_json(directory / RUN_FILE)
        return cls(segments, driver, meta, floor_mod.load(directory))

    def of(self, kind: str, mode: str | None = None) -> list[Segment]:
        return [s for s in self.segments if s.kind == kind and (mode is None or s.mode == mode)]


def _read_json(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text())) if path.exists() else {}


def _merged(segments: Iterable[Segment], entry: str) -> HdrHistogram:
    return hdr.merge(s.data.hists[entry] for s in segments if entry in s.data.hists)


def _fails(segments: Iterable[Segment], entry: str) -> int:
    return sum(s.data.fails.get(entry, 0) for s in segments)


def _r(v: float | None, digits: int = 3) -> float | None:
    return None if v is None else round(v, digits)


def phase_table(segments: list[Segment], scenario: str) -> dict[str, dict[str, Any]]:
    out = {}
    for phase in (*phases_of(scenario), TOTAL):
        entry = key(scenario, phase)
        s = hdr.summary(_merged(segments, entry))
        out[phase] = {k: _r(v) if k != "count" else v for k, v in s.items()}
        out[phase]["errors"] = _fails(segments, entry)
        out[phase]["label"] = PHASE_LABELS.get(phase, phase)
    return out


def _flows(segments: list[Segment], scenario: str) -> dict[str, int]:
    out = {"started": 0, "completed": 0, "failed": 0, "late": 0}
    for s in segments:
        for k in out:
            out[k] += s.data.flows.get(scenario, {}).get(k, 0)
    return out


def scenario_summary(segments: list[Segment], scenario: str) -> dict[str, Any]:
    """Merged percentiles, throughput and errors of one scenario over ``segments``."""
    total = _merged(segments, key(scenario, TOTAL))
    seconds = sum(float(s.duration_s or 0.0) for s in segments)
    flows = _flows(segments, scenario)
    finished = flows["completed"] + flows["failed"]
    targets = [s.rates.get(scenario, 0.0) for s in segments]
    out: dict[str, Any] = {
        "p50_ms": _r(hdr.percentile_ms(total, 50)),
        "p90_ms": _r(hdr.percentile_ms(total, 90)),
        "p99_ms": _r(hdr.percentile_ms(total, 99)),
        "p999_ms": _r(hdr.percentile_ms(total, 99.9)),
        "max_ms": _r(float(total.get_max_value()) / 1000.0 if hdr.count(total) else None),
        "count": hdr.count(total),
        "rps": _r(flows["completed"] / seconds if seconds else 0.0),
        "achieved_rps": _r(flows["started"] / seconds if seconds else 0.0),
        "target_rps": _r(sum(targets) / len(targets) if targets else None),
        "errors": flows["failed"],
        "error_pct": _r(100.0 * flows["failed"] / finished if finished else 0.0, 4),
        "late_starts": flows["late"],
        "flows": flows,
        "seconds": _r(seconds),
        "phases": phase_table(segments, scenario),
    }
    return out


def trial_points(segments: list[Segment], scenario: str) -> list[dict[str, Any]]:
    """Per-trial percentiles (the inputs of the between-mode differences), by round."""
    out = []
    for s in sorted(segments, key=lambda s: s.round):
        h = s.data.hists.get(key(scenario, TOTAL), hdr.new())
        flows = s.data.flows.get(scenario, {})
        dur = float(s.duration_s or 0.0)
        out.append(
            {
                "round": s.round,
                "segment": s.segment,
                "p50_ms": _r(hdr.percentile_ms(h, 50)),
                "p99_ms": _r(hdr.percentile_ms(h, 99)),
                "p999_ms": _r(hdr.percentile_ms(h, 99.9)),
                "count": hdr.count(h),
                "rps": _r(flows.get("completed", 0) / dur if dur else 0.0),
                "errors": flows.get("failed", 0),
            }
        )
    return out


def compare(
    trials: dict[str, list[Segment]],
    base: str,
    other: str,
    entry_phase: str = TOTAL,
    scenario_of: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Median per-round difference ``other - base`` of p50/p99/p99.9, with bootstrap CIs."""
    sc = scenario_of or {m: m for m in trials}
    by_round_a = {s.round: s for s in trials.get(base, [])}
    by_round_b = {s.round: s for s in trials.get(other, [])}
    rounds = sorted(set(by_round_a) & set(by_round_b))
    out: dict[str, Any] = {"vs": base, "entry": entry_phase, "rounds": len(rounds)}
    for name, p in DELTAS.items():
        a, b = [], []
        for r in rounds:
            ha = by_round_a[r].data.hists.get(key(sc[base], entry_phase))
            hb = by_round_b[r].data.hists.get(key(sc[other], entry_phase))
            va = hdr.percentile_ms(ha, p) if ha is not None else None
            vb = hdr.percentile_ms(hb, p) if hb is not None else None
            if va is not None and vb is not None:
                a.append(va)
                b.append(vb)
        out[name] = bootstrap_difference(a, b, paired=True).as_dict()
    return out


def steps_table(run: Run, slo: Slo) -> list[dict[str, Any]]:
    out = []
    for s in run.of("step"):
        assert s.mode is not None
        v = judge(
            slo, s.mode, float(s.target_rps or 0.0), float(s.duration_s or 0.0), s.data, s.processes
        )
        h = s.data.hists.get(key(s.mode, TOTAL), hdr.new())
        out.append(
            {
                "mode": s.mode,
                "segment": s.segment,
                "target_rps": s.target_rps,
                "achieved_rps": _r(v.achieved_rps),
                "throughput_rps": _r(v.throughput_rps),
                "p50_ms": _r(hdr.percentile_ms(h, 50)),
                "p99_ms": _r(hdr.percentile_ms(h, 99)),
                "error_pct": _r(v.error_pct, 4),
                "meets_slo": v.meets_slo,
                "cpu_warning": v.cpu_warning,
                "problems": v.problems,
                "machine_cpu_pct": _r(v.machine_cpu_pct, 1),
                "cpu_pct_by_process": {k: _r(x, 1) for k, x in server_cost.process_cpu_pct(s).items()},
            }
        )
    return out


def saturation(steps: list[dict[str, Any]], mode: str) -> tuple[float | None, str]:
    mine = [s for s in steps if s["mode"] == mode]
    if not mine:
        return None, "no step load was run"
    ok = [s for s in mine if s["meets_slo"]]
    if not ok:
        lowest = min(s["target_rps"] for s in mine)
        return None, f"the SLO was missed even at the lowest step ({lowest:g}/s)"
    rate = float(max(s["target_rps"] for s in ok))
    above = [s for s in mine if not s["meets_slo"] and s["target_rps"] > rate]
    if not above:
        return rate, f"not reached: the SLO held at every step, up to {rate:g}/s"
    note = f"highest rate meeting the SLO; missed at {min(s['target_rps'] for s in above):g}/s"
    if any(s["cpu_warning"] for s in above):
        note += " (the generator hit its CPU limit there: the limit may be the generator's)"
    return rate, note


def modes_in(s: Segment) -> list[str]:
    """The share modes a segment measured (a plain Locust run's one segment may hold several)."""
    if s.mode is not None:
        return [s.mode]
    return [m for m in MODES if key(m, TOTAL) in s.data.hists or m in s.data.flows]


def timeline(run: Run) -> dict[str, list[list[float]]]:
    """Per mode: [seconds since the run started, p50, p99, count] for every second measured."""
    starts = [s.started_at for s in run.segments if s.started_at is not None]
    if not starts:
        return {}
    t_run = min(starts)
    out: dict[str, list[list[float]]] = {}
    for s in run.segments:
        if s.started_at is None:
            continue
        for mode in modes_in(s):
            per = s.data.timeline.get(key(mode, TOTAL), {})
            for sec, h in sorted(per.items()):
                p50, p99 = hdr.percentiles_ms(h, [50.0, 99.0])
                if p50 is None or p99 is None:
                    continue
                out.setdefault(mode, []).append(
                    [
                        round(s.started_at - t_run + sec + 0.5, 3),
                        round(p50, 3),
                        round(p99, 3),
                        hdr.count(h),
                    ]
                )
    for pts in out.values():
        pts.sort()
    return out


def spans(run: Run) -> list[dict[str, Any]]:
    """Where each segment sits on the run's clock (for shading the timeline)."""
    starts = [s.started_at for s in run.segments if s.started_at is not None]
    if not starts:
        return []
    t_run = min(starts)
    return [
        {
            "segment": s.segment,
            "kind": s.kind,
            "mode": s.mode,
            "start_s": round(s.started_at - t_run, 3),
            "end_s": round(s.started_at - t_run + float(s.duration_s or 0), 3),
        }
        for s in run.segments
        if s.started_at is not None
    ]


def validity(run: Run, slo: Slo, trials: dict[str, list[Segment]]) -> dict[str, Any]:
    problems: list[str] = []
    notes: list[str] = []
    rows = []
    for s in run.segments:
        for mode in modes_in(s):
            target = s.rates.get(mode, 0.0)
            v = judge(slo, mode, target, float(s.duration_s or 0.0), s.data, s.processes)
            rows.append(
                {
                    "segment": s.segment,
                    "kind": s.kind,
                    "mode": mode,
                    "round": s.round,
                    "target_rps": target,
                    "achieved_rps": _r(v.achieved_rps),
                    "errors": v.failed,
                    "cpu_pct": _r(v.cpu_pct, 1),
                    "machine_cpu_pct": _r(v.machine_cpu_pct, 1),
                    "loop_lag_p99_ms": _r(v.loop_lag_p99_ms),
                    "cpu_warning": v.cpu_warning,
                    "problems": v.problems,
                }
            )
            if s.kind in ("trial", "locust"):
                problems += [f"{s.segment} {mode}: {p}" for p in v.problems]
            elif s.kind == "step" and v.cpu_warning:
                notes.append(f"{s.segment}: generator CPU limit reached during the step load")
    for m, segs in trials.items():
        n = len(segs)
        if n < MIN_TRIALS:
            problems.append(f"{m}: {n} trials (at least {MIN_TRIALS} are needed for the intervals)")
    if run.driver.get("cpu_warning"):
        problems.append("Locust raised its CPU warning during the run")
    return {
        "valid": not problems,
        "problems": problems,
        "notes": notes,
        "segments": rows,
        "cpu_warning": bool(run.driver.get("cpu_warning")),
    }


def analyze(run: Run) -> dict[str, Any]:
    slo = Slo.from_dict(run.meta.get("slo") or Slo().as_dict())
    trials = {m: run.of("trial", m) for m in MODES}
    if not any(trials.values()):  # a plain ``locust --hdr-out`` run: one open-ended segment
        trials = {m: [s for s in run.of("locust") if key(m, TOTAL) in s.data.hists] for m in MODES}
    modes = [m for m in MODES if trials[m]]
    steps = steps_table(run, slo)
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "generated_at": time.time(),
        "slo": slo.as_dict(),
        "config": run.meta.get("config", {}),
        "environment": run.meta.get("environment", {}),
        "driver": {k: v for k, v in run.driver.items() if k != "locust_stats"},
        "modes": {},
        "comparisons": {},
    }
    for m in modes:
        entry = scenario_summary(trials[m], m)
        entry["saturation_rps"], entry["saturation_note"] = saturation(steps, m)
        entry["saturation_bound"] = server_cost.bound(
            server_cost.knee(steps, m, entry["saturation_rps"]), slo.machine_limit_pct
        )
        entry["server_cost"] = server_cost.mode_cost(
            trials[m], m, trials.get("plain") if m != "plain" else None, run.driver.get("server_idle")
        )
        entry["trials"] = trial_points(trials[m], m)
        view = VIEW_PREFIX + m
        if any(view in s.rates for s in trials[m]):
            entry["view"] = scenario_summary(trials[m], view)
        doc["modes"][m] = entry
    base = "plain" if "plain" in modes else None
    for m in modes:
        if base is None or m == base:
            continue
        comp = compare(trials, base, m)
        phases = {}
        for phase in ("send", "delivery", "first_byte", "segment"):
            c = compare(trials, base, m, phase)
            phases[phase] = {k: c[k] for k in ("delta_p50_ms", "delta_p99_ms")}
        comp["phases"] = phases
        if all(any(VIEW_PREFIX + x in s.rates for s in trials[x]) for x in (base, m)):
            vc = compare(trials, base, m, scenario_of={base: VIEW_PREFIX + base, m: VIEW_PREFIX + m})
            comp["view"] = {k: vc[k] for k in DELTAS}
        doc["comparisons"][m] = comp
        for name in DELTAS:
            doc["modes"][m][name] = comp[name]
    doc["steps"] = steps
    doc["timeline"] = timeline(run)
    doc["segments"] = spans(run)
    doc["validity"] = validity(run, slo, {m: trials[m] for m in modes})
    doc["floor"] = floor_mod.against(run.floor, doc["modes"]) if run.floor else {}
    doc["floor_meta"] = {k: run.floor[k] for k in ("cold_gap_ms", "cold_samples") if k in run.floor}
    doc["headline"] = headline.single_run(doc)
    return doc
