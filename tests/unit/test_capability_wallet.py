"""The device's wallet: grants derived from a capability parsed once, and spare grants made
ahead of a share (dm.capabilities).  A spare must be a grant the edge accepts, be handed
out once, never outlive its capability in the wallet, and never be older than the bound."""

from __future__ import annotations

import time
from typing import Any

import pytest

from cdn_auth import capability as cap_mod
from dm import capabilities as wallet_mod
from dm.capabilities import MAX_SPARES, SPARE_MAX_AGE_S, CapabilityWallet

from ..support.wallet import (
    CAP_TTL_S,
    HOLDER,
    MALLORY,
    T0,
    VECTORS,
    Clock,
    held_capability,
    verified,
)

_capability = held_capability
_verified = verified


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def wallet(clock: Clock) -> CapabilityWallet:
    w = CapabilityWallet(HOLDER, clock=clock)
    w.hold(_capability("m_1", "c_1"))
    return w


def test_the_parsed_derivation_makes_the_vectors_bytes() -> None:
    """Derivation (the capability parsed once) and derive() are one format, byte for byte."""
    for case, cap in (
        (VECTORS["derived"][0], VECTORS["capabilities"][0]),
        (VECTORS["derived"][1], VECTORS["capabilities"][2]),
    ):
        d = case["claims"]
        got = cap_mod.Derivation(HOLDER, cap["token"]).derive(
            max_redeemers=d["max_redeemers"],
            now=d["iat"],
            ttl_s=d["exp"] - d["iat"],
            nonce=bytes.fromhex(d["nonce_hex"]),
        )
        assert got == (case["token"], d["grant_id"])


def test_a_spare_is_a_grant_the_edge_accepts_and_is_handed_out_once(
    wallet: CapabilityWallet, clock: Clock
) -> None:
    assert wallet.prepare("m_1", 1)
    clock.now += 30  # the share comes later
    first = wallet.derive("m_1", 1)
    second = wallet.derive("m_1", 1)  # no spare left: made now
    assert first is not None and second is not None
    assert first.grant_id != second.grant_id and first.token != second.token
    d = _verified(first.token, clock.now)
    assert (d.grant_id, d.max_redeemers, d.iat) == (first.grant_id, 1, int(T0))
    assert _verified(second.token, clock.now).iat == int(clock.now)


def test_preparing_twice_keeps_the_one_fresh_spare(wallet: CapabilityWallet) -> None:
    assert wallet.prepare("m_1", 1) and wallet.prepare("m_1", 1)
    first = wallet.derive("m_1", 1)
    assert wallet.derive("m_1", 1) != first


def test_a_spare_is_only_for_its_number_of_redeemers(wallet: CapabilityWallet, clock: Clock) -> None:
    wallet.prepare("m_1", 1)
    two = wallet.derive("m_1", 2)
    assert two is not None and _verified(two.token, clock.now).max_redeemers == 2
    one = wallet.derive("m_1", 1)
    assert one is not None and _verified(one.token, clock.now).max_redeemers == 1


def test_an_old_spare_is_not_used(wallet: CapabilityWallet, clock: Clock) -> None:
    wallet.prepare("m_1", 1)
    clock.now += SPARE_MAX_AGE_S + 1
    g = wallet.derive("m_1", 1)
    assert g is not None and _verified(g.token, clock.now).iat == int(clock.now)


def test_a_spare_made_in_the_future_is_not_used(wallet: CapabilityWallet, clock: Clock) -> None:
    """A clock stepped back (NTP) after the spare was made: the spare is not trusted."""
    wallet.prepare("m_1", 1)
    clock.now -= 120
    g = wallet.derive("m_1", 1)
    assert g is not None and _verified(g.token, T0).iat == int(T0) - 120


def test_forgetting_a_capability_drops_its_spares(wallet: CapabilityWallet) -> None:
    wallet.prepare("m_1", 1)
    assert wallet.forget("m_1") is not None
    assert wallet.derive("m_1", 1) is None
    assert not wallet.prepare("m_1", 1)


def test_a_new_capability_replaces_the_old_ones_spares(wallet: CapabilityWallet, clock: Clock) -> None:
    """After the old capability is replaced (e.g. revoked, then a new one obtained), no
    grant derived from the old one comes out of the wallet."""
    wallet.prepare("m_1", 1)
    wallet.hold(_capability("m_1", "c_2"))
    g = wallet.derive("m_1", 1)
    assert g is not None and _verified(g.token, clock.now).capability.cap_id == "c_2"


