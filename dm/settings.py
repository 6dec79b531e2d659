"""dm configuration, parsed once from the environment (prefix ``DM_``) and flags.

What every service configures alike (Redis, host, logs, rate limits, body deadlines, the
staleness bound of the notify tail) comes from
:class:`service_kernel.settings_base.ServiceSettings`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from service_kernel.settings_base import ServiceSettings

from .redis_keys import INBOX_MAX, NOTIFY_BLOCK_MS

#: Per-user limits (rate per second, burst) by name, as routes declare them
#: (``Route(limit=...)``); ``signup`` is per client address (no session yet).
#: docs/operations.md lists them; ``DM_RATE_LIMITS`` (JSON, e.g. ``{"send": [20, 40]}``)
#: overrides some or all.
DEFAULT_RATE_LIMITS: dict[str, tuple[float, int]] = {
    "signup": (2.0, 50),  # dev issuer only, per address
    "device_link": (1.0, 10),
    "device_key": (1.0, 20),
    "lookup": (20.0, 200),  # conversation and device directory reads
    "conversation_create": (1.0, 30),
    "membership": (5.0, 50),  # leave / remove: each is a revocation event
    "block": (2.0, 50),
    "send": (10.0, 50),  # across all conversations (send_rate_per_s is per one)
    "read": (20.0, 100),  # a page mints up to page_limit_max pointers
    "unsend": (10.0, 100),
    "connect": (1.0, 20),  # WebSocket connects, replays included
    # Events a resumed socket is replayed (a connect with ?cursor= costs what it replays):
    # two full inboxes (INBOX_MAX) at once, then 50 events/s.
    "replay": (50.0, 4000),
    "report": (0.5, 20),
    "moderation": (20.0, 200),  # staff: queue, items, actions (each audited)
    "audit": (5.0, 50),
    "legal": (1.0, 20),
}


class DmSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="DM_", frozen=True, extra="forbid")

    port: int = Field(8090, ge=0, le=65535)
    #: Public base URL of the edge, used to build the ready-to-play media URLs.
    edge_base_url: str = "http://127.0.0.1:8080"
    #: The pointer key ring (dm mints pointers; it needs the private keys).
    keyring_dir: Path = Path("var/keys/pointer")
    pointer_ttl_s: int = Field(300, ge=10, le=3600)
    #: Dev issuer: POST /v1/users mints sessions from keys in issuer_dir.  Off unless
    #: explicitly enabled (demo, local stacks, tests): anyone who reaches dm could mint
    #: sessions.  Production points session_jwks at a real identity provider instead.
    dev_issuer: bool = False
    #: A second, separate switch: honour ``roles`` (moderator, publisher, ...) asked of the
    #: dev issuer.  Off, a request naming roles is refused (403 dev_issuer_roles_disabled).
    dev_issuer_roles: bool = False
    #: Longest session the dev issuer mints (and the verifier accepts), RFC 8725 hygiene.
    session_max_lifetime_s: int = Field(24 * 3600, ge=60, le=7 * 24 * 3600)
    issuer_dir: Path = Path("var/keys/session")
    #: Session JWKS (file or URL); defaults to the dev issuer's when empty.
    session_jwks: str = ""
    session_issuer: str = "pointer-dm-dev"
    session_audience: str = "pointer-dm"
    session_algorithms: tuple[str, ...] = ("EdDSA",)
    session_leeway_s: int = Field(5, ge=0, le=300)
    default_mode: Literal["plain", "sealed"] = "plain"
    #: HMAC key the server countersigns franking commitments with (created, mode 0600).
    franking_key_path: Path = Path("var/keys/franking.key")
    max_devices_per_user: int = Field(8, ge=1, le=64)
    #: Users one user may block (403 beyond; unblock one first).
    max_blocks_per_user: int = Field(10_000, ge=1)
    max_group_size: int = Field(64, ge=2, le=1024)
    max_text_bytes: int = Field(4096, ge=1)
    max_body_bytes: int = Field(256 * 1024, ge=1024)
    #: Sends per sender per conversation per second (429 beyond).
    send_rate_per_s: int = Field(50, ge=1)
    idempotency_ttl_s: int = Field(24 * 3600, ge=60)
    media_cache_ttl_s: float = Field(5.0, ge=0)
    page_limit_max: int = Field(200, ge=1)
    #: Safety (docs/safety.md).  Scan lists for plain sends (JSON; None: no lists).
    scan_lists: Path | None = None
    #: External classifier called on plain sends ("" = none), its timeout and the verdict
    #: when it does not answer in time.
    classifier_url: str = ""
    classifier_timeout_s: float = Field(0.25, gt=0, le=10)
    classifier_on_timeout: Literal["allow", "flag", "hold"] = "flag"
    #: Match shared media's CDN fingerprint against the hash banks on plain sends.
    scan_media_hashes: bool = True
    #: Hash banks dm matches on (the edge's manifest; None: only the run-time bank).
    bank_manifest: Path | None = None
    pdq_threshold: int = Field(31, ge=0, le=128)
    #: Messages either side of a reported one a moderator sees by default, and at most.
    moderation_context: int = Field(5, ge=0, le=100)
    moderation_context_max: int = Field(25, ge=0, le=200)
    #: Lifetime of the pointers minted for a moderator to play reported media.
    moderation_pointer_ttl_s: int = Field(60, ge=10, le=600)
    #: Audit log retention: a year at least (docs/safety.md).
    audit_retention_s: int = Field(2 * 365 * 24 * 3600, ge=365 * 24 * 3600)
    #: Legal requests: longest time scope, and most messages in one export.
    legal_max_span_s: int = Field(366 * 24 * 3600, ge=3600)
    legal_export_max_messages: int = Field(10_000, ge=1, le=100_000)
    #: WebSockets: a push not written within ws_write_timeout_s closes the socket (1013,
    #: resume by cursor); at most ws_max_per_user sockets per user across all dm processes
    #: and ws_max_total per process (each socket costs a queue and, per pushed message, a
    #: pointer).  The per-user count is kept by leases in Redis (dm.stream_leases): each
    #: lasts ws_lease_s and is renewed every third of it while the socket is open, so a
    #: crashed process's sockets stop counting within ws_lease_s.
    ws_write_timeout_s: float = Field(5.0, gt=0)
    ws_max_per_user: int = Field(10, ge=1)
    ws_max_total: int = Field(20_000, ge=1)
    ws_lease_s: float = Field(30.0, ge=1.0, le=3600.0)
    #: Serve the web client at /app/ (static files; it signs in with the dev issuer if on,
    #: else with a pasted session token).  Media plays through the edge's browser path.
    web_client: bool = True
    #: Per-process caches: most entries each holds (least recently used dropped beyond),
    #: and how long an entry is reused.  Sessions live until their ``exp``; conversations
    #: and block lists are also evicted by the notify stream's membership and block events,
    #: so their TTLs are only a backstop.
    session_cache_size: int = Field(100_000, ge=1)
    media_cache_size: int = Field(100_000, ge=1)
    conversation_cache_size: int = Field(100_000, ge=1)
    conversation_cache_ttl_s: float = Field(2.0, ge=0)
    block_cache_size: int = Field(100_000, ge=1)
    block_cache_ttl_s: float = Field(60.0, ge=0)
    #: Whether a sender is suspended, cached per user: a suspension evicts the entry in the
    #: acting process at once and in every other through the notify stream, so the TTL (one
    #: staleness bound by default) only covers a tail that stopped hearing Redis.
    suspension_cache_size: int = Field(100_000, ge=1)
    suspension_cache_ttl_s: float = Field(5.0, ge=0)
    #: Unsends seen on the notify stream, remembered so a queued push of an unsent message
    #: mints nothing.  At least dm.web_stream.LIVE_RECHECK_AFTER_S (30 s): a push older than
    #: that is checked in Redis instead.
    recent_unsent_cache_size: int = Field(100_000, ge=1)
    recent_unsent_ttl_s: float = Field(600.0, ge=30.0)
    #: Rendered WebSocket frames, reused by one reader's other sockets.
    frame_cache_size: int = Field(10_000, ge=1)
    frame_cache_ttl_s: float = Field(10.0, ge=0)

    @model_validator(mode="after")
    def _tail_blocks_inside_the_staleness_bound(self) -> DmSettings:
        if self.staleness_bound_s * 1000 <= NOTIFY_BLOCK_MS:
            raise ValueError(
                f"staleness_bound_s must be longer than the notify tail's XREAD "
                f"block ({NOTIFY_BLOCK_MS} ms), or a healthy but idle tail "
                "would look stale"
            )
        return self

    @model_validator(mode="after")
    def _a_replay_fits_its_burst(self) -> DmSettings:
        # A charge is capped at the burst (more could never be allowed), so a burst below
        # the inbox's size would let a full resume pay less than it replays.
        override = self.rate_limits.get("replay")
        if override is not None and int(override[1]) < INBOX_MAX:
            raise ValueError(f"rate_limits.replay: the burst must be at least INBOX_MAX ({INBOX_MAX})")
        return self

    @property
    def session_jwks_location(self) -> str:
        return self.session_jwks or str(self.issuer_dir / "jwks.json")
