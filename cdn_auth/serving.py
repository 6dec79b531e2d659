"""Running a service process, or several sharing one port: what both CLIs' ``serve`` do.

``--workers N`` (N > 1) re-executes the same ``serve`` command N times with
``--reuse-port``, so N independent processes accept on one port
(SO_REUSEPORT: the kernel spreads connections).  Each is a whole service:
it tails the revocation or notify stream itself, so no state is shared
between them but Redis.  The parent only supervises: it forwards SIGTERM
and SIGINT, and if one worker dies it stops the rest and exits with that
worker's code, so systemd or the container runtime restarts the unit.
"""

from __future__ import annotations

import argparse
import gc
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from aiohttp import web

from . import logs
from .redis_process import RedisProcess

#: Collect the youngest generation after this many net allocations (CPython's default: 700).
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    """Keep the cyclic GC's pauses short and rare in a long-running service process.

    Why: CPython's full (oldest-generation) collection walks every tracked object, and
    the edge holds up to ``cache_size`` verified pointers and sessions per cache, so each
    full pass is a stop-the-world pause that grows with the cache (tens of ms at 10^5
    entries), landing on whichever requests are in flight: it is the p99 tail.  Almost
    nothing the hot path allocates is cyclic; reference counting frees it.  So:

    * ``gc.freeze()`` once the app is built moves everything allocated so far (modules,
      classes, the app, settings, keys: the bulk of the heap) to the permanent
      generation, which collections never scan again.  A collection first, so garbage is
      not frozen with it.
    * Higher thresholds: a young collection every 50 000 net allocations instead of 700,
      and full collections 100 middle ones apart instead of 10, so the cache's long-lived
      entries are walked far less often.  Real cycles are still collected; memory held by
      cyclic garbage waits a little longer.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    """The flags every service's ``serve`` takes (settings come from the environment)."""
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--redis-url")
    p.add_argument("--embedded-redis", metavar="DIR",
                   help="start a private redis-server (append-only file) with its data in DIR")
    p.add_argument("--reuse-port", action="store_true", help="SO_REUSEPORT: several processes")
    p.add_argument("--workers", type=int, default=1,
                   help="run this many processes sharing the port (each tails its stream)")


def run_cli(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse and dispatch to ``args.func``, keeping the raw argv for ``--workers`` re-runs."""
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(raw)
    args.raw_argv = raw
    return int(args.func(args))


def serve(build: Callable[[str | None], tuple[web.Application, str, int, str]], *,
          argv: Sequence[str], workers: int, embedded_redis: str | None,
          redis_url: str | None, reuse_port: bool) -> int:
    """Run one service process, or supervise ``workers`` of them on one port.

    ``build(redis_url)`` returns the app, host, port and log level from the
    settings.  ``argv`` is this process's ``serve`` command line, re-run by
    each worker (with ``--workers`` removed and ``--redis-url`` pinned to the
    embedded Redis, which only the parent starts).
    """
    embedded = RedisProcess(embedded_redis).start() if embedded_redis else None
    url = embedded.url if embedded is not None else redis_url
    try:
        if workers > 1:
            return _supervise(_worker_argv(argv, url), workers)
        app, host, port, log_level = build(url)
        logs.configure(log_level)
        tune_gc()
        web.run_app(app, host=host, port=port, access_log_class=logs.AccessLogger, print=None,
                    reuse_port=reuse_port)
        return 0
    finally:
        logs.shutdown()
        if embedded is not None:
            embedded.stop()


def _worker_argv(argv: Sequence[str], redis_url: str | None) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--workers", "--embedded-redis", "--redis-url"):
            skip = True
            continue
        if arg.startswith(("--workers=", "--embedded-redis=", "--redis-url=")):
            continue
        out.append(arg)
    out.append("--reuse-port")
    if redis_url:
        out += ["--redis-url", redis_url]
    return out


def _supervise(argv: list[str], workers: int) -> int:
    procs = [subprocess.Popen([sys.executable, *argv]) for _ in range(workers)]
    stopping = False

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    previous: dict[int, Any] = {s: signal.signal(s, forward)
                                for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            for p in procs:
                code = p.poll()
                if code is not None:
                    if not stopping:
                        forward(signal.SIGTERM, None)
                    for q in procs:
                        try:
                            q.wait(10)
                        except subprocess.TimeoutExpired:
                            q.kill()
                    return 0 if stopping else (code or 1)
            time.sleep(0.2)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
