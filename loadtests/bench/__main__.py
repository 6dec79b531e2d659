"""``python -m loadtests.bench <name> [args]``: run one benchmark.

Each benchmark lives in its own module with a ``main(argv) -> int``; this
dispatcher only maps names to modules and imports the chosen one lazily, so
a benchmark's dependencies (and its import time) never burden the others.
"""

from __future__ import annotations

import importlib
import sys

#: name -> (module, one-line description).  New benchmarks add a line here.
BENCHMARKS: dict[str, tuple[str, str]] = {
    "edge": (
        "loadtests.bench.edge.main",
        "edge authorization throughput (warm, cold Ed25519, cold HMAC) vs a bare file server",
    ),
    "dm": (
        "loadtests.bench.dm.main",
        "one dm process: send throughput (wrk) and send-to-push latency at fixed rates",
    ),
    "sealed": (
        "loadtests.bench.sealed.main",
        "sealed vs plain per operation: grants, HPKE seal/open, sends, edge fetches",
    ),
    "revocation": (
        "loadtests.bench.revocation",
        "time from an unsend until every one of N edge processes refuses (p50/p99)",
    ),
    "matcher": (
        "loadtests.bench.matcher",
        "PDQ perceptual lookups/s per core and bytes per hash at 1e5 and 1e6 hashes",
    ),
    "abuse": (
        "loadtests.bench.abuse",
        "one abusive account per issue-15 vector vs a victim's send->push p99",
    ),
    "push-render": (
        "loadtests.bench.push_render",
        "dm CPU to render one sealed group message for every device (in-process)",
    ),
    "redis-batching": (
        "loadtests.bench.redis_batching",
        "Redis client CPU per command: each alone vs auto-pipelined, concurrent and lone",
    ),
    "nginx": (
        "loadtests.bench.nginx",
        "nginx + authorizer (cached decisions) vs nginx secure_link on the same file",
    ),
    "front-mix": (
        "loadtests.bench.front_mix",
        "nginx front on a viewing mix (new pointer per view, Zipf media, 1 MiB "
        "ranges) vs secure_link; revocation delay under that load",
    ),
    "hosts": (
        "loadtests.bench.hosts.main",
        "edges + fronts in network namespaces with delayed links to Redis: revocation "
        "p99 per delay, a partition failing closed and catching up (root)",
    ),
}


def usage() -> str:
    lines = [
        "usage: python -m loadtests.bench <benchmark> [args]  (<benchmark> --help for its flags)",
        "",
        "benchmarks:",
    ]
    lines += [f"  {name:<10} {desc}" for name, (_, desc) in BENCHMARKS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch to the named benchmark; 2 (usage) for a missing or unknown name."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    if args[0] not in BENCHMARKS:
        print(f"unknown benchmark {args[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(BENCHMARKS[args[0]][0])
    return int(module.main(args[1:]))


if __name__ == "__main__":
    sys.exit(main())
