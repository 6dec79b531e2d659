"""Strict, canonical base64url without padding (RFC 4648 section 5)."""

from __future__ import annotations

import base64
import binascii

from .errors import TokenMalformed


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode unpadded base64url, rejecting any other alphabet or a non-canonical form.

    Canonical means re-encoding gives back the same text, so one token has
    exactly one spelling (caches keyed by the token string cannot be split).
    """
    if len(text) % 4 == 1:
        raise TokenMalformed("base64url length")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise TokenMalformed("base64url alphabet") from exc
    if b64url_encode(raw) != text:
        raise TokenMalformed("non-canonical base64url")
    return raw
