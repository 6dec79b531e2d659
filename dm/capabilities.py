"""A device's share capabilities: asked for once per media, then grants made offline.

    wallet = CapabilityWallet()                       # a fresh Ed25519 holder key
    cap = await edge.request_capability(media_id, wallet.public_key)
    wallet.hold(cap)
    derived = wallet.derive(media_id, redeemers=2)    # no round trip
    # derived.token goes into the sealed envelope as the grant

The holder key never leaves the device; the capability names its public half, so only
this device can derive grants from it (docs/protocol.md, section 14).  The wallet is in
memory: a client that restarts asks for a new capability.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cdn_auth import capability as cap_mod
from service_kernel.encoding import b64url_encode

from .sdk_types import Capability

#: A derived grant lives this long unless the capability or the edges allow less.
DEFAULT_GRANT_TTL_S = 6 * 3600
#: A capability closer than this to its expiry is not used (a grant from it would be short).
MIN_REMAINING_S = 60


class DerivedGrant(NamedTuple):
    token: str
    grant_id: str
    expires_at: int


class CapabilityWallet:
    def __init__(
        self, key: Ed25519PrivateKey | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.key = key if key is not None else Ed25519PrivateKey.generate()
        self._clock = clock
        self._held: dict[str, Capability] = {}

    def __repr__(self) -> str:
        return f"CapabilityWallet({len(self._held)} held)"

    @property
    def public_key(self) -> str:
        """The holder key to send with ``POST /v1/capabilities`` (base64url, 32 bytes)."""
        return b64url_encode(self.key.public_key().public_bytes_raw())

    def hold(self, cap: Capability) -> None:
        self._held[cap["media_id"]] = cap

    def forget(self, media_id: str, cap_id: str | None = None) -> Capability | None:
        """Drop the capability for ``media_id`` (only if it is ``cap_id``, when given)."""
        cap = self._held.get(media_id)
        if cap is None or (cap_id is not None and cap["cap_id"] != cap_id):
            return None
        return self._held.pop(media_id)

    def stored(self, media_id: str) -> Capability | None:
        """The capability kept for ``media_id``, even one too near its end to derive from
        (it still has to be revoked)."""
        return self._held.get(media_id)

    def held(self, media_id: str) -> Capability | None:
        """The usable capability for ``media_id``, if any (an expiring one is dropped)."""
        cap = self._held.get(media_id)
        if cap is not None and cap["expires_at"] - self._clock() < MIN_REMAINING_S:
            del self._held[media_id]
            return None
        return cap

    def derive(
        self, media_id: str, redeemers: int, ttl_s: int = DEFAULT_GRANT_TTL_S
    ) -> DerivedGrant | None:
        """A grant for ``redeemers`` users, made here; None when no held capability can
        make it (none held, or it allows fewer redeemers)."""
        cap = self.held(media_id)
        if cap is None or not 1 <= redeemers <= cap["max_redeemers"]:
            return None
        now = self._clock()
        ttl = min(ttl_s, cap["max_grant_ttl_s"])
        token, grant_id = cap_mod.derive(
            self.key, cap["capability"], max_redeemers=redeemers, now=now, ttl_s=ttl
        )
        return DerivedGrant(token, grant_id, min(int(now) + ttl, cap["expires_at"]))
