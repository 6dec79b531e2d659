"""A send is pushed once, however often its announce runs (issue 10's push path).

The announce step publishes a send's event under a marker in the notify slot (``NOTIFY``
with ``dm.redis_keys.notify_once``), in the same script as the event.  That replaced a
separate MARK_ANNOUNCED round trip on the conversation's slot, and closes the window it
left: a publish that went out followed by a failed mark made the retry push it again.
On a single Redis and on a Cluster (the ``dm`` fixture runs on both).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from dm import redis_keys as k
from dm.sdk_types import StreamEvent
from dm.web_state import STATE as STATE_DM

from ..support.services import DmStack


async def _next_message(events: AsyncGenerator[StreamEvent, None]) -> StreamEvent:
    while True:
        event = await asyncio.wait_for(events.__anext__(), 5)
        if event.get("type") == "message":
            return event


async def test_a_retry_of_an_announced_send_pushes_nothing_more(dm: DmStack) -> None:
    alice, bob = await dm.user(), await dm.user()
    conv = await alice.create_conversation([bob.uid])
    store = dm.app[STATE_DM].store
    indexed = await store.redis.zcard(k.user_inbox(bob.uid))  # the conversation's own event
    events = bob.stream()
    pending = asyncio.ensure_future(_next_message(events))
    await asyncio.sleep(0.2)
    sent = await alice.send(conv["id"], text="once", idempotency_key="k-once")
    assert (await pending)["message"]["id"] == sent["id"]
    again = await alice.send(conv["id"], text="once", idempotency_key="k-once")  # a retry
    assert again["id"] == sent["id"]
    sentinel = await alice.send(conv["id"], text="next", idempotency_key="k-next")
    pushed = await _next_message(events)
    assert pushed["message"]["id"] == sentinel["id"], "the retry pushed the message again"
    await events.aclose()
    # One event per message in bob's replay index, not one more for the retry.
    assert await store.redis.zcard(k.user_inbox(bob.uid)) == indexed + 2


async def test_a_publish_run_twice_appends_one_event(dm: DmStack) -> None:
    """The state a connection that broke after the script ran leaves: the publish is run
    again (the client's retry, or the send's idempotent retry) and must find its marker."""
    state = dm.app[STATE_DM]
    alice, bob = await dm.user(), await dm.user()
    conv = await alice.create_conversation([bob.uid])
    event = state.notify.event("message", conv["id"], [alice.uid, bob.uid], {"message_id": "9-1"})
    once = (k.notify_once(conv["id"], "9-1"), 60)
    before = await state.redis.xlen(k.NOTIFY_STREAM)
    indexed = await state.redis.zcard(k.user_inbox(bob.uid))
    ids = []
    for _ in range(3):
        async with state.redis.pipeline(transaction=False) as p:
            published = state.notify.queue_publish(p, event, once=once)
            replies = await p.execute(raise_on_error=False)
        ids.append(await published(replies[0]))
    assert ids[0] == ids[1] == ids[2]
    assert await state.redis.xlen(k.NOTIFY_STREAM) == before + 1
    assert await state.redis.zcard(k.user_inbox(bob.uid)) == indexed + 1
    assert 0 < await state.redis.ttl(once[0]) <= 60
    # Events without a marker (unsends, membership changes) are published every time.
    other = state.notify.event("unsent", conv["id"], [bob.uid], {"message_id": "9-1"})
    first, second = await state.notify.publish(other), await state.notify.publish(other)
    assert first != second


async def test_a_send_an_earlier_version_marked_announced_is_not_announced_again(
    dm: DmStack,
) -> None:
    """Records marked "|1" by the version that had a MARK_ANNOUNCED step carry no marker;
    their retry must not publish (a rolling upgrade would otherwise re-push them)."""
    state = dm.app[STATE_DM]
    alice, bob = await dm.user(), await dm.user()
    conv = await alice.create_conversation([bob.uid])
    sent = await alice.send(conv["id"], text="old", idempotency_key="k-old")
    await state.redis.delete(k.notify_once(conv["id"], sent["id"]))  # as the old version left it
    key = k.conv_idempotency(conv["id"], alice.uid, "k-old")
    record = str(await state.redis.get(key))
    assert record.endswith("|m")
    await state.redis.set(key, record[:-1] + "1", keepttl=True)
    before = await state.redis.xlen(k.NOTIFY_STREAM)
    again = await alice.send(conv["id"], text="old", idempotency_key="k-old")
    assert again["id"] == sent["id"]
    assert await state.redis.xlen(k.NOTIFY_STREAM) == before
