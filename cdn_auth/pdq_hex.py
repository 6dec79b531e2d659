"""PDQ hashes as text (64 hex digits) and PDQ's customary match threshold.

Kept apart from :mod:`cdn_auth.pdq_index` so that parsing banks and requests
needs no numpy: numpy (and the index) load on the first perceptual match,
not when an edge or dm process starts.
"""

from __future__ import annotations

BITS = 256
#: PDQ's customary match threshold (ThreatExchange ``PDQ_CONFIDENT_MATCH_THRESHOLD``).
DEFAULT_THRESHOLD = 31


def parse_hex(value: str) -> bytes:
    """A PDQ hash as 64 hex digits (ThreatExchange's signal string), or ValueError."""
    text = value.strip().lower()
    if len(text) != 64:
        raise ValueError("a PDQ hash is 64 hex digits")
    return bytes.fromhex(text)
