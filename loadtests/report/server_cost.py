"""Server CPU per share, capacity per core, and who was busiest where a mode saturated.

Latency says how a share feels; CPU per share says what it costs.  Each
trial's segment carries the CPU seconds the dm service, the edge and Redis
used during it (loadtests.stack.proc_cpu, sampled by the driver); divided by the
shares completed in the trial that is the server cost of one share *with
its views* (the trial also re-opens shared videos at ``view_ratio`` times
the share rate), in microseconds.  The estimate is the median over trials
with a bootstrap interval; sealed against plain is the median of the
per-round ratio (rounds ran back to back), also with an interval.  The
capacity figure, shares per second per server core, is its inverse.

At the knee of the step load (the first step that missed the SLO) the
process using the most CPU is the one that saturated first; when that is
the load generator, or the whole machine was busy, the saturation figure
measures the test rig rather than the servers and is marked so.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from loadtests.report.stats import bootstrap_median
from loadtests.stack.proc_cpu import ROLES, role

GENERATOR = "generator"


def _completed(seg: Any, mode: str) -> int:
    return int(seg.data.flows.get(mode, {}).get("completed", 0))


def _cpu_s(seg: Any) -> dict[str, float]:
    return {k: float(v) for k, v in (seg.servers or {}).get("cpu_s", {}).items()}


def idle_rates(idle: dict[str, Any] | None) -> dict[str, float]:
    """CPU seconds per second of each server process with no flow running (driver.json)."""
    if not idle or not float(idle.get("window_s") or 0):
        return {}
    w = float(idle["window_s"])
    return {k: float(v) / w for k, v in (idle.get("cpu_s") or {}).items()}


def per_trial_us(seg: Any, mode: str, idle: dict[str, float] | None = None) -> dict[str, float] | None:
    """Server CPU µs per completed share in one trial, by role and ``total``; None if unmeasured.

    With ``idle`` (CPU s/s per process, :func:`idle_rates`) the background the servers
    spend with no flow running is taken out first: the marginal cost of a share.
    """
    cpu, done = _cpu_s(seg), _completed(seg, mode)
    if not cpu or done == 0:
        return None
    if idle:
        window = float((seg.servers or {}).get("window_s") or seg.duration_s or 0.0)
        cpu = {n: max(0.0, s - idle.get(n, 0.0) * window) for n, s in cpu.items()}
    out = dict.fromkeys(ROLES, 0.0)
    for name, seconds in cpu.items():
        out[role(name)] = out.get(role(name), 0.0) + seconds * 1e6 / done
    out["total"] = sum(v for k, v in out.items() if k in ROLES)
    return out


def process_cpu_pct(seg: Any) -> dict[str, float]:
    """CPU % of one core of each process in a segment: servers by name, the generator's worst."""
    out: dict[str, float] = {}
    window = float((seg.servers or {}).get("window_s") or seg.duration_s or 0.0)
    if window > 0:
        out = {name: 100.0 * s / window for name, s in _cpu_s(seg).items()}
    gen = [float(p.get("cpu_pct", 0.0)) for p in seg.processes]
    if gen:
        out[GENERATOR] = max(gen)
    return out


def mode_cost(
    trials: Sequence[Any], mode: str, base: Sequence[Any] | None, idle: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The server cost of one mode's shares; ``base``: plain's trials, for the paired ratio.

    ``idle`` (driver.json's ``server_idle``): when present, the by-role figures, the
    ratio and the capacity are net of the servers' idle background; ``us_per_share`` is
    always the gross figure and ``net_us_per_share`` the net one.
    """
    rates = idle_rates(idle)
    gross = [t["total"] for s in trials if (t := per_trial_us(s, mode)) is not None]
    rows = [(s.round, t) for s in trials if (t := per_trial_us(s, mode, rates)) is not None]
    if not rows:
        return {
            "measured": False,
            "note": "not measured (the servers are not processes on this machine)",
        }
    totals = [t["total"] for _, t in rows]
    present = {role(name) for seg in trials for name in _cpu_s(seg)}
    est = bootstrap_median(totals)
    out: dict[str, Any] = {
        "measured": True,
        "us_per_share": bootstrap_median(gross).as_dict(1),
        "net_of_idle": bool(rates),
        "net_us_per_share": est.as_dict(1) if rates else None,
        "idle_cpu_pct": {k: round(100 * v, 2) for k, v in rates.items()},
        # Every role that has a process, even one whose (net) CPU rounds to zero: a short
        # trial on an idle Redis is a measured 0, not a missing role.
        "by_role_us": {
            r: round(float(sorted(t[r] for _, t in rows)[len(rows) // 2]), 1)
            for r in ROLES
            if r in present
        },
        "shares_per_core_s": round(1e6 / est.estimate, 1) if est.estimate else None,
        "trials": [{"round": r, **{k: round(v, 1) for k, v in t.items()}} for r, t in rows],
    }
    gen = [process_cpu_pct(s).get(GENERATOR) for s in trials]
    srv = [sum(v for k, v in process_cpu_pct(s).items() if k != GENERATOR) for s in trials]
    mach = [
        max(
            (float(p["machine_cpu_pct"]) for p in s.processes if p.get("machine_cpu_pct") is not None),
            default=None,
        )
        for s in trials
    ]
    out["generator_cpu_pct"] = bootstrap_median([g for g in gen if g is not None]).as_dict(1)
    out["servers_cpu_pct"] = bootstrap_median(srv).as_dict(1)
    out["machine_cpu_pct"] = bootstrap_median([m for m in mach if m is not None]).as_dict(1)
    if base is not None:
        mine = dict(rows)
        ref = {s.round: t for s in base if (t := per_trial_us(s, "plain", rates)) is not None}
        ratios = [
            mine[r]["total"] / ref[r]["total"]
            for r in sorted(set(mine) & set(ref))
            if ref[r]["total"] > 0
        ]
        out["ratio_vs_plain"] = bootstrap_median(ratios).as_dict(3)
    return out


def knee(
    steps: Sequence[dict[str, Any]], mode: str, saturation_rps: float | None
) -> dict[str, Any] | None:
    """The step where ``mode`` first missed the SLO above its saturation point (or its last)."""
    mine = [s for s in steps if s["mode"] == mode]
    above = [
        s
        for s in mine
        if not s["meets_slo"] and (saturation_rps is None or float(s["target_rps"]) > saturation_rps)
    ]
    if above:
        return min(above, key=lambda s: float(s["target_rps"]))
    return max(mine, key=lambda s: float(s["target_rps"])) if mine else None


def bound(step: dict[str, Any] | None, machine_limit_pct: float) -> dict[str, Any]:
    """Which process used the most CPU at the knee, and whether that makes it generator-bound."""
    if step is None or not step.get("cpu_pct_by_process"):
        return {"bound": None, "saturated_first": None}
    by = step["cpu_pct_by_process"]
    top = max(by, key=lambda k: by[k])
    machine = step.get("machine_cpu_pct")
    if machine is not None and machine >= machine_limit_pct:
        kind = "machine-bound"
    elif top == GENERATOR:
        kind = "generator-bound"
    elif len(by) == 1:
        kind = None  # only the generator could be read: the servers were not measured
    else:
        kind = "server-bound"
    return {
        "bound": kind,
        "saturated_first": top,
        "at_rps": step["target_rps"],
        "cpu_pct": {k: round(v, 1) for k, v in by.items()},
        "machine_cpu_pct": machine,
    }
