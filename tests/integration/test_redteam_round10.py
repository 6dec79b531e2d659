"""Red-team round 10: spare grants (a sealed sender's device derives the next share's grant
ahead, dm.capabilities) and the parsed-once Derivation, attacked through the real dm and
edge for a grant carried twice, a spare outliving its capability, a race between the
SDK's ``call_soon`` and revocation, and an edge that trusts the client.

One weakness, fixed: a spare's lifetime runs from when it was made, so on edges with a
short token lifetime the share after an idle spell carried a grant already expired (the
wallet now takes a spare only while it is nearly as good as a fresh grant).  The other
tests pin guarantees that hold.
"""

from __future__ import annotations

import asyncio
from typing import Any

from dm.client import DmClient

from ..support.capabilities import fetch_code, last_message
from ..support.sealed import edge_url, sealed_user
from ..support.services import DmStack, wait_until

EdgeFactory = Any
DmFactory = Any


async def _is(result: Any, expected: tuple[int, str]) -> bool:
    return bool(await result == expected)


async def _grant(c: DmClient, cid: str, message_id: str) -> str:
    page = await c.read(cid, limit=50)
    msg = next(m for m in page["messages"] if m["id"] == message_id)
    return c.open_message(msg).grant or ""


async def test_a_share_after_an_idle_spell_carries_a_live_grant(
    make_edge: EdgeFactory, make_dm: DmFactory
) -> None:
    edge = await make_edge(max_token_lifetime_s=300)
    dm: DmStack = await make_dm(edge=edge)
    alice, bob = await sealed_user(dm), await sealed_user(dm)
    media, _ = await dm.edge.add_media(owner=alice.uid)
    conv = await alice.create_conversation([bob.uid], mode="sealed")
    await alice.obtain_capability(media.id, edge_url=edge_url(dm))
    wallet = alice.capabilities
    real = wallet._clock
    wallet._clock = lambda: real() - 400  # the previous share was 400 s ago
    await alice.send_sealed(conv["id"], edge_url=edge_url(dm), media_id=media.id)
    await asyncio.sleep(0)  # its spare is made then, right after it
    wallet._clock = real
    await alice.send_sealed(conv["id"], edge_url=edge_url(dm), media_id=media.id)
    grant = bob.open_message(await last_message(bob, conv["id"])).grant or ""
    assert await fetch_code(bob, f"{edge_url(dm)}/m/{media.id}", grant) == (206, "")


async def test_a_spare_of_a_capability_revoked_elsewhere_is_refused_by_the_edge(dm: DmStack) -> None:
    """The capability is revoked from the holder's other device: this device's wallet still
    holds it and its spare, and hands the spare out at the next share; the edge, which must
    not rely on the client, refuses it."""
    alice, bob = await sealed_user(dm), await sealed_user(dm)
    media, _ = await dm.edge.add_media(owner=alice.uid)
    conv = await alice.create_conversation([bob.uid], mode="sealed")
    cap = await alice.obtain_capability(media.id, edge_url=edge_url(dm))
    await alice.send_sealed(conv["id"], edge_url=edge_url(dm), media_id=media.id)
    first = bob.open_message(await last_message(bob, conv["id"])).grant or ""
    await asyncio.sleep(0)
    spare = alice.capabilities._spares[(media.id, 1)][0]
    other = await alice.link_device()
    await other._edge(edge_url(dm)).revoke_capability(cap["cap_id"])
    url = f"{edge_url(dm)}/m/{media.id}"
    await wait_until(lambda: _is(fetch_code(bob, url, first), (410, "capability_revoked")), 2)
    assert alice.capabilities.stored(media.id) == cap  # this device does not know
    sent = await alice.send_sealed(conv["id"], edge_url=edge_url(dm), media_id=media.id)
    second = await _grant(bob, conv["id"], sent["id"])
    assert second == spare.token
    assert await fetch_code(bob, url, second) == (410, "capability_revoked")


