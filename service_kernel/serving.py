"""Running a service process, or several sharing one port: what both CLIs' ``serve`` do.

``--workers N`` (N > 1) re-executes the same ``serve`` command N times with
``--reuse-port``, so N independent processes accept on one port
(SO_REUSEPORT: the kernel spreads connections).  Each is a whole service:
it tails the revocation or notify stream itself, so no state is shared
between them but Redis.  The parent only supervises: it forwards SIGTERM
and SIGINT, and replaces a worker that dies (with a crash-loop backoff, as
gunicorn and uvicorn do) while the others keep serving; only a worker that
keeps dying at start-up makes it stop everything and exit, so systemd or the
container runtime sees a broken unit.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, Protocol, cast

from aiohttp import web

from . import logs
from .redis_process import RedisProcess
from .settings_base import ServiceSettings

log = logging.getLogger(__name__)

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
    p.add_argument(
        "--embedded-redis",
        metavar="DIR",
        help="start a private redis-server (append-only file) with its data in DIR",
    )
    p.add_argument("--reuse-port", action="store_true", help="SO_REUSEPORT: several processes")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="run this many processes sharing the port (each tails its stream)",
    )


def run_cli(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse and dispatch to ``args.func``, keeping the raw argv for ``--workers`` re-runs."""
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(raw)
    args.raw_argv = raw
    return int(args.func(args))


def new_event_loop(choice: str) -> asyncio.AbstractEventLoop:
    """The loop a service process runs on (``ServiceSettings.event_loop``).

    uvloop runs the same asyncio code on libuv: the transports, the selector and the
    callbacks that every request, WebSocket frame and Redis round trip go through are C,
    which is where a small-request service spends much of its CPU.  Measured on the
    development machine it made no difference within the noise (docs/benchmarks.md,
    section 5), so asyncio's loop stays the default.  ``auto`` falls back to asyncio's
    loop where uvloop is not installed.
    """
    if choice != "asyncio":
        try:  # an optional package: imported by name, so type checks need not have it
            uvloop = importlib.import_module("uvloop")
        except ImportError:
            if choice == "uvloop":
                raise
        else:
            return cast(asyncio.AbstractEventLoop, uvloop.new_event_loop())
    return asyncio.new_event_loop()


def serve(
    build: Callable[[str | None], tuple[web.Application, ServiceSettings]],
    *,
    argv: Sequence[str],
    workers: int,
    embedded_redis: str | None,
    redis_url: str | None,
    reuse_port: bool,
) -> int:
    """Run one service process, or supervise ``workers`` of them on one port.

    ``build(redis_url)`` returns the app and the settings it was built from.
    ``argv`` is this process's ``serve`` command line, re-run by each worker
    (with ``--workers`` removed and ``--redis-url`` pinned to the embedded
    Redis, which only the parent starts).
    """
    embedded = RedisProcess(embedded_redis).start() if embedded_redis else None
    url = embedded.url if embedded is not None else redis_url
    try:
        if workers > 1:
            return _supervise(_worker_argv(argv, url), workers)
        app, settings = build(url)
        logs.configure(settings.log_level)
        loop = new_event_loop(settings.event_loop)
        tune_gc()
        web.run_app(
            app,
            host=settings.host,
            port=settings.port,
            loop=loop,
            access_log_class=logs.AccessLogger,
            print=None,
            reuse_port=reuse_port,
        )
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


#: A worker that dies sooner than this after starting counts as a crash loop (backoff grows).
MIN_UPTIME_S = 10.0
#: First and largest wait before respawning a worker that crash-loops.
BACKOFF_S = (0.5, 30.0)
#: After this many consecutive quick deaths of one worker slot, give up: stop all workers
#: and exit, so the runtime (systemd, the container orchestrator) sees a broken unit.
MAX_QUICK_DEATHS = 8


class _Process(Protocol):
    """What the supervisor uses of a worker process (a :class:`subprocess.Popen`)."""

    pid: int

    def poll(self) -> int | None: ...
    def send_signal(self, sig: int) -> None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def kill(self) -> None: ...


def _popen(argv: list[str]) -> _Process:
    return subprocess.Popen([sys.executable, *argv])


def backoff_s(quick_deaths: int) -> float:
    """The wait before respawning a worker slot after its ``quick_deaths``-th quick death
    in a row: none after a worker that had run MIN_UPTIME_S, then BACKOFF_S[0] doubling up
    to BACKOFF_S[1]."""
    if quick_deaths == 0:
        return 0.0
    return float(min(BACKOFF_S[1], BACKOFF_S[0] * 2 ** (quick_deaths - 1)))


@dataclass
class _Slot:
    """One worker position: its current process, and its crash-loop state."""

    proc: _Process | None = None
    started: float = 0.0
    quick_deaths: int = 0
    respawn_at: float = 0.0


def _supervise(
    argv: list[str],
    workers: int,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    popen: Callable[[list[str]], _Process] = _popen,
) -> int:
    """Run ``workers`` processes; replace any that dies, as gunicorn's arbiter does.

    The other workers keep serving (their sockets and streams are untouched).  A worker
    that dies within MIN_UPTIME_S of starting is respawned after a doubling backoff
    (BACKOFF_S), so a crash loop does not spin; after MAX_QUICK_DEATHS in a row the
    supervisor stops everything and exits with the worker's code.  SIGTERM/SIGINT are
    forwarded to every worker and end supervision.  ``clock``, ``sleep`` and ``popen`` are
    injected so a test can run a crash loop without waiting for it.
    """
    slots = [_Slot() for _ in range(workers)]
    stopping = False

    def spawn(slot: _Slot) -> None:
        slot.proc = popen(argv)
        slot.started = clock()

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for slot in slots:
            if slot.proc is not None and slot.proc.poll() is None:
                slot.proc.send_signal(signum)

    previous: dict[int, Any] = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    exit_code = 0
    try:
        for slot in slots:
            spawn(slot)
        while not stopping:
            now = clock()
            for slot in slots:
                if slot.proc is None:
                    if now >= slot.respawn_at:
                        spawn(slot)
                    continue
                code = slot.proc.poll()
                if code is None:
                    continue
                if now - slot.started < MIN_UPTIME_S:
                    slot.quick_deaths += 1
                else:
                    slot.quick_deaths = 0
                if slot.quick_deaths >= MAX_QUICK_DEATHS:
                    log.error("worker crash loop: giving up", extra={"code": code})
                    exit_code = code or 1
                    forward(signal.SIGTERM, None)
                    break
                delay = backoff_s(slot.quick_deaths)
                log.warning(
                    "worker died; respawning",
                    extra={"pid": slot.proc.pid, "code": code, "delay_s": delay},
                )
                slot.proc, slot.respawn_at = None, now + delay
            sleep(0.1)
        for slot in slots:
            if slot.proc is None:
                continue
            try:
                slot.proc.wait(10)
            except subprocess.TimeoutExpired:
                slot.proc.kill()
        return exit_code
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
