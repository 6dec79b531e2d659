"""The settings every service shares: Redis, where to listen, logs, limits, stream freshness.

Each service derives its settings from :class:`ServiceSettings` and sets its own
environment prefix (``CDN_AUTH_``, ``DM_``), so ``CDN_AUTH_REDIS_URL`` and
``DM_REDIS_URL`` are the same field, parsed once per service.  Secrets (the Redis URL
may carry a password) are ``SecretStr`` so ``repr`` never prints them.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """What both services configure alike; a subclass adds its prefix and its own fields."""

    model_config = SettingsConfigDict(frozen=True, extra="forbid")

    redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    redis_cluster: bool = False
    host: str = "127.0.0.1"
    #: Each service sets its own default (dm 8090, the edge 8080).
    port: int = Field(0, ge=0, le=65535)
    #: How long the service's stream tail (the edge's revocations, dm's notifications) may
    #: go without an answer from Redis before the service is stale: ``/readyz`` answers
    #: 503, and the edge fails pointer requests closed.
    staleness_bound_s: float = Field(5.0, gt=0, le=300)
    log_level: str = "INFO"
    #: Overrides of the service's DEFAULT_RATE_LIMITS; ``rate_limits_enabled=false`` turns
    #: all off.
    rate_limits: dict[str, tuple[float, int]] = Field(default_factory=dict)
    rate_limits_enabled: bool = True
    #: A client that asks again while refused gets its 429 after this long (at most its
    #: remaining wait; 0 answers at once), at most ``rate_limit_max_paced`` held at once per
    #: process: a client retrying at full speed cannot take the CPU others need.
    rate_limit_repeat_delay_s: float = Field(0.5, ge=0, le=10)
    rate_limit_max_paced: int = Field(1024, ge=0, le=100_000)
    #: Request bodies: after body_grace_s, at least body_min_rate_bps on average (408 below).
    body_grace_s: float = Field(10.0, gt=0)
    body_min_rate_bps: int = Field(16 * 1024, ge=1)
    #: The event loop the process runs on: ``asyncio``'s own (the default), ``uvloop``
    #: (libuv; must be installed: ``pip install uvloop``), or ``auto`` (uvloop where
    #: installed).  Measured with ``bench dm --event-loop``: no gain in dm's CPU per message
    #: on the 2-core development machine, within its noise (docs/benchmarks.md, section 5).
    event_loop: Literal["auto", "uvloop", "asyncio"] = "asyncio"

    @classmethod
    def load(cls, **overrides: Any) -> Self:
        """Environment first, then explicit overrides (flags) on top; ``None`` means unset."""
        return cls(**{k: v for k, v in overrides.items() if v is not None})