def test_an_expiring_capability_gives_no_spare(wallet: CapabilityWallet, clock: Clock) -> None:
    wallet.prepare("m_1", 1)
    clock.now = T0 + CAP_TTL_S - wallet_mod.MIN_REMAINING_S + 1
    assert wallet.derive("m_1", 1) is None
    assert not wallet.prepare("m_1", 1)


def test_a_capability_for_another_key_is_not_held(clock: Clock) -> None:
    w = CapabilityWallet(HOLDER, clock=clock)
    with pytest.raises(ValueError, match="another holder"):
        w.hold(_capability("m_1", "c_1", holder=MALLORY))
    assert w.stored("m_1") is None and w.derive("m_1", 1) is None


def test_spares_are_bounded(clock: Clock) -> None:
    w = CapabilityWallet(HOLDER, clock=clock)
    for i in range(MAX_SPARES + 5):
        w.hold(_capability(f"m_{i}", f"c_{i}"))
        clock.now += 1
        assert w.prepare(f"m_{i}", 1)
    spares: dict[Any, Any] = w._spares
    assert len(spares) == MAX_SPARES
    assert ("m_0", 1) not in spares and (f"m_{MAX_SPARES + 4}", 1) in spares


def test_a_non_default_lifetime_is_never_a_spare(wallet: CapabilityWallet, clock: Clock) -> None:
    wallet.prepare("m_1", 1)
    g = wallet.derive("m_1", 1, ttl_s=300)
    assert g is not None and _verified(g.token, clock.now).exp == int(clock.now) + 300


@pytest.mark.parametrize(("idle_s", "taken"), [(300, True), (400, False)])
def test_a_spare_is_taken_only_while_nearly_as_good_as_a_fresh_grant(
    clock: Clock, idle_s: int, taken: bool
) -> None:
    """With grants of an hour, a spare may fall short of a fresh grant's expiry by at most
    a tenth of that (360 s), however young SPARE_MAX_AGE_S would allow it to be."""
    cap = _capability("m_1", "c_1")
    cap["max_grant_ttl_s"] = 3600
    w = CapabilityWallet(HOLDER, clock=clock)
    w.hold(cap)
    w.prepare("m_1", 1)
    clock.now += idle_s
    g = w.derive("m_1", 1)
    assert g is not None
    assert (_verified(g.token, clock.now).iat == int(T0)) is taken
    assert g.expires_at - clock.now >= 3600 - 360


def test_a_capability_near_its_end_is_not_usable_but_can_still_be_revoked(
    wallet: CapabilityWallet, clock: Clock
) -> None:
    """Round 10's note: held() used to drop it, so revoke_capability (which looks it up
    with stored()) silently did nothing in its last minute."""
    wallet.prepare("m_1", 1)
    clock.now = T0 + CAP_TTL_S - wallet_mod.MIN_REMAINING_S + 1
    assert wallet.held("m_1") is None and wallet.derive("m_1", 1) is None
    stored = wallet.stored("m_1")
    assert stored is not None and stored["cap_id"] == "c_1"
    assert not wallet._spares
    assert wallet.forget("m_1", "c_1") == stored and wallet.stored("m_1") is None


async def test_sent_grants_kept_for_unsend_are_bounded() -> None:
    """One entry per sealed message sent used to be kept forever; past the threshold the
    expired ones (nothing left to revoke) are dropped, the live ones kept."""
    from dm import client as client_mod
    from dm.capabilities import DerivedGrant

    c = client_mod.DmClient("http://127.0.0.1:9")
    try:
        now = int(time.time())
        for i in range(client_mod.DERIVED_SENT_PRUNE_AT):
            exp = now - 10 if i % 2 else now + 3600
            c._remember_derived(("c_1", f"m{i}"), DerivedGrant(f"t{i}", f"d_{i}", exp), None)
        c._remember_derived(("c_1", "last"), DerivedGrant("t", "d_last", now + 3600), None)
        assert len(c._derived_sent) == client_mod.DERIVED_SENT_PRUNE_AT // 2 + 1
        assert c.derived_grant_of("c_1", "m0") is not None
        assert c.derived_grant_of("c_1", "m1") is None
    finally:
        await c.close()
