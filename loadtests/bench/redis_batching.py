"""Redis client benchmark: client CPU per command, each command alone vs auto-pipelined.

Both services' single-server clients auto-pipeline (``service_kernel/auto_pipeline.py``):
commands that overlap go to Redis as one pipeline.  This measures what that saves, on a
private ``redis-server``, in one process, as the client's own CPU per command (from
``getrusage``: what a noisy machine distorts least):

``alone``    ``connect(url, auto_pipeline=False)``: every command on its own pooled
             connection, as redis-py sends it
``batched``  ``connect(url)``: the services' client

each at ``--tasks`` concurrent callers (each awaiting ``--commands`` one-line scripts in
turn, as request handlers do) and at one caller (where nothing overlaps, so the batched
client must cost what the lone one does).  Beside them, the floor: the same commands on
a bare asyncio protocol with hiredis's reader and packer, one connection, each command
written at once and its reply matched in order (no pool, no timeouts, no retries, no
batching): what a round trip costs this machine's kernel and event loop.  Rounds
interleave the clients; the report gives medians of rounds and the ratio batched / alone.
"""

from __future__ import annotations

import asyncio
import collections
import json
import resource
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import hiredis

from loadtests.bench.harness import bench_parser
from service_kernel.redis_client import RedisClient, connect
from service_kernel.redis_process import RedisProcess

_SCRIPT = "return redis.call('INCR', KEYS[1])"


class _BareProtocol(asyncio.Protocol):
    """The floor: hiredis packs each command and parses replies, matched in order."""

    def __init__(self) -> None:
        self._reader = hiredis.Reader()
        self._waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while (reply := self._reader.gets()) is not False:
            self._waiting.popleft().set_result(reply)

    def command(self, *args: Any) -> asyncio.Future[Any]:
        assert self._transport is not None
        future = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        self._transport.write(hiredis.pack_command(args))
        return future


async def _bare_per_command_us(url: str, tasks: int, commands: int) -> float:
    parts = urlsplit(url)
    transport, proto = await asyncio.get_running_loop().create_connection(
        _BareProtocol, parts.hostname or "127.0.0.1", parts.port or 6379
    )
    try:
        sha = await proto.command("SCRIPT", "LOAD", _SCRIPT)

        async def caller(i: int) -> None:
            for _ in range(commands):
                await proto.command("EVALSHA", sha, 1, f"k{i}")

        before = _cpu_s()
        await asyncio.gather(*(caller(i) for i in range(tasks)))
        return (_cpu_s() - before) / (tasks * commands) * 1e6
    finally:
        transport.close()


def _cpu_s() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


async def _per_command_us(client: RedisClient, tasks: int, commands: int) -> float:
    script = client.register_script(_SCRIPT)
    await script(keys=["warm"])

    async def caller(i: int) -> None:
        for _ in range(commands):
            await script(keys=[f"k{i}"])

    before = _cpu_s()
    await asyncio.gather(*(caller(i) for i in range(tasks)))
    return (_cpu_s() - before) / (tasks * commands) * 1e6


async def measure(url: str, tasks: int, commands: int, rounds: int) -> dict[str, Any]:
    clients = {"alone": connect(url, auto_pipeline=False), "batched": connect(url)}
    names = [*clients, "bare"]
    out: dict[str, dict[str, list[float]]] = {name: {"concurrent": [], "one": []} for name in names}
    try:
        for n in range(rounds):
            order = names if n % 2 == 0 else list(reversed(names))
            for name in order:
                if name == "bare":
                    out[name]["concurrent"].append(await _bare_per_command_us(url, tasks, commands))
                    out[name]["one"].append(await _bare_per_command_us(url, 1, commands))
                    continue
                out[name]["concurrent"].append(await _per_command_us(clients[name], tasks, commands))
                out[name]["one"].append(await _per_command_us(clients[name], 1, commands))
    finally:
        for c in clients.values():
            await c.aclose()
    med = {
        name: {k: round(statistics.median(v), 1) for k, v in runs.items()} for name, runs in out.items()
    }
    return {
        "benchmark": "redis-batching",
        "valid": True,
        "config": {"tasks": tasks, "commands_per_task": commands, "rounds": rounds},
        "cpu_us_per_command": med,
        "ratio_concurrent": round(med["batched"]["concurrent"] / med["alone"]["concurrent"], 2),
        "ratio_one_caller": round(med["batched"]["one"] / med["alone"]["one"], 2),
        # The batched client over the bare protocol: what redis-py and our batching still cost.
        "one_caller_vs_bare": round(med["batched"]["one"] / med["bare"]["one"], 2),
        "rounds": out,
    }


def render_table(r: dict[str, Any]) -> str:
    c, m = r["config"], r["cpu_us_per_command"]
    return "\n".join(
        [
            f"client CPU per Redis command (one-line script), median of {c['rounds']} "
            "interleaved rounds",
            f"  {'':<22}{'alone':>10}{'batched':>10}{'ratio':>8}",
            f"  {c['tasks']:>3} concurrent callers "
            f"{m['alone']['concurrent']:>9.1f}{m['batched']['concurrent']:>10.1f}"
            f"{r['ratio_concurrent']:>8.2f}",
            f"  {'one caller':<22}{m['alone']['one']:>9.1f}{m['batched']['one']:>10.1f}"
            f"{r['ratio_one_caller']:>8.2f}",
            f"floor (a bare asyncio protocol with hiredis, one connection): "
            f"{m['bare']['concurrent']:.1f} us per command at {c['tasks']} callers, "
            f"{m['bare']['one']:.1f} at one caller; the batched client at one caller is "
            f"{r['one_caller_vs_bare']:.2f}x that",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = bench_parser("redis-batching", __doc__)
    p.add_argument("--tasks", type=int, default=64, help="concurrent callers (64)")
    p.add_argument("--commands", type=int, default=150, help="commands per caller (150)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (5)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    a = p.parse_args(argv)
    if min(a.tasks, a.commands, a.rounds) < 1:
        p.error("--tasks, --commands and --rounds must be >= 1")
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as tmp:
        server = RedisProcess(Path(tmp) / "redis").start()
        try:
            report = asyncio.run(measure(server.url, a.tasks, a.commands, a.rounds))
        finally:
            server.stop()
    print(json.dumps(report, indent=2) if a.json else render_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
