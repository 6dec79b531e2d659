"""Abuse benchmark: one abusive account at full speed, one victim measuring send->push.

``python -m loadtests.bench abuse [--json] [--seconds S]`` starts a process
stack (Redis, one edge, one dm: :func:`loadtests.stack.processes.process_stack`),
then runs phases of ``S`` seconds each.  In every phase a victim pair sends
10 messages/s from one user to another, who holds a WebSocket, and records
the send->push latency of each message; in every phase but the baselines an
attacker account runs one vector of issue 15 as fast as 8 concurrent loops
allow, in a process of its own (so its client work does not delay the
victim's measurement in the same event loop):

``unsend_repeat``   DELETE of one already unsent message, over and over
``socket_flood``    WebSocket connects (beyond the per-user cap) while sending to itself
``replay_connect``  WebSocket connects with ``cursor=0-0`` (replay from the start)
``conversation_spam`` conversations with the victim plus made-up members
``report_flood``    the same report of one message, over and over
``send_flood``      sends across 20 conversations

Per vector it reports the victim's p99 against the baselines' (median of a
baseline phase before and after), the attacker's requests and statuses, and
Redis ``used_memory`` growth per attack request.  The keys
``victim_p99_ratio_max`` and ``redis_bytes_per_attack_request_max`` summarise.
The machine this runs on is usually shared: ratios within one run mean more
than absolute figures, and a single run is noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp

from loadtests.bench.harness import speaker
from loadtests.stack.processes import ProcStack, process_stack
from service_kernel.redis_client import connect

VECTORS = (
    "unsend_repeat",
    "socket_flood",
    "replay_connect",
    "conversation_spam",
    "report_flood",
    "send_flood",
)
VICTIM_RATE_PER_S = 10
ATTACK_LOOPS = 8

say = speaker("abuse")


class Api:
    def __init__(self, http: aiohttp.ClientSession, base: str, token: str = "", uid: str = "") -> None:
        self.http, self.base, self.token, self.uid = http, base, token, uid

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.http.request(method, self.base + path, json=body, headers=self.headers()) as r:
            doc = await r.json(content_type=None) if r.content_length != 0 else None
            return r.status, doc

    async def user(self) -> Api:
        status, doc = await self.call("POST", "/v1/users", {})
        assert status == 201, (status, doc)
        return Api(self.http, self.base, doc["session_token"], doc["user_id"])


async def victim(api_a: Api, api_b: Api, cid: str, seconds: float) -> list[float]:
    """Send at VICTIM_RATE_PER_S; return each message's send->push latency (ms)."""
    sent: dict[str, float] = {}
    latencies: list[float] = []
    url = api_b.base.replace("http", "ws", 1) + "/v1/stream"
    async with api_b.http.ws_connect(url, headers=api_b.headers()) as ws:

        async def receive() -> None:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    return
                ev = json.loads(msg.data)
                text = (ev.get("message") or {}).get("text")
                if ev.get("type") == "message" and text in sent:
                    latencies.append((time.perf_counter() - sent.pop(text)) * 1000)

        reader = asyncio.create_task(receive())
        end, i = time.monotonic() + seconds, 0
        while time.monotonic() < end:
            key = f"v{time.time_ns()}-{i}"
            sent[key] = time.perf_counter()
            await api_a.call("POST", f"/v1/conversations/{cid}/messages", {"text": key})
            i += 1
            await asyncio.sleep(1 / VICTIM_RATE_PER_S)
        await asyncio.sleep(1.0)  # the last pushes
        reader.cancel()
    return latencies


async def attack_loop(
    step: Callable[[], Awaitable[int]], until: float, statuses: collections.Counter[int]
) -> None:
    while time.monotonic() < until:
        try:
            statuses[await step()] += 1
        except (TimeoutError, aiohttp.ClientError):
            statuses[0] += 1


