"""Red-team, round 4: repeat-refusal pacing, the per-event replay charge of a resumed
stream, the SDK's Retry-After, and the stream tail's retries, against real dm processes on
Redis.

Each finding's test asserts the safe behaviour; it failed on the code the round attacked
(as a strict xfail) and passes since its fix; the guard tests pin attacks that held."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from dm import redis_keys
from dm.client import DmClient
from dm.notify import NotifyLog, id_key
from dm.redis_keys import INBOX_MAX
from dm.settings import DEFAULT_RATE_LIMITS
from dm.web_state import STATE
from service_kernel.rate_limit import RATE_LIMITER

from ..support.services import DmFactory, DmStack, bearer, wait_until


def _ws(stack: DmStack) -> str:
    return stack.dm_url.replace("http", "ws", 1) + "/v1/stream"


def _auth(c: DmClient) -> dict[str, str]:
    assert c.session_token is not None
    return bearer(c.session_token)


async def _handshake(http: aiohttp.ClientSession, url: str, c: DmClient) -> int:
    """The status a WebSocket handshake is answered (101 when it upgrades)."""
    try:
        async with http.ws_connect(url, headers=_auth(c)):
            return 101
    except aiohttp.WSServerHandshakeError as err:
        return err.status


async def _bob_with_inbox(stack: DmStack, messages: int) -> tuple[DmClient, DmClient]:
    """alice and bob in a conversation; bob's inbox: "joined" and ``messages`` messages."""
    alice, bob = await stack.user(), await stack.user()
    conv = await alice.create_conversation([bob.uid])
    for i in range(messages):
        await alice.send(conv["id"], text=f"m{i}")
    return alice, bob


async def _leave_replay_budget(stack: DmStack, c: DmClient, units: int) -> None:
    """Spend ``c``'s replay budget down to ``units`` (a replay burst below INBOX_MAX is
    refused as a setting, so the tests start from a full burst and spend it)."""
    await stack.app[RATE_LIMITER].charge("replay", f"u:{c.uid}", cost=INBOX_MAX - units)


# -- findings ----------------------------------------------------------------------------------


async def test_a_resume_refused_for_the_socket_cap_costs_no_replay_budget(
    make_dm: DmFactory,
) -> None:
    dm = await make_dm(
        ws_max_per_user=1, rate_limits={"replay": (0.01, INBOX_MAX), "connect": (100, 100)}
    )
    _alice, bob = await _bob_with_inbox(dm, 5)  # 6 events after 0-0
    await _leave_replay_budget(dm, bob, 10)
    resume = f"{_ws(dm)}?cursor=0-0"
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(_ws(dm), headers=_auth(bob)):
            # bob's one socket is open: a second device's resume is refused by the cap.
            assert await _handshake(http, resume, bob) == 429
        await asyncio.sleep(0.2)  # the lease is given back
        # Nothing was replayed: the budget (10) still holds a 6-event replay.
        assert await _handshake(http, resume, bob) == 101


async def test_a_resume_refused_by_a_full_process_costs_no_replay_budget(
    make_dm: DmFactory,
) -> None:
    limits = {"replay": (0.01, INBOX_MAX), "connect": (100, 100)}
    full = await make_dm(ws_max_total=1, rate_limits=limits)
    roomy = await make_dm(edge=full.edge, rate_limits=limits)
    _alice, bob = await _bob_with_inbox(full, 5)  # 6 events after 0-0
    await _leave_replay_budget(full, bob, 10)
    mallory = await full.user()
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(_ws(full), headers=_auth(mallory)),
    ):
        # mallory's one socket fills the process: bob is told to retry elsewhere.
        assert await _handshake(http, f"{_ws(full)}?cursor=0-0", bob) == 503
        assert await _handshake(http, f"{_ws(roomy)}?cursor=0-0", bob) == 101


async def test_a_small_replay_is_not_refused_by_the_memory_of_a_large_one(
    make_dm: DmFactory,
) -> None:
    dm = await make_dm(rate_limits={"replay": (0.01, INBOX_MAX), "connect": (100, 100)})
    _alice, bob = await _bob_with_inbox(dm, 5)  # joined, m0..m4: 6 events
    await _leave_replay_budget(dm, bob, 10)
    cursors: list[str] = []
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{_ws(dm)}?cursor=0-0", headers=_auth(bob)) as ws:
            while len(cursors) < 6:
                cursors.append((await ws.receive_json(timeout=10))["cursor"])
        # 6 of 10 taken.  Another full replay (6 > 4 left) is rightly refused...
        assert await _handshake(http, f"{_ws(dm)}?cursor=0-0", bob) == 429
        # ...but a one-event replay fits the 4 units left.
        assert await _handshake(http, f"{_ws(dm)}?cursor={cursors[-2]}", bob) == 101


