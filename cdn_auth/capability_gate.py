"""The edge's decision for a derived grant ('D'), and its binding script.

Called from the grant branch of :class:`cdn_auth.authorizer.Authorizer` when the grant's
type byte says derived.  Order (docs/protocol.md, section 14.4): verify (the capability's
ring signature and lifetime, the holder's signature, the grant within the capability's
bounds; cached per token), the media id, revocation of the derived grant, of its
capability and of every source the capability names (the re-share chain), media status,
the re-share right (``allow_reshare`` of the record read for this request), audience,
then the binding: at most ``max_grants`` distinct derived grants per capability, and the
first N distinct users per grant, in one script on the capability's slot.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from service_kernel.cache import ExpiringCache, shared_int, token_key
from service_kernel.clock import Clock
from service_kernel.redis_client import RedisFailure

from . import capability as cap_mod
from . import redis_keys, rights
from .capability import Capability, Derived
from .errors import (
    CapabilityExhausted,
    CapabilityRevoked,
    CapabilitySourceRevoked,
    GrantExhausted,
    GrantMediaMismatch,
    GrantRevoked,
    RedisUnavailable,
    ShareNotAllowed,
    TokenUnknownKey,
)
from .keyset import KeySet
from .media import Media
from .metrics import Metrics
from .revocation_view import RevocationView
from .session import Session

if TYPE_CHECKING:
    from .authorizer import Decision

#: KEYS: the capability's grant set, the derived grant's redeemer set.
#: ARGV: grant id, user, N, max_grants, grant expire-at (s), capability expire-at (s).
#: Returns 1 bound, 0 the grant is full, -1 the capability has max_grants other grants.
BIND_DERIVED = """
if redis.call('SISMEMBER', KEYS[2], ARGV[2]) == 1 then return 1 end
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then
  if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[4]) then return -1 end
  redis.call('SADD', KEYS[1], ARGV[1])
  redis.call('EXPIREAT', KEYS[1], tonumber(ARGV[6]))
end
if redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[3]) then return 0 end
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('EXPIREAT', KEYS[2], tonumber(ARGV[5]))
return 1
"""


def check_live(d: Derived, media: Media, view: RevocationView) -> None:
    """Everything about a derived grant that can change after it was made: checked on every
    request (in memory), never cached."""
    c = d.capability
    if view.is_grant_revoked(d.grant_id):
        raise GrantRevoked(d.grant_id)
    if c.cap_id in view.capabilities:
        raise CapabilityRevoked(c.cap_id)
    for source in c.sources:
        if source in view.capabilities or view.is_grant_revoked(source):
            raise CapabilitySourceRevoked(source)
    check_share_right(c, media)


def check_share_right(c: Capability, media: Media) -> None:
    """The holder may still share: the owner, or a re-sharer (with a source) while the
    owner allows re-sharing; read from the media record at every redemption."""
    if media.is_public or c.holder == media.owner:
        return
    if not c.sources or not media.allow_reshare:
        raise ShareNotAllowed(media.id)


class DerivedBindings:
    """The binding script and the membership test the capability routes use."""

    def __init__(self, redis: Any, leeway_s: int) -> None:
        self._bind = redis.register_script(BIND_DERIVED)
        self._redis = redis
        self._leeway_s = leeway_s

    async def bind(self, d: Derived, user: str) -> None:
        c = d.capability
        try:
            ok = int(
                await self._bind(
                    keys=[
                        redis_keys.capability_grants_key(c.cap_id),
                        redis_keys.derived_redeemers_key(c.cap_id, d.grant_id),
                    ],
                    args=[
                        d.grant_id,
                        user,
                        d.max_redeemers,
                        c.max_grants,
                        d.exp + self._leeway_s,
                        c.exp + self._leeway_s,
                    ],
                )
            )
        except RedisFailure as exc:
            raise RedisUnavailable(str(exc)) from exc
        if ok == -1:
            raise CapabilityExhausted(f"{c.cap_id} has {c.max_grants} grants")
        if ok != 1:
            raise GrantExhausted(f"{d.grant_id} has {d.max_redeemers} redeemers")

    async def is_bound(self, d: Derived, user: str) -> bool:
        key = redis_keys.derived_redeemers_key(d.capability.cap_id, d.grant_id)
        try:
            return bool(await self._redis.sismember(key, user))
        except RedisFailure as exc:
            raise RedisUnavailable(str(exc)) from exc


def metered_caches(metrics: Metrics, size: int, clock: Clock) -> Callable[[str], ExpiringCache[Any]]:
    """Caches reporting hits and misses as the authorizer's own do."""

    def cache(name: str) -> ExpiringCache[Any]:
        counters = metrics.cache_counters(name)
        return ExpiringCache(name, size, clock, on_hit=counters.hit, on_miss=counters.miss)

    return cache


