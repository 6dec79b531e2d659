"""Edge benchmark: what does authorization cost, next to serving the same bytes bare?

Five paths are driven by one load generator, one after another, on this machine:

``baseline``               the edge's own byte path with NO authorization: an aiohttp route
                           (same app shell: the edge's error middleware) that plans the
                           response with :func:`cdn_auth.ranges.plan` and streams it with
                           :func:`cdn_auth.byte_response.open_origin` and
                           :class:`cdn_auth.byte_response.ByteRangeResponse`, with the same
                           response headers, in its own server process.  The ratios are taken
                           against this, so they isolate what authorization costs.
``baseline_fileresponse``  aiohttp's ``web.FileResponse`` on the same file, no authorization,
                           in its own process: a reference for how the edge's byte path
                           compares with aiohttp's stock file server (``*_vs_fileresponse``)
``warm``                   the edge's hot path: repeat Range requests under ONE pointer and
                           session, so every decision is three cache hits and the rights checks
``cold_ed25519``           a pointer never seen before on every request: Ed25519 verification
                           each time
``cold_hmac``              the same with an HMAC-SHA256 key ring

Every path sends byte-identical request shapes (same ``/m/{id}?pointer=...`` target
length, same ``Authorization`` and ``Range`` headers; the baselines ignore them), so
the only difference the generator sees is what the server does.  The edge runs as
``python -m cdn_auth serve`` (its production entry point) in its own process, with its
own Redis, and verifies pointers of both algorithms from one combined JWKS.

Runs are interleaved (each round rotates the order) and repeated, and the report
takes medians, because a 2-core machine drifts: a single long run per path would
mostly measure *when* it ran.  A run is INVALID, and reported as such, if any
response was not a 206 of the requested size, the edge denied anything, or a cold
run reused a pointer (which would turn it into a cache hit).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any

from loadtests.bench.harness import bench_parser, common_flags, run_and_report, run_flags, workdir
from loadtests.bench.rangegen import choose_generator
from service_kernel.files import atomic_write

from .bed import FILE_BYTES, preflight, say, testbed, workloads
from .cache_memory import cache_bytes_per_entry
from .measure import Options, measure
from .report import add_cache_memory, render_table, summarize


def parser() -> argparse.ArgumentParser:
    p = bench_parser("edge", __doc__)
    run_flags(p, duration=5, rounds=3, connections=64, warmup=1)
    p.add_argument(
        "--generator",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="load generator: wrk if on PATH (auto), or force one",
    )
    return common_flags(p, workdir=True)


def options(argv: list[str] | None) -> Options:
    a = parser().parse_args(argv)
    if a.duration < 1 or a.connections < 1 or a.rounds < 1 or a.warmup < 0:
        parser().error("--duration, --connections and --rounds must be >= 1, --warmup >= 0")
    return Options(a.duration, a.connections, a.rounds, a.warmup, a.json, a.generator, a.dir)


def run(opts: Options) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        root = workdir(stack, opts.dir, "edge")
        (root / "targets").mkdir()
        gen = choose_generator(opts.generator, say)
        say(f"starting Redis, the edge and the baseline under {root} (generator: {gen.version})")
        bed = stack.enter_context(testbed(root))
        atomic_write(root / "auth.txt", f"Bearer {bed.session}\n".encode(), 0o600)
        loads = workloads(bed)
        preflight(bed, loads)
        results = measure(bed, loads, gen, opts)
        say("stopping the servers")
    report = summarize(results, gen, opts, FILE_BYTES)
    say("measuring memory per cached pointer decision")
    add_cache_memory(report, cache_bytes_per_entry())
    return report


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 on a valid measurement (targets met or not), 1 if invalid or failed."""
    opts = options(argv)
    return run_and_report(lambda: run(opts), render_table, as_json=opts.json, say=say)


if __name__ == "__main__":
    sys.exit(main())