async def test_one_subject_cannot_escape_pacing_by_filling_the_paced_slots(
    make_dm: DmFactory,
) -> None:
    delay = 0.25
    dm = await make_dm(
        rate_limits={"report": (0.01, 1)}, rate_limit_repeat_delay_s=delay, rate_limit_max_paced=4
    )
    alice, bob = await dm.user(), await dm.user()
    conv = await alice.create_conversation([bob.uid])
    msg = await alice.send(conv["id"], text="x")
    body = {"conversation_id": conv["id"], "message_id": msg["id"], "reason": "spam"}
    loops, run_s = 32, 1.0
    answered: list[int] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def once() -> None:
            try:
                async with http.post(f"{dm.dm_url}/v1/reports", json=body, headers=_auth(bob)) as r:
                    answered.append(r.status)
            except aiohttp.ClientError:
                await asyncio.sleep(delay)  # dropped: not an answer

        await once()  # the one allowed report
        await once()  # the first refusal (Redis)

        async def loop() -> None:
            end = asyncio.get_running_loop().time() + run_s
            while asyncio.get_running_loop().time() < end:
                await once()

        await asyncio.gather(*(loop() for _ in range(loops)))
    refusals = answered[2:]
    assert set(refusals) <= {429}
    # Each repeat held `delay`: at most run_s/delay + 1 answers per connection.
    assert len(refusals) <= loops * (int(run_s / delay) + 1)


async def test_a_malformed_notify_entry_does_not_stall_push_for_everyone(
    make_dm: DmFactory,
) -> None:
    dm = await make_dm(staleness_bound_s=2.0)
    alice, bob = await dm.user(), await dm.user()
    conv = await alice.create_conversation([bob.uid])
    redis = dm.app[STATE].redis
    poison = await redis.xadd(redis_keys.NOTIFY_STREAM, {"e": "not json"})
    try:
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(_ws(dm), headers=_auth(bob)) as ws:
                await alice.send(conv["id"], text="after the bad entry")
                got: list[str] = []
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(8):
                        while not got:
                            ev = await ws.receive_json()
                            if ev["type"] == "message":
                                got.append(ev["message"]["text"])
                assert got == ["after the bad entry"]
            async with http.get(f"{dm.dm_url}/readyz") as r:
                assert r.status == 200
    finally:
        await redis.xdel(redis_keys.NOTIFY_STREAM, poison)  # the shared server's next tests


async def test_the_sdk_stream_survives_an_odd_retry_after() -> None:
    hits: list[int] = []

    async def refuse(request: web.Request) -> web.Response:
        hits.append(1)
        return web.Response(status=429, headers={"Retry-After": "\u00b2"})

    app = web.Application()
    app.router.add_get("/v1/stream", refuse)
    async with TestServer(app) as server:
        client = DmClient(str(server.make_url("")).rstrip("/"))
        async with client:

            async def listen() -> None:
                async for _ in client.stream(cursor="1-0"):
                    raise AssertionError("a refused handshake yields nothing")

            task = asyncio.create_task(listen())
            try:
                await wait_until(lambda: len(hits) >= 2 or task.done(), 5)
                assert not task.done(), task.exception()
                assert len(hits) >= 2  # it backed off and asked again
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)


async def test_a_replay_burst_below_the_inbox_cannot_undercharge_a_resume(
    make_dm: DmFactory,
) -> None:
    try:
        dm = await make_dm(rate_limits={"replay": (0.01, 3), "connect": (100, 100)})
    except ValueError:
        return  # refused as a setting: fixed that way
    _alice, bob = await _bob_with_inbox(dm, 5)  # 6 events, 3 units of budget
    got = 0
    async with aiohttp.ClientSession() as http:
        try:
            async with http.ws_connect(f"{_ws(dm)}?cursor=0-0", headers=_auth(bob)) as ws:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(3):
                        while True:
                            await ws.receive_json()
                            got += 1
        except aiohttp.WSServerHandshakeError as err:
            assert err.status == 429
    assert got <= 3  # never more events replayed than the budget held


