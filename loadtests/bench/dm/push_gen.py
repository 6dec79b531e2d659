"""The push measurement's open-loop generator, in its own process
(``python -m loadtests.bench.dm.push_gen --spec FILE``): holds every recipient's
WebSocket, fires send k at its intended time ``t0 + k / rate`` whether or not earlier
sends have finished, and times each push from that intended time (no coordinated
omission).  Prints one result line."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtests.bench.conversations import message_body, send_path
from loadtests.bench.harness import HOST, MARKER, BenchError
from loadtests.bench.probes import percentile

from .bed import RATE_MET_FRACTION


@dataclass
class Receipts:
    """Arrival time of each pushed message, by run prefix and sequence number."""

    got: dict[str, dict[int, float]] = field(default_factory=dict)
    duplicates: int = 0
    reconnects: int = 0  # sockets the server dropped during the run
    close_reasons: dict[str, int] = field(default_factory=dict)  # why they were dropped

    def note(self, text: str, at: float) -> None:
        prefix, _, seq = text.partition(":")
        if not seq.isdigit():
            return
        seen = self.got.setdefault(prefix, {})
        if int(seq) in seen:
            self.duplicates += 1
        else:
            seen[int(seq)] = at


async def read_frames(ws: Any, receipts: Receipts, cursor: str | None) -> tuple[str | None, str]:
    """Timestamp each message frame on arrival; the last cursor seen, and why the socket ended."""
    import aiohttp

    async for msg in ws:
        if msg.type != aiohttp.WSMsgType.TEXT:
            return cursor, f"{msg.type.name} {msg.data!r}"
        at = time.perf_counter()
        event = json.loads(msg.data)
        cursor = event.get("cursor", cursor)
        if event.get("type") == "message":
            receipts.note(event["message"].get("text") or "", at)
    return cursor, f"the server ended the stream (close code {ws.close_code})"


async def follow_pushes(http: Any, token: str, receipts: Receipts, connected: asyncio.Event) -> None:
    """One recipient's device, as the SDK's ``DmClient.stream`` behaves: if the server drops
    the socket, reconnect with the last cursor and be replayed what was missed.

    So a message whose push was interrupted still arrives, late, and its latency counts
    the outage.  Runs until cancelled.
    """
    import aiohttp

    cursor, delay = None, 0.05
    while True:
        try:
            async with http.ws_connect(
                "/v1/stream",
                heartbeat=20,
                params={"cursor": cursor} if cursor else None,
                headers={"Authorization": f"Bearer {token}"},
            ) as ws:
                connected.set()
                cursor, why = await read_frames(ws, receipts, cursor)
                delay = 0.05
        except (aiohttp.ClientError, TimeoutError) as exc:
            why = f"connect failed: {type(exc).__name__}"
        receipts.reconnects += 1
        receipts.close_reasons[why] = receipts.close_reasons.get(why, 0) + 1
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)


async def wait_subscribed(http: Any, count: int, timeout_s: float = 15.0) -> None:
    """The dm's /readyz counts its WebSockets: wait until every recipient is subscribed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        async with http.get("/readyz") as resp:
            if (await resp.json()).get("websockets", 0) >= count:
                return
        await asyncio.sleep(0.02)
    raise BenchError(f"the dm never counted {count} WebSockets")


@dataclass
class Schedule:
    """One open-loop run's sends: when each was due, when it finished, and its status."""

    prefix: str
    rate: int
    count: int
    start: float = 0.0
    done: list[float] = field(default_factory=list)
    status: list[int] = field(default_factory=list)
    lag: list[float] = field(default_factory=list)  # task created - due (the generator's lag)

    def due(self, i: int) -> float:
        return self.start + i / self.rate


_CONTENT_LENGTH_RE = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def roundtrip(conn: Conn, request: bytes) -> int:
    """Write one prepared request, read one Content-Length response; its status."""
    reader, writer = conn
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = _CONTENT_LENGTH_RE.search(head)
    if not head.startswith(b"HTTP/1.1 ") or length is None:
        raise ValueError("not an HTTP/1.1 response with a Content-Length")
    await reader.readexactly(int(length[1]))
    return int(head[9:12])


class KeepAlivePool:
    """A minimal keep-alive HTTP/1.1 client for prepared requests, at most ``size`` at once.

    The open-loop generator shares two cores with the server under test, so it must
    be cheap: aiohttp's client costs several times more CPU per request than writing
    a prepared request and reading one response off a stream.
    """

    def __init__(self, port: int, size: int) -> None:
        self._port = port
        self._slots = asyncio.Semaphore(size)
        self._idle: list[Conn] = []

    async def exchange(self, request: bytes) -> int:
        """One request; its status, or 0 if the connection failed (counted as an error)."""
        async with self._slots:
            conn = None
            try:
                conn = (
                    self._idle.pop() if self._idle else await asyncio.open_connection(HOST, self._port)
                )
                status = await roundtrip(conn, request)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                if conn is not None:
                    conn[1].close()
                return 0
            self._idle.append(conn)
            return status

    def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


class Sender:
    """POSTs message ``i`` of a schedule to conversation ``i mod pairs`` and records it."""

    def __init__(self, pool: KeepAlivePool, port: int, pairs: list[dict[str, str]], kind: str) -> None:
        self._pool = pool
        self._pairs = pairs
        self._kind = kind
        self._heads = [
            f"POST {send_path(p['cid'])} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            f"Authorization: Bearer {p['sender_token']}\r\n"
            "Content-Type: application/json\r\n"
            for p in pairs
        ]

    async def send(self, sched: Schedule, i: int) -> None:
        n = i % len(self._pairs)
        body = message_body(self._kind, self._pairs[n]["media_id"], f"{sched.prefix}:{i}")
        raw = body.encode()
        request = (
            f"{self._heads[n]}Idempotency-Key: {sched.prefix}_{i}\r\nContent-Length: {len(raw)}\r\n\r\n"
        ).encode() + raw
        status = await self._pool.exchange(request)
        sched.done[i], sched.status[i] = time.perf_counter(), status


