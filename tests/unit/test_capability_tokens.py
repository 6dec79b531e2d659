"""Capability ('C') and derived grant ('D') formats against tests/vectors/capability_v1.json
(built from the spec by tests/vectors/make_capability_vectors.py), and the holder's side:
deriving refuses what the edge would refuse."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cdn_auth import capability as cap_mod
from cdn_auth import token_format as tf
from cdn_auth.errors import TokenError, TokenMalformed
from cdn_auth.token_format import MAX_TOKEN_CHARS, Alg, SigningKey, TokenType, VerifyKey

from ..support.paths import VECTORS_DIR

VECTORS = json.loads((VECTORS_DIR / "capability_v1.json").read_text())
KEYS = VECTORS["keys"]
RING = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(KEYS["ring_ed25519"]["private_seed_hex"]))
HMAC_SECRET = bytes.fromhex(KEYS["ring_hmac"]["secret_hex"])
HOLDER = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(KEYS["holder"]["private_seed_hex"]))
MALLORY = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(KEYS["mallory"]["private_seed_hex"]))
VERIFY = {
    "k1": VerifyKey("k1", Alg.ED25519, RING.public_key()),
    "h1": VerifyKey("h1", Alg.HMAC_SHA256, HMAC_SECRET),
}
LIMITS = {"leeway_s": VECTORS["leeway_s"]}


def _cap(token: str, now: float) -> cap_mod.Capability:
    return cap_mod.verify(
        token, VERIFY, now, max_lifetime_s=VECTORS["max_capability_lifetime_s"], **LIMITS
    )


def _derived(token: str, now: float) -> cap_mod.Derived:
    return cap_mod.verify_derived(
        token,
        VERIFY,
        now,
        max_lifetime_s=VECTORS["max_lifetime_s"],
        max_capability_lifetime_s=VECTORS["max_capability_lifetime_s"],
        **LIMITS,
    )


@pytest.mark.parametrize("case", VECTORS["capabilities"], ids=lambda c: c["name"])
def test_valid_capabilities(case: dict[str, Any]) -> None:
    c = _cap(case["token"], case["now"])
    want = dict(case["claims"])
    assert c.holder_key.hex() == want.pop("holder_key_hex")
    assert list(c.sources) == want.pop("sources")
    assert {k: getattr(c, k) for k in want} == want


@pytest.mark.parametrize("case", VECTORS["derived"], ids=lambda c: c["name"])
def test_valid_derived_grants(case: dict[str, Any]) -> None:
    d = _derived(case["token"], case["now"])
    want = case["claims"]
    got = {
        "grant_id": d.grant_id,
        "cap_id": d.capability.cap_id,
        "media_id": d.capability.media_id,
        "holder": d.capability.holder,
        "max_redeemers": d.max_redeemers,
        "nonce_hex": d.nonce.hex(),
        "iat": d.iat,
        "exp": d.exp,
    }
    assert got == want
    assert cap_mod.is_derived(case["token"])
    g = d.as_grant()  # the grant-keyed paths see the derived id and the holder as sharer
    assert (g.grant_id, g.media_id, g.sharer, g.exp) == (d.grant_id, "m_demo", "alice", d.exp)


@pytest.mark.parametrize("case", VECTORS["invalid_capabilities"], ids=lambda c: c["name"])
def test_invalid_capabilities(case: dict[str, Any]) -> None:
    with pytest.raises(TokenError) as info:
        _cap(case["token"], case["now"])
    assert info.value.code == case["error"]


@pytest.mark.parametrize("case", VECTORS["invalid_derived"], ids=lambda c: c["name"])
def test_invalid_derived_grants(case: dict[str, Any]) -> None:
    with pytest.raises(TokenError) as info:
        _derived(case["token"], case["now"])
    assert info.value.code == case["error"]


def test_mint_and_derive_reproduce_vectors() -> None:
    claims = VECTORS["capabilities"][0]["claims"]
    for kid, alg, secret, case in (
        ("k1", Alg.ED25519, RING, VECTORS["capabilities"][0]),
        ("h1", Alg.HMAC_SHA256, HMAC_SECRET, VECTORS["capabilities"][2]),
    ):
        token = cap_mod.mint(
            SigningKey(kid, alg, secret),
            cap_id=claims["cap_id"],
            media_id=claims["media_id"],
            holder=claims["holder"],
            holder_key=bytes.fromhex(claims["holder_key_hex"]),
            max_redeemers=claims["max_redeemers"],
            max_grants=claims["max_grants"],
            now=claims["iat"],
            ttl_s=claims["exp"] - claims["iat"],
        )
        assert token == case["token"]
    reshare = VECTORS["capabilities"][1]
    c = reshare["claims"]
    assert (
        cap_mod.mint(
            SigningKey("k1", Alg.ED25519, RING),
            cap_id=c["cap_id"],
            media_id=c["media_id"],
            holder=c["holder"],
            holder_key=bytes.fromhex(c["holder_key_hex"]),
            max_redeemers=c["max_redeemers"],
            max_grants=c["max_grants"],
            sources=tuple(c["sources"]),
            now=c["iat"],
            ttl_s=c["exp"] - c["iat"],
        )
        == reshare["token"]
    )
    for case, cap in (
        (VECTORS["derived"][0], VECTORS["capabilities"][0]),
        (VECTORS["derived"][1], VECTORS["capabilities"][2]),
    ):
        d = case["claims"]
        token, grant_id = cap_mod.derive(
            HOLDER,
            cap["token"],
            max_redeemers=d["max_redeemers"],
            now=d["iat"],
            ttl_s=d["exp"] - d["iat"],
            nonce=bytes.fromhex(d["nonce_hex"]),
        )
        assert (token, grant_id) == (case["token"], d["grant_id"])


def test_derive_refuses_what_the_edge_refuses() -> None:
    cap = VECTORS["capabilities"][0]["token"]
    iat = VECTORS["capabilities"][0]["claims"]["iat"]
    with pytest.raises(ValueError, match="another holder"):
        cap_mod.derive(MALLORY, cap, max_redeemers=1, now=iat, ttl_s=60)
    with pytest.raises(ValueError, match="max_redeemers"):
        cap_mod.derive(HOLDER, cap, max_redeemers=3, now=iat, ttl_s=60)
    with pytest.raises(ValueError, match="expired"):
        cap_mod.derive(HOLDER, cap, max_redeemers=1, now=iat + 10**6, ttl_s=60)
    # A grant asked to outlive its capability is cut to the capability's expiry.
    exp = VECTORS["capabilities"][0]["claims"]["exp"]
    token, _ = cap_mod.derive(HOLDER, cap, max_redeemers=1, now=exp - 100, ttl_s=900)
    assert _derived(token, exp - 50).exp == exp


def test_every_derivation_is_a_new_grant() -> None:
    cap = VECTORS["capabilities"][0]["token"]
    iat = VECTORS["capabilities"][0]["claims"]["iat"]
    ids = {cap_mod.derive(HOLDER, cap, max_redeemers=1, now=iat, ttl_s=60)[1] for _ in range(50)}
    assert len(ids) == 50


def test_a_real_sized_derived_grant_fits_the_token_limit() -> None:
    """Service ids (24 characters), a ring kid, 8 sources: still under 1024 characters."""
    ids = "x" * 22
    key = SigningKey("k20261123142254-55bb6e", Alg.ED25519, RING)
    verify = {key.kid: VerifyKey(key.kid, Alg.ED25519, RING.public_key())}
    cap = cap_mod.mint(
        key,
        cap_id="c_" + ids,
        media_id="m_" + ids,
        holder="u_" + ids,
        holder_key=HOLDER.public_key().public_bytes_raw(),
        max_redeemers=1024,
        max_grants=65535,
        sources=tuple(f"d_{i}" + ids[1:] for i in range(8)),
        now=1_700_000_000,
        ttl_s=3600,
    )
    token, grant_id = cap_mod.derive(HOLDER, cap, max_redeemers=1024, now=1_700_000_000, ttl_s=900)
    assert len(token) <= MAX_TOKEN_CHARS
    d = cap_mod.verify_derived(
        token, verify, 1_700_000_001, max_lifetime_s=900, max_capability_lifetime_s=3600
    )
    assert d.grant_id == grant_id and len(d.capability.sources) == 8


def test_capability_too_large_for_a_derived_grant_is_not_minted() -> None:
    with pytest.raises(ValueError, match="too large"):
        cap_mod.mint(
            SigningKey("k1", Alg.ED25519, RING),
            cap_id="c_1",
            media_id="m_1",
            holder="u" * 255,
            holder_key=HOLDER.public_key().public_bytes_raw(),
            max_redeemers=1,
            max_grants=1,
            sources=tuple("g" * 100 for _ in range(3)),
            now=0,
            ttl_s=60,
        )


# libsodium's blocklist (ge25519_has_small_order, ed25519_ref10.c), written out again here
# so a change to the product's list is caught.
SMALL_ORDER = [
    "0000000000000000000000000000000000000000000000000000000000000000",  # 0, order 4
    "0100000000000000000000000000000000000000000000000000000000000000",  # 1, order 1
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",  # order 8
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",  # order 8
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # p - 1, order 2
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # p (0), order 4
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # p + 1 (1), order 1
]


def _ring_signed_capability(holder_key: bytes) -> str:
    """A capability the ring signed for ``holder_key``, built without ``mint``'s checks."""
    fields = (
        tf.pack_string("c_1")
        + tf.pack_string("m_1")
        + tf.pack_string("alice")
        + tf.pack_bytes(holder_key)
        + tf.pack_u16(1)
        + tf.pack_u16(1)
        + bytes([0])
    )
    return tf.encode(TokenType.CAPABILITY, SigningKey("k1", Alg.ED25519, RING), 1000, 2000, fields)


