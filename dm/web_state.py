"""Typed state of the dm app, and the session/media lookups every handler shares."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from cdn_auth.errors import SessionMissing
from cdn_auth.matching import BankSet, MediaHashIndex
from cdn_auth.media import Media
from cdn_auth.registry import MediaRegistry
from cdn_auth.revocation import RevocationLog
from cdn_auth.session import Session, SessionVerifier
from service_kernel.cache import ExpiringCache, token_key
from service_kernel.cached_lookup import CachedLookup
from service_kernel.clock import Clock
from service_kernel.redis_client import RedisClient, RedisFailure
from service_kernel.web_errors import bearer_token

from .audit import AuditLog
from .delivery import PointerMinter
from .errors import Blocked, UnknownUser, UserSuspended
from .identity import DevIssuer
from .notify import Hub, NotifyLog
from .review import ReviewQueue
from .safety import SafetyCheck
from .scanner import Scanner, Verdict
from .settings import DmSettings
from .store import Conversation, DmStore

log = logging.getLogger(__name__)

#: The subprotocol a browser offers beside its session, and the one the server answers.
WS_APP_PROTOCOL = "pointer-dm.v1"
WS_BEARER_PROTOCOL_PREFIX = "bearer."


def websocket_protocol_token(request: web.Request) -> str | None:
    """The session offered as a ``bearer.<JWT>`` subprotocol of a WebSocket upgrade, if any
    (every JWT character is legal in a protocol token); other requests never count."""
    if request.method != "GET" or request.headers.get("Upgrade", "").lower() != "websocket":
        return None
    for proto in request.headers.get("Sec-WebSocket-Protocol", "").split(","):
        proto = proto.strip()
        if proto.startswith(WS_BEARER_PROTOCOL_PREFIX):
            return proto[len(WS_BEARER_PROTOCOL_PREFIX) :] or None
    return None


class DmMetrics:
    """dm's Prometheus metrics, in a registry of its own (one per app, no globals).

    The gauges (Redis answering, notify tail age, sockets held) are set when ``/metrics``
    is scraped, so alerts see them even when no request arrives.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.sends = Counter("dm_sends", "Messages accepted", ["mode", "replayed"], registry=r)
        self.send_seconds = Histogram(
            "dm_send_seconds",
            "Time to accept a message (201/200)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.pushes = Counter("dm_pushes", "Events pushed to WebSockets", registry=r)
        self.alerts = Counter("dm_scan_alerts", "Scanner alerts queued", ["verdict"], registry=r)
        self.scans = Counter(
            "dm_scans",
            "Sends scanned, by what the scanner saw (content or metadata only) and its verdict",
            ["mode", "saw", "verdict"],
            registry=r,
        )
        self.push_lag = Histogram(
            "dm_push_lag_seconds",
            "Send accepted to pushed by this process",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1),
            registry=r,
        )
        self.http_responses = Counter(
            "dm_http_responses", "HTTP responses by status", ["status"], registry=r
        )
        self.websockets = Gauge("dm_websockets", "WebSockets held by this process", registry=r)
        self.websockets_dropped = Counter(
            "dm_websockets_dropped",
            "WebSockets this process closed on its clients",
            ["reason"],
            registry=r,
        )
        # slow_consumer: 1000 events behind; slow_writer: a push not written within the
        # write deadline (the client stopped reading).
        self.slow_consumer_drops = self.websockets_dropped.labels("slow_consumer")
        self.slow_writer_drops = self.websockets_dropped.labels("slow_writer")
        self.redis_up = Gauge("dm_redis_up", "1 if Redis answered a PING at scrape time", registry=r)
        self.notify_tail_age = Gauge(
            "dm_notify_tail_age_seconds", "Seconds since Redis last answered the notify tail", registry=r
        )
        self.staleness_bound = Gauge(
            "dm_notify_staleness_bound_seconds",
            "Notify tail age past which /readyz answers 503 (DM_STALENESS_BOUND_S)",
            registry=r,
        )
        self._status: dict[int, Any] = {}

    def response(self, status: int) -> None:
        """Count one HTTP response (children bound once per status: a small set)."""
        child = self._status.get(status)
        if child is None:
            child = self._status[status] = self.http_responses.labels(str(status))
        child.inc()


