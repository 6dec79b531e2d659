"""Typed shapes of what the edge client returns (``docs/protocol.md``).

``TypedDict``\\ s: the JSON the media API answers, still plain dicts (``media["id"]`` keeps
working), with keys and types a type checker knows.  Conversations, messages and events
are still plain dicts in :class:`dm.client.DmClient`.
"""

from __future__ import annotations

from typing import TypedDict


class Audience(TypedDict):
    min_age: int
    allowed_regions: list[str]
    blocked_regions: list[str]


class MediaRecord(TypedDict):
    """``POST /v1/media`` and ``GET /v1/media/{id}`` (where the bytes live is not shown)."""

    id: str
    owner: str
    visibility: str  # "private" | "public"
    allow_reshare: bool
    audience: Audience
    status: str  # "active" | "taken_down"
    content_type: str
    size: int
    sha256: str
    created_at: int


class Grant(TypedDict):
    """``POST /v1/grants``: a sealed message's capability to fetch one media, N redeemers."""

    grant: str
    grant_id: str
    media_id: str
    max_redeemers: int
    expires_at: int


class Capability(TypedDict):
    """``POST /v1/capabilities``: lets its holder derive grants for one media offline."""

    capability: str
    cap_id: str
    media_id: str
    holder: str
    max_redeemers: int
    max_grants: int
    sources: list[str]
    expires_at: int
    max_grant_ttl_s: int
