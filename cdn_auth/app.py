"""Assembles the cdn_auth aiohttp application from settings and injected dependencies."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from service_kernel import logs, openapi
from service_kernel.body_deadline import BODY_DEADLINE, BodyDeadline
from service_kernel.clock import Clock, system_clock
from service_kernel.rate_limit import RATE_LIMITER, Limit, RateLimiter, parse_limits
from service_kernel.redis_client import RedisClient, connect
from service_kernel.web_errors import bearer_token, error_middleware
from service_kernel.web_lifecycle import tail_while_running
from service_kernel.web_ops import OPS

from . import (
    __version__,
    api_schemas,
    web_banks,
    web_capabilities,
    web_edge,
    web_grants,
    web_media,
    web_ops,
    web_playback,
)
from .authorizer import Authorizer, AuthorizerConfig
from .capability_gate import CapabilityGate, DerivedBindings, metered_caches
from .errors import SessionMissing
from .front_feed import FrontFeed, feeding
from .grant_store import GrantStore
from .keyring import KeyRingSource
from .keyset import KeySet
from .matching import MediaHashIndex, banks_from
from .metrics import Metrics
from .origin import Origin
from .playback import MAX_PLAYBACK_TTL_S, PlaybackTokens
from .redemption import Redemptions
from .registry import MediaRegistry
from .revocation import RevocationLog
from .revocation_view import REMINT_MARGIN_S, RevocationTailer, RevocationView
from .session import JwksSource, SessionVerifier
from .settings import DEFAULT_RATE_LIMITS, EdgeSettings
from .suspension import SuspendedUsers
from .web_cors import cors_middleware
from .web_state import STATE, EdgeState

#: The app's front feed, when a front is configured (tests and benchmarks read its counters).
FRONT_FEED: web.AppKey[FrontFeed] = web.AppKey("cdn_auth_front_feed", FrontFeed)


async def _caller(authorizer: Authorizer, request: web.Request) -> str:
    token = bearer_token(request)
    if token is None:
        raise SessionMissing()
    return (await authorizer.session(token)).sub


ROUTES = (
    *web_edge.ROUTES,
    *web_media.ROUTES,
    *web_grants.ROUTES,
    *web_capabilities.ROUTES,
    *web_banks.ROUTES,
    *web_playback.ROUTES,
    *web_ops.ROUTES,
)


def build_app(
    settings: EdgeSettings,
    *,
    redis: RedisClient | None = None,
    tail_redis: RedisClient | None = None,
    clock: Clock = system_clock,
) -> web.Application:
    """Build the app.  Pass ``redis``/``tail_redis`` to inject clients (tests do);
    otherwise they are created from ``settings.redis_url`` and closed on cleanup."""
    owned = []
    if redis is None:
        redis = connect(settings.redis_url.get_secret_value(), cluster=settings.redis_cluster)
        owned.append(redis)
    if tail_redis is None:
        tail_redis = connect(
            settings.redis_url.get_secret_value(), cluster=settings.redis_cluster, socket_timeout_s=None
        )
        owned.append(tail_redis)
    metrics = Metrics()
    metrics.staleness_bound.set(settings.staleness_bound_s)
    view = RevocationView(
        # The longest-lived token an event can concern: a pointer or grant, or a media cookie
        # (any edge's: the verifier accepts up to MAX_PLAYBACK_TTL_S whatever this edge mints).
        max(settings.max_token_lifetime_s, MAX_PLAYBACK_TTL_S)
        + settings.token_leeway_s
        + REMINT_MARGIN_S,
        clock,
        capability_window_s=settings.max_capability_lifetime_s
        + settings.token_leeway_s
        + REMINT_MARGIN_S,
    )
    tailer = RevocationTailer(
        tail_redis,
        view,
        clock=clock,
        block_ms=settings.revocation_block_ms,
        on_lag=metrics.revocation_lag.observe,
    )
    sessions = SessionVerifier(
        JwksSource(settings.session_jwks, clock=clock),
        issuer=settings.session_issuer,
        audience=settings.session_audience,
        algorithms=settings.session_algorithms,
        leeway_s=settings.session_leeway_s,
        max_lifetime_s=settings.session_max_lifetime_s,
        clock=clock,
    )
    registry = MediaRegistry(redis, holds_maxlen=settings.holds_maxlen)
    playback = (
        None
        if settings.playback_secret_path is None
        else PlaybackTokens.from_file(
            settings.playback_secret_path,
            ttl_s=settings.playback_cookie_ttl_s,
            leeway_s=settings.token_leeway_s,
            clock=clock,
        )
    )
    keys = KeySet(settings.pointer_jwks, clock=clock)
    capabilities = CapabilityGate(
        keys=keys,
        bindings=DerivedBindings(redis, settings.token_leeway_s),
        clock=clock,
        max_token_lifetime_s=settings.max_token_lifetime_s,
        max_capability_lifetime_s=settings.max_capability_lifetime_s,
        leeway_s=settings.token_leeway_s,
        cache=metered_caches(metrics, settings.cache_size, clock),
    )
    authorizer = Authorizer(
        AuthorizerConfig(
            settings.max_token_lifetime_s,
            settings.token_leeway_s,
            settings.staleness_bound_s,
            settings.media_cache_ttl_s,
            settings.cache_size,
        ),
        sessions=sessions,
        keys=keys,
        registry=registry,
        tailer=tailer,
        metrics=metrics,
        redemptions=Redemptions(redis, settings.token_leeway_s),
        playback=playback,
        clock=clock,
        capabilities=capabilities,
    )
    logs.redact_bad_requests()
    # CORS outside the error middleware: refusals carry the headers too (web_cors.py).
    app = web.Application(
        middlewares=[
            cors_middleware(settings.cors_origins, max_age_s=settings.cors_max_age_s),
            error_middleware(on_response=metrics.response),
        ],
        client_max_size=1024 * 1024,
    )
    app[STATE] = state = EdgeState(
        settings=settings,
        redis=redis,
        authorizer=authorizer,
        registry=registry,
        revocations=RevocationLog(redis),
        origin=Origin(settings.origin_dir, settings.ingest_subdir),
        metrics=metrics,
        clock=clock,
        minter=KeyRingSource(settings.keyring_dir) if settings.keyring_dir is not None else None,
        banks=banks_from(settings, redis),
        hash_index=MediaHashIndex(redis, settings.pdq_threshold),
        grants=GrantStore(redis),
        suspended=SuspendedUsers(redis),
        playback=playback,
    )
    app[OPS] = web_ops.probe(state)
    app[BODY_DEADLINE] = BodyDeadline(settings.body_grace_s, settings.body_min_rate_bps)
    app[RATE_LIMITER] = RateLimiter(
        redis,
        parse_limits(settings.rate_limits, {n: Limit(*v) for n, v in DEFAULT_RATE_LIMITS.items()}),
        identify=lambda request: _caller(authorizer, request),
        enabled=settings.rate_limits_enabled,
        repeat_delay_s=settings.rate_limit_repeat_delay_s,
        max_paced=settings.rate_limit_max_paced,
    )
    openapi.serve_document(
        app,
        "cdn_auth: media registry and edge authorizer",
        __version__,
        ROUTES,
        settings,
        **api_schemas.DOCUMENT,
    )

    app.cleanup_ctx.append(tail_while_running(tailer.stream, owned))
    if settings.front_control_url and settings.front_control_secret is not None:
        feed = FrontFeed(
            settings.front_control_url,
            settings.front_control_secret.get_secret_value(),
            fresh_for_s=lambda: settings.staleness_bound_s - tailer.age_s(),
            interval_s=settings.front_push_interval_s,
            clock=clock,
        )
        view.listeners.append(feed.on_revocation)
        authorizer.key_listeners.append(feed.on_keys_retired)
        authorizer.session_key_listeners.append(feed.on_session_keys_retired)
        app[FRONT_FEED] = feed

        async def feed_while_running(_: web.Application) -> AsyncIterator[None]:
            async with feeding(feed):
                yield

        app.cleanup_ctx.append(feed_while_running)
    return app