async def test_revoking_right_after_a_share_leaves_no_spare_of_the_old_capability(
    dm: DmStack,
) -> None:
    """send_sealed schedules the next spare with call_soon; revoke_capability right after
    lets it run during the edge round trip (a spare of the capability being revoked): the
    forget drops it, and after a new capability the next share's grant is the new one's."""
    alice, bob = await sealed_user(dm), await sealed_user(dm)
    media, _ = await dm.edge.add_media(owner=alice.uid)
    conv = await alice.create_conversation([bob.uid], mode="sealed")
    old = await alice.obtain_capability(media.id, edge_url=edge_url(dm))
    made: list[str | None] = []
    prepare = alice._prepare_spare

    def recording(media_id: str | None, redeemers: int) -> None:
        prepare(media_id, redeemers)
        held = alice.capabilities.stored(media_id or "")
        made.append(held["cap_id"] if held and alice.capabilities._spares else None)

    alice._prepare_spare = recording  # type: ignore[method-assign]
    sent = await alice.send_sealed(conv["id"], edge_url=edge_url(dm), media_id=media.id)
    await alice.revoke_capability(media.id, edge_url=edge_url(dm))  # no await in between
    assert made == [old["cap_id"]]  # the spare was made while the revocation was in flight
    assert alice.capabilities._spares == {} and alice.capabilities.stored(media.id) is None
    new = await alice.obtain_capability(media.id, edge_url=edge_url(dm))
    assert new["cap_id"] != old["cap_id"]
    url = f"{edge_url(dm)}/m/{media.id}"
    first = await _grant(bob, conv["id"], sent["id"])
    await wait_until(lambda: _is(fetch_code(bob, url, first), (410, "capability_revoked")), 2)
    sent = await alice.send_sealed(conv["id"], edge_url=edge_url(dm), media_id=media.id)
    assert await fetch_code(bob, url, await _grant(bob, conv["id"], sent["id"])) == (206, "")


async def test_concurrent_shares_never_carry_the_same_grant(dm: DmStack) -> None:
    """Two send_sealed calls for one media and N at once, with a spare ready: one takes it,
    the other derives its own; each binds its own N, and unsending one revokes only it."""
    alice, bob, carol, dave = [await sealed_user(dm) for _ in range(4)]
    media, _ = await dm.edge.add_media(owner=alice.uid)
    to_bob = await alice.create_conversation([bob.uid], mode="sealed")
    to_carol = await alice.create_conversation([carol.uid], mode="sealed")
    await alice.obtain_capability(media.id, edge_url=edge_url(dm))
    await alice.send_sealed(to_bob["id"], edge_url=edge_url(dm), media_id=media.id)
    await asyncio.sleep(0)
    spare = alice.capabilities._spares[(media.id, 1)][0]
    a, b = await asyncio.gather(
        alice.send_sealed(to_bob["id"], edge_url=edge_url(dm), media_id=media.id),
        alice.send_sealed(to_carol["id"], edge_url=edge_url(dm), media_id=media.id),
    )
    ga, gb = await _grant(bob, to_bob["id"], a["id"]), await _grant(carol, to_carol["id"], b["id"])
    assert ga != gb and spare.token in (ga, gb)
    sent_a, sent_b = (
        alice.derived_grant_of(to_bob["id"], a["id"]),
        alice.derived_grant_of(to_carol["id"], b["id"]),
    )
    assert sent_a is not None and sent_b is not None
    assert (sent_a.token, sent_b.token) == (ga, gb)
    url = f"{edge_url(dm)}/m/{media.id}"
    assert await fetch_code(bob, url, ga) == (206, "")
    assert await fetch_code(carol, url, gb) == (206, "")
    assert await fetch_code(dave, url, ga) == (403, "grant_exhausted")
    assert await fetch_code(bob, url, gb) == (403, "grant_exhausted")
    await alice.unsend(to_bob["id"], a["id"])
    await wait_until(lambda: _is(fetch_code(bob, url, ga), (410, "grant_revoked")), 2)
    assert await fetch_code(carol, url, gb) == (206, "")
