"""One wrk run of one sealed-benchmark workload, judged by wrk and by the server's own
counters; the interleaved rounds."""

from __future__ import annotations

import time
from dataclasses import dataclass

from loadtests.bench.probes import Cpu, scrape
from loadtests.bench.wrk import WrkRun, WrkSpec, run_requests, write_lines

from .bed import SETTLE_S, Bed, Options, say
from .workloads import Workload


@dataclass(frozen=True)
class RunResult:
    workload: str
    round: int
    raw: WrkRun
    cpu_us: dict[str, float | None]  # per good response: the server's and its Redis's
    problems: tuple[str, ...]


def run_once(bed: Bed, w: Workload, *, round_no: int, seconds: int, connections: int) -> RunResult:
    """One wrk run of one workload, judged by wrk and by the server's own counters."""
    server = bed.edge if w.server == "edge" else bed.dm
    lines = w.pool.reserve(int(max(w.best_rps, w.min_hint) * (seconds + 2) * 1.5))
    lines_file = write_lines(bed.root / "requests" / f"{w.name}-{round_no}.txt", lines)
    bed.grants.flush()
    server.check_alive()
    before, cpu = scrape(server.port), Cpu.of(server)
    raw = run_requests(
        bed.wrk,
        WrkSpec(
            server.port,
            lines_file,
            bed.bob_file,
            seconds,
            connections,
            w.expected_status,
            w.expected_len,
            w.extra_header,
        ),
    )
    w.pool.retire(raw.sent)
    time.sleep(SETTLE_S)
    server.check_alive()
    cpu_us = Cpu.of(server).per_op_us(cpu, raw.ok)
    problems = raw.problems(once=w.pool.once)
    if w.check is not None:
        problems += w.check(before, scrape(server.port), raw)
    w.best_rps = max(w.best_rps, raw.rps)
    return RunResult(w.name, round_no, raw, cpu_us, tuple(problems))


def progress(r: RunResult, label: str) -> None:
    verdict = "ok" if not r.problems else "INVALID: " + "; ".join(r.problems)
    say(
        f"{label} {r.workload:<21} {r.raw.rps:8.0f} req/s  p50 {r.raw.p50_ms:7.2f} ms  "
        f"p99 {r.raw.p99_ms:7.2f} ms  CPU {r.cpu_us['server']} us/req  errors {r.raw.errors}  "
        f"{verdict}"
    )


def measure(bed: Bed, loads: list[Workload], opts: Options) -> list[RunResult]:
    """A warm-up pass, then ``rounds`` interleaved rounds, each rotating the order."""
    if opts.warmup_s:
        for w in loads:
            progress(
                run_once(bed, w, round_no=0, seconds=opts.warmup_s, connections=opts.connections),
                "warm-up  ",
            )
    results = []
    for n in range(1, opts.rounds + 1):
        shift = (n - 1) % len(loads)
        for w in loads[shift:] + loads[:shift]:
            r = run_once(bed, w, round_no=n, seconds=opts.duration_s, connections=opts.connections)
            results.append(r)
            progress(r, f"round {n}/{opts.rounds}")
    return results