@dataclass
class DmState:
    settings: DmSettings
    redis: RedisClient
    store: DmStore
    hub: Hub
    notify: NotifyLog
    minter: PointerMinter
    sessions: SessionVerifier
    registry: MediaRegistry
    revocations: RevocationLog
    safety: list[SafetyCheck]
    issuer: DevIssuer | None
    clock: Clock
    franking_key: bytes
    #: Safety (issue 16): scanning on send, the review queue, the audit log, the pointers
    #: minted for moderators, and the CDN's hash banks and fingerprints.
    scanner: Scanner
    queue: ReviewQueue
    audit: AuditLog
    mod_minter: PointerMinter
    banks: BankSet
    hash_index: MediaHashIndex
    metrics: DmMetrics = field(default_factory=DmMetrics)
    #: Verified sessions, once per token and process (see :meth:`_load_session`).
    session_lookup: CachedLookup[str, Session] = field(init=False)
    #: Media records for plain sends; concurrent misses for one id share one read.
    media_lookup: CachedLookup[str, Media] = field(init=False)
    session_cache: ExpiringCache[Session] = field(init=False)
    media_cache: ExpiringCache[Media] = field(init=False)
    conv_cache: ExpiringCache[Conversation] = field(init=False)
    block_cache: ExpiringCache[frozenset[str]] = field(init=False)
    suspension_cache: ExpiringCache[bool] = field(init=False)
    #: ``user_suspended`` events heard (see :meth:`is_suspended`).
    suspensions_heard: int = 0
    #: ``"<cid>|<message id>"`` of messages this process has seen unsent on the notify
    #: stream lately: a push still queued for a socket is dropped, not minted, once its
    #: unsend is known here (a dict lookup instead of a Redis round trip per push).
    recent_unsent: ExpiringCache[bool] = field(init=False)
    #: Rendered WebSocket frames by (event, reader[, device]): see web_stream._send.
    frame_cache: ExpiringCache[str] = field(init=False)

    def __post_init__(self) -> None:
        c = self.settings
        self.session_cache = ExpiringCache("session", c.session_cache_size, self.clock)
        self.media_cache = ExpiringCache("media", c.media_cache_size, self.clock)
        self.session_lookup = CachedLookup(
            self.session_cache, self._load_session, expires_at=_session_exp, key=token_key
        )
        # A session signed by a key the identity provider retired must stop working at
        # once, not when it expires: the next request verifies it again (and fails).
        self.sessions.jwks.retired_listeners.append(lambda _kids: self.session_lookup.clear())
        self.media_lookup = CachedLookup(
            self.media_cache,
            self._load_media,
            expires_at=lambda _: self.clock() + self.settings.media_cache_ttl_s,
        )
        self.conv_cache = ExpiringCache("conversation", c.conversation_cache_size, self.clock)
        self.block_cache = ExpiringCache("blocks", c.block_cache_size, self.clock)
        self.suspension_cache = ExpiringCache("suspension", c.suspension_cache_size, self.clock)
        self.recent_unsent = ExpiringCache("recent_unsent", c.recent_unsent_cache_size, self.clock)
        self.frame_cache = ExpiringCache("frames", c.frame_cache_size, self.clock)

    async def session(self, request: web.Request) -> Session:
        """The caller's verified session: ``Authorization: Bearer``, or on a WebSocket
        upgrade the ``bearer.<JWT>`` subprotocol (browsers cannot set headers there).
        Never a query parameter: URLs end up in logs, histories and Referer headers."""
        token = bearer_token(request) or websocket_protocol_token(request)
        if not token:
            raise SessionMissing()
        self.sessions.jwks.poll()  # a stat(2) at most once a second: see a retirement
        return await self.session_lookup.get(token)

    def session_key_retired(self, s: Session) -> bool:
        """Whether the key that signed ``s`` has left the identity provider's JWKS since it
        was verified (a held WebSocket checks before each push)."""
        jwks = self.sessions.jwks
        jwks.poll()
        # Removed, or republished with other key material (a newer generation).
        return bool(s.kid) and (s.kid not in jwks.keys or jwks.generation(s.kid) != s.key_generation)

    async def _load_session(self, token: str) -> Session:
        s = await self.sessions.verify(token, self.clock())
        # Once per token and process: with an external identity provider this is how dm
        # learns that a user exists (conversations may only name existing users).
        await self.store.mark_seen(s.sub)
        return s

    async def media(self, media_id: str) -> Media:
        return await self.media_lookup.get(media_id)

    async def _load_media(self, media_id: str) -> Media:
        return await self.registry.get(media_id)

    async def conversation(self, cid: str) -> Conversation:
        """Cached; membership events on the notify stream evict it (see app.py)."""
        hit = self.conv_cache.get(cid)
        if hit is not None:
            return hit
        conv = await self.store.conversation(cid)
        self.conv_cache.put(cid, conv, self.clock() + self.settings.conversation_cache_ttl_s)
        return conv

    async def check_may_open(self, me: Session, others: list[str]) -> None:
        """A conversation names only users dm knows, none of whom blocked the creator
        (for groups too: otherwise a blocked user could reach the blocker by adding a
        third person)."""
        unknown = await self.store.unknown_users(others)
        if unknown:
            raise UnknownUser(f"unknown user: {unknown[0][:64]}")
        blockers = await self.store.blocked_by_any(others, me.sub)
        if blockers:
            raise Blocked(blockers[0])

    async def scan_send(self, me: Session, conv: Conversation, fields: dict[str, str]) -> Verdict:
        """The send path's one safety call: suspended senders are refused in both modes;
        plain content is scanned (a hold marks ``fields`` so reads skip it); sealed content
        cannot be, and the verdict says the scanner saw metadata only."""
        await self.check_not_suspended(me)
        if conv.mode == "sealed":
            verdict = self.scanner.scan_sealed()
        else:
            media = await self.media(fields["media_id"]) if fields.get("media_id") else None
            verdict = await self.scanner.scan_plain(me.sub, fields.get("text", ""), media)
            if verdict.held:
                fields["held"] = "1"
        self.metrics.scans.labels(conv.mode, verdict.saw, verdict.action).inc()
        if log.isEnabledFor(logging.DEBUG):  # the send path: build nothing unless asked
            log.debug(
                "scan",
                extra={
                    "conversation_id": conv.id,
                    "mode": conv.mode,
                    "saw": verdict.saw,
                    "verdict": verdict.action,
                    "labels": ",".join(verdict.labels),
                },
            )
        return verdict

    async def check_not_suspended(self, me: Session) -> None:
        """Refuse a suspended user's sends and new conversations (403 user_suspended)."""
        if await self.is_suspended(me.sub):
            raise UserSuspended(me.sub)

    async def is_suspended(self, uid: str) -> bool:
        """Whether a moderator suspended ``uid``.  Cached (``suspension_cache_ttl_s``): a send
        used to spend a Redis round trip on this alone.  The suspending process records it at
        once and every other evicts on the ``user_suspended`` notify event (see app.py)."""
        hit = self.suspension_cache.get(uid)
        if hit is not None:
            return hit
        generation = self.suspensions_heard
        suspended = await self.store.is_suspended(uid)
        # A suspension heard while this read was in flight may be newer than what it read:
        # answer, but do not cache it.
        if generation == self.suspensions_heard:
            self.suspension_cache.put(
                uid, suspended, self.clock() + self.settings.suspension_cache_ttl_s
            )
        return suspended

    async def after_send(
        self,
        conv: Conversation,
        message_id: str,
        fields: dict[str, str],
        verdict: Verdict,
        *,
        replayed: bool = False,
    ) -> None:
        """A flag or hold becomes an alert in the review queue; on a replay (the send's
        idempotent retry), only if the first attempt did not queue it."""
        if verdict.alerts:
            await self.queue.add_alert(conv.id, message_id, fields, verdict, retry=replayed)
            if not replayed:
                self.metrics.alerts.labels(verdict.action).inc()

    async def check_not_blocked(self, me: Session, conv: Conversation) -> None:
        """In a one-to-one conversation, a user the other has blocked cannot write."""
        if conv.is_direct:
            other = next(u for u in conv.members if u != me.sub)
            if me.sub in await self.blocks_of(other):
                raise Blocked(other)

    async def blocks_of(self, uid: str, *, fallback_on_error: bool = False) -> frozenset[str]:
        """The users ``uid`` blocked.  Cached (a minute by default): every dm process evicts the
        entry when the notify stream says the list changed, so the TTL is only a backstop.
        ``fallback_on_error`` (push filtering) answers "none" rather than failing when
        Redis is unreachable; sends still check authoritatively."""
        hit = self.block_cache.get(uid)
        if hit is not None:
            return hit
        try:
            blocks = frozenset(await self.store.blocks_of(uid))
        except RedisFailure:
            if fallback_on_error:
                return frozenset()
            raise
        self.block_cache.put(uid, blocks, self.clock() + self.settings.block_cache_ttl_s)
        return blocks


def _session_exp(s: Session) -> float:
    return s.exp


STATE: web.AppKey[DmState] = web.AppKey("dm_state", DmState)
