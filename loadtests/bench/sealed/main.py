"""Sealed-mode benchmark: what does end-to-end encryption cost, per operation, next to plain?

Plain mode: the dm sees the media id and mints a pointer per reader; the edge verifies
the pointer.  Sealed mode: the sender gets a grant from the media API (``POST /v1/grants``),
seals ``{media_id, grant, text, franking key}`` to every recipient device with HPKE
(:mod:`dm.envelope`, suites ``x25519`` and ``mlkem768-x25519``), and the dm stores opaque
envelopes; the edge verifies the grant and, on a user's first fetch, binds the user to it
in Redis (one Lua script).  This measures each of those steps.

In-process (this process, one core; median of ``--repeats`` timeit repeats, each sized
by ``timeit.autorange``): token mint and verify (pointer vs grant), seal per device and
open for both suites, the franking commitment and the server's countersignature, and the
sizes of envelopes and send bodies.

Over HTTP, driven by wrk (one thread, ``--connections``) from a file of requests, one
workload after another, interleaved over ``--rounds`` rounds (medians reported):

``grant_mint_http``       ``POST /v1/grants`` on the media API (the edge process)
``send_plain``            a plain video share: ``POST .../messages`` with ``media_id``
``send_sealed_x25519``    the same message sealed to the recipient's one device (x25519),
                          naming its grant (the dm checks the sender minted it)
``send_sealed_mlkem``     the same with the ``mlkem768-x25519`` suite
``fetch_first_grant``     edge ``GET /m/{id}?grant=...``, a NEW grant on every request
                          (verify + revocation/rights checks + the Redis binding script)
``fetch_first_pointer``   edge ``GET /m/{id}?pointer=...``, a NEW pointer on every request
``fetch_repeat_grant``    one grant, already bound: the cached path
``fetch_repeat_pointer``  one pointer: the cached path

Every fetch asks for a 64 KiB Range of a private video as its recipient.  The grants and
pointers for the fetch workloads are minted in this process with the media API's own key
ring (the same bytes ``POST /v1/grants`` returns; the preflight checks one minted over HTTP
works too).  A run is INVALID if any response has the wrong status or size, any request
line was sent twice (a first fetch would become a cache hit, a sealed send a replay), or
the servers' own counters disagree (a denial, a cache hit in a first-fetch run, a replay).

Each server runs as its production entry point in its own process with its own Redis:
``python -m cdn_auth serve`` (edge + media API) and ``python -m dm serve``; access logs off.
Besides req/s, each HTTP workload reports the server process's CPU per request (from
``/proc``), which a noisy machine distorts far less than wall-clock throughput.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any

from loadtests.bench.harness import bench_parser, common_flags, run_and_report, run_flags, workdir

from .bed import Options, say, testbed
from .measure import measure
from .micro import micro
from .report import render_table, summarize
from .workloads import preflight, workloads


def parser() -> argparse.ArgumentParser:
    p = bench_parser("sealed", __doc__)
    run_flags(p, duration=3, rounds=3, connections=32, warmup=1)
    p.add_argument(
        "--pairs",
        type=int,
        default=128,
        help="conversations per mode (128): keeps each under the dm's send rate limit",
    )
    p.add_argument("--repeats", type=int, default=7, help="timeit repeats per micro cost (7)")
    return common_flags(p, workdir=True)


def options(argv: list[str] | None) -> Options:
    a = parser().parse_args(argv)
    if (
        a.duration < 1
        or a.rounds < 1
        or a.warmup < 0
        or a.connections < 1
        or a.pairs < 1
        or a.repeats < 1
    ):
        parser().error("--duration, --rounds, --connections, --pairs, --repeats must be >= 1")
    return Options(a.duration, a.rounds, a.warmup, a.connections, a.pairs, a.repeats, a.json, a.dir)


def run(opts: Options) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        root = workdir(stack, opts.dir, "sealed")
        (root / "requests").mkdir()
        bed = stack.enter_context(testbed(root, opts))
        micro_ = micro(bed.tokens, opts.repeats)
        loads = workloads(bed)
        preflight(bed, loads)
        say("preflight ok: every workload answers; sealed messages open at the recipient")
        results = measure(bed, loads, opts)
        say("stopping the servers")
        return summarize(bed, loads, results, micro_, opts)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 on a valid measurement, 1 if invalid or failed."""
    opts = options(argv)
    return run_and_report(lambda: run(opts), render_table, as_json=opts.json, say=say)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
