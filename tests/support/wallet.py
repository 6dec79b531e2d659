"""A device wallet's test fixtures: the vector keys, a capability as the edge's
``POST /v1/capabilities`` answers it, a settable clock, and the edge's check of a derived
grant (tests/unit/test_capability_wallet.py, test_redteam_round10.py)."""

from __future__ import annotations

import json

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cdn_auth import capability as cap_mod
from cdn_auth import token_format as tf
from cdn_auth.token_format import Alg, SigningKey, VerifyKey
from dm.sdk_types import Capability

from .paths import VECTORS_DIR

VECTORS = json.loads((VECTORS_DIR / "capability_v1.json").read_text())
KEYS = VECTORS["keys"]
RING = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(KEYS["ring_ed25519"]["private_seed_hex"]))
HOLDER = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(KEYS["holder"]["private_seed_hex"]))
MALLORY = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(KEYS["mallory"]["private_seed_hex"]))
VERIFY = {"k1": VerifyKey("k1", Alg.ED25519, RING.public_key())}
T0 = 1_700_000_000.0
CAP_TTL_S = 6 * 3600


class Clock:
    """A wallet's clock, set by the test."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def held_capability(
    media_id: str,
    cap_id: str,
    *,
    n: int = 2,
    grant_ttl_s: int = CAP_TTL_S,
    now: float = T0,
    holder: Ed25519PrivateKey = HOLDER,
) -> Capability:
    """A capability for ``holder``'s key, signed by the vector ring, as the edge returns it."""
    token = cap_mod.mint(
        SigningKey("k1", Alg.ED25519, RING),
        cap_id=cap_id,
        media_id=media_id,
        holder="alice",
        holder_key=holder.public_key().public_bytes_raw(),
        max_redeemers=n,
        max_grants=100,
        now=now,
        ttl_s=CAP_TTL_S,
    )
    return Capability(
        capability=token,
        cap_id=cap_id,
        media_id=media_id,
        holder="alice",
        max_redeemers=n,
        max_grants=100,
        sources=[],
        expires_at=int(now) + CAP_TTL_S,
        max_grant_ttl_s=grant_ttl_s,
    )


def verified(token: str, now: float, leeway_s: int = tf.DEFAULT_LEEWAY_S) -> cap_mod.Derived:
    """A derived grant as the edge verifies it (raises what the edge would refuse)."""
    return cap_mod.verify_derived(
        token,
        VERIFY,
        now,
        max_lifetime_s=CAP_TTL_S,
        max_capability_lifetime_s=CAP_TTL_S,
        leeway_s=leeway_s,
    )