async def vector_step(name: str, attacker: Api, world: dict[str, Any]) -> Callable[[], Awaitable[int]]:
    """Set the vector up (outside the measured requests) and return one attack request."""
    base_ws = attacker.base.replace("http", "ws", 1) + "/v1/stream"
    if name == "unsend_repeat":
        cid, mid = world["attacker_cid"], world["attacker_mid"]
        await attacker.call("DELETE", f"/v1/conversations/{cid}/messages/{mid}")
        return lambda: _status(attacker.call("DELETE", f"/v1/conversations/{cid}/messages/{mid}"))
    if name in ("socket_flood", "replay_connect"):
        params = "?cursor=0-0" if name == "replay_connect" else ""
        held: list[aiohttp.ClientWebSocketResponse] = world.setdefault("held", [])

        async def connect_once() -> int:
            try:
                ws = await attacker.http.ws_connect(base_ws + params, headers=attacker.headers())
            except aiohttp.WSServerHandshakeError as err:
                return err.status
            if name == "socket_flood":
                held.append(ws)  # kept open: the sockets are the load
                await attacker.call(
                    "POST", f"/v1/conversations/{world['attacker_cid']}/messages", {"text": "x" * 1000}
                )
            else:
                await ws.close()
            return 101

        return connect_once
    if name == "conversation_spam":
        members = [world["victim_uid"], *(f"u_madeup{i:060d}" for i in range(62))]
        return lambda: _status(attacker.call("POST", "/v1/conversations", {"members": members}))
    if name == "report_flood":
        body = {
            "conversation_id": world["report_cid"],
            "message_id": world["report_mid"],
            "reason": "r" * 2000,
        }
        return lambda: _status(attacker.call("POST", "/v1/reports", body))
    cids = world["attacker_cids"]
    counter = iter(range(10**9))
    return lambda: _status(
        attacker.call(
            "POST", f"/v1/conversations/{cids[next(counter) % len(cids)]}/messages", {"text": "s"}
        )
    )


def attack_process(
    base: str, token: str, uid: str, name: str, world: dict[str, Any], seconds: float
) -> dict[int, int]:
    """One vector's attack, run in its own process (so the attacker's client work does not
    share an event loop, or a GIL, with the victim's measurement)."""

    async def run() -> dict[int, int]:
        statuses: collections.Counter[int] = collections.Counter()
        async with aiohttp.ClientSession() as http:
            attacker = Api(http, base, token, uid)
            step = await vector_step(name, attacker, world)
            until = time.monotonic() + seconds
            await asyncio.gather(*(attack_loop(step, until, statuses) for _ in range(ATTACK_LOOPS)))
            for ws in world.pop("held", []):
                await ws.close()
        return dict(statuses)

    return asyncio.run(run())


async def _status(call: Awaitable[tuple[int, Any]]) -> int:
    return (await call)[0]


def p99(values: list[float]) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


