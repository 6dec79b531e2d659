"""Pointer format v1 against the vectors in tests/vectors/pointer_v1.json, and one test per attack."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cdn_auth import pointer
from cdn_auth.errors import TokenError, TokenMalformed
from cdn_auth.token_format import MAX_TOKEN_CHARS, Alg, SigningKey, VerifyKey

from ..support.paths import VECTORS_DIR

VECTORS = json.loads((VECTORS_DIR / "pointer_v1.json").read_text())


def _keys() -> dict[str, VerifyKey]:
    k = VECTORS["keys"]
    priv = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(k["ed25519"]["private_seed_hex"]))
    return {
        "k1": VerifyKey("k1", Alg.ED25519, priv.public_key()),
        "h1": VerifyKey("h1", Alg.HMAC_SHA256, bytes.fromhex(k["hmac"]["secret_hex"])),
    }


def _verify(token: str, now: float) -> pointer.Pointer:
    return pointer.verify(
        token, _keys(), now, max_lifetime_s=VECTORS["max_lifetime_s"], leeway_s=VECTORS["leeway_s"]
    )


@pytest.mark.parametrize("case", VECTORS["valid"], ids=lambda c: c["name"])
def test_valid_vectors(case: dict[str, Any]) -> None:
    p = _verify(case["token"], case["now"])
    assert {k: getattr(p, k) for k in case["claims"]} == case["claims"]


@pytest.mark.parametrize("case", VECTORS["invalid"], ids=lambda c: c["name"])
def test_invalid_vectors(case: dict[str, Any]) -> None:
    with pytest.raises(TokenError) as info:
        _verify(case["token"], case["now"])
    assert info.value.code == case["error"]


def test_mint_reproduces_vectors() -> None:
    k = VECTORS["keys"]
    ed = SigningKey(
        "k1",
        Alg.ED25519,
        Ed25519PrivateKey.from_private_bytes(bytes.fromhex(k["ed25519"]["private_seed_hex"])),
    )
    hm = SigningKey("h1", Alg.HMAC_SHA256, bytes.fromhex(k["hmac"]["secret_hex"]))
    for key, case in ((ed, VECTORS["valid"][0]), (hm, VECTORS["valid"][1])):
        c = case["claims"]
        token = pointer.mint(
            key,
            media_id=c["media_id"],
            sub=c["sub"],
            conversation_id=c["conversation_id"],
            message_id=c["message_id"],
            now=c["iat"],
            ttl_s=c["exp"] - c["iat"],
        )
        assert token == case["token"]


def test_token_is_url_safe_and_compact() -> None:
    token = VECTORS["valid"][0]["token"]
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
    assert len(token) < 200


def test_oversize_token_rejected_before_decoding() -> None:
    with pytest.raises(TokenMalformed):
        _verify("A" * (MAX_TOKEN_CHARS + 1) + ".AA", VECTORS["valid"][0]["now"])


def test_hmac_key_cannot_verify_ed25519_token() -> None:
    """A kid collision across key kinds must not let one kind verify the other."""
    ed_token = VECTORS["valid"][0]["token"]
    keys = {"k1": VerifyKey("k1", Alg.HMAC_SHA256, bytes(32))}
    with pytest.raises(TokenError):
        pointer.verify(ed_token, keys, VECTORS["valid"][0]["now"], max_lifetime_s=900)
