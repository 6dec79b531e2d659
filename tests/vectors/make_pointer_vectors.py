"""Regenerate tests/vectors/pointer_v1.json (run from the repo root).

The keys are fixed and public (test only).  Ed25519 and HMAC are
deterministic, so the valid tokens are exact expected outputs of
``cdn_auth.pointer.mint``; the invalid ones are built by hand to hit one
check each.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cdn_auth import pointer
from cdn_auth.token_format import SIGNING_CONTEXT, Alg, SigningKey
from service_kernel.encoding import b64url_decode, b64url_encode

ED_SEED = bytes([1]) * 32
HMAC_KEY = bytes([2]) * 32
IAT, EXP = 1_700_000_000, 1_700_000_300
CLAIMS = {"media_id": "m_demo", "sub": "bob", "conversation_id": "c_1", "message_id": "msg_1"}


def body(
    alg: int,
    kid: str,
    iat: int,
    exp: int,
    fields: list[str],
    type_: int = 0x50,
    version: int = 1,
    extra: bytes = b"",
) -> bytes:
    k = kid.encode()
    out = struct.pack(">BBBB", version, type_, alg, len(k)) + k + struct.pack(">QQ", iat, exp)
    for f in fields:
        out += bytes([len(f.encode())]) + f.encode()
    return out + extra


def ed_token(b: bytes) -> str:
    sig = Ed25519PrivateKey.from_private_bytes(ED_SEED).sign(SIGNING_CONTEXT + b)
    return b64url_encode(b) + "." + b64url_encode(sig)


def hmac_token(b: bytes, key: bytes = HMAC_KEY) -> str:
    sig = hmac.new(key, SIGNING_CONTEXT + b, hashlib.sha256).digest()
    return b64url_encode(b) + "." + b64url_encode(sig)


def main() -> None:
    ed = SigningKey("k1", Alg.ED25519, Ed25519PrivateKey.from_private_bytes(ED_SEED))
    hm = SigningKey("h1", Alg.HMAC_SHA256, HMAC_KEY)
    pub = ed.secret.public_key().public_bytes(  # type: ignore[union-attr]
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    fields = list(CLAIMS.values())
    valid_ed = pointer.mint(ed, now=IAT, ttl_s=EXP - IAT, **CLAIMS)
    valid_hm = pointer.mint(hm, now=IAT, ttl_s=EXP - IAT, **CLAIMS)
    b64_body, sig = valid_ed.split(".")
    last = b64_body[-1]
    noncanon = b64_body[:-1] + chr(ord(last) + 1) if last not in "9_-" else b64_body
    tampered = bytearray(b64url_decode(b64_body))
    tampered[-1] ^= 0x01
    doc = {
        "description": "Pointer token format v1 vectors; see docs/protocol.md",
        "keys": {
            "ed25519": {"kid": "k1", "private_seed_hex": ED_SEED.hex(), "public_hex": pub.hex()},
            "hmac": {"kid": "h1", "secret_hex": HMAC_KEY.hex()},
        },
        "max_lifetime_s": 900,
        "leeway_s": 5,
        "valid": [
            {
                "name": "ed25519",
                "token": valid_ed,
                "now": IAT + 100,
                "claims": {**CLAIMS, "iat": IAT, "exp": EXP, "kid": "k1"},
            },
            {
                "name": "hmac_sha256",
                "token": valid_hm,
                "now": IAT + 100,
                "claims": {**CLAIMS, "iat": IAT, "exp": EXP, "kid": "h1"},
            },
            {
                "name": "within_leeway_after_exp",
                "token": valid_ed,
                "now": EXP + 4,
                "claims": {**CLAIMS, "iat": IAT, "exp": EXP, "kid": "k1"},
            },
        ],
        "invalid": [
            {
                "name": "tampered_body",
                "now": IAT + 100,
                "error": "token_bad_signature",
                "token": b64url_encode(bytes(tampered)) + "." + sig,
            },
            {
                "name": "truncated_signature",
                "now": IAT + 100,
                "error": "token_bad_signature",
                "token": b64_body + "." + sig[:40],
            },
            {"name": "expired", "token": valid_ed, "now": EXP + 6, "error": "token_expired"},
            {"name": "future_dated", "token": valid_ed, "now": IAT - 60, "error": "token_not_yet_valid"},
            {
                "name": "unknown_kid",
                "now": IAT + 100,
                "error": "token_unknown_key",
                "token": ed_token(body(1, "k9", IAT, EXP, fields)),
            },
            {
                "name": "alg_confusion_hmac_with_public_key",
                "now": IAT + 100,
                "error": "token_bad_signature",
                "token": hmac_token(body(2, "k1", IAT, EXP, fields), key=pub),
            },
            {
                "name": "alg_byte_swapped_on_hmac_key",
                "now": IAT + 100,
                "error": "token_bad_signature",
                "token": ed_token(body(1, "h1", IAT, EXP, fields)),
            },
            {
                "name": "unknown_alg_none",
                "now": IAT + 100,
                "error": "token_malformed",
                "token": b64url_encode(body(0, "k1", IAT, EXP, fields)) + ".AA",
            },
            {
                "name": "wrong_version",
                "now": IAT + 100,
                "error": "token_malformed",
                "token": ed_token(body(1, "k1", IAT, EXP, fields, version=2)),
            },
            {
                "name": "grant_type_as_pointer",
                "now": IAT + 100,
                "error": "token_wrong_type",
                "token": ed_token(body(1, "k1", IAT, EXP, fields, type_=0x47)),
            },
            {
                "name": "trailing_bytes",
                "now": IAT + 100,
                "error": "token_malformed",
                "token": ed_token(body(1, "k1", IAT, EXP, fields, extra=b"\x00")),
            },
            {
                "name": "lifetime_too_long",
                "now": IAT + 100,
                "error": "token_malformed",
                "token": ed_token(body(1, "k1", IAT, IAT + 86400, fields)),
            },
            {
                "name": "non_canonical_base64",
                "now": IAT + 100,
                "error": "token_malformed",
                "token": noncanon + "." + sig,
            },
            {"name": "no_dot", "now": IAT + 100, "error": "token_malformed", "token": b64_body},
            {
                "name": "bad_alphabet",
                "now": IAT + 100,
                "error": "token_malformed",
                "token": b64_body + "." + sig[:-2] + "+/",
            },
        ],
    }
    out = Path(__file__).with_name("pointer_v1.json")
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
