"""The send measurement: closed loop, wrk POSTing messages as fast as the dm accepts them,
judged by wrk (statuses) and by the dm's own counter."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from loadtests.bench.conversations import Pair, message_body, send_path
from loadtests.bench.pool import Pool
from loadtests.bench.probes import Cpu, metric_sum, scrape
from loadtests.bench.wrk import WrkRun, WrkSpec, request_line, run_requests, write_lines
from loadtests.stack.servers import Server

from .bed import MIN_SEND_HINT, SETTLE_S, Bed, say

#: Request lines a floor run cycles through.
FLOOR_LINES = 5000


def send_pool(pairs: Sequence[Pair], kind: str) -> Pool:
    """Round-robin over the conversations; every line has its own Idempotency-Key."""

    def make(i: int) -> str:
        p = pairs[i % len(pairs)]
        return request_line(
            "POST",
            send_path(p.cid),
            auth=f"Bearer {p.sender_token}",
            key=f"bench_{i}",
            body=message_body(kind, p.media_id, f"send {i}"),
        )

    return Pool("send", make, say)


def accepted_sends(port: int) -> float:
    return metric_sum(scrape(port), "dm_sends_total", replayed="false")


@dataclass(frozen=True)
class SendResult:
    round: int
    raw: WrkRun
    server_accepted: int
    cpu_us: dict[str, float | None]  # per accepted send: the dm's and its Redis's
    problems: tuple[str, ...]


def run_send(
    bed: Bed, pool: Pool, *, round_no: int, seconds: int, hint: float, server: Server | None = None
) -> SendResult:
    """One closed-loop wrk run, judged by wrk (statuses) and by the server (its own counter):
    the dm, or with ``server`` one of the floor servers, on the same request lines.

    A floor keeps no idempotency records, so its file of :data:`FLOOR_LINES` lines is
    cycled (and left in the pool for the dm): a floor can outrun any file sized from the
    dm's rate."""
    target = server or bed.dm
    floor = server is not None
    wanted = FLOOR_LINES if floor else int(max(hint, MIN_SEND_HINT) * (seconds + 2) * 1.5)
    lines = pool.reserve(wanted)
    lines_file = write_lines(bed.root / "requests" / f"{target.name}-{round_no}.txt", lines)
    target.check_alive()
    before, cpu = accepted_sends(target.port), Cpu.of(target)
    raw = run_requests(
        bed.wrk,
        WrkSpec(
            target.port, lines_file, bed.auth_file, seconds, bed.opts.connections, expected_status=201
        ),
    )
    if not floor:
        pool.retire(raw.sent)
    time.sleep(SETTLE_S)
    target.check_alive()
    counted = int(accepted_sends(target.port) - before)
    cpu_us = Cpu.of(target).per_op_us(cpu, counted)
    problems = raw.problems(once=not floor)
    # Requests still in flight when wrk stops are accepted but never counted by wrk.
    if not raw.ok <= counted <= raw.sent:
        problems.append(
            f"the {target.name} accepted {counted} sends; wrk saw {raw.ok} 201s of {raw.sent}"
        )
    return SendResult(round_no, raw, counted, cpu_us, tuple(problems))


def send_progress(r: SendResult, label: str, workload: str = "send") -> None:
    verdict = "ok" if not r.problems else "INVALID: " + "; ".join(r.problems)
    who = "dm" if workload == "send" else workload
    say(
        f"{label} {workload:<9} {r.raw.rps:8.0f} sends/s  p50 {r.raw.p50_ms:7.2f} ms  "
        f"p99 {r.raw.p99_ms:7.2f} ms  {who} CPU {r.cpu_us['server']} us/send  "
        f"errors {r.raw.errors}  {verdict}"
    )
