"""One generator run against one path, judged by the generator and by the edge's own
counters; the interleaved rounds."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from loadtests.bench.probes import metric_sum, scrape
from loadtests.bench.rangegen import RANGE_BYTES, Generator, LoadSpec, RawRun

from .bed import MIN_RPS_HINT, SETTLE_S, Testbed, Workload, say


@dataclass(frozen=True)
class EdgeCounters:
    """The edge's own view of a run, from /metrics: did it allow, and was the cache cold?"""

    allowed: float = 0.0
    denied: float = 0.0
    pointer_hits: float = 0.0
    pointer_misses: float = 0.0

    def minus(self, before: EdgeCounters) -> EdgeCounters:
        return EdgeCounters(
            self.allowed - before.allowed,
            self.denied - before.denied,
            self.pointer_hits - before.pointer_hits,
            self.pointer_misses - before.pointer_misses,
        )


def edge_counters(port: int) -> EdgeCounters:
    s = scrape(port)
    return EdgeCounters(
        metric_sum(s, "cdn_auth_decisions_total", outcome="allow"),
        metric_sum(s, "cdn_auth_decisions_total", outcome="deny"),
        metric_sum(s, "cdn_auth_cache_lookups_total", cache="pointer", result="hit"),
        metric_sum(s, "cdn_auth_cache_lookups_total", cache="pointer", result="miss"),
    )


@dataclass(frozen=True)
class RunResult:
    path: str
    round: int
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # socket errors, timeouts and non-2xx/3xx responses
    bytes_per_response: float
    pointer_cache_misses: int | None
    problems: tuple[str, ...]


def generator_problems(raw: RawRun, cold: bool) -> list[str]:
    """What the generator saw: every response must be a 206 carrying exactly the range."""
    out = []
    if raw.requests == 0:
        out.append("no responses")
    if raw.status_errors:
        out.append(f"{raw.status_errors} non-2xx/3xx responses")
    if raw.non_206:
        out.append(f"{raw.non_206} responses were not 206")
    if raw.socket_errors or raw.timeouts:
        out.append(f"{raw.socket_errors} socket errors, {raw.timeouts} timeouts")
    per = raw.bytes / raw.requests if raw.requests else 0.0
    if raw.requests and not RANGE_BYTES <= per <= RANGE_BYTES * 1.5:
        out.append(f"responses average {per:.0f} bytes; a 206 of {RANGE_BYTES} was expected")
    if cold and raw.sent > raw.ntargets:
        out.append(
            f"pointer pool wrapped ({raw.sent} sent, {raw.ntargets} minted): "
            "pointers were reused, so some requests hit the cache"
        )
    return out


def edge_problems(delta: EdgeCounters, raw: RawRun, cold: bool) -> list[str]:
    """What the edge saw: nothing denied, one allow per response, and cold really cold."""
    out = []
    if delta.denied:
        out.append(f"the edge denied {delta.denied:.0f} requests")
    if delta.allowed < raw.requests:
        out.append(f"the edge allowed {delta.allowed:.0f} but {raw.requests} responses arrived")
    lookups = delta.pointer_hits + delta.pointer_misses
    if cold and delta.pointer_hits:
        out.append(f"{delta.pointer_hits:.0f} pointer cache hits in a cold run")
    if not cold and lookups and delta.pointer_misses > 0.01 * lookups:
        out.append(f"{delta.pointer_misses:.0f} pointer cache misses in a warm run")
    return out


def run_once(
    w: Workload,
    bed: Testbed,
    gen: Generator,
    *,
    round_no: int,
    seconds: int,
    connections: int,
    rps_hint: float,
) -> RunResult:
    """One generator run against one path, judged by the generator and by the edge."""
    targets = w.targets(int(max(rps_hint, MIN_RPS_HINT) * (seconds + 2) * 1.3))
    targets_file = bed.root / "targets" / f"{w.name}-{round_no}.txt"
    targets_file.write_text("\n".join(targets) + "\n")
    bed.check_alive()
    before = edge_counters(bed.edge_port) if w.is_edge else None
    raw = gen.run(LoadSpec(w.port, targets_file, bed.root / "auth.txt", seconds, connections))
    bed.check_alive()
    if w.pool is not None:
        w.pool.retire(raw.sent)
    problems = generator_problems(raw, cold=w.pool is not None)
    misses = None
    if before is not None:
        time.sleep(SETTLE_S)
        delta = edge_counters(bed.edge_port).minus(before)
        misses = int(delta.pointer_misses)
        problems += edge_problems(delta, raw, cold=w.pool is not None)
    rps = raw.requests / raw.duration_s if raw.duration_s else 0.0
    return RunResult(
        w.name,
        round_no,
        rps,
        raw.p50_ms,
        raw.p99_ms,
        raw.requests,
        raw.socket_errors + raw.timeouts + raw.status_errors + (raw.non_206 or 0),
        raw.bytes / raw.requests if raw.requests else 0.0,
        misses,
        tuple(problems),
    )


def progress(r: RunResult, label: str) -> None:
    verdict = "ok" if not r.problems else "INVALID: " + "; ".join(r.problems)
    say(
        f"{label} {r.path:<21} {r.rps:9.0f} req/s  p50 {r.p50_ms:7.2f} ms  "
        f"p99 {r.p99_ms:7.2f} ms  errors {r.errors}  {verdict}"
    )


@dataclass(frozen=True)
class Options:
    duration_s: int
    connections: int
    rounds: int
    warmup_s: int
    json: bool
    generator: str
    dir: Path | None


def measure(bed: Testbed, loads: list[Workload], gen: Generator, opts: Options) -> list[RunResult]:
    """A warm-up pass, then ``rounds`` interleaved rounds, each rotating the order of paths."""
    best = 0.0
    if opts.warmup_s > 0:
        for w in loads:
            r = run_once(
                w,
                bed,
                gen,
                round_no=0,
                seconds=opts.warmup_s,
                connections=opts.connections,
                rps_hint=best,
            )
            best = max(best, r.rps)
            progress(r, "warm-up  ")
    results = []
    for n in range(1, opts.rounds + 1):
        shift = (n - 1) % len(loads)
        for w in loads[shift:] + loads[:shift]:
            r = run_once(
                w,
                bed,
                gen,
                round_no=n,
                seconds=opts.duration_s,
                connections=opts.connections,
                rps_hint=best,
            )
            best = max(best, r.rps)
            results.append(r)
            progress(r, f"round {n}/{opts.rounds}")
    return results
