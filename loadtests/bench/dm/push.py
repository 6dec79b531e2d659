"""The push measurement, parent side: start the open-loop generator (:mod:`.push_gen`)
at one rate and judge its report."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from loadtests.bench.harness import REPO_ROOT, parse_result
from loadtests.bench.probes import Cpu
from loadtests.stack.servers import Server
from service_kernel.files import atomic_write

from .bed import Bed, say


@dataclass(frozen=True)
class PushResult:
    rate: int
    round: int
    doc: dict[str, Any]
    cpu_us: dict[str, float | None]  # per accepted message (send + push), warm-up included
    problems: tuple[str, ...]

    @property
    def p50_ms(self) -> float:
        return float(self.doc["push_ms"]["p50"])

    @property
    def p99_ms(self) -> float:
        return float(self.doc["push_ms"]["p99"])


def push_problems(doc: dict[str, Any]) -> list[str]:
    """Why the latency figures would be wrong: a message never delivered (even after the
    recipient reconnected) is missing from them, and a duplicate counts twice.

    Refused sends (errors) and dropped sockets (reconnects) are results, reported
    beside the figures, not flaws of the measurement.
    """
    out = []
    if doc["received"] == 0:
        out.append("no pushes arrived")
    if doc["lost"]:
        out.append(
            f"{doc['lost']} accepted sends were never pushed, even after reconnecting "
            "(the latency percentiles leave them out)"
        )
    if doc["duplicates"]:
        out.append(f"{doc['duplicates']} pushes arrived twice")
    return out


def open_floor_problems(doc: dict[str, Any]) -> list[str]:
    """The open-loop floor (sends only) is valid when every send was accepted on schedule."""
    out = []
    if doc["errors"]:
        out.append(f"{doc['errors']} sends not accepted: {doc['statuses']}")
    if not doc["rate_met"]:
        out.append(f"achieved {doc['achieved_rps']}/s of {doc['rate']}/s")
    return out


def run_push(
    bed: Bed,
    rate: int,
    *,
    round_no: int,
    seconds: int,
    warmup_s: float,
    floor: Server | None = None,
) -> PushResult:
    """Start the open-loop generator as a child process and read its one-line report.

    With ``floor``: the same schedule against that floor server, sends only (it pushes
    nothing, so no recipient connects): what the serving stack costs per send at this
    rate, when requests arrive spread out instead of 64 at a time."""
    server = floor or bed.dm
    spec = {
        "recipients": floor is None,
        "port": server.port,
        "pairs": [p.spec() for p in bed.pairs],
        "rate": rate,
        "duration_s": seconds,
        "warmup_s": warmup_s,
        "drain_s": 3.0,
        "connections": bed.opts.push_connections,
        "message": bed.opts.message,
        "tag": f"r{round_no}x{rate}",
    }
    spec_file = bed.root / "requests" / f"push-{round_no}-{rate}-{server.name}.json"
    atomic_write(spec_file, json.dumps(spec).encode(), 0o600)  # it holds session tokens
    server.check_alive()
    cmd = [sys.executable, "-m", "loadtests.bench.dm.push_gen", "--spec", str(spec_file)]
    cpu = Cpu.of(server)
    done = subprocess.run(
        cmd, capture_output=True, text=True, check=False, cwd=REPO_ROOT, timeout=seconds + warmup_s + 120
    )
    server.check_alive()
    doc = parse_result(done.stdout, "push load generator", done.stderr)
    cpu_us = Cpu.of(server).per_op_us(cpu, int(doc["accepted"]) + int(doc["warm_accepted"]))
    problems = open_floor_problems(doc) if floor is not None else push_problems(doc)
    return PushResult(rate, round_no, doc, cpu_us, tuple(problems))


def _verdict(r: PushResult) -> str:
    return "ok" if not r.problems else "INVALID: " + "; ".join(r.problems)


def open_floor_progress(r: PushResult, label: str, name: str) -> None:
    d = r.doc
    say(
        f"{label} {name:<11} achieved {d['achieved_rps']:7.0f}/s  "
        f"send p50 {d['send_ms']['p50']:6.2f} ms  "
        f"floor CPU {r.cpu_us['server']} us/send  errors {d['errors']}  {_verdict(r)}"
    )


def push_progress(r: PushResult, label: str) -> None:
    d = r.doc
    say(
        f"{label} push@{r.rate:<5} achieved {d['achieved_rps']:7.0f}/s  "
        f"p50 {d['push_ms']['p50']:7.2f} ms  p99 {d['push_ms']['p99']:7.2f} ms  "
        f"max {d['push_ms']['max']:7.2f} ms  dm CPU {r.cpu_us['server']} us/msg  "
        f"generator CPU {d['generator_cpu_share']:.0%}  errors {d['errors']} "
        f"{d['statuses']}  drops {d['reconnects']}  {_verdict(r)}"
    )
