"""Strict, canonical base64url without padding (RFC 4648 section 5)."""

from __future__ import annotations

import base64
import binascii
import re

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_VALUE = {c: i for i, c in enumerate(_ALPHABET)}
_ALPHABET_OK = re.compile(r"[A-Za-z0-9_-]*").fullmatch


class Base64Error(ValueError):
    """Not strict, canonical, unpadded base64url.  Neutral on purpose: each caller says what
    the bad field was (a media token, a device key, a report's commitment)."""


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode unpadded base64url, rejecting any other alphabet or a non-canonical form.

    Canonical means re-encoding gives back the same text, so one token has
    exactly one spelling (caches keyed by the token string cannot be split).
    """
    rem = len(text) % 4
    if rem == 1:
        raise Base64Error("base64url length")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)) if _ALPHABET_OK(text) else None
    except (binascii.Error, ValueError) as exc:
        raise Base64Error("base64url alphabet") from exc
    if raw is None:
        raise Base64Error("base64url alphabet")
    # Canonical iff the bits the last character carries beyond the data are zero
    # (RFC 4648 section 3.5); checked directly rather than by re-encoding.
    if rem and _VALUE[text[-1]] & (0x0F if rem == 2 else 0x03):
        raise Base64Error("non-canonical base64url")
    return raw