async def paced(sender: Sender, sched: Schedule) -> None:
    """Fire send i at its due time whatever became of the earlier ones (open loop)."""
    sched.done, sched.status = [0.0] * sched.count, [-1] * sched.count
    sched.start = time.perf_counter() + 0.01
    tasks = []
    i = 0
    while i < sched.count:
        now = time.perf_counter()
        while i < sched.count and sched.due(i) <= now:
            tasks.append(asyncio.create_task(sender.send(sched, i)))
            sched.lag.append(now - sched.due(i))
            i += 1
        if i < sched.count:
            await asyncio.sleep(max(0.0, sched.due(i) - time.perf_counter()))
    await asyncio.gather(*tasks)


async def drain(receipts: Receipts, sched: Schedule, timeout_s: float) -> None:
    """Wait until every accepted send has been pushed, or the timeout."""
    want = {i for i, s in enumerate(sched.status) if s == 201}
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        if want <= receipts.got.get(sched.prefix, {}).keys():
            return
        await asyncio.sleep(0.02)


def ms_stats(seconds: list[float], points: dict[str, float]) -> dict[str, float]:
    values = sorted(seconds)
    return {name: round(percentile(values, q) * 1000, 3) for name, q in points.items()}


def schedule_report(sched: Schedule, receipts: Receipts) -> dict[str, Any]:
    """Latencies from each send's *due* time, and whether the rate was really delivered."""
    got = receipts.got.get(sched.prefix, {})
    accepted = [i for i, s in enumerate(sched.status) if s == 201]
    push = [got[i] - sched.due(i) for i in accepted if i in got]
    sends = [sched.done[i] - sched.due(i) for i in accepted]
    statuses: dict[str, int] = {}
    for s in sched.status:
        statuses[str(s)] = statuses.get(str(s), 0) + 1
    last = max((sched.done[i] for i in accepted), default=sched.start)
    achieved = len(accepted) / (last - sched.start + 1 / sched.rate) if accepted else 0.0
    return {
        "rate": sched.rate,
        "offered": sched.count,
        "accepted": len(accepted),
        "errors": sched.count - len(accepted),
        "statuses": statuses,
        "received": len(push),
        "lost": len(accepted) - len(push),
        "unexpected": len(set(got) - set(accepted)),
        "duplicates": receipts.duplicates,
        "reconnects": receipts.reconnects,
        "close_reasons": receipts.close_reasons,
        "achieved_rps": round(achieved, 1),
        "rate_met": len(accepted) == sched.count and achieved >= RATE_MET_FRACTION * sched.rate,
        "push_ms": ms_stats(push, {"p50": 0.5, "p90": 0.9, "p99": 0.99, "p999": 0.999, "max": 1.0}),
        "send_ms": ms_stats(sends, {"p50": 0.5, "p99": 0.99, "max": 1.0}),
        "generator_lag_ms": ms_stats(sched.lag, {"p99": 0.99, "max": 1.0}),
    }


async def open_loop(spec: dict[str, Any]) -> dict[str, Any]:
    """Connect every recipient (unless ``recipients`` is false), warm up, then one measured
    open-loop run at ``rate``."""
    import aiohttp

    port, pairs = int(spec["port"]), list(spec["pairs"])
    rate, receipts = int(spec["rate"]), Receipts()
    pool = KeepAlivePool(port, int(spec["connections"]))
    sender = Sender(pool, port, pairs, str(spec["message"]))
    warm = Schedule(f"w{spec['tag']}", rate, int(rate * float(spec["warmup_s"])))
    sched = Schedule(f"m{spec['tag']}", rate, int(rate * float(spec["duration_s"])))
    # Sends only (the open-loop floor: a server that pushes nothing): no recipient connects.
    online = pairs if spec.get("recipients", True) else []
    async with aiohttp.ClientSession(
        f"http://{HOST}:{port}", connector=aiohttp.TCPConnector(limit=0)
    ) as http:
        connected = [asyncio.Event() for _ in online]
        readers = [
            asyncio.create_task(follow_pushes(http, p["recipient_token"], receipts, c))
            for p, c in zip(online, connected, strict=True)
        ]
        try:
            if online:
                async with asyncio.timeout(30):
                    await asyncio.gather(*(c.wait() for c in connected))
                await wait_subscribed(http, len(online))
            receipts.reconnects, receipts.close_reasons = 0, {}  # count the run's drops only
            if warm.count:
                await paced(sender, warm)
                if online:
                    await drain(receipts, warm, 1.0)
            await paced(sender, sched)
            if online:
                await drain(receipts, sched, float(spec["drain_s"]))
        finally:
            pool.close()
            for task in readers:
                task.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
    return {**schedule_report(sched, receipts), "warm_accepted": sum(1 for s in warm.status if s == 201)}


def main(argv: list[str] | None = None) -> int:
    """The open-loop generator's process: prints one marker line of JSON."""
    p = argparse.ArgumentParser(prog="python -m loadtests.bench.dm.push_gen")
    p.add_argument("--spec", type=Path, required=True)
    a = p.parse_args(argv)
    started, cpu0 = time.perf_counter(), time.process_time()
    doc = asyncio.run(open_loop(json.loads(a.spec.read_text())))
    doc["generator_cpu_share"] = round((time.process_time() - cpu0) / (time.perf_counter() - started), 3)
    print(MARKER + json.dumps(doc), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