class CapabilityGate:
    """Verifies derived grants (cached per token until they expire) and decides with them."""

    def __init__(
        self,
        *,
        keys: KeySet,
        bindings: DerivedBindings,
        clock: Clock,
        max_token_lifetime_s: int,
        max_capability_lifetime_s: int,
        leeway_s: int,
        cache: Callable[[str], ExpiringCache[Any]],
    ) -> None:
        self._keys = keys
        self.bindings = bindings
        self._clock = clock
        self._max_token_lifetime_s = max_token_lifetime_s
        self._max_capability_lifetime_s = max_capability_lifetime_s
        self._leeway_s = leeway_s
        self.derived_cache: ExpiringCache[Derived] = cache("derived_grant")
        #: Verified capabilities, by token: each share derived from one capability carries
        #: the same capability bytes, so its ring signature is checked once, not per share.
        self.capability_cache: ExpiringCache[Capability] = cache("capability")
        self.bound_cache: ExpiringCache[bool] = cache("derived_binding")

    def on_keys_retired(self) -> None:
        """A signing key left the JWKS: capabilities it signed must be verified again."""
        self.derived_cache.clear()
        self.capability_cache.clear()

    def derived(self, token: str) -> Derived:
        key = token_key(token)
        hit = self.derived_cache.get(key)
        if hit is not None:
            return hit

        def verified_capability(cap_token: str) -> Capability:
            # Verified once per capability (with the unknown-key retry), then cached until
            # it expires or a key is retired (on_keys_retired).
            cap_key = token_key(cap_token)
            cached = self.capability_cache.get(cap_key)
            if cached is None:
                cached = self.capability(cap_token)
                self.capability_cache.put(cap_key, cached, shared_int(cached.exp + self._leeway_s))
            return cached

        d = cap_mod.verify_derived(
            token,
            self._keys.current(),
            self._clock(),
            max_lifetime_s=self._max_token_lifetime_s,
            max_capability_lifetime_s=self._max_capability_lifetime_s,
            leeway_s=self._leeway_s,
            verified_capability=verified_capability,
        )
        self.derived_cache.put(key, d, shared_int(d.exp + self._leeway_s))
        return d

    def capability(self, token: str) -> Capability:
        """A capability token, verified (with the unknown-key retry); not cached here."""
        now = self._clock()
        kwargs = {"max_lifetime_s": self._max_capability_lifetime_s, "leeway_s": self._leeway_s}
        try:
            return cap_mod.verify(token, self._keys.current(), now, **kwargs)
        except TokenUnknownKey:
            return cap_mod.verify(token, self._keys.refresh_for_unknown_kid(), now, **kwargs)

    async def decide(
        self, media: Media, session: Session, token: str, view: RevocationView, through: int
    ) -> Decision:
        from .authorizer import Decision  # the authorizer imports this module

        d = self.derived(token)
        if d.capability.media_id != media.id:
            raise GrantMediaMismatch(d.grant_id)
        check_live(d, media, view)
        rights.check_active(media, view)
        rights.check_audience(media, session)  # before binding: a refusal uses no slot
        binding = f"{d.grant_id}\x00{session.sub}"
        if self.bound_cache.get(binding) is None:
            await self.bindings.bind(d, session.sub)
            self.bound_cache.put(binding, True, d.exp + self._leeway_s)
        return Decision(media, session, None, d.as_grant(), through, derived=d)
