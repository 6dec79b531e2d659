"""The edge benchmark's report: medians per path, the ratios against the baselines and
their targets, and the table."""

from __future__ import annotations

import os
import statistics
from typing import Any

from loadtests.bench.rangegen import RANGE_BYTES, RANGE_HEADER, Generator

from .bed import PATHS
from .measure import Options, RunResult

#: ratio name -> (path, minimum of path rps / baseline rps); ``baseline`` is the edge's
#: byte path without authorization, so these are the cost of authorization alone.
TARGETS: dict[str, tuple[str, float]] = {
    "warm_ratio": ("warm", 0.85),
    "cold_ratio_ed25519": ("cold_ed25519", 0.35),
    "cold_ratio_hmac": ("cold_hmac", 0.70),
}
#: The same ratios against aiohttp's FileResponse (reported, no target): ratio name -> path.
FILERESPONSE_RATIOS = {f"{name}_vs_fileresponse": path for name, (path, _) in TARGETS.items()}
#: Heap bytes per cached pointer decision an edge may hold (issue 15: 10^5 entries per
#: cache x five caches must stay far from a worker's memory).
CACHE_BYTES_PER_ENTRY_MAX = 400


def path_summary(runs: list[RunResult]) -> dict[str, Any]:
    problems = [f"round {r.round}: {p}" for r in runs for p in r.problems]
    return {
        "rps": round(statistics.median(r.rps for r in runs), 1),
        "p50_ms": round(statistics.median(r.p50_ms for r in runs), 3),
        "p99_ms": round(statistics.median(r.p99_ms for r in runs), 3),
        "errors": sum(r.errors for r in runs),
        "requests": sum(r.requests for r in runs),
        "rps_rounds": [round(r.rps, 1) for r in sorted(runs, key=lambda r: r.round)],
        "valid": not problems,
        "problems": problems,
    }


def summarize(
    results: list[RunResult], gen: Generator, opts: Options, file_bytes: int
) -> dict[str, Any]:
    paths = {name: path_summary([r for r in results if r.path == name]) for name in PATHS}
    base = paths["baseline"]["rps"]
    report: dict[str, Any] = {
        "benchmark": "edge",
        "valid": all(p["valid"] for p in paths.values()),
        "generator": gen.name,
        "generator_version": gen.version,
        "threads": 1,
        "connections": opts.connections,
        "duration_s": opts.duration_s,
        "rounds": opts.rounds,
        "warmup_s": opts.warmup_s,
        "range": RANGE_HEADER,
        "range_bytes": RANGE_BYTES,
        "file_bytes": file_bytes,
        "cpus": os.cpu_count(),
        "statistic": "median of rounds",
    }
    targets = {}
    for ratio, (path, minimum) in TARGETS.items():
        value = round(paths[path]["rps"] / base, 3) if base else None
        report[ratio] = value
        targets[ratio] = {
            "target": minimum,
            "value": value,
            "met": value is not None and value >= minimum,
        }
    report["targets"] = targets
    report["targets_met"] = all(t["met"] for t in targets.values())
    fr = paths["baseline_fileresponse"]["rps"]
    for ratio, path in FILERESPONSE_RATIOS.items():
        report[ratio] = round(paths[path]["rps"] / fr, 3) if fr else None
    report["baseline_vs_fileresponse"] = round(base / fr, 3) if fr else None
    report["paths"] = paths
    report["runs"] = [
        {
            "path": r.path,
            "round": r.round,
            "rps": round(r.rps, 1),
            "p50_ms": round(r.p50_ms, 3),
            "p99_ms": round(r.p99_ms, 3),
            "requests": r.requests,
            "errors": r.errors,
            "bytes_per_response": round(r.bytes_per_response, 1),
            "pointer_cache_misses": r.pointer_cache_misses,
            "problems": list(r.problems),
        }
        for r in results
    ]
    return report


def render_table(report: dict[str, Any]) -> str:
    head = (
        f"edge benchmark: generator {report['generator']} ({report['generator_version']}), "
        f"{report['threads']} thread, {report['connections']} connections; "
        f"median of {report['rounds']} interleaved rounds x {report['duration_s']} s; "
        f"Range {report['range']} of a {report['file_bytes']}-byte file; {report['cpus']} CPUs"
    )
    lines = [
        head,
        "",
        f"{'path':<23}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}"
        f"{'ratio':>8}{'vs FR':>8}  {'target':<9}{'met':<5}{'valid':<6}",
    ]
    ratio_of = {path: (name, minimum) for name, (path, minimum) in TARGETS.items()}
    fr_of = {path: name for name, path in FILERESPONSE_RATIOS.items()}

    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    for path in PATHS:
        p = report["paths"][path]
        ratio, target, met = "", "", ""
        vs_fr = fmt(report["baseline_vs_fileresponse"]) if path == "baseline" else ""
        if path == "baseline":
            ratio = "1.000"
        elif path == "baseline_fileresponse":
            vs_fr = "1.000"
        if path in ratio_of:
            name, minimum = ratio_of[path]
            t = report["targets"][name]
            ratio = fmt(t["value"])
            target, met = f">= {minimum:.2f}", "yes" if t["met"] else "NO"
        if path in fr_of:
            vs_fr = fmt(report[fr_of[path]])
        lines.append(
            f"{path:<23}{p['rps']:>10.0f}{p['p50_ms']:>10.2f}{p['p99_ms']:>10.2f}"
            f"{p['errors']:>8}{ratio:>8}{vs_fr:>8}  {target:<9}{met:<5}"
            f"{'yes' if p['valid'] else 'NO':<6}"
        )
    if "cache_bytes_per_entry" in report:
        t = report["targets"]["cache_bytes_per_entry"]
        lines.append(
            f"cache_bytes_per_entry {t['value']:.0f} (target <= {t['target_max']}: "
            f"{'met' if t['met'] else 'NOT met'}; heap bytes per cached pointer)"
        )
    lines.append("")
    lines.append(
        "ratio: req/s over `baseline` (the edge's byte path, no authorization); "
        "vs FR: over `baseline_fileresponse` (aiohttp FileResponse)"
    )
    if report["valid"]:
        lines.append(
            "VALID: every response a 206 of the range, no edge denials, "
            "no pointer reused in the cold runs"
        )
    else:
        lines.append("INVALID measurement; problems:")
        lines += [f"  {path}: {msg}" for path in PATHS for msg in report["paths"][path]["problems"]]
    verdict = "all met" if report["targets_met"] else "NOT all met"
    lines.append(
        f"targets: {verdict} (a missed target does not fail the run)"
        if report["valid"]
        else f"targets: {verdict} by the figures above, but they are not trustworthy"
    )
    return "\n".join(lines)


def add_cache_memory(report: dict[str, Any], bytes_per_entry: float) -> None:
    """``cache_bytes_per_entry``: heap bytes per cached pointer decision (in-process,
    :mod:`.cache_memory`), with its target (at most CACHE_BYTES_PER_ENTRY_MAX)."""
    value = round(bytes_per_entry, 1)
    report["cache_bytes_per_entry"] = value
    report["targets"]["cache_bytes_per_entry"] = {
        "target_max": CACHE_BYTES_PER_ENTRY_MAX,
        "value": value,
        "met": value <= CACHE_BYTES_PER_ENTRY_MAX,
    }
    report["targets_met"] = all(t["met"] for t in report["targets"].values())
