"""``python -m loadtests.bench matcher``: perceptual (PDQ) lookups per core, memory per hash.

The figure HMA (Meta's open Hasher-Matcher-Actioner) publishes for its
matcher is 10M indexed hashes at 4,000 lookups/s across a deployment; ours
is reported per core at 10^5 and 10^6 indexed hashes, so the number of
cores that target would need is a division away.

Method: a synthetic bank of uniformly random 256-bit hashes (real PDQ
hashes are less uniform, which puts more candidates in some buckets);
queries are half near-duplicates of bank entries (0-30 bits flipped, so
each must be found) and half random (nothing to find): the index is
:class:`cdn_auth.pdq_index.PdqIndex` at PDQ's threshold 31.  Lookups are
single-threaded and timed by the process's CPU clock, so "per core" is
lookups per CPU-second; wall-clock rates are printed beside them because a
shared machine stretches wall time.  Each size runs ``--repeats`` times and
the median is reported.  A sample of answers is checked against brute force.
Memory per hash is the index's arrays (hashes + per-band entry tables +
fixed offsets) divided by the bank size.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from typing import Any

import numpy as np

from cdn_auth.pdq_index import DEFAULT_THRESHOLD, PdqIndex, distances, to_words
from loadtests.bench.harness import bench_parser

HMA_TARGET_LOOKUPS_S = 4000
HMA_TARGET_HASHES = 10_000_000


def _bank(n: int, rng: np.random.Generator) -> list[bytes]:
    raw = rng.integers(0, 256, size=(n, 32), dtype=np.uint8)
    return [bytes(row) for row in raw]


def _queries(bank: list[bytes], count: int, rng: np.random.Generator) -> list[bytes]:
    out = []
    for i in range(count):
        if i % 2:
            q = bytearray(bank[int(rng.integers(len(bank)))])
            for b in rng.choice(256, size=int(rng.integers(0, DEFAULT_THRESHOLD)), replace=False):
                q[b // 8] ^= 1 << (b % 8)
            out.append(bytes(q))
        else:
            out.append(os.urandom(32))
    return out


def measure(n: int, queries: int, repeats: int, seed: int = 1) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    bank = _bank(n, rng)
    t0 = time.perf_counter()
    index = PdqIndex(bank)
    build_s = time.perf_counter() - t0
    qs = _queries(bank, queries, rng)
    cpu_rates, wall_rates, found = [], [], 0
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        found = sum(1 for q in qs if index.search(q))
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        cpu_rates.append(len(qs) / max(cpu, 1e-9))
        wall_rates.append(len(qs) / max(wall, 1e-9))
    words = index.words
    for q in qs[:20]:  # the index must agree with brute force
        d = distances(words, to_words([q])[0])
        expected = [(int(p), int(d[p])) for p in np.nonzero(d <= DEFAULT_THRESHOLD)[0]]
        if index.search(q) != expected:
            raise AssertionError("index and brute force disagree")
    return {
        "hashes": n,
        "queries": len(qs),
        "found": found,
        "build_s": round(build_s, 2),
        "lookups_per_s_per_core": round(statistics.median(cpu_rates)),
        "lookups_per_s_wall": round(statistics.median(wall_rates)),
        "lookups_per_s_per_core_runs": [round(r) for r in cpu_rates],
        "bytes_per_hash": round(index.nbytes / n, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = bench_parser("matcher", __doc__)
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--queries", type=int, default=1000, help="lookups per run (default 1000)")
    p.add_argument("--repeats", type=int, default=3, help="runs per size; median reported")
    p.add_argument("--sizes", default="100000,1000000", help="bank sizes (comma-separated)")
    a = p.parse_args(argv)
    sizes = [int(float(x)) for x in a.sizes.split(",") if x.strip()]
    if (
        not sizes
        or min(sizes) < 1
        or max(sizes) > 20_000_000
        or not 1 <= a.queries <= 100_000
        or not 1 <= a.repeats <= 20
    ):
        p.error("sizes 1..2e7, queries 1..1e5, repeats 1..20")
    out: dict[str, Any] = {
        "benchmark": "matcher",
        "threshold": DEFAULT_THRESHOLD,
        "index": "multi-index hashing, 16 bands x 16 bits, numpy",
        "hma_target": {"hashes": HMA_TARGET_HASHES, "lookups_per_s": HMA_TARGET_LOOKUPS_S},
        "note": "synthetic uniform hashes; CPU-time rates (per core); the "
        "machine may be shared, so compare within one run",
        "runs": [],
    }
    for n in sizes:
        r = measure(n, a.queries, a.repeats)
        out["runs"].append(r)
        tag = f"1e{len(str(n)) - 1}" if str(n).strip("0") == "1" else str(n)
        out[f"lookups_per_s_per_core_{tag}"] = r["lookups_per_s_per_core"]
        out[f"bytes_per_hash_{tag}"] = r["bytes_per_hash"]
        out[f"cores_for_hma_rate_{tag}"] = round(
            HMA_TARGET_LOOKUPS_S / max(r["lookups_per_s_per_core"], 1), 2
        )
        if not a.json:
            print(
                f"{n:>10} hashes: {r['lookups_per_s_per_core']:>7} lookups/s per core "
                f"({r['lookups_per_s_wall']} wall), {r['bytes_per_hash']} B/hash, "
                f"built in {r['build_s']} s",
                flush=True,
            )
    if a.json:
        print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
