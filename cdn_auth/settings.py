"""cdn_auth configuration, parsed once from the environment (prefix ``CDN_AUTH_``) and flags.

Nothing else in the package reads ``os.environ``.  What every service configures alike
(Redis, host, logs, rate limits, body deadlines, the staleness bound) comes from
:class:`service_kernel.settings_base.ServiceSettings`; secrets are ``SecretStr`` so
``repr`` never prints them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from service_kernel.settings_base import ServiceSettings

#: Per-user limits (rate per second, burst) by name, as routes declare them
#: (``Route(limit=...)``); docs/operations.md lists them.  ``CDN_AUTH_RATE_LIMITS`` (JSON,
#: e.g. ``{"grant": [20, 200]}``) overrides some or all.
DEFAULT_RATE_LIMITS: dict[str, tuple[float, int]] = {
    "media_create": (1.0, 30),  # registrations and uploads (each may write up to 512 MiB)
    "media_lookup": (20.0, 200),
    "grant": (10.0, 100),  # mint and revoke (each revoke is a revocation event)
    "takedown": (10.0, 100),  # moderators: each is a revocation event on every edge
    "banks": (2.0, 20),  # moderators: each addition may sweep every registered item
    # Browser media cookies: the web client asks once per page load and once per cookie
    # lifetime (CDN_AUTH_PLAYBACK_COOKIE_TTL_S); each call verifies a session and signs.
    "playback_session": (0.2, 20),
    # Sign-outs (DELETE /v1/playback-session): each is a revocation event on every edge, as a
    # grant revoke is, and a budget of their own, so renewals never make a sign-out fail.
    "playback_sign_out": (1.0, 10),
}


class EdgeSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CDN_AUTH_", frozen=True, extra="forbid")

    port: int = Field(8080, ge=0, le=65535)
    origin_dir: Path = Path("var/origin")
    #: Where publishers put files to register by ``origin_path`` (relative to this root):
    #: a subdirectory of ``origin_dir`` that never holds uploads (those go to ``uploads/``),
    #: so no record can be made to alias another record's bytes.
    ingest_subdir: str = Field("ingest", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    #: JWKS of pointer/grant verify keys (exported by the key ring).
    pointer_jwks: Path = Path("var/keys/pointer/verify.jwks.json")
    #: The key ring itself (private keys); only where grants are minted (the media API).
    keyring_dir: Path | None = None
    #: Session JWKS: a file path or an http(s) URL of the identity provider.
    session_jwks: str = "var/keys/session/jwks.json"
    session_issuer: str = "pointer-dm-dev"
    session_audience: str = "pointer-dm"
    session_algorithms: tuple[str, ...] = ("EdDSA",)
    session_leeway_s: int = Field(5, ge=0, le=300)
    #: Sessions whose ``exp - iat`` exceeds this are refused (RFC 8725: bounded lifetimes).
    session_max_lifetime_s: int = Field(24 * 3600, ge=60, le=7 * 24 * 3600)
    token_leeway_s: int = Field(5, ge=0, le=300)
    #: Longest lifetime of any pointer or grant; revocations are remembered this long,
    #: so it must stay well inside the revocation stream's retention (24 h).
    #: 6 h by default: a sealed message's grant must outlive the hours a recipient may
    #: take to open it; pointers stay short (their own TTL, minted per read).
    max_token_lifetime_s: int = Field(6 * 3600, ge=10, le=12 * 3600)
    #: Longest lifetime of a share capability (cdn_auth.capability); its revocation is
    #: remembered this long, so with leeway and margin it stays inside the stream's 24 h.
    max_capability_lifetime_s: int = Field(6 * 3600, ge=60, le=23 * 3600)
    media_cache_ttl_s: float = Field(30.0, ge=0, le=3600)
    cache_size: int = Field(100_000, ge=16)
    max_upload_bytes: int = Field(512 * 1024 * 1024, ge=1)
    revocation_block_ms: int = Field(1000, ge=10, le=60_000)
    #: Hash banks (known-bad media): a JSON manifest naming bank files and actions
    #: (format: cdn_auth.hashbank).  None: only the run-time "moderation" bank.
    bank_manifest: Path | None = None
    #: What a match in the run-time bank (moderators' additions) does: refuse or hold.
    moderation_bank_action: Literal["refuse", "hold"] = "refuse"
    #: The review queue of held media (``cdn:holds``) keeps about this many newest entries
    #: (XADD MAXLEN ~; ~80 B each).  A trimmed entry's media stays "held" in its record.
    holds_maxlen: int = Field(100_000, ge=100)
    #: PDQ Hamming distance at or below which two hashes match (31: PDQ's customary one).
    pdq_threshold: int = Field(31, ge=0, le=128)
    #: Keyframes sampled per video for perceptual hashing, and the decode budget.
    fingerprint_max_frames: int = Field(16, ge=1, le=256)
    fingerprint_budget_s: float = Field(10.0, gt=0, le=300)
    #: This host's nginx front (deploy/nginx/edge.conf.template): where to push revocations
    #: and liveness, e.g. http://127.0.0.1:8001/_front/revocations.  None: no front here.
    front_control_url: str | None = None
    #: Shared with the front (its POINTER_FRONT_SECRET); at least 16 characters.
    front_control_secret: SecretStr | None = None
    #: How often liveness is pushed; well inside the staleness bound.
    front_push_interval_s: float = Field(0.25, gt=0, le=5)
    #: Media responses go out in windows of stream_window_bytes; between windows the
    #: decision is re-checked against the revocation view (an open response to revoked
    #: media stops within a window), and each window must be written within
    #: write_timeout_s (a client that stops reading is dropped).
    stream_window_bytes: int = Field(1024 * 1024, ge=64 * 1024)
    write_timeout_s: float = Field(30.0, gt=0)
    #: Browser playback (docs/protocol.md section 13): the HMAC secret that signs the
    #: media cookie, shared by every edge.  None (the default) switches browser playback off:
    #: ``POST /v1/playback-session`` answers 404 and no cookie is honoured.
    playback_secret_path: Path | None = None
    playback_cookie_ttl_s: int = Field(600, ge=30, le=3600)
    #: None: ``Secure`` when the request arrived over https; set True behind a TLS front.
    playback_cookie_secure: bool | None = None
    #: Strict: the web client must be on the edge's site (same registrable domain).
    playback_cookie_samesite: Literal["Strict", "Lax"] = "Strict"
    #: Web origins allowed to call the edge with credentials (CORS), e.g.
    #: ``["https://app.example.com"]``; exact matches only, never ``*``.
    cors_origins: tuple[str, ...] = ()
    cors_max_age_s: int = Field(600, ge=0, le=86_400)

    @field_validator("cors_origins")
    @classmethod
    def _origins_are_exact(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            parts = urlsplit(origin)
            if (
                parts.scheme not in ("http", "https")
                or not parts.hostname
                or origin != f"{parts.scheme}://{parts.netloc}"
                or origin != origin.lower()
            ):
                raise ValueError(
                    f"CORS origin {origin!r} must be scheme://host[:port], "
                    "lower case, with no path (and never '*')"
                )
        return value

    @model_validator(mode="after")
    def _ingest_is_not_uploads(self) -> EdgeSettings:
        if self.ingest_subdir == "uploads":
            raise ValueError("ingest_subdir must not be the uploads directory")
        return self

    @model_validator(mode="after")
    def _tail_blocks_inside_the_staleness_bound(self) -> EdgeSettings:
        if self.revocation_block_ms >= self.staleness_bound_s * 1000:
            raise ValueError(
                "revocation_block_ms must be shorter than staleness_bound_s, or "
                "a healthy but idle tail would look stale"
            )
        return self

    @model_validator(mode="after")
    def _front_needs_a_secret(self) -> EdgeSettings:
        secret = self.front_control_secret
        if self.front_control_url and (secret is None or len(secret.get_secret_value()) < 16):
            raise ValueError("front_control_url needs front_control_secret (>= 16 characters)")
        if self.front_control_url and self.front_push_interval_s >= self.staleness_bound_s:
            raise ValueError("front_push_interval_s must be shorter than staleness_bound_s")
        return self
