"""Red-team round 13: a send's announce in one round trip, its publish deduplicated by a
marker written by the NOTIFY script (commit 163515c, docs in 7025641).

Attacked through the real dm on a single Redis and on a Redis Cluster (the ``dm`` fixture
runs on both).  Findings, each fixed and kept as a test:

1. A send this version announced leaves its idempotency record at ``|0`` for good, which
   the previous release reads as "not announced": a retry that lands on a process of the
   previous release (a rolling upgrade, or within ``DM_IDEMPOTENCY_TTL_S`` of a rollback)
   publishes it again, without a marker (that release has none).  The commit keeps
   compatibility in one direction only ("Records an earlier version marked '|1' are still
   honoured"), while the docs now promise "pushes nothing twice".  Fixed: this version
   writes ``|m``, which the previous release reads as announced.
2. (Predates the change; found on the held-message path the brief named.)  A held send
   whose alert could not be queued (``after_send``'s XADD to ``dm:reports`` failed: a
   ``503``) is completed by its idempotent retry as ``200 held``, but the replay never
   queues the alert: no moderator can ever find, release or remove the message, so it is
   stored and never pushed although its sender saw success.  Fixed: a replay queues the
   alert unless an attempt recorded it (``dm.redis_keys.conv_alerted``); while the queue
   refuses, the retry is a 503.
3. docs/benchmarks.md still says a warm media send makes 4 round trips
   (``SEND_ROUND_TRIPS`` = 4, "MARK_ANNOUNCED stays a separate round trip ...,
   deliberately"); the constant is 3 now.  Fixed (the doc).

Guarantees that held (passing): racing idempotent retries of a send stored but never
announced push it exactly once, with its received-media index; the marker shares the
stream's slot whatever the conversation id, and outlives the idempotency record; a held
send is never pushed (nor given a marker) and its moderator release is pushed once, even
when the release's announce runs again.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncGenerator
from pathlib import Path

import aiohttp
import pytest
from redis.crc import key_slot

from dm import redis_keys as k
from dm.client import DmClientError
from dm.notify import decode
from dm.sdk_types import StreamEvent
from dm.web_messages import _announce
from dm.web_state import STATE as STATE_DM
from dm.web_state import DmState
from service_kernel.redis_client import stream_entries

from ..support.messages import stored_unannounced
from ..support.services import DmFactory, DmStack, bearer

ROOT = Path(__file__).resolve().parents[2]

HOLD_LISTS = {
    "lists": [
        {"label": "grooming", "verdict": "hold", "keywords": ["our little secret"]},
    ]
}


@pytest.fixture
async def sdm(make_dm: DmFactory, tmp_path: Path) -> DmStack:
    """A dm whose scanner holds messages saying "our little secret"."""
    path = tmp_path / "lists.json"
    path.write_text(json.dumps(HOLD_LISTS))
    return await make_dm(scan_lists=path)


async def _pushes(state: DmState, message_id: str) -> int:
    """How many ``message`` events for ``message_id`` the notify stream holds."""
    rows = stream_entries(await state.redis.xrange(k.NOTIFY_STREAM))
    count = 0
    for entry in rows:
        fields = decode(entry)[1]
        if fields.get("type") == "message" and fields.get("message_id") == message_id:
            count += 1
    return count


async def _next_message(events: AsyncGenerator[StreamEvent, None]) -> StreamEvent:
    while True:
        event = await asyncio.wait_for(events.__anext__(), 5)
        if event.get("type") == "message":
            return event


# -- finding 1: the previous release re-pushes what this one announced -------------------------


async def test_a_retry_on_the_previous_release_does_not_push_a_send_this_version_announced(
    dm: DmStack,
) -> None:
    state = dm.app[STATE_DM]
    alice, bob = await dm.user(), await dm.user()
    conv = await alice.create_conversation([bob.uid])
    sent = await alice.send(conv["id"], text="rolling", idempotency_key="k-roll")
    assert await state.redis.exists(k.notify_once(conv["id"], sent["id"]))  # announced, here
    assert await _pushes(state, sent["id"]) == 1
    key = k.conv_idempotency(conv["id"], alice.uid, "k-roll")
    record = str(await state.redis.get(key))
    message_id, request_hash, _ = record.split("|")

    # The client's retry (a timeout on its side) lands on a process of the previous release.
    # Its SEND script returned the stored record as this one does; it read the flag as
    # ``announced = flag != "0"``, then announced the way it did: NOTIFY with no marker (it
    # had none), then MARK_ANNOUNCED.
    replay = await state.store.append(
        conv["id"], alice.uid, {}, idempotency_key="k-roll", request_hash=request_hash
    )
    assert replay.replayed and replay.message_id == message_id
    previous_release_announced = str(await state.redis.get(key)).split("|")[2] != "0"
    if not previous_release_announced:
        fields = await state.store.message(conv["id"], message_id)
        event = state.notify.event(
            "message", conv["id"], replay.members, {"message_id": message_id, **fields}
        )
        await state.notify.publish(event)  # the previous release's publish: no marker
        await state.redis.set(key, record[:-1] + "1", keepttl=True)  # its MARK_ANNOUNCED
    assert await _pushes(state, sent["id"]) == 1, "the previous release pushed it again"


# -- finding 2 (predates 163515c): a held send whose alert failed is never reviewed ------------


async def test_the_retry_of_a_held_send_whose_alert_failed_queues_the_alert(sdm: DmStack) -> None:
    state = sdm.app[STATE_DM]
    alice, bob = await sdm.user(), await sdm.user()
    mod = await sdm.user(roles=["moderator"])
    conv = await alice.create_conversation([bob.uid])
    # A real Redis failure on the alert's write alone: the review stream's key holds a string,
    # so its XADD is refused (WRONGTYPE, a RedisError: 503) after SEND stored the message.
    await state.redis.set(k.REPORTS_STREAM, "not a stream")
    try:
        # The SDK retries the 503 with the same Idempotency-Key, as every client should; while
        # the queue refuses, every retry is a 503 too (it was a "200 held" with no alert).
        with pytest.raises(DmClientError) as info:
            await alice.send(conv["id"], text="this is our little secret", idempotency_key="k-h1")
        assert info.value.status == 503
    finally:
        await state.redis.delete(k.REPORTS_STREAM)
    # A later retry, with the queue healthy again: the stored message, held, and its alert.
    held = await alice.send(conv["id"], text="this is our little secret", idempotency_key="k-h1")
    assert held.get("held") is True  # the sender is told it is held for review
    again = await alice.send(conv["id"], text="this is our little secret", idempotency_key="k-h1")
    assert again["id"] == held["id"]
    assert await _pushes(state, held["id"]) == 0  # held: never pushed (right)
    items = (await mod.request("GET", "/v1/moderation/queue"))["items"]
    mine = [i for i in items if i.get("message_id") == held["id"]]
    assert mine, "the held message has no review item: no moderator can release or remove it"
    assert len(mine) == 1, "the retries queued the alert again"


# -- finding 3: the benchmark doc still counts MARK_ANNOUNCED ----------------------------------


def test_the_benchmark_doc_states_the_round_trips_the_floor_makes() -> None:
    from loadtests.bench.dm.bed import SEND_ROUND_TRIPS

    text = (ROOT / "docs" / "benchmarks.md").read_text()
    stated = [int(n) for n in re.findall(r"`SEND_ROUND_TRIPS`\s*=\s*(\d+)", text)]
    assert stated, "the doc no longer names the constant"
    assert stated == [SEND_ROUND_TRIPS] * len(stated)
    assert "MARK_ANNOUNCED stays" not in text


# -- guarantees that held ----------------------------------------------------------------------


async def test_racing_retries_of_a_stored_unannounced_send_push_it_once(dm: DmStack) -> None:
    """The state a first attempt leaves when Redis fails between SEND and the announce, then
    eight retries at once (a client and its proxies retrying): one push, one inbox entry,
    the received-media index written, and a marker in the stream's slot that outlives the
    idempotency record."""
    state = dm.app[STATE_DM]
    alice, bob, carol = await dm.user(), await dm.user(), await dm.user()
    media, _ = await dm.edge.add_media(owner=alice.uid, allow_reshare=True)
    conv = await alice.create_conversation([bob.uid])
    first, body = await stored_unannounced(state.store, conv["id"], alice.uid, media.id, "race-1")
    indexed = await state.redis.zcard(k.user_inbox(bob.uid))
    events = bob.stream()
    pending = asyncio.ensure_future(_next_message(events))
    await asyncio.sleep(0.2)

    async def retry(http: aiohttp.ClientSession) -> int:
        async with http.post(
            f"{dm.dm_url}/v1/conversations/{conv['id']}/messages",
            data=body,
            headers={
                **bearer(alice.session_token or ""),
                "Idempotency-Key": "race-1",
                "Content-Type": "application/json",
            },
        ) as r:
            return r.status

    async with aiohttp.ClientSession() as http:
        statuses = await asyncio.gather(*(retry(http) for _ in range(8)))
    assert statuses == [200] * 8
    assert (await pending)["message"]["id"] == first.message_id
    sentinel = await alice.send(conv["id"], text="next")
    assert (await _next_message(events))["message"]["id"] == sentinel["id"], "pushed twice"
    await events.aclose()
    assert await _pushes(state, first.message_id) == 1
    assert await state.redis.zcard(k.user_inbox(bob.uid)) == indexed + 2  # it and the sentinel
    onward = await bob.create_conversation([carol.uid])
    await bob.send(onward["id"], media_id=media.id)  # the received index was written
    marker = k.notify_once(conv["id"], first.message_id)
    record = k.conv_idempotency(conv["id"], alice.uid, "race-1")
    assert await state.redis.ttl(marker) >= await state.redis.ttl(record) > 0
    # The marker's slot is the stream's whatever the ids hold (its tag comes first).
    for cid in (conv["id"], "c_}{x", "{c_other}", "a:b"):
        for mid in (first.message_id, "}{", "{dm:notify}"):
            assert key_slot(k.notify_once(cid, mid).encode()) == key_slot(k.NOTIFY_STREAM.encode())


async def test_a_held_send_is_pushed_only_as_its_released_copy_and_once(sdm: DmStack) -> None:
    state = sdm.app[STATE_DM]
    alice, bob = await sdm.user(), await sdm.user()
    mod = await sdm.user(roles=["moderator"])
    conv = await alice.create_conversation([bob.uid])
    text = "this is our little secret"
    held = await alice.send(conv["id"], text=text, idempotency_key="k-h2")
    assert held.get("held") is True
    again = await alice.send(conv["id"], text=text, idempotency_key="k-h2")  # the sender's retry
    assert again["id"] == held["id"] and again.get("held") is True
    assert await _pushes(state, held["id"]) == 0
    assert not await state.redis.exists(k.notify_once(conv["id"], held["id"]))
    [item] = [
        i
        for i in (await mod.request("GET", "/v1/moderation/queue"))["items"]
        if i.get("message_id") == held["id"]
    ]
    done = await mod.request(
        "POST",
        f"/v1/moderation/items/{item['id']}/actions",
        json_body={"action": "release", "reason": "benign"},
    )
    released = done["released_as"]
    assert await _pushes(state, released) == 1
    # The release's append and announce again, as a moderator's retry after a failure
    # between the announce and the removal of the held copy runs them: nothing more.
    idem = f"release-{item['id'][2:]}"
    replay = await state.store.append(
        conv["id"], alice.uid, {}, idempotency_key=idem, request_hash="release"
    )
    assert replay.replayed and replay.message_id == released and not replay.announced
    await _announce(state, conv["id"], replay, await state.store.message(conv["id"], released), idem)
    assert await _pushes(state, released) == 1
    # The sender's retry of the held original now: 410, and still no push of it.
    with pytest.raises(DmClientError) as info:
        await alice.send(conv["id"], text=text, idempotency_key="k-h2")
    assert (info.value.status, info.value.code) == (410, "message_unsent")
    assert await _pushes(state, held["id"]) == 0
