"""The capability and derived-grant parsers take hostile input (a derived grant comes from
any client in ``X-Grant``): every input is a declared token error, never another
exception.  Properties, as tests/integration/test_parsers_property.py states them for
pointers and grants."""

from __future__ import annotations

import struct
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdn_auth import capability as cap_mod
from cdn_auth import token_format as tf
from cdn_auth.errors import TokenError
from service_kernel.encoding import b64url_decode, b64url_encode

RING = Ed25519PrivateKey.from_private_bytes(bytes([1]) * 32)
HOLDER = Ed25519PrivateKey.from_private_bytes(bytes([3]) * 32)
SIGNER = tf.SigningKey("k1", tf.Alg.ED25519, RING)
KEYS = {"k1": tf.VerifyKey("k1", tf.Alg.ED25519, RING.public_key())}
FAST = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
NOW = 1_700_000_100


def _verify(token: str, now: float = NOW) -> None:
    cap_mod.verify_derived(token, KEYS, now, max_lifetime_s=900, max_capability_lifetime_s=21600)


def _capability() -> str:
    return cap_mod.mint(
        SIGNER,
        cap_id="c_1",
        media_id="m_1",
        holder="alice",
        holder_key=HOLDER.public_key().public_bytes_raw(),
        max_redeemers=4,
        max_grants=10,
        sources=("g_1",),
        now=NOW - 100,
        ttl_s=3600,
    )


@FAST
@given(
    token=st.text(max_size=400)
    | st.from_regex(r"AUQBAWg[A-Za-z0-9_-]{0,300}\.[A-Za-z0-9_-]{0,100}", fullmatch=True)
)
def test_any_text_is_a_token_error(token: str) -> None:
    with pytest.raises(TokenError):
        _verify(token)


@FAST
@given(fields=st.binary(max_size=400), iat=st.integers(0, 2**64 - 1), life=st.integers(0, 2**64 - 1))
def test_holder_signed_garbage_is_a_token_error(fields: bytes, iat: int, life: int) -> None:
    """A correctly holder-signed derived grant around any bytes."""
    body = (
        struct.pack(">BBBB", 1, 0x44, 1, 1)
        + b"h"
        + struct.pack(">QQ", iat, min(iat + life, 2**64 - 1))
        + fields
    )
    token = b64url_encode(body) + "." + b64url_encode(HOLDER.sign(cap_mod.HOLDER_CONTEXT + body))
    if len(token) > tf.MAX_TOKEN_CHARS:
        token = token[: tf.MAX_TOKEN_CHARS]
    with pytest.raises(TokenError):
        _verify(token, float(iat + 1))


@FAST
@given(fields=st.binary(max_size=300))
def test_ring_signed_capability_garbage_is_a_token_error(fields: bytes) -> None:
    """A key holder's bug minting any capability fields: refused, whatever they are."""
    token = tf.encode(tf.TokenType.CAPABILITY, SIGNER, NOW, NOW + 60, fields)
    try:
        cap_mod.verify(token, KEYS, NOW, max_lifetime_s=3600)
    except TokenError:
        return
    # Only well-formed fields parse; then re-encoding them gives the same bytes.
    c = cap_mod.verify(token, KEYS, NOW, max_lifetime_s=3600)
    again = cap_mod.mint(
        SIGNER,
        cap_id=c.cap_id,
        media_id=c.media_id,
        holder=c.holder,
        holder_key=c.holder_key,
        max_redeemers=c.max_redeemers,
        max_grants=c.max_grants,
        sources=c.sources,
        now=NOW,
        ttl_s=60,
    )
    assert again == token


@FAST
@given(data=st.data())
def test_any_flipped_byte_of_a_real_derived_grant_is_refused(data: st.DataObject) -> None:
    good, _ = cap_mod.derive(HOLDER, _capability(), max_redeemers=2, now=NOW, ttl_s=300)
    _verify(good)
    body, _, sig = good.partition(".")
    raw = bytearray(b64url_decode(body))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= data.draw(st.integers(1, 255))
    with pytest.raises(TokenError):
        _verify(b64url_encode(bytes(raw)) + "." + sig)


def test_a_real_derived_grant_verifies_only_within_its_times() -> None:
    good, _ = cap_mod.derive(HOLDER, _capability(), max_redeemers=2, now=NOW, ttl_s=300)
    _verify(good)
    for now in (NOW - 6, NOW + 306, time.time() + 10**6):
        with pytest.raises(TokenError):
            _verify(good, now)
