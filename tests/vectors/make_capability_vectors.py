"""Regenerate tests/vectors/capability_v1.json (run from the repo root).

Capabilities ('C', type 0x43) and derived grants ('D', type 0x44); docs/protocol.md,
section 14.  The keys are fixed and public (test only).  Ed25519 and HMAC are
deterministic and the nonces fixed, so the valid tokens are exact expected outputs of
``cdn_auth.capability.mint`` and ``.derive``.  Every token here is built by the byte
builders below, written from the spec and not from cdn_auth's code, so the vectors check
the implementation against the spec; the invalid ones hit one check each.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from service_kernel.encoding import b64url_encode

RING_SEED = bytes([1]) * 32  # ring key k1 (the pointer vectors' key)
HMAC_KEY = bytes([2]) * 32  # ring key h1
HOLDER_SEED = bytes([3]) * 32  # alice's device holder key
MALLORY_SEED = bytes([4]) * 32
RING_CONTEXT = b"cdn-auth/v1\x00"
HOLDER_CONTEXT = b"pointer-dm/derived-grant/v1\x00"
CAP_IAT, CAP_TTL = 1_700_000_000, 21_600
D_IAT, D_TTL = 1_700_000_100, 900
NONCE = bytes(range(16))
MAX_LIFETIME_S, MAX_CAPABILITY_LIFETIME_S, LEEWAY_S = 900, 21_600, 5


def _s(value: str) -> bytes:
    raw = value.encode()
    return bytes([len(raw)]) + raw


def _pub(seed: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()


def cap_body(
    *,
    kid: str = "k1",
    alg: int = 1,
    iat: int = CAP_IAT,
    exp: int = CAP_IAT + CAP_TTL,
    cap_id: str = "c_demo",
    media_id: str = "m_demo",
    holder: str = "alice",
    holder_key: bytes | None = None,
    max_redeemers: int = 2,
    max_grants: int = 10,
    sources: tuple[str, ...] = (),
    type_: int = 0x43,
    extra: bytes = b"",
) -> bytes:
    k = kid.encode()
    hk = _pub(HOLDER_SEED) if holder_key is None else holder_key
    return (
        struct.pack(">BBBB", 1, type_, alg, len(k))
        + k
        + struct.pack(">QQ", iat, exp)
        + _s(cap_id)
        + _s(media_id)
        + _s(holder)
        + bytes([len(hk)])
        + hk
        + struct.pack(">HH", max_redeemers, max_grants)
        + bytes([len(sources)])
        + b"".join(_s(x) for x in sources)
        + extra
    )


def ring_sign(body: bytes, alg: int = 1) -> bytes:
    if alg == 2:
        return hmac.new(HMAC_KEY, RING_CONTEXT + body, hashlib.sha256).digest()
    return Ed25519PrivateKey.from_private_bytes(RING_SEED).sign(RING_CONTEXT + body)


def token(body: bytes, sig: bytes) -> str:
    return b64url_encode(body) + "." + b64url_encode(sig)


def derived(
    cap: bytes,
    cap_sig: bytes,
    *,
    n: int = 2,
    iat: int = D_IAT,
    exp: int = D_IAT + D_TTL,
    nonce: bytes = NONCE,
    signer: bytes = HOLDER_SEED,
    kid: str = "h",
    alg: int = 1,
    extra: bytes = b"",
) -> str:
    k = kid.encode()
    body = (
        struct.pack(">BBBB", 1, 0x44, alg, len(k))
        + k
        + struct.pack(">QQ", iat, exp)
        + struct.pack(">H", len(cap))
        + cap
        + bytes([len(cap_sig)])
        + cap_sig
        + bytes([len(nonce)])
        + nonce
        + struct.pack(">H", n)
        + extra
    )
    sig = Ed25519PrivateKey.from_private_bytes(signer).sign(HOLDER_CONTEXT + body)
    return token(body, sig)


def grant_id(cap_id: str, nonce: bytes) -> str:
    return "d_" + b64url_encode(hashlib.sha256(cap_id.encode() + nonce).digest()[:16])


def main() -> None:
    cap = cap_body()
    cap_sig = ring_sign(cap)
    reshare = cap_body(cap_id="c_reshare", holder="bob", sources=("d_source", "c_upstream"))
    reshare_sig = ring_sign(reshare)
    cap_h = cap_body(kid="h1", alg=2)
    cap_h_sig = ring_sign(cap_h, alg=2)
    tampered = cap_body(max_redeemers=1024)  # alice raises her own bounds; ring sig is old
    short_cap = cap_body(exp=CAP_IAT + 600)
    long_cap = cap_body(exp=CAP_IAT + 90_000)
    as_grant = cap_body(type_=0x47)
    cap_claims = {
        "cap_id": "c_demo",
        "media_id": "m_demo",
        "holder": "alice",
        "holder_key_hex": _pub(HOLDER_SEED).hex(),
        "max_redeemers": 2,
        "max_grants": 10,
        "sources": [],
        "iat": CAP_IAT,
        "exp": CAP_IAT + CAP_TTL,
        "kid": "k1",
    }
    d_claims = {
        "grant_id": grant_id("c_demo", NONCE),
        "cap_id": "c_demo",
        "media_id": "m_demo",
        "holder": "alice",
        "max_redeemers": 2,
        "nonce_hex": NONCE.hex(),
        "iat": D_IAT,
        "exp": D_IAT + D_TTL,
    }
    now = D_IAT + 10
    doc = {
        "description": "Capability ('C') and derived grant ('D') format v1 vectors; "
        "see docs/protocol.md, section 14",
        "keys": {
            "ring_ed25519": {"kid": "k1", "private_seed_hex": RING_SEED.hex()},
            "ring_hmac": {"kid": "h1", "secret_hex": HMAC_KEY.hex()},
            "holder": {"private_seed_hex": HOLDER_SEED.hex(), "public_hex": _pub(HOLDER_SEED).hex()},
            "mallory": {"private_seed_hex": MALLORY_SEED.hex()},
        },
        "max_lifetime_s": MAX_LIFETIME_S,
        "max_capability_lifetime_s": MAX_CAPABILITY_LIFETIME_S,
        "leeway_s": LEEWAY_S,
        "capabilities": [
            {
                "name": "owner_ed25519",
                "now": now,
                "token": token(cap, cap_sig),
                "body_hex": cap.hex(),
                "claims": cap_claims,
            },
            {
                "name": "reshare_ed25519",
                "now": now,
                "token": token(reshare, reshare_sig),
                "claims": {
                    **cap_claims,
                    "cap_id": "c_reshare",
                    "holder": "bob",
                    "sources": ["d_source", "c_upstream"],
                },
            },
            {
                "name": "owner_hmac",
                "now": now,
                "token": token(cap_h, cap_h_sig),
                "claims": {**cap_claims, "kid": "h1"},
            },
        ],
        "derived": [
            {
                "name": "from_ed25519_capability",
                "now": now,
                "token": derived(cap, cap_sig),
                "claims": d_claims,
            },
            {
                "name": "from_hmac_capability",
                "now": now,
                "token": derived(cap_h, cap_h_sig),
                "claims": d_claims,
            },
            {
                "name": "one_redeemer_at_capability_expiry",
                "now": CAP_IAT + CAP_TTL - 300,
                "token": derived(cap, cap_sig, n=1, iat=CAP_IAT + CAP_TTL - 600, exp=CAP_IAT + CAP_TTL),
                "claims": {
                    **d_claims,
                    "max_redeemers": 1,
                    "iat": CAP_IAT + CAP_TTL - 600,
                    "exp": CAP_IAT + CAP_TTL,
                },
            },
        ],
        "invalid_capabilities": [
            {
                "name": "max_grants_zero",
                "now": now,
                "error": "token_malformed",
                "token": token(b := cap_body(max_grants=0), ring_sign(b)),
            },
            {
                "name": "holder_key_31_bytes",
                "now": now,
                "error": "token_malformed",
                "token": token(b := cap_body(holder_key=bytes(31)), ring_sign(b)),
            },
            {
                "name": "nine_sources",
                "now": now,
                "error": "token_malformed",
                "token": token(b := cap_body(sources=tuple(f"g_{i}" for i in range(9))), ring_sign(b)),
            },
            {
                "name": "trailing_byte",
                "now": now,
                "error": "token_malformed",
                "token": token(b := cap_body(extra=b"\x00"), ring_sign(b)),
            },
            {
                "name": "lifetime_above_capability_maximum",
                "now": now,
                "error": "token_malformed",
                "token": token(long_cap, ring_sign(long_cap)),
            },
            {
                "name": "signed_by_holder_not_ring",
                "now": now,
                "error": "token_bad_signature",
                "token": token(
                    cap, Ed25519PrivateKey.from_private_bytes(HOLDER_SEED).sign(RING_CONTEXT + cap)
                ),
            },
        ],
        "invalid_derived": [
            {
                "name": "holder_signature_forged_by_mallory",
                "now": now,
                "error": "token_bad_signature",
                "token": derived(cap, cap_sig, signer=MALLORY_SEED),
            },
            {
                "name": "capability_bounds_raised_by_holder",
                "now": now,
                "error": "token_bad_signature",
                "token": derived(tampered, cap_sig),
            },
            {
                "name": "capability_signature_truncated",
                "now": now,
                "error": "token_bad_signature",
                "token": derived(cap, cap_sig[:63]),
            },
            {
                "name": "capability_from_unknown_ring_key",
                "now": now,
                "error": "token_unknown_key",
                "token": derived(b := cap_body(kid="k9"), ring_sign(b)),
            },
            {
                "name": "n_above_capability",
                "now": now,
                "error": "capability_bounds",
                "token": derived(cap, cap_sig, n=3),
            },
            {
                "name": "outlives_capability",
                "now": now,
                "error": "capability_bounds",
                "token": derived(short_cap, ring_sign(short_cap)),
            },
            {
                "name": "lifetime_above_token_maximum",
                "now": now,
                "error": "token_malformed",
                "token": derived(cap, cap_sig, exp=D_IAT + 901),
            },
            {
                "name": "n_zero",
                "now": now,
                "error": "capability_bounds",
                "token": derived(cap, cap_sig, n=0),
            },
            {
                "name": "expired",
                "now": D_IAT + D_TTL + 6,
                "error": "token_expired",
                "token": derived(cap, cap_sig),
            },
            {
                "name": "not_yet_valid",
                "now": D_IAT - 6,
                "error": "token_not_yet_valid",
                "token": derived(cap, cap_sig),
            },
            {
                "name": "capability_expired",
                "now": CAP_IAT + CAP_TTL + 6,
                "error": "token_expired",
                "token": derived(cap, cap_sig, iat=CAP_IAT + CAP_TTL - 100, exp=CAP_IAT + CAP_TTL),
            },
            {
                "name": "holder_alg_hmac",
                "now": now,
                "error": "token_malformed",
                "token": derived(cap, cap_sig, alg=2),
            },
            {
                "name": "holder_kid_not_h",
                "now": now,
                "error": "token_malformed",
                "token": derived(cap, cap_sig, kid="k1"),
            },
            {
                "name": "nonce_15_bytes",
                "now": now,
                "error": "token_malformed",
                "token": derived(cap, cap_sig, nonce=NONCE[:15]),
            },
            {
                "name": "trailing_byte",
                "now": now,
                "error": "token_malformed",
                "token": derived(cap, cap_sig, extra=b"\x00"),
            },
            {
                "name": "grant_body_in_place_of_capability",
                "now": now,
                "error": "token_wrong_type",
                "token": derived(as_grant, ring_sign(as_grant)),
            },
            {
                "name": "capability_presented_as_derived",
                "now": now,
                "error": "token_wrong_type",
                "token": token(cap, cap_sig),
            },
        ],
    }
    out = Path(__file__).with_name("capability_v1.json")
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
