"""The rate limiter: requests that cost more than one unit, and pacing.

A client that ignores Retry-After is paced: its repeat refusals are held before the 429
goes out (as nginx's limit_req delays excess requests), a bounded number at once, and the
first refusal is never held.

The abuse benchmark found the reason: an attacker retrying at full speed was refused from
memory thousands of times a second, and answering those refusals took the CPU a victim's
requests needed (the victim's push p99 at 2.3-2.7x its baseline)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from dm.redis_keys import INBOX_MAX
from service_kernel.errors import RateLimited
from service_kernel.rate_limit import RATE_LIMITER, Limit, RateLimiter

from ..support.services import DmFactory


def limiter(redis: Any, delay_s: float, max_paced: int = 8) -> RateLimiter:
    async def nobody(request: web.Request) -> str:
        raise AssertionError("not used")

    return RateLimiter(
        redis,
        {"op": Limit(0.01, 1)},  # one request, then one per 100 s
        identify=nobody,
        repeat_delay_s=delay_s,
        max_paced=max_paced,
    )


async def test_the_first_refusal_goes_out_at_once_and_repeats_are_held(redis: Any) -> None:
    rl = limiter(redis, delay_s=0.2)
    await rl.charge("op", "u:a")
    with pytest.raises(RateLimited):
        await rl.charge("op", "u:a")  # refused by Redis: learns its wait, not held
    assert rl.paced == (0, 0)
    repeat = asyncio.create_task(rl.charge("op", "u:a"))
    await asyncio.sleep(0)
    assert rl.paced == (1, 1)  # held now
    with pytest.raises(RateLimited) as info:
        await repeat
    assert info.value.retry_after_s >= 1
    assert rl.paced == (0, 1)
    # Another subject is neither refused nor held.
    await rl.charge("op", "u:b")
    assert rl.paced == (0, 1)


async def test_at_most_max_paced_are_held_the_rest_answered_at_once(redis: Any) -> None:
    rl = limiter(redis, delay_s=30.0, max_paced=2)
    await rl.charge("op", "u:a")
    with pytest.raises(RateLimited):
        await rl.charge("op", "u:a")
    held = [asyncio.create_task(rl.charge("op", "u:a")) for _ in range(2)]
    await asyncio.sleep(0)
    assert rl.paced == (2, 2)
    with pytest.raises(RateLimited):
        await rl.charge("op", "u:a")  # the third is not held: nothing to await but the raise
    assert rl.paced == (2, 2)
    for task in held:
        task.cancel()
    await asyncio.gather(*held, return_exceptions=True)
    assert rl.paced == (0, 2)  # a cancelled hold (the client went away) is given back


async def test_zero_delay_answers_every_refusal_at_once(redis: Any) -> None:
    rl = limiter(redis, delay_s=0.0)
    await rl.charge("op", "u:a")
    for _ in range(3):
        with pytest.raises(RateLimited):
            await rl.charge("op", "u:a")
    assert rl.paced == (0, 0)


async def test_a_client_retrying_at_full_speed_through_dm_is_paced(make_dm: DmFactory) -> None:
    """Eight loops retrying a refused report as fast as they can: with pacing they get a few
    answers each in a second; each answer is still a 429 with Retry-After."""
    dm = await make_dm(rate_limits={"report": (0.01, 1)}, rate_limit_repeat_delay_s=0.25)
    alice, bob = await dm.user(), await dm.user()
    conv = await alice.create_conversation([bob.uid])
    msg = await alice.send(conv["id"], text="x")
    body = {"conversation_id": conv["id"], "message_id": msg["id"], "reason": "spam"}
    headers = {"Authorization": f"Bearer {bob.session_token}"}
    statuses: list[int] = []
    async with aiohttp.ClientSession() as http:

        async def once() -> None:
            async with http.post(f"{dm.dm_url}/v1/reports", json=body, headers=headers) as r:
                statuses.append(r.status)
                if r.status == 429:
                    assert int(r.headers["Retry-After"]) >= 1

        await once()  # the one allowed report
        await once()  # refused by Redis: not held

        async def loop() -> None:
            end = asyncio.get_running_loop().time() + 1.0
            while asyncio.get_running_loop().time() < end:
                await once()

        await asyncio.gather(*(loop() for _ in range(8)))
    assert statuses[0] in (200, 201) and set(statuses[1:]) == {429}
    # Without pacing, eight loops get thousands of answers a second here; with a 0.25 s
    # hold each loop gets at most five (and at least one).
    assert 8 <= len(statuses) - 2 <= 8 * 5


async def test_a_charge_can_take_several_units_of_the_burst(redis: Any) -> None:
    rl = limiter(redis, delay_s=0.0)
    big = RateLimiter(redis, {"op": Limit(0.01, 5)}, identify=rl.identify, repeat_delay_s=0)
    await big.charge("op", "u:a", cost=3)
    with pytest.raises(RateLimited) as info:
        await big.charge("op", "u:a", cost=3)  # 3 + 3 > 5
    assert info.value.retry_after_s >= 100  # one unit every 100 s
    await big.charge("op", "u:b", cost=5)  # a whole burst at once, for another subject
    await big.charge("op", "u:c", cost=50)  # more than the burst is charged as the burst
    with pytest.raises(RateLimited):
        await big.charge("op", "u:c")


async def test_a_replay_is_charged_the_events_it_replays(make_dm: DmFactory) -> None:
    """Issue 15 item 3: reconnecting with an old cursor over and over made dm read, check
    and mint a pointer for every event each time; now the resume is charged per event."""
    dm = await make_dm(rate_limits={"replay": (0.01, INBOX_MAX), "connect": (100, 100)})
    alice, bob = await dm.user(), await dm.user()
    # Six units of the budget left (the burst is at least INBOX_MAX: a setting below is refused).
    await dm.app[RATE_LIMITER].charge("replay", f"u:{bob.uid}", cost=INBOX_MAX - 6)
    conv = await alice.create_conversation([bob.uid])
    for i in range(3):
        await alice.send(conv["id"], text=f"m{i}")
    url = dm.dm_url.replace("http", "ws", 1) + "/v1/stream"
    headers = {"Authorization": f"Bearer {bob.session_token}"}
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{url}?cursor=0-0", headers=headers) as ws:
            texts: list[str] = []
            cursors: list[str] = []
            while len(texts) < 3:
                ev = await ws.receive_json(timeout=10)
                if ev["type"] == "message":
                    texts.append(ev["message"]["text"])
                    cursors.append(ev["cursor"])
            assert texts == ["m0", "m1", "m2"]  # and bob's "joined": 4 of 6 taken
        # At the head nothing is replayed, so nothing is charged.
        async with http.ws_connect(f"{url}?cursor={cursors[-1]}", headers=headers):
            pass
        # After m0: two events, exactly what is left.
        async with http.ws_connect(f"{url}?cursor={cursors[0]}", headers=headers) as ws:
            got = [await ws.receive_json(timeout=10) for _ in range(2)]
            assert [e["message"]["text"] for e in got] == ["m1", "m2"]
        async with http.ws_connect(f"{url}?cursor={cursors[-1]}", headers=headers):
            pass  # still nothing to replay, still free
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(f"{url}?cursor=0-0", headers=headers)
        assert info.value.status == 429
        assert info.value.headers is not None and int(info.value.headers["Retry-After"]) >= 1
        # A fresh connect (no cursor) replays nothing and still works.
        async with http.ws_connect(url, headers=headers):
            pass


async def test_the_sdk_stream_waits_the_retry_after_of_a_refused_resume(make_dm: DmFactory) -> None:
    """Its backoff (50 ms, doubling) would ask again at once, be refused from memory and
    paced; it waits what the server said instead."""
    dm = await make_dm(rate_limits={"replay": (0.01, INBOX_MAX)})
    alice, bob = await dm.user(), await dm.user()
    conv = await alice.create_conversation([bob.uid])
    await alice.send(conv["id"], text="m")  # bob's inbox: joined, m
    limiter = dm.app[RATE_LIMITER]
    await limiter.charge("replay", f"u:{bob.uid}", cost=INBOX_MAX)  # the whole budget taken

    async def listen() -> None:
        async for _ in bob.stream(cursor="0-0"):
            raise AssertionError("a refused resume yields nothing")

    task = asyncio.create_task(listen())
    await asyncio.sleep(1.5)
    assert not task.done()  # still waiting, not failed
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert limiter.paced == (0, 0)  # one refusal (by Redis), no repeat within 1.5 s


def test_a_replay_burst_below_the_inbox_is_refused_as_a_setting() -> None:
    from dm.settings import DmSettings

    with pytest.raises(ValueError, match="INBOX_MAX"):
        DmSettings.load(rate_limits={"replay": (1.0, INBOX_MAX - 1)})
