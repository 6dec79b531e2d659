"""A device's share capabilities: asked for once per media, then grants made offline.

    wallet = CapabilityWallet()                       # a fresh Ed25519 holder key
    cap = await edge.request_capability(media_id, wallet.public_key)
    wallet.hold(cap)
    derived = wallet.derive(media_id, redeemers=2)    # no round trip
    # derived.token goes into the sealed envelope as the grant
    wallet.prepare(media_id, redeemers=2)             # after the send: the next one's grant

The holder key never leaves the device; the capability names its public half, so only
this device can derive grants from it (docs/protocol.md, section 14).  The wallet is in
memory: a client that restarts asks for a new capability.

**Spare grants.**  A derived grant says nothing about the message or the recipient it
will travel with (only its N), so a device can derive the next share's grant while idle
(:meth:`CapabilityWallet.prepare`, e.g. right after a send) and take it at the share
(:meth:`CapabilityWallet.derive`): the Ed25519 signature leaves the share's critical
path.  A spare is only ever in this wallet's memory, the edge learns of it only if it is
redeemed, and an unused one costs no slot of the capability's ``max_grants`` (slots are
taken at redemption).  It is dropped with its capability, and not used once older than
:data:`SPARE_MAX_AGE_S` or once its expiry falls short of a fresh grant's by more than a
tenth of a grant's lifetime (its lifetime runs from when it was made, and edges may allow
grants of a few minutes).
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
#: A spare grant older than this is not taken (a fresh one is derived at the share).
SPARE_MAX_AGE_S = 600
#: ... nor one whose expiry falls short of a fresh grant's by more than its lifetime / this.
SPARE_MAX_LOSS_DIVISOR = 10
#: Spares are kept for at most this many (media, N) pairs; the oldest go first.
MAX_SPARES = 64


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
        #: media id -> the held capability, and it parsed once (cap_mod.Derivation).
        self._held: dict[str, tuple[Capability, cap_mod.Derivation]] = {}
        #: (media id, N) -> a grant derived ahead of its share, and when it was made.
        self._spares: dict[tuple[str, int], tuple[DerivedGrant, float]] = {}

    def __repr__(self) -> str:
        return f"CapabilityWallet({len(self._held)} held, {len(self._spares)} spare)"

    @property
    def public_key(self) -> str:
        """The holder key to send with ``POST /v1/capabilities`` (base64url, 32 bytes)."""
        return b64url_encode(self.key.public_key().public_bytes_raw())

    def hold(self, cap: Capability) -> None:
        """Keep ``cap`` (replacing any capability held for its media, and its spares).
        ``ValueError`` if it does not name this wallet's key."""
        derivation = cap_mod.Derivation(self.key, cap["capability"])
        media_id = cap["media_id"]
        self._drop_spares(media_id)
        self._held[media_id] = (cap, derivation)

    def forget(self, media_id: str, cap_id: str | None = None) -> Capability | None:
        """Drop the capability for ``media_id`` (only if it is ``cap_id``, when given), with
        the spare grants derived from it."""
        cap = self.stored(media_id)
        if cap is None or (cap_id is not None and cap["cap_id"] != cap_id):
            return None
        del self._held[media_id]
        self._drop_spares(media_id)
        return cap

    def stored(self, media_id: str) -> Capability | None:
        """The capability kept for ``media_id``, even one too near its end to derive from
        (it still has to be revoked)."""
        entry = self._held.get(media_id)
        return None if entry is None else entry[0]

    def held(self, media_id: str) -> Capability | None:
        """The usable capability for ``media_id``, if any.  One near its expiry is not
        usable (its spares are dropped) but stays :meth:`stored`: it can still be revoked."""
        cap = self.stored(media_id)
        if cap is not None and cap["expires_at"] - self._clock() < MIN_REMAINING_S:
            self._drop_spares(media_id)
            return None
        return cap

    def derive(
        self, media_id: str, redeemers: int, ttl_s: int = DEFAULT_GRANT_TTL_S
    ) -> DerivedGrant | None:
        """A grant for ``redeemers`` users: the spare prepared for them if there is a fresh
        one (taken: it is never handed out twice), else made now; None when no held
        capability can make it (none held, or it allows fewer redeemers)."""
        cap = self.held(media_id)
        if cap is None or not 1 <= redeemers <= cap["max_redeemers"]:
            return None
        spare = self._spares.pop((media_id, redeemers), None)
        if spare is not None and ttl_s == DEFAULT_GRANT_TTL_S and self._fresh(cap, *spare):
            return spare[0]
        return self._make(media_id, cap, redeemers, ttl_s)

    def _fresh(self, cap: Capability, grant: DerivedGrant, made_at: float) -> bool:
        """Whether a spare is as good as a grant made now: made at most SPARE_MAX_AGE_S ago
        (and not "later" than now, after a clock step back), and short of a fresh grant's
        expiry by at most a tenth of its lifetime (edges may allow grants far shorter than
        SPARE_MAX_AGE_S: a spare must never reach its recipient dead or nearly so)."""
        now = self._clock()
        if not 0 <= now - made_at <= SPARE_MAX_AGE_S:
            return False
        ttl = min(DEFAULT_GRANT_TTL_S, cap["max_grant_ttl_s"])
        fresh_exp = min(int(now) + ttl, cap["expires_at"])
        return fresh_exp - grant.expires_at <= ttl // SPARE_MAX_LOSS_DIVISOR

    def prepare(self, media_id: str, redeemers: int = 1) -> bool:
        """Derive the next grant for ``redeemers`` users now, off any share's critical path
        (a device does this while idle); False if no held capability can make it.  A fresh
        spare already there is kept."""
        cap = self.held(media_id)
        if cap is None or not 1 <= redeemers <= cap["max_redeemers"]:
            return False
        spare = self._spares.get((media_id, redeemers))
        if spare is not None and self._fresh(cap, *spare):
            return True
        made_at = self._clock()
        self._spares.pop((media_id, redeemers), None)
        if len(self._spares) >= MAX_SPARES:
            del self._spares[next(iter(self._spares))]
        self._spares[(media_id, redeemers)] = (
            self._make(media_id, cap, redeemers, DEFAULT_GRANT_TTL_S),
            made_at,
        )
        return True

    def _make(self, media_id: str, cap: Capability, redeemers: int, ttl_s: int) -> DerivedGrant:
        now = self._clock()
        ttl = min(ttl_s, cap["max_grant_ttl_s"])
        token, grant_id = self._held[media_id][1].derive(max_redeemers=redeemers, now=now, ttl_s=ttl)
        return DerivedGrant(token, grant_id, min(int(now) + ttl, cap["expires_at"]))

    def _drop_spares(self, media_id: str) -> None:
        for k in [k for k in self._spares if k[0] == media_id]:
            del self._spares[k]
