"""The dm benchmark's report: medians over rounds, the targets, the server's own warnings,
and the table."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loadtests.bench.probes import median

from .bed import TARGET_CPU_US_PER_MESSAGE, TARGET_PUSH_P99_MS, TARGET_SEND_RPS, Bed
from .push import PushResult
from .send import SendResult


def cpu_median(runs: Sequence[SendResult | PushResult], who: str) -> float | None:
    values = [v for r in runs if (v := r.cpu_us[who]) is not None]
    return round(median(values), 1) if values else None


def send_summary(runs: list[SendResult]) -> dict[str, Any]:
    problems = [f"round {r.round}: {p}" for r in runs for p in r.problems]
    dm_cpu = cpu_median(runs, "server")
    return {
        "rps": round(median([r.raw.rps for r in runs]), 1),
        "dm_cpu_us_per_send": dm_cpu,
        "redis_cpu_us_per_send": cpu_median(runs, "redis"),
        "dm_one_core_bound_rps": round(1e6 / dm_cpu) if dm_cpu else None,
        "p50_ms": round(median([r.raw.p50_ms for r in runs]), 3),
        "p99_ms": round(median([r.raw.p99_ms for r in runs]), 3),
        "errors": sum(r.raw.errors for r in runs),
        "accepted": sum(r.raw.ok for r in runs),
        "rps_rounds": [round(r.raw.rps, 1) for r in runs],
        "valid": not problems,
        "problems": problems,
    }


def merge_counts(counts: Sequence[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in counts:
        for k, v in c.items():
            out[k] = out.get(k, 0) + int(v)
    return dict(sorted(out.items()))


def log_warnings(log: Path) -> dict[str, int]:
    """What the server complained about (its JSON log lines), counted by message and error.

    Access logs are off, so every line is a warning or worse; this is how an overload
    shows its cause (e.g. an exhausted Redis connection pool) next to the numbers.
    """
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in log.read_text(errors="replace").splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict):
                detail = doc.get("err") or doc.get("code") or ""
                key = f"{doc.get('level', '?')} {doc.get('msg', '?')}: {detail}".rstrip(": ")
                out[key] = out.get(key, 0) + 1
    return out


def push_summary(runs: list[PushResult]) -> dict[str, Any]:
    problems = [f"round {r.round}: {p}" for r in runs for p in r.problems]

    def med(section: str, key: str) -> float:
        return round(median([float(r.doc[section][key]) for r in runs]), 3)

    achieved = round(median([float(r.doc["achieved_rps"]) for r in runs]), 1)
    return {
        "rate": runs[0].rate,
        "achieved_rps": achieved,
        "rate_met": all(r.doc["rate_met"] for r in runs),
        "p50_ms": med("push_ms", "p50"),
        "p90_ms": med("push_ms", "p90"),
        "p99_ms": med("push_ms", "p99"),
        "p999_ms": med("push_ms", "p999"),
        "max_ms": med("push_ms", "max"),
        "send_p50_ms": med("send_ms", "p50"),
        "send_p99_ms": med("send_ms", "p99"),
        "generator_lag_p99_ms": med("generator_lag_ms", "p99"),
        "generator_cpu_share": round(median([float(r.doc["generator_cpu_share"]) for r in runs]), 3),
        "dm_cpu_us_per_message": cpu_median(runs, "server"),
        "redis_cpu_us_per_message": cpu_median(runs, "redis"),
        "errors": sum(int(r.doc["errors"]) for r in runs),
        "statuses": merge_counts([r.doc["statuses"] for r in runs]),
        "reconnects": sum(int(r.doc["reconnects"]) for r in runs),
        "close_reasons": merge_counts([r.doc["close_reasons"] for r in runs]),
        "lost": sum(int(r.doc["lost"]) for r in runs),
        "p99_ms_rounds": [r.p99_ms for r in runs],
        "valid": not problems,
        "problems": problems,
    }


def floor_summary(
    send: dict[str, Any],
    floors: dict[int, list[SendResult]],
    head: dict[str, Any] | None = None,
    open_floors: list[PushResult] = (),  # type: ignore[assignment]
) -> dict[str, Any]:
    """The stack's own cost per request (aiohttp alone, then with a send's Redis round
    trips) and the dm's send as a multiple of it, all medians of the same run's rounds.

    With the head push rate's summary and the open-loop floor runs: the same full floor
    at that rate, open loop, and the dm's CPU per message (send and push) as a multiple
    of it."""
    cpu = {n: cpu_median(runs, "server") for n, runs in floors.items()}
    trips = max(floors)
    http, full, dm = cpu.get(0), cpu.get(trips), send["dm_cpu_us_per_send"]
    problems = [
        f"floor@{n} round {r.round}: {p}" for n, runs in floors.items() for r in runs for p in r.problems
    ]
    problems += [f"open-floor round {r.round}: {p}" for r in open_floors for p in r.problems]
    open_floor = cpu_median(list(open_floors), "server") if open_floors else None
    message = head["dm_cpu_us_per_message"] if head else None
    return {
        "round_trips": trips,
        "http_us_per_request": http,
        "redis_us_per_round_trip": round((full - http) / trips, 1) if full and http and trips else None,
        "floor_us_per_send": full,
        "ours_us_per_send": round(dm - full, 1) if dm and full else None,
        "send_vs_floor": round(dm / full, 2) if dm and full else None,
        "cpu_us_rounds": {str(n): [r.cpu_us["server"] for r in runs] for n, runs in floors.items()},
        "open_loop_rate": open_floors[0].rate if open_floors else None,
        "open_loop_floor_us_per_send": open_floor,
        "open_loop_floor_us_rounds": [r.cpu_us["server"] for r in open_floors],
        "message_vs_open_loop_floor": round(message / open_floor, 2) if message and open_floor else None,
        "valid": not problems,
        "problems": problems,
    }


def summarize(
    bed: Bed,
    sends: list[SendResult],
    pushes: list[PushResult],
    floors: dict[int, list[SendResult]],
    open_floors: list[PushResult] = (),  # type: ignore[assignment]
) -> dict[str, Any]:
    opts = bed.opts
    send = send_summary(sends)
    push = {str(rate): push_summary([p for p in pushes if p.rate == rate]) for rate in opts.rates}
    head = push[str(opts.rates[0])]
    floor = floor_summary(send, floors, head, open_floors)
    targets = {
        "send_rps": {
            "target": f">= {TARGET_SEND_RPS:.0f}",
            "value": send["rps"],
            "met": send["rps"] >= TARGET_SEND_RPS,
        },
        "push_p99_ms": {
            "target": f"<= {TARGET_PUSH_P99_MS:.0f} at {head['rate']}/s",
            "value": head["p99_ms"],
            "met": head["p99_ms"] <= TARGET_PUSH_P99_MS and head["rate_met"],
        },
        "push_p99_ms_every_round": {
            "target": f"<= {TARGET_PUSH_P99_MS:.0f} at {head['rate']}/s in every round",
            "value": max(head["p99_ms_rounds"]),
            "met": max(head["p99_ms_rounds"]) <= TARGET_PUSH_P99_MS and head["rate_met"],
        },
        "cpu_us_per_message": {
            "target": f"<= {TARGET_CPU_US_PER_MESSAGE:.0f} (send + push, one dm process)",
            "value": head["dm_cpu_us_per_message"],
            "met": head["dm_cpu_us_per_message"] is not None
            and head["dm_cpu_us_per_message"] <= TARGET_CPU_US_PER_MESSAGE,
        },
    }
    return {
        "benchmark": "dm",
        "valid": send["valid"] and floor["valid"] and all(p["valid"] for p in push.values()),
        "send_rps": send["rps"],
        "send_p50_ms": send["p50_ms"],
        "send_p99_ms": send["p99_ms"],
        "push_rate": head["rate"],
        "push_p50_ms": head["p50_ms"],
        "push_p99_ms": head["p99_ms"],
        "push_achieved_rps": head["achieved_rps"],
        "push_rate_met": head["rate_met"],
        # The dm's CPU per message at the head rate (send + push in one process), the median
        # of the rounds, and every round's push p99: the median hides a bad round.
        "cpu_us_per_message": head["dm_cpu_us_per_message"],
        "cpu_us_per_message_rounds": [r.cpu_us["server"] for r in pushes if r.rate == head["rate"]],
        "push_p99_ms_rounds": head["p99_ms_rounds"],
        "targets": targets,
        "targets_met": all(t["met"] for t in targets.values()),
        # What the serving stack itself costs per send on this machine (floor.py), and the
        # dm's send as a multiple of it: the figure that travels between machines.
        "floor": floor,
        "config": {
            "generator_send": bed.wrk.version,
            "generator_push": "python (asyncio streams + aiohttp WebSockets)",
            "connections": opts.connections,
            "push_connections": opts.push_connections,
            "conversations": len(bed.pairs),
            "recipients_online_in_push": len(bed.pairs),
            "message": opts.message,
            "duration_s": opts.duration_s,
            "rounds": opts.rounds,
            "warmup_s": opts.warmup_s,
            "send_rate_limit_per_s": opts.send_rate_limit or 50,
            "send_rate_limit_source": "--send-rate-limit" if opts.send_rate_limit else "dm default",
            "access_log": False,
            "event_loop": opts.event_loop,
            "cpus": os.cpu_count(),
            "statistic": "median of rounds",
        },
        "send": send,
        "push": push,
        "dm_log_warnings": log_warnings(bed.dm.log),
        "runs": [
            {
                "workload": "send",
                "round": r.round,
                "rps": round(r.raw.rps, 1),
                "p50_ms": round(r.raw.p50_ms, 3),
                "p99_ms": round(r.raw.p99_ms, 3),
                "requests": r.raw.requests,
                "errors": r.raw.errors,
                "server_accepted": r.server_accepted,
                "problems": list(r.problems),
            }
            for r in sends
        ]
        + [
            {"workload": f"push@{r.rate}", "round": r.round, **r.doc, "problems": list(r.problems)}
            for r in pushes
        ],
    }


def _us(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def _send_rows(report: dict[str, Any]) -> list[str]:
    c, s, t = report["config"], report["send"], report["targets"]["send_rps"]
    return [
        f"send throughput: closed loop, {c['generator_send']}, 1 thread, {c['connections']} "
        "connections, recipients offline",
        f"  {'sends/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'dm CPU us':>11}"
        f"{'Redis us':>10}{'1-core bound':>14}  {'target':<10}{'met':<5}valid",
        f"  {s['rps']:>9.0f}{s['p50_ms']:>9.2f}{s['p99_ms']:>9.2f}{s['errors']:>8}"
        f"{_us(s['dm_cpu_us_per_send']):>11}{_us(s['redis_cpu_us_per_send']):>10}"
        f"{_us(s['dm_one_core_bound_rps']):>14}  {t['target']:<10}{_yes(t['met']):<5}"
        f"{_yes(s['valid'])}",
        "  (dm CPU us: the dm process's CPU per accepted send; 1-core bound: 1e6 / that, the "
        "rate one whole core would sustain)",
    ]


def _floor_rows(report: dict[str, Any]) -> list[str]:
    f = report["floor"]
    return [
        f"the floor under a send (same request lines and wrk; aiohttp and redis-py as the dm "
        f"uses them, no product logic): {_us(f['http_us_per_request'])} us per request with "
        f"no Redis, {_us(f['redis_us_per_round_trip'])} us per Redis round trip, "
        f"{_us(f['floor_us_per_send'])} us with a media send's {f['round_trips']} round trips; "
        f"the dm's send is {f['send_vs_floor'] or 'n/a '}x that ({_us(f['ours_us_per_send'])} us of its "
        f"own){'' if f['valid'] else '  INVALID'}",
    ] + (
        [
            f"the same floor at {f['open_loop_rate']}/s open loop (the push run's schedule, sends "
            f"only): {_us(f['open_loop_floor_us_per_send'])} us per send; the dm's send and push "
            f"at that rate cost {f['message_vs_open_loop_floor'] or 'n/a '}x that"
        ]
        if f.get("open_loop_floor_us_per_send")
        else []
    )


def _push_rows(report: dict[str, Any]) -> list[str]:
    c, t = report["config"], report["targets"]["push_p99_ms"]
    lines = [
        f"send -> push latency: open loop (Python, up to {c['push_connections']} sends in "
        "flight), from each send's intended time to the WebSocket frame at the "
        f"recipient; {c['recipients_online_in_push']} recipients online",
        f"  {'rate/s':>7}{'achieved':>9}{'rate met':>9}{'p50 ms':>8}{'p90 ms':>8}"
        f"{'p99 ms':>8}{'p99.9':>8}{'max ms':>8}{'send p99':>9}{'errors':>7}{'drops':>6}"
        f"{'lost':>5}{'dm CPU us':>10}{'gen CPU':>8}  {'target':<9}{'met':<5}valid",
    ]
    for key, p in report["push"].items():
        target, met = ("", "")
        if int(key) == report["push_rate"]:
            target, met = f"<= {TARGET_PUSH_P99_MS:.0f} ms", _yes(t["met"])
        lines.append(
            f"  {p['rate']:>7}{p['achieved_rps']:>9.0f}{_yes(p['rate_met']):>9}"
            f"{p['p50_ms']:>8.2f}{p['p90_ms']:>8.2f}{p['p99_ms']:>8.2f}"
            f"{p['p999_ms']:>8.2f}{p['max_ms']:>8.2f}{p['send_p99_ms']:>9.2f}"
            f"{p['errors']:>7}{p['reconnects']:>6}{p['lost']:>5}"
            f"{_us(p['dm_cpu_us_per_message']):>10}"
            f"{p['generator_cpu_share']:>8.0%}  {target:<9}{met:<5}{_yes(p['valid'])}"
        )
    lines.append(
        "  (errors: sends not accepted; drops: WebSockets the dm closed mid-run, after "
        "which the recipient reconnected with its cursor as the SDK does; lost: never "
        "delivered; dm CPU us: per message, send and push; gen CPU: the load "
        "generator's share of one core)"
    )
    for key, p in report["push"].items():
        if p["errors"]:
            lines.append(
                f"  errors at {key}/s by status (0: connection failed): "
                + ", ".join(f"{k}: {v}" for k, v in p["statuses"].items() if k != "201")
            )
        if p["reconnects"]:
            lines.append(
                f"  drops at {key}/s: "
                + "; ".join(f"{n} x {why}" for why, n in p["close_reasons"].items())
            )
    return lines


def render_table(report: dict[str, Any]) -> str:
    c = report["config"]
    lines = [
        f"dm benchmark: one dm process (python -m dm serve) with its own Redis; "
        f"{c['conversations']} 1:1 conversations; {c['message']} messages; median of "
        f"{c['rounds']} interleaved rounds x {c['duration_s']} s; {c['cpus']} CPUs",
        f"per-conversation send limit {c['send_rate_limit_per_s']}/s "
        f"({c['send_rate_limit_source']}); access log off",
        "",
        *_send_rows(report),
        *_floor_rows(report),
        "",
        *_push_rows(report),
        "",
    ]
    if report["dm_log_warnings"]:
        lines.append(
            "the dm's log: "
            + "; ".join(f"{n} x {what}" for what, n in report["dm_log_warnings"].items())
        )
    if report["valid"]:
        lines.append(
            "VALID: in the send runs every response a 201 that the dm counted and "
            "no request repeated; in the push runs every accepted send delivered "
            "exactly once"
        )
    else:
        lines.append("INVALID measurement; problems:")
        lines += [f"  send: {m}" for m in report["send"]["problems"]]
        lines += [f"  {m}" for m in report["floor"]["problems"]]
        lines += [f"  push@{k}: {m}" for k, p in report["push"].items() for m in p["problems"]]
    verdict = "all met" if report["targets_met"] else "NOT all met"
    lines.append(f"targets: {verdict} (a missed target does not fail the run)")
    return "\n".join(lines)


def _yes(flag: bool) -> str:
    return "yes" if flag else "NO"
