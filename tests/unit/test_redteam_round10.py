"""Red-team round 10 (unit): the wallet's spare grants and the parsed-once Derivation.

A spare is made while idle and handed out at a later share, so its lifetime runs from when
it was made: with a short edge token lifetime (``max_grant_ttl_s``, the edges'
``max_token_lifetime_s``, allowed down to 10 s) the wallet handed out a grant already
expired or shorter than the wallet itself accepts for a capability (fixed: a spare is taken
only while its expiry is within a tenth of a lifetime of a fresh grant's).  The other
tests pin what holds: a spare is handed out once, only for its media and N, always from the
capability held at the time, never with an iat after the wallet's clock, and Derivation
refuses everything the old derive() refused.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cdn_auth import capability as cap_mod
from dm.capabilities import MAX_SPARES, MIN_REMAINING_S, SPARE_MAX_AGE_S, CapabilityWallet
from dm.sdk_types import Capability

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


def _capability(media_id: str, cap_id: str, **kw: Any) -> Capability:
    return held_capability(media_id, cap_id, **{"n": 4, **kw})


_verified = verified


@pytest.mark.parametrize("idle_s", [250, 400])
def test_a_spare_is_never_handed_out_with_less_life_than_the_wallet_accepts(idle_s: int) -> None:
    """Edges configured with a short token lifetime (max_token_lifetime_s=300): the share
    made ``idle_s`` after the previous one takes the spare made then."""
    assert idle_s <= SPARE_MAX_AGE_S  # a spare the wallet still considers fresh
    clock = Clock()
    wallet = CapabilityWallet(HOLDER, clock=clock)
    wallet.hold(_capability("m_1", "c_1", grant_ttl_s=300))
    assert wallet.prepare("m_1", 1)
    clock.now += idle_s
    got = wallet.derive("m_1", 1)
    assert got is not None
    # A fresh grant would live 300 s; the share's grant must at least not be (nearly) dead.
    assert got.expires_at - clock.now >= MIN_REMAINING_S


def test_spares_always_come_from_the_held_capability_and_are_never_repeated() -> None:
    """A seeded random walk over hold (a new capability), forget, prepare, derive and a
    clock that jumps both ways: every grant handed out is new, for the asked N, from the
    capability held at that moment, with an iat not after the wallet's clock and an exp
    within that capability; the spares stay bounded."""
    rng = random.Random(10)
    clock = Clock()
    wallet = CapabilityWallet(HOLDER, clock=clock)
    media = ["m_1", "m_2", "m_3"]
    held: dict[str, str] = {}
    seen: set[str] = set()
    serial = 0
    for _ in range(600):
        op = rng.random()
        m = rng.choice(media)
        n = rng.randint(1, 4)
        if op < 0.12:
            serial += 1
            cap = _capability(m, f"c_{serial}", now=clock.now)
            wallet.hold(cap)
            held[m] = cap["cap_id"]
        elif op < 0.18:
            wallet.forget(m)
            held.pop(m, None)
        elif op < 0.45:
            assert wallet.prepare(m, n) == (m in held)
        elif op < 0.85:
            got = wallet.derive(m, n)
            if m not in held:
                assert got is None
                continue
            assert got is not None and got.grant_id not in seen
            seen.add(got.grant_id)
            d = _verified(got.token, clock.now, leeway_s=3600)  # capabilities minted before a step back
            assert (d.capability.cap_id, d.capability.media_id, d.max_redeemers) == (held[m], m, n)
            assert d.iat <= clock.now and d.exp <= d.capability.exp
            assert clock.now - d.iat <= SPARE_MAX_AGE_S
        else:
            clock.now += rng.choice([-300, -5, 1, 30, 200, SPARE_MAX_AGE_S + 1])
        assert all(k[0] in held for k in wallet._spares)
        assert len(wallet._spares) <= MAX_SPARES


def _old(key: Ed25519PrivateKey, cap: str, **kw: Any) -> Callable[[], object]:
    return lambda: cap_mod.derive(key, cap, **kw)


def _new(key: Ed25519PrivateKey, cap: str, **kw: Any) -> Callable[[], object]:
    return lambda: cap_mod.Derivation(key, cap).derive(**kw)


CAP = _capability("m_1", "c_1", n=2)["capability"]
DERIVED_TOKEN = VECTORS["derived"][0]["token"]
GOOD: dict[str, Any] = {"max_redeemers": 1, "now": T0, "ttl_s": 600}


@pytest.mark.parametrize(
    ("case", "key", "cap", "kw"),
    [
        ("a derived grant as the capability", HOLDER, DERIVED_TOKEN, GOOD),
        ("another holder's key", MALLORY, CAP, GOOD),
        ("N = 0", HOLDER, CAP, {**GOOD, "max_redeemers": 0}),
        ("N above the capability's", HOLDER, CAP, {**GOOD, "max_redeemers": 3}),
        ("the capability expired", HOLDER, CAP, {**GOOD, "now": T0 + CAP_TTL_S}),
        ("a zero ttl", HOLDER, CAP, {**GOOD, "ttl_s": 0}),
        ("a short nonce", HOLDER, CAP, {**GOOD, "nonce": bytes(15)}),
        ("a long nonce", HOLDER, CAP, {**GOOD, "nonce": bytes(17)}),
    ],
)
def test_derivation_refuses_what_derive_refused(
    case: str, key: Ed25519PrivateKey, cap: str, kw: dict[str, Any]
) -> None:
    for make in (_old, _new):
        with pytest.raises(ValueError):
            make(key, cap, **kw)()


def test_one_derivation_makes_distinct_grants_capped_at_its_capability() -> None:
    derivation = cap_mod.Derivation(HOLDER, CAP)
    grants = {derivation.derive(max_redeemers=2, now=T0, ttl_s=600) for _ in range(20)}
    assert len({g[1] for g in grants}) == 20
    token, _ = derivation.derive(max_redeemers=1, now=T0 + CAP_TTL_S - 10, ttl_s=600)
    assert _verified(token, T0 + CAP_TTL_S - 10).exp == int(T0) + CAP_TTL_S