@pytest.mark.parametrize("hex_key", SMALL_ORDER)
@pytest.mark.parametrize("sign", [0x00, 0x80], ids=["sign0", "sign1"])
def test_small_order_holder_key_is_refused(hex_key: str, sign: int) -> None:
    key = bytearray(bytes.fromhex(hex_key))
    key[31] |= sign  # libsodium masks the sign bit: both encodings are refused
    key_b = bytes(key)
    assert cap_mod.is_small_order(key_b)
    with pytest.raises(ValueError, match="small-order"):
        cap_mod.mint(
            SigningKey("k1", Alg.ED25519, RING),
            cap_id="c_1",
            media_id="m_1",
            holder="alice",
            holder_key=key_b,
            max_redeemers=1,
            max_grants=1,
            now=1000,
            ttl_s=1000,
        )
    with pytest.raises(TokenMalformed, match="small-order"):
        cap_mod.verify(_ring_signed_capability(key_b), VERIFY, 1500, max_lifetime_s=86400)


def test_a_normal_holder_key_is_not_small_order() -> None:
    key = HOLDER.public_key().public_bytes_raw()
    assert not cap_mod.is_small_order(key)
    cap = cap_mod.verify(_ring_signed_capability(key), VERIFY, 1500, max_lifetime_s=86400)
    assert cap.holder_key == key
