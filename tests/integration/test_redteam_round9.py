"""Red-team round 9: the auto-pipelined client's concurrency (cancelled callers mid-batch,
connections killed under a batch, rights checks batched with a revoking write) and the
exclusive creation of keys, attacked for a way to use media after its rights were revoked.

Every test here pins a guarantee that was checked and holds (no bypass was found).
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis.asyncio as plain_redis

from cdn_auth import redis_keys
from cdn_auth.errors import GrantExhausted
from cdn_auth.grant import Grant
from cdn_auth.keyring import PRIVATE_DIR, VERIFY_JWKS_FILE, KeyRing
from cdn_auth.redemption import Redemptions
from dm.client import DmClient, DmClientError
from service_kernel.redis_process import RedisProcess

from ..support.services import DmStack


async def test_cancelled_callers_mid_batch_never_hand_a_reply_to_another_caller(
    batching_client: Any,
) -> None:
    """Client disconnects cancel requests at any point of a batch (queued, sent, half read,
    the lone inline path): every caller that completes gets its own key's value."""
    n = 48
    await asyncio.gather(*(batching_client.set(f"rt9:k{i}", f"v{i}") for i in range(n)))
    rng = random.Random(9)
    wrong: list[tuple[int, Any]] = []

    async def get(i: int) -> None:
        got = await batching_client.get(f"rt9:k{i}")
        if got not in (f"v{i}", f"v{i}".encode()):
            wrong.append((i, got))

    for _ in range(60):
        tasks = [asyncio.ensure_future(get(i)) for i in range(n)]
        for _ in range(rng.randrange(0, 4)):
            await asyncio.sleep(0)
        for t in rng.sample(tasks, n // 2):
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # A lone command right after (the inline path on a held connection).
        await get(rng.randrange(n))
    assert batching_client.batches > 0
    assert wrong == []


async def test_binds_under_killed_connections_never_admit_more_than_n(
    batching_client: Any, single_redis: RedisProcess
) -> None:
    """Derived-grant redemption: many users bind concurrently while the server drops the
    client's connections (a retry of a batch whose scripts had run): at most N are bound,
    and each bound user stays admitted."""
    admin: Any = plain_redis.Redis.from_url(single_redis.url)
    try:
        redemptions = Redemptions(batching_client, leeway_s=5)
        now = int(time.time())
        grant = Grant("g-rt9", "m-rt9", 3, "alice", now, now + 600, "k1")
        users = [f"u{i}" for i in range(60)]
        admitted: set[str] = set()

        async def bind(u: str) -> None:
            try:
                await redemptions.bind(grant, u)
                admitted.add(u)
            except GrantExhausted:
                return
            except Exception:
                return

        async def killer() -> None:
            for _ in range(5):
                await asyncio.sleep(0)
                await admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")

        for _ in range(3):
            await asyncio.gather(killer(), *(bind(u) for u in users))
        assert len(admitted) <= 3
        bound = {
            m.decode() if isinstance(m, bytes) else m
            for m in await admin.smembers(redis_keys.grant_key("g-rt9"))
        }
        assert len(bound) <= 3 and admitted <= bound
        for u in bound:  # bound redeemers are not refused afterwards
            await redemptions.bind(grant, u)
    finally:
        await admin.aclose()


async def _reads_around(
    reader: DmClient, cid: str, revoke: Callable[[], Awaitable[Any]], shows_media: Callable[[Any], bool]
) -> tuple[int, int]:
    """16 tasks read ``cid`` as ``reader`` in a loop while ``revoke`` runs; returns (reads
    issued after its answer that still showed the media, reads issued after it that were
    answered or refused other than by 429)."""
    acked = stop = False
    leaked = answered_after = 0

    async def read_loop() -> None:
        nonlocal leaked, answered_after
        while not stop:
            after_ack = acked
            try:
                page = await reader.read(cid)
            except DmClientError as exc:  # a refusal (or a 429 under the hammering)
                answered_after += after_ack and exc.status != 429
                await asyncio.sleep(0.01)
                continue
            answered_after += after_ack
            leaked += after_ack and shows_media(page)

    readers = [asyncio.ensure_future(read_loop()) for _ in range(16)]
    await asyncio.sleep(0.1)
    await revoke()
    acked = True
    await asyncio.sleep(0.3)
    stop = True
    await asyncio.gather(*readers)
    return leaked, answered_after


async def test_reads_issued_after_an_unsend_ack_mint_no_pointer(dm: DmStack) -> None:
    """Bob's reads hammer the message list (rights checks batched with everything else)
    while Alice unsends: no read issued after the unsend's answer shows the media."""
    alice, bob = await dm.user(age="adult", region="GB"), await dm.user(age="adult", region="GB")
    media, _ = await dm.edge.add_media(owner=alice.uid)
    conv = await alice.create_conversation([bob.uid])
    sent = await alice.send(conv["id"], media_id=media.id, text="x")
    leaked, answered_after = await _reads_around(
        bob,
        conv["id"],
        lambda: alice.unsend(conv["id"], sent["id"]),
        lambda page: any(m["id"] == sent["id"] and m.get("media") for m in page["messages"]),
    )
    assert leaked == 0
    assert answered_after > 0  # the check was exercised, not throttled away


async def test_removed_member_reads_under_load_mint_no_pointer(dm: DmStack) -> None:
    """The same with a member leaving: reads issued after the leave's answer are refused or
    carry no media."""
    alice = await dm.user(age="adult", region="GB")
    bob, carol = await dm.user(age="adult", region="GB"), await dm.user(age="adult", region="GB")
    media, _ = await dm.edge.add_media(owner=alice.uid)
    conv = await alice.create_conversation([bob.uid, carol.uid])
    await alice.send(conv["id"], media_id=media.id, text="x")
    leaked, answered_after = await _reads_around(
        bob,
        conv["id"],
        lambda: bob.leave(conv["id"]),
        lambda page: any(m.get("media") for m in page["messages"]),
    )
    assert leaked == 0
    assert answered_after > 0  # the check was exercised, not throttled away


def test_rings_created_together_leave_one_key_verifiable_and_no_orphan(tmp_path: Path) -> None:
    """Eight edges start at once on an empty ring directory: all use one signer, the JWKS
    lists exactly the ring's keys (no loser's key left verifiable) and no loser's private
    key stays behind."""
    for round_ in range(3):
        d = tmp_path / f"ring{round_}"
        barrier = threading.Barrier(8)
        rings: list[KeyRing] = []
        errors: list[BaseException] = []

        def start(
            d: Path = d,
            barrier: threading.Barrier = barrier,
            rings: list[KeyRing] = rings,
            errors: list[BaseException] = errors,
        ) -> None:
            barrier.wait()
            try:
                rings.append(KeyRing.load_or_create(d))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=start) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert len({r.signing_kid for r in rings}) == 1
        final = KeyRing.load(d)
        ring_kids = {k.kid for k in final.keys}
        jwks = json.loads((d / VERIFY_JWKS_FILE).read_text())
        assert {k["kid"] for k in jwks["keys"]} == ring_kids
        private = {p.stem for p in (d / PRIVATE_DIR).glob("*.key")}
        assert private == ring_kids
