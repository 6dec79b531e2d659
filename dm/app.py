"""Assembles the dm aiohttp application from settings and injected dependencies."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from cdn_auth.hashbank import load_manifest
from cdn_auth.keyring import KeyRingSource
from cdn_auth.matching import BankSet, MediaHashIndex
from cdn_auth.registry import MediaRegistry
from cdn_auth.revocation import RevocationLog
from cdn_auth.session import JwksSource, SessionVerifier
from service_kernel import logs, openapi
from service_kernel.body_deadline import BODY_DEADLINE, BodyDeadline
from service_kernel.clock import Clock, system_clock
from service_kernel.files import load_or_create_secret
from service_kernel.rate_limit import RATE_LIMITER, Limit, RateLimiter, parse_limits
from service_kernel.redis_client import RedisClient, connect
from service_kernel.stream_tail import Entry
from service_kernel.web_errors import error_middleware
from service_kernel.web_lifecycle import tail_while_running
from service_kernel.web_ops import OPS

from . import (
    __version__,
    api_schemas,
    web_app,
    web_conversations,
    web_devices,
    web_messages,
    web_moderation,
    web_ops,
    web_reports,
    web_stream,
    web_users,
)
from .audit import AuditLog
from .delivery import PointerMinter
from .identity import DevIssuer
from .notify import Hub, NotifyLog
from .review import ReviewQueue
from .safety import SafetyCheck, TakedownListCheck
from .scanner import build_scanner
from .settings import DEFAULT_RATE_LIMITS, DmSettings
from .store import DmStore
from .stream_leases import LEASES, StreamLeases
from .web_state import STATE, DmState

ROUTES = (
    *web_users.ROUTES,
    *web_devices.ROUTES,
    *web_conversations.ROUTES,
    *web_messages.ROUTES,
    *web_stream.ROUTES,
    *web_reports.ROUTES,
    *web_moderation.ROUTES,
    *web_app.ROUTES,
    *web_ops.ROUTES,
)


def build_app(
    settings: DmSettings,
    *,
    redis: RedisClient | None = None,
    clock: Clock = system_clock,
    safety: Sequence[SafetyCheck] | None = None,
    issuer: DevIssuer | None = None,
) -> web.Application:
    owned = []
    if redis is None:
        redis = connect(settings.redis_url.get_secret_value(), cluster=settings.redis_cluster)
        owned.append(redis)
    tail_redis = connect(
        settings.redis_url.get_secret_value(), cluster=settings.redis_cluster, socket_timeout_s=None
    )
    owned.append(tail_redis)
    if settings.dev_issuer and issuer is None:
        issuer = DevIssuer.load_or_create(
            settings.issuer_dir, issuer=settings.session_issuer, audience=settings.session_audience
        )
    sessions = SessionVerifier(
        JwksSource(settings.session_jwks_location, clock=clock),
        issuer=settings.session_issuer,
        audience=settings.session_audience,
        algorithms=settings.session_algorithms,
        leeway_s=settings.session_leeway_s,
        max_lifetime_s=settings.session_max_lifetime_s,
        clock=clock,
    )
    hub = Hub(tail_redis)
    ring = KeyRingSource(settings.keyring_dir)
    banks = BankSet(
        redis,
        load_manifest(settings.bank_manifest, threshold=settings.pdq_threshold)
        if settings.bank_manifest is not None
        else [],
        threshold=settings.pdq_threshold,
    )
    hash_index = MediaHashIndex(redis, settings.pdq_threshold)
    scanner = build_scanner(settings, banks, hash_index, clock)
    state = DmState(
        settings=settings,
        redis=redis,
        store=DmStore(
            redis, idempotency_ttl_s=settings.idempotency_ttl_s, send_rate_per_s=settings.send_rate_per_s
        ),
        hub=hub,
        notify=NotifyLog(redis),
        minter=PointerMinter(ring, ttl_s=settings.pointer_ttl_s, edge_base_url=settings.edge_base_url),
        sessions=sessions,
        registry=MediaRegistry(redis),
        revocations=RevocationLog(redis),
        safety=list(safety) if safety is not None else [TakedownListCheck()],
        issuer=issuer if settings.dev_issuer else None,
        clock=clock,
        franking_key=load_or_create_secret(settings.franking_key_path),
        scanner=scanner,
        queue=ReviewQueue(redis),
        audit=AuditLog(redis, settings.audit_retention_s),
        mod_minter=PointerMinter(
            ring, ttl_s=settings.moderation_pointer_ttl_s, edge_base_url=settings.edge_base_url
        ),
        banks=banks,
        hash_index=hash_index,
    )

    def evict(entry: Entry) -> None:
        kind, fields = entry[1].get("type"), entry[1]
        if kind in ("member_left", "joined"):
            state.conv_cache.evict(fields.get("conversation_id", ""))
        elif kind == "unsent":
            state.recent_unsent.put(
                f"{fields.get('conversation_id', '')}|{fields.get('message_id', '')}",
                True,
                state.clock() + settings.recent_unsent_ttl_s,
            )
        elif kind == "blocks_changed":
            state.block_cache.evict(fields.get("user_id", ""))
        elif kind == "user_suspended":
            state.suspensions_heard += 1
            state.suspension_cache.evict(fields.get("user_id", ""))

    hub.listeners.append(evict)
    state.metrics.staleness_bound.set(settings.staleness_bound_s)
    logs.redact_bad_requests()
    app = web.Application(
        middlewares=[error_middleware(on_response=state.metrics.response)],
        client_max_size=settings.max_body_bytes,
    )
    app[STATE] = state
    app[OPS] = web_ops.probe(state)

    async def caller(request: web.Request) -> str:
        return (await state.session(request)).sub

    app[BODY_DEADLINE] = BodyDeadline(settings.body_grace_s, settings.body_min_rate_bps)
    app[RATE_LIMITER] = RateLimiter(
        redis,
        parse_limits(settings.rate_limits, {n: Limit(*v) for n, v in DEFAULT_RATE_LIMITS.items()}),
        identify=caller,
        enabled=settings.rate_limits_enabled,
        repeat_delay_s=settings.rate_limit_repeat_delay_s,
        max_paced=settings.rate_limit_max_paced,
    )
    openapi.serve_document(
        app,
        "dm: direct messages with video pointers",
        __version__,
        ROUTES,
        settings,
        **api_schemas.DOCUMENT,
    )

    app[LEASES] = StreamLeases(redis, cap=settings.ws_max_per_user, lease_s=settings.ws_lease_s)
    app.cleanup_ctx.append(tail_while_running(hub.tailer, owned))
    app.cleanup_ctx.append(app[LEASES].renewing)  # exits first: before the clients close
    app.on_cleanup.append(lambda _app: scanner.close())
    return app
