"""The edge's decision: may this session fetch this media, under this pointer?

Shared by ``GET|HEAD /m/{id}`` and nginx's ``GET /auth`` so both answer
identically.  The hot path (a video's repeat Range requests) is three dict
lookups and the rights checks; signatures and Redis are touched only on
cache misses.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from service_kernel.cache import ExpiringCache, shared_int, token_key
from service_kernel.cached_lookup import CachedLookup
from service_kernel.clock import Clock, system_clock
from service_kernel.errors import InvalidField, ServiceError
from service_kernel.ids import is_id

from . import rights
from .capability import Derived, is_derived
from .capability_gate import CapabilityGate, check_live
from .errors import (
    GrantMediaMismatch,
    GrantRevoked,
    PlaybackEnded,
    PointerMissing,
    RevocationStale,
    SessionMissing,
    TokenAmbiguous,
)
from .front_feed import stream_ms
from .grant import Grant
from .keyset import KeySet
from .media import Media
from .metrics import Metrics
from .playback import PlaybackTokens
from .pointer import Pointer
from .redemption import Redemptions
from .registry import MediaRegistry
from .revocation import RevocationEvent
from .revocation_view import RevocationTailer
from .session import Session, SessionVerifier
from .token_format import VerifyKey
from .verifier import Verifier

C = TypeVar("C", Pointer, Grant)


@dataclass(frozen=True, slots=True)
class Decision:
    media: Media
    session: Session
    pointer: Pointer | None
    grant: Grant | None = None
    #: Stream time (ms) the revocation view had reached when this was decided: a cached copy
    #: is good until something it depends on is revoked at or after it (cdn_auth.front_feed).
    through_ms: int = 0
    #: A derived grant (cdn_auth.capability): ``grant`` then holds its claims as a grant.
    derived: Derived | None = None


@dataclass(frozen=True, slots=True)
class AuthorizerConfig:
    max_token_lifetime_s: int
    token_leeway_s: int
    staleness_bound_s: float
    media_cache_ttl_s: float
    cache_size: int


class Authorizer:
    def __init__(
        self,
        config: AuthorizerConfig,
        *,
        sessions: SessionVerifier,
        keys: KeySet,
        registry: MediaRegistry,
        tailer: RevocationTailer,
        metrics: Metrics,
        redemptions: Redemptions,
        playback: PlaybackTokens | None = None,
        clock: Clock = system_clock,
        capabilities: CapabilityGate | None = None,
    ) -> None:
        self.config = config
        self._sessions = sessions
        self._keys = keys
        self.verifier = Verifier(
            keys, max_lifetime_s=config.max_token_lifetime_s, leeway_s=config.token_leeway_s, clock=clock
        )
        self._registry = registry
        self._playback = playback
        self.redemptions = redemptions
        self.tailer = tailer
        self._metrics = metrics
        self._clock = clock
        #: Derived grants ('D'); None: only minted grants are accepted.
        self.capabilities = capabilities

        def cache(name: str) -> ExpiringCache[Any]:
            counters = metrics.cache_counters(name)  # bound once, not .labels() per lookup
            return ExpiringCache(
                name, config.cache_size, clock, on_hit=counters.hit, on_miss=counters.miss
            )

        self.session_cache: ExpiringCache[Session] = cache("session")
        self.playback_cache: ExpiringCache[Session] = cache("playback")
        self.pointer_cache: ExpiringCache[Pointer] = cache("pointer")
        self.media_cache: ExpiringCache[Media] = cache("media")
        self.grant_cache: ExpiringCache[Grant] = cache("grant")
        #: (grant id, user) pairs already bound in Redis: repeat fetches skip the round trip.
        self.bound_cache: ExpiringCache[bool] = cache("grant_binding")
        #: Sessions verified once per token and cached until they expire; concurrent misses
        #: for one token share one verification (a JWKS fetch, at worst).
        self.session_lookup: CachedLookup[str, Session] = CachedLookup(
            self.session_cache,
            lambda token: sessions.verify(token, clock()),
            expires_at=_session_exp,
            key=token_key,
        )
        #: Media records read from Redis: when a popular video's record expires, every
        #: request in flight for it misses at once and they share one read.
        self.media_lookup: CachedLookup[str, Media] = CachedLookup(
            self.media_cache, self._read_media, expires_at=lambda _: clock() + config.media_cache_ttl_s
        )
        tailer.view.listeners.append(self._on_revocation)
        #: Called with the kids that left the verify JWKS (a retirement), after the token
        #: caches have dropped their claims.
        self.key_listeners: list[Callable[[list[str]], None]] = []
        self._key_material = {kid: k.material() for kid, k in keys.keys.items()}
        keys.on_change.append(self._on_keys)
        # Re-read the JWKS on every tail tick (about once a second when idle, a stat(2)),
        # not only on cache misses: a run of cache hits must not hide a retirement.
        tailer.tick_listeners.append(keys.current)
        #: Called with the session kids that left the identity provider's JWKS, after the
        #: session cache has been dropped (the front's cached decisions depend on them).
        self.session_key_listeners: list[Callable[[list[str]], None]] = []
        sessions.jwks.retired_listeners.append(self._on_session_keys_retired)
        # The same for the session JWKS: cached sessions never ask the key set again.
        tailer.tick_listeners.append(sessions.jwks.poll)

    def _on_keys(self, keys: dict[str, VerifyKey]) -> None:
        # A kid that left, or that stays with other key material, is a retirement: claims
        # verified under the old key must not live on in a cache.
        material = {kid: k.material() for kid, k in keys.items()}
        gone = sorted(kid for kid, old in self._key_material.items() if material.get(kid) != old)
        self._key_material = material
        if not gone:
            return
        # Claims verified under a retired key must be verified again (and now fail).
        self.pointer_cache.clear()
        self.grant_cache.clear()
        if self.capabilities is not None:
            self.capabilities.on_keys_retired()
        for cb in self.key_listeners:
            cb(gone)

    def _on_session_keys_retired(self, gone: list[str]) -> None:
        # Sessions verified under a retired key must be verified again (and now fail).
        # Playback cookies are the edge's own tokens: they end at their short expiry.
        self.session_lookup.clear()
        for cb in self.session_key_listeners:
            cb(gone)

    def _on_revocation(self, ev: RevocationEvent) -> None:
        if ev.kind == "takedown":
            # A read already in flight may predate the takedown: its waiters have it, but
            # it is not cached, and the next miss reads afresh.
            self.media_lookup.evict(ev.media_id)

    def tail_fresh(self) -> bool:
        return self.tailer.age_s() <= self.config.staleness_bound_s

    async def authorize(
        self,
        media_id: str,
        session_token: str | None,
        pointer_token: str | None,
        grant_token: str | None = None,
        *,
        playback_token: str | None = None,
    ) -> Decision:
        """``playback_token`` is the browser's media cookie (cdn_auth.playback); a bearer
        session, when present, wins.  Callers pass it only for GET/HEAD of media."""
        started = time.perf_counter()
        try:
            return await self._authorize(
                media_id, session_token, pointer_token, grant_token, playback_token
            )
        finally:
            self._metrics.decision_seconds.observe(time.perf_counter() - started)

    async def _authorize(
        self,
        media_id: str,
        session_token: str | None,
        pointer_token: str | None,
        grant_token: str | None,
        playback_token: str | None,
    ) -> Decision:
        if not is_id(media_id):
            raise InvalidField("media id")
        if session_token:
            session = await self.session(session_token)
        elif playback_token and self._playback is not None:
            session = self.playback_session(playback_token)
            self._check_cookie_live(session)  # before the media lookup: no probing with it
        else:
            raise SessionMissing()
        media = await self.media(media_id)
        # After the last await before the view is consulted: every check below sees at
        # least the events up to here (the grant path awaits only after its checks).
        through = stream_ms(self.tailer.stream.last_id)
        view = self.tailer.view
        if session.from_cookie:
            self._check_cookie_live(session)
        if media.is_public or media.owner == session.sub:
            rights.check_active(media, view if self.tail_fresh() else None)
            rights.may_view(media, session)
            return Decision(media, session, None, through_ms=through)
        if pointer_token is not None and grant_token is not None:
            raise TokenAmbiguous()
        if pointer_token is None and grant_token is None:
            raise PointerMissing(media_id)
        if not self.tail_fresh():
            raise RevocationStale(f"tail age {self.tailer.age_s():.1f}s")
        if grant_token is not None:
            return await self._by_grant(media, session, grant_token, through)
        assert pointer_token is not None
        ptr = self.pointer(pointer_token)
        rights.check_pointer_binding(ptr, media_id, session)
        rights.check_active(media, view)
        rights.check_not_revoked(ptr, view)
        rights.check_audience(media, session)
        return Decision(media, session, ptr, through_ms=through)

    async def _by_grant(self, media: Media, session: Session, token: str, through: int) -> Decision:
        if self.capabilities is not None and is_derived(token):
            return await self.capabilities.decide(media, session, token, self.tailer.view, through)
        g = self.grant(token)
        if g.media_id != media.id:
            raise GrantMediaMismatch(g.grant_id)
        view = self.tailer.view
        if view.is_grant_revoked(g.grant_id):
            raise GrantRevoked(g.grant_id)
        rights.check_active(media, view)
        rights.check_audience(media, session)  # before binding: a refusal must not use a slot
        binding = f"{g.grant_id}\x00{session.sub}"
        if self.bound_cache.get(binding) is None:
            await self.redemptions.bind(g, session.sub)
            self.bound_cache.put(binding, True, g.exp + self.config.token_leeway_s)
        return Decision(media, session, None, g, through)

    def still_allowed(self, d: Decision) -> bool:
        """Re-check a decision against the revocation view *now*, between the windows of a
        long response: a takedown, unsend, leave or grant revocation that arrives while
        bytes are flowing stops them (pointer and grant decisions also stop when the view
        goes stale, as a new request would be refused).  A response to a media cookie stops
        when its device signs out (or the view goes stale), whatever the media."""
        view = self.tailer.view
        try:
            if d.session.from_cookie:
                self._check_cookie_live(d.session)
            if d.pointer is None and d.grant is None:
                rights.check_active(d.media, view if self.tail_fresh() else None)
                return True
            if not self.tail_fresh():
                return False
            rights.check_active(d.media, view)
            if d.pointer is not None:
                rights.check_not_revoked(d.pointer, view)
            if d.derived is not None:
                check_live(d.derived, d.media, view)
            return d.grant is None or not view.is_grant_revoked(d.grant.grant_id)
        except ServiceError:
            return False

    def grant(self, token: str) -> Grant:
        return self._verified(self.grant_cache, self.verifier.grant, token)

    def pointer(self, token: str) -> Pointer:
        return self._verified(self.pointer_cache, self.verifier.pointer, token)

    def _verified(self, cache: ExpiringCache[C], verify: Callable[[str], C], token: str) -> C:
        """A token's claims from the cache, or verified once (the verifier retries an
        unknown kid after re-reading the key set) and cached until it expires."""
        key = token_key(token)
        hit = cache.get(key)
        if hit is not None:
            return hit
        claims = verify(token)
        # A shared int, not a fresh float per entry: tokens minted in one second share it.
        cache.put(key, claims, shared_int(claims.exp + self.config.token_leeway_s))
        return claims

    async def session(self, token: str) -> Session:
        return await self.session_lookup.get(token)

    def playback_session(self, token: str) -> Session:
        """The session a browser media cookie stands for (verified once, cached until expiry)."""
        hit = self.playback_cache.get(token)
        if hit is not None:
            return hit
        assert self._playback is not None
        s = self._playback.verify(token, self._clock())
        self.playback_cache.put(token, s, s.exp)
        return s

    def _check_cookie_live(self, session: Session) -> None:
        """A media cookie is refused once its device signed out (``playback_ended``, from
        ``DELETE /v1/playback-session``) at or after it was issued: copies of it too.  Its
        ``iat`` is the minting edge's clock and the event's time Redis's, so the comparison
        allows the token leeway the edges already tolerate between clocks: a cookie issued
        up to that long after the sign-out is refused too (signing in again makes a new
        device, whose cookies this does not touch).  Fails closed (503) when the revocation
        tail is stale, for public and own media as well: a cookie is a credential the view
        may have revoked."""
        if not self.tail_fresh():
            raise RevocationStale(f"tail age {self.tailer.age_s():.1f}s")
        ended = self.tailer.view.playback_ended_at(session.sub, session.dev)
        if ended is not None and session.iat <= ended + self.config.token_leeway_s:
            raise PlaybackEnded()

    async def media(self, media_id: str) -> Media:
        return await self.media_lookup.get(media_id)

    async def _read_media(self, media_id: str) -> Media:
        return await self._registry.get(media_id)


def _session_exp(s: Session) -> float:
    return s.exp