# -- guards ------------------------------------------------------------------------------------


async def test_pending_counts_exactly_what_a_replay_reads_for_every_cursor_form(
    redis: Any,
) -> None:
    """The charge and the replay agree for every cursor: 0-0, an entry's own id, the id
    after it in the same millisecond, the millisecond's start, a huge sequence number, a
    future cursor and the largest cursor check_cursor accepts."""
    log = NotifyLog(redis)
    ids = [
        await log.publish(log.event("message", "c1", ["bob"], {"message_id": str(i)})) for i in range(40)
    ]
    await log.publish(log.event("message", "c1", ["carol"], {"message_id": "x"}))  # not bob's
    cursors = {"0-0", "999999999999999-9999999999", "0-9999999999"}
    for i in ids:
        ms, seq = id_key(i)
        cursors |= {i, f"{ms}-{seq + 1}", f"{ms}-0", f"{ms - 1}-9999999999", f"{ms}-9999999999"}
    for cursor in sorted(cursors, key=id_key):
        replayed = [eid async for eid, _ in log.replay("bob", cursor)]
        assert await log.pending("bob", cursor) == len(replayed), cursor
        assert all(id_key(e) > id_key(cursor) for e in replayed)


def test_the_default_replay_burst_covers_a_full_inbox() -> None:
    """A charge is capped at the burst; with the shipped limits a full inbox (INBOX_MAX)
    is below it, so no resume is ever charged less than it replays.  (An operator who sets
    DM_RATE_LIMITS replay's burst below INBOX_MAX re-opens the amplifier: see the report.)"""
    assert DEFAULT_RATE_LIMITS["replay"][1] >= redis_keys.INBOX_MAX


async def test_odd_cursors_answer_400_or_upgrade_never_500(make_dm: DmFactory) -> None:
    dm = await make_dm(rate_limits={"connect": (100, 100)})
    _alice, bob = await _bob_with_inbox(dm, 1)
    async with aiohttp.ClientSession() as http:
        for cursor, want in (
            ("999999999999999-9999999999", 101),  # the future: nothing to replay, free
            ("0-0", 101),
            ("\u0661\u0662-0", 400),  # Arabic-Indic digits
            ("1-" + "9" * 11, 400),
            ("9" * 16 + "-0", 400),
            ("-1-0", 400),
            ("1.5-0", 400),
            ("+1-0", 400),
        ):
            url = f"{_ws(dm)}?cursor={quote(cursor, safe='')}"
            assert await _handshake(http, url, bob) == want, cursor


async def test_a_replay_charge_lands_on_the_resuming_user_only(make_dm: DmFactory) -> None:
    """bob's resume is charged to bob's replay budget; alice (who sent the events) and a
    third user keep theirs whole."""
    dm = await make_dm(rate_limits={"replay": (0.01, INBOX_MAX), "connect": (100, 100)})
    alice, bob = await _bob_with_inbox(dm, 3)  # 4 events for bob, 1 ("joined") for alice
    await _leave_replay_budget(dm, bob, 4)
    carol = await dm.user()
    await carol.create_conversation([alice.uid])  # alice: 2 events
    async with aiohttp.ClientSession() as http:
        assert await _handshake(http, f"{_ws(dm)}?cursor=0-0", bob) == 101
        assert await _handshake(http, f"{_ws(dm)}?cursor=0-0", bob) == 429
        assert await _handshake(http, f"{_ws(dm)}?cursor=0-0", alice) == 101
        assert await _handshake(http, f"{_ws(dm)}?cursor=0-0", carol) == 101
    assert dm.app[RATE_LIMITER].paced == (0, 0)


async def test_a_replay_refusal_holds_across_dm_processes(make_dm: DmFactory) -> None:
    """The replay budget is in Redis: a second dm process refuses what the first spent."""
    limits = {"replay": (0.01, INBOX_MAX), "connect": (100, 100)}
    one = await make_dm(rate_limits=limits)
    two = await make_dm(edge=one.edge, rate_limits=limits)
    _alice, bob = await _bob_with_inbox(one, 3)  # 4 events
    await _leave_replay_budget(one, bob, 4)
    async with aiohttp.ClientSession() as http:
        assert await _handshake(http, f"{_ws(one)}?cursor=0-0", bob) == 101
        assert await _handshake(http, f"{_ws(two)}?cursor=0-0", bob) == 429
        assert await _handshake(http, _ws(two), bob) == 101  # no cursor: free