async def run_phases(stack: ProcStack, seconds: float) -> dict[str, Any]:
    redis = connect(stack.redis_url)
    async with aiohttp.ClientSession() as http:
        anon = Api(http, stack.dm_url)
        alice, bob, mallory, helper = [await anon.user() for _ in range(4)]
        _, conv = await alice.call("POST", "/v1/conversations", {"members": [bob.uid]})
        _, own = await mallory.call("POST", "/v1/conversations", {"members": [helper.uid]})
        _, msg = await mallory.call("POST", f"/v1/conversations/{own['id']}/messages", {"text": "m"})
        _, shared = await helper.call("POST", "/v1/conversations", {"members": [mallory.uid]})
        _, hmsg = await helper.call("POST", f"/v1/conversations/{shared['id']}/messages", {"text": "h"})
        spread = [
            await (await anon.user()).call("POST", "/v1/conversations", {"members": [mallory.uid]})
            for _ in range(20)
        ]
        world: dict[str, Any] = {
            "attacker_cid": own["id"],
            "attacker_mid": msg["id"],
            "victim_uid": bob.uid,
            "report_cid": shared["id"],
            "report_mid": hmsg["id"],
            "attacker_cids": [doc["id"] for _, doc in spread],
        }
        phases: dict[str, Any] = {}
        pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        for name in ("baseline_before", *VECTORS, "baseline_after"):
            statuses: collections.Counter[int] = collections.Counter()
            mem_before = int((await redis.info("memory"))["used_memory"])
            attack = None
            if not name.startswith("baseline"):
                attack = asyncio.get_running_loop().run_in_executor(
                    pool, attack_process, stack.dm_url, mallory.token, mallory.uid, name, world, seconds
                )
            latencies = await victim(alice, bob, conv["id"], seconds)
            if attack is not None:
                statuses.update(await attack)
            mem_after = int((await redis.info("memory"))["used_memory"])
            requests = sum(statuses.values())
            phases[name] = {
                "victim_p99_ms": round(p99(latencies), 2),
                "victim_p50_ms": round(statistics.median(latencies), 2) if latencies else None,
                "victim_messages": len(latencies),
                "attack_requests": requests,
                "attack_statuses": {str(k): v for k, v in sorted(statuses.items())},
                "redis_bytes_delta": mem_after - mem_before,
                "redis_bytes_per_attack_request": round((mem_after - mem_before) / requests, 1)
                if requests
                else None,
            }
            say(
                f"{name:<18} victim p99 {phases[name]['victim_p99_ms']:>8} ms, "
                f"{requests} attack requests {dict(statuses)}"
            )
        pool.shutdown()
    await redis.aclose()
    return phases


def summarize(phases: dict[str, Any], seconds: float) -> dict[str, Any]:
    base = statistics.median(
        [phases["baseline_before"]["victim_p99_ms"], phases["baseline_after"]["victim_p99_ms"]]
    )
    for name in VECTORS:
        phases[name]["victim_p99_ratio"] = (
            round(phases[name]["victim_p99_ms"] / base, 2) if base else None
        )
    ratios = [
        phases[n]["victim_p99_ratio"] for n in VECTORS if phases[n]["victim_p99_ratio"] is not None
    ]
    per_request = [max(0.0, phases[n]["redis_bytes_per_attack_request"] or 0.0) for n in VECTORS]
    return {
        "benchmark": "abuse",
        "seconds_per_phase": seconds,
        "victim_rate_per_s": VICTIM_RATE_PER_S,
        "attack_loops": ATTACK_LOOPS,
        "baseline_p99_ms": base,
        "victim_p99_ratio_max": max(ratios) if ratios else None,
        "redis_bytes_per_attack_request_max": max(per_request) if per_request else None,
        "target": {"victim_p99_ratio_max": 2.0},
        "note": "one run on a shared 2-core machine: noisy; Redis used_memory also moves with "
        "allocator behaviour, so small per-request figures are within noise",
        "phases": phases,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench abuse")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--seconds", type=float, default=6.0, help="length of each phase")
    args = p.parse_args(argv)
    # Every account signs up from this one address: only that limit is lifted; the
    # per-user limits under test stay at their defaults.
    only_signup = {"DM_RATE_LIMITS": json.dumps({"signup": [1_000_000, 1_000_000]})}
    with (
        tempfile.TemporaryDirectory() as tmp,
        process_stack(Path(tmp), dm_settings=only_signup) as stack,
    ):
        phases = asyncio.run(run_phases(stack, args.seconds))
    report = summarize(phases, args.seconds)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"victim p99 baseline {report['baseline_p99_ms']} ms; worst ratio "
            f"{report['victim_p99_ratio_max']}; Redis bytes per attack request (max) "
            f"{report['redis_bytes_per_attack_request_max']}"
        )
        for name in VECTORS:
            ph = phases[name]
            print(
                f"  {name:<18} p99 {ph['victim_p99_ms']:>8} ms  ratio "
                f"{ph['victim_p99_ratio']:>5}  requests {ph['attack_requests']:>6}  "
                f"Redis B/request {ph['redis_bytes_per_attack_request']}"
            )
    return 0
