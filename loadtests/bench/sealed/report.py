"""The sealed benchmark's report: medians per workload, paired ratios, sizes, the table."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from loadtests.bench.probes import median

from .bed import FILE_BYTES, PREFLIGHT_BASE, RANGE_HEADER, REFERENCE_US, SUITES, Bed, Options
from .measure import RunResult
from .workloads import Workload, plain_line, sealed_line


def workload_summary(runs: list[RunResult], server: str) -> dict[str, Any]:
    problems = [f"round {r.round}: {p}" for r in runs for p in r.problems]

    def cpu(who: str) -> float | None:
        values = [v for r in runs if (v := r.cpu_us[who]) is not None]
        return round(median(values), 1) if values else None

    return {
        "server": server,
        "rps": round(median([r.raw.rps for r in runs]), 1),
        "server_cpu_us": cpu("server"),
        "redis_cpu_us": cpu("redis"),
        "p50_ms": round(median([r.raw.p50_ms for r in runs]), 3),
        "p99_ms": round(median([r.raw.p99_ms for r in runs]), 3),
        "errors": sum(r.raw.errors for r in runs),
        "requests": sum(r.raw.ok for r in runs),
        "rps_rounds": [round(r.raw.rps, 1) for r in runs],
        "valid": not problems,
        "problems": problems,
    }


def ratio(num: float | None, den: float | None) -> float | None:
    return round(num / den, 3) if num and den else None


#: ratio name -> (numerator workload, denominator workload)
RATIOS = {
    "grant_first_fetch_ratio": ("fetch_first_grant", "fetch_first_pointer"),
    "grant_repeat_fetch_ratio": ("fetch_repeat_grant", "fetch_repeat_pointer"),
    "sealed_send_ratio": ("send_sealed_x25519", "send_plain"),
    "sealed_pq_send_ratio": ("send_sealed_mlkem", "send_plain"),
}


def paired_ratio(
    results: list[RunResult], a: str, b: str, value: Callable[[RunResult], float | None]
) -> float | None:
    """Median over rounds of ``value(a) / value(b)`` within each round.

    The two workloads of a ratio run back to back in every round, so pairing them
    cancels most of the slow drift a shared machine adds to both.
    """
    by_round: dict[int, dict[str, RunResult]] = {}
    for r in results:
        by_round.setdefault(r.round, {})[r.workload] = r
    values = [
        q
        for runs in by_round.values()
        if a in runs and b in runs and (q := ratio(value(runs[a]), value(runs[b]))) is not None
    ]
    return round(median(values), 3) if values else None


def ratios(results: list[RunResult]) -> dict[str, float | None]:
    """Throughput ratios, and the same comparison by server CPU per request (inverted)."""
    out: dict[str, float | None] = {}
    for name, (a, b) in RATIOS.items():
        out[name] = paired_ratio(results, a, b, lambda r: r.raw.rps)
        out[f"{name}_by_cpu"] = paired_ratio(results, b, a, lambda r: r.cpu_us["server"])
    return out


def send_sizes(bed: Bed) -> dict[str, int]:
    """Bytes of one send request body per mode (one recipient device)."""
    plain = bed.pairs["plain"][0]
    out = {"send_body_plain_bytes": len(plain_line(plain, 0).split("\t")[4])}
    for suite, name in SUITES.items():
        body = sealed_line(bed.pairs[suite][0], suite, bed.tokens, bed.grants, PREFLIGHT_BASE + 1)
        out[f"{name.replace('send_', 'send_body_')}_bytes"] = len(body.split("\t")[4])
    return out


def summarize(
    bed: Bed, loads: list[Workload], results: list[RunResult], micro_: dict[str, Any], opts: Options
) -> dict[str, Any]:
    http = {
        w.name: workload_summary([r for r in results if r.workload == w.name], w.server) for w in loads
    }
    return {
        "benchmark": "sealed",
        "valid": all(h["valid"] for h in http.values()),
        **{
            k: micro_[k]
            for k in (
                "seal_us",
                "open_us",
                "seal_pq_us",
                "open_pq_us",
                "envelope_bytes",
                "envelope_pq_bytes",
            )
        },
        **ratios(results),
        "grant_mint_us": micro_["grant_mint_us"],
        "pointer_mint_us": micro_["pointer_mint_us"],
        "grant_mint_http_rps": http["grant_mint_http"]["rps"],
        "micro": micro_,
        "sizes": send_sizes(bed),
        "http": http,
        "reference_us": REFERENCE_US,
        "config": {
            "generator": bed.wrk.version,
            "threads": 1,
            "connections": opts.connections,
            "duration_s": opts.duration_s,
            "rounds": opts.rounds,
            "warmup_s": opts.warmup_s,
            "timeit_repeats": opts.repeats,
            "conversations_per_mode": opts.pairs,
            "range": RANGE_HEADER,
            "file_bytes": FILE_BYTES,
            "cpus": os.cpu_count(),
            "statistic": "median of rounds (ratios: of per-round ratios); micro costs: "
            "median of timeit repeats of process CPU time",
        },
        "runs": [
            {
                "workload": r.workload,
                "round": r.round,
                "rps": round(r.raw.rps, 1),
                "server_cpu_us": r.cpu_us["server"],
                "p50_ms": round(r.raw.p50_ms, 3),
                "p99_ms": round(r.raw.p99_ms, 3),
                "requests": r.raw.requests,
                "errors": r.raw.errors,
                "problems": list(r.problems),
            }
            for r in results
        ],
    }


def _fmt(value: float | None, spec: str = ".0f") -> str:
    return "n/a" if value is None else format(value, spec)


def _micro_rows(report: dict[str, Any]) -> list[str]:
    m, s, ref = report["micro"], report["sizes"], report["reference_us"]
    row = "  {:<36}{:>14}{:>14}{:>18}   {}"
    return [
        f"per-operation cost in this process (median of {report['config']['timeit_repeats']} "
        "timeit repeats, CPU time of one core)",
        row.format("operation", "plain", "x25519", "mlkem768-x25519", "for scale"),
        row.format(
            "token mint (pointer | grant)",
            f"{m['pointer_mint_us']:.1f} us",
            f"{m['grant_mint_us']:.1f} us",
            f"{m['grant_mint_us']:.1f} us",
            "",
        ),
        row.format(
            "token verify at the edge (miss)",
            f"{m['pointer_verify_us']:.1f} us",
            f"{m['grant_verify_us']:.1f} us",
            f"{m['grant_verify_us']:.1f} us",
            "",
        ),
        row.format(
            "seal, per recipient device",
            "-",
            f"{m['seal_us']:.1f} us",
            f"{m['seal_pq_us']:.1f} us",
            f"~{ref['seal_us']} | ~{ref['seal_pq_us']} us",
        ),
        row.format(
            "open (recipient device)",
            "-",
            f"{m['open_us']:.1f} us",
            f"{m['open_pq_us']:.1f} us",
            f"~{ref['open_us']} | ~{ref['open_pq_us']} us",
        ),
        row.format(
            "franking commit | countersign",
            "-",
            f"{m['commit_us']:.1f} | {m['countersign_us']:.1f}",
            "same",
            "",
        ),
        row.format(
            "envelope bytes (raw | base64url)",
            "-",
            f"{m['envelope_bytes']} | {m['envelope_b64_chars']}",
            f"{m['envelope_pq_bytes']} | {m['envelope_pq_b64_chars']}",
            "",
        ),
        row.format(
            "send body bytes, 1 device",
            str(s["send_body_plain_bytes"]),
            str(s["send_body_sealed_x25519_bytes"]),
            str(s["send_body_sealed_mlkem_bytes"]),
            "",
        ),
        row.format(
            "token chars (pointer | grant)",
            str(m["pointer_chars"]),
            str(m["grant_chars"]),
            str(m["grant_chars"]),
            "",
        ),
    ]


def _http_rows(report: dict[str, Any]) -> list[str]:
    c = report["config"]
    lines = [
        f"over HTTP: {c['generator']}, 1 thread, {c['connections']} connections; median "
        f"of {c['rounds']} interleaved rounds x {c['duration_s']} s; fetches are "
        f"{c['range']} of a private video",
        f"  {'workload':<23}{'server':<7}{'req/s':>8}{'CPU us/req':>12}{'Redis us':>10}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}  valid",
    ]
    for name, h in report["http"].items():
        lines.append(
            f"  {name:<23}{h['server']:<7}{h['rps']:>8.0f}"
            f"{_fmt(h['server_cpu_us']):>12}{_fmt(h['redis_cpu_us']):>10}"
            f"{h['p50_ms']:>9.2f}{h['p99_ms']:>9.2f}{h['errors']:>8}  "
            f"{'yes' if h['valid'] else 'NO'}"
        )
    lines.append("  (CPU us/req: the server process's CPU per good response; Redis us: its Redis's)")
    return lines


def _ratio_rows(report: dict[str, Any]) -> list[str]:
    row = "  {:<44}{:>10}{:>12}"
    lines = [
        "ratios (median over rounds of the ratio within each round; by CPU/req is the "
        "inverse CPU ratio, so both read 'x as fast')",
        row.format("", "by req/s", "by CPU/req"),
    ]
    for name, what in (
        ("grant_first_fetch_ratio", "first fetch: grant / pointer"),
        ("grant_repeat_fetch_ratio", "repeat fetch: grant / pointer"),
        ("sealed_send_ratio", "send: sealed x25519 / plain"),
        ("sealed_pq_send_ratio", "send: sealed mlkem768-x25519 / plain"),
    ):
        lines.append(row.format(what, _fmt(report[name], ".3f"), _fmt(report[f"{name}_by_cpu"], ".3f")))
    return lines


def render_table(report: dict[str, Any]) -> str:
    lines = [
        f"sealed-mode benchmark: plain vs sealed (x25519, mlkem768-x25519); "
        f"{report['config']['cpus']} CPUs",
        "",
        *_micro_rows(report),
        "",
        *_http_rows(report),
        "",
        *_ratio_rows(report),
        "",
    ]
    if report["valid"]:
        lines.append(
            "VALID: every response of the right status and size, no request line "
            "repeated, the servers' counters agree (no denials, first fetches all "
            "cache misses, no sealed replays)"
        )
    else:
        lines.append("INVALID measurement; problems:")
        lines += [f"  {n}: {p}" for n, h in report["http"].items() for p in h["problems"]]
    return "\n".join(lines)
