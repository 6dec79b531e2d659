"""Red-team round 7: auto-pipelined Redis under concurrency, against rights paths.

Checked: a revocation-style write acknowledged before a read is issued is seen by that
read even when both ride shared batches; a grant's redeemer binding (BIND) run
concurrently for many users admits exactly N, and re-running it (what a ConnectionError
retry of a command that had already run does) neither admits an extra redeemer nor
refuses a bound one.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from cdn_auth import redis_keys
from cdn_auth.errors import GrantExhausted
from cdn_auth.grant import Grant
from cdn_auth.redemption import Redemptions


async def test_acknowledged_revocation_is_seen_by_every_later_batched_read(batching_client: Any) -> None:
    """Readers hammer a 'revoked' flag in shared batches while a writer sets it; every read
    issued after the write's reply came back sees it (no batch reorders across an ack)."""
    key = "unsent:c1"
    acked = asyncio.Event()
    stale_after_ack: list[int] = []
    stop = False

    async def reader(i: int) -> None:
        while not stop:
            issued_after_ack = acked.is_set()
            seen = await batching_client.hexists(key, "m1")
            if issued_after_ack and not seen:
                stale_after_ack.append(i)

    async def writer() -> None:
        await asyncio.sleep(0.02)
        await batching_client.hset(key, "m1", "g|alice")
        acked.set()
        await asyncio.sleep(0.05)

    readers = [asyncio.ensure_future(reader(i)) for i in range(32)]
    await writer()
    stop = True
    await asyncio.gather(*readers)
    assert batching_client.batches > 0  # batching was active
    assert stale_after_ack == []


async def test_concurrent_binds_admit_exactly_n_and_a_rerun_admits_no_extra(
    batching_client: Any,
) -> None:
    redemptions = Redemptions(batching_client, leeway_s=5)
    now = int(time.time())
    grant = Grant("g-rt7", "m-rt7", 3, "alice", now, now + 600, "k1")
    users = [f"u{i}" for i in range(40)]

    async def bind(u: str) -> bool:
        try:
            await redemptions.bind(grant, u)
            return True
        except GrantExhausted:
            return False

    first = await asyncio.gather(*(bind(u) for u in users))
    bound = [u for u, ok in zip(users, first, strict=True) if ok]
    assert len(bound) == 3
    # A retried (re-run) bind of every user, concurrently again: the bound stay bound, no
    # one else gets in, the set holds exactly N.
    again = await asyncio.gather(*(bind(u) for u in users), *(bind(u) for u in bound))
    assert [u for u, ok in zip(users, again[: len(users)], strict=True) if ok] == bound
    assert all(again[len(users) :])
    assert await batching_client.scard(redis_keys.grant_key("g-rt7")) == 3
    assert batching_client.batches > 0
