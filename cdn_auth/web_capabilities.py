"""Share capabilities: ``POST /v1/capabilities`` issues one, ``DELETE`` revokes it.

A capability lets its holder derive per-share grants on their own device, with no round
trip to this API at share time (cdn_auth.capability; docs/protocol.md, section 14).
Issuing one runs the checks of ``POST /v1/grants``: the media is active, the holder is
inside its audience, and the holder may share it (owner, public, or a re-share the owner
allows, proven by a redeemed ``via_grant``).  Derived grants are revoked one by one with
``DELETE /v1/grants/{d_...}`` (the grant in the body proves whose it is).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from service_kernel.encoding import Base64Error, b64url_decode
from service_kernel.errors import InvalidField
from service_kernel.ids import check_id, new_id
from service_kernel.openapi import Route
from service_kernel.web_errors import read_json

from . import api_schemas as api
from . import capability as cap_mod
from . import grant as grant_mod
from . import revocation, rights
from .errors import (
    CapabilityNotFound,
    Forbidden,
    GrantNotFound,
    MintingDisabled,
    ShareNotAllowed,
)
from .reshare import received_via
from .session import Session
from .web_media import _session
from .web_state import STATE, EdgeState

DEFAULT_MAX_GRANTS = 1000


def _int(doc: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = doc.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidField(f"{name} must be an integer {low}..{high}")
    return value


def _holder_key(value: object) -> bytes:
    if not isinstance(value, str) or len(value) > 64:
        raise InvalidField("holder_key must be base64url of a 32-byte Ed25519 public key")
    try:
        raw = b64url_decode(value)
    except Base64Error:
        raise InvalidField("holder_key is not canonical base64url") from None
    if len(raw) != 32:
        raise InvalidField("holder_key must be 32 bytes (Ed25519)")
    if cap_mod.is_small_order(raw):
        raise InvalidField("holder_key is a small-order Ed25519 point, which signs anything")
    return raw


async def create_capability(request: web.Request) -> web.Response:
    state = request.app[STATE]
    session = await _session(request)
    await state.suspended.refuse(session.sub)  # no new tokens for media either
    doc = await read_json(
        request, allowed={"media_id", "holder_key", "max_redeemers", "max_grants", "ttl_s", "via_grant"}
    )
    media = await state.registry.get(check_id(doc.get("media_id"), "media_id"))
    holder_key = _holder_key(doc.get("holder_key"))
    max_redeemers = _int(doc, "max_redeemers", grant_mod.MAX_REDEEMERS, 1, grant_mod.MAX_REDEEMERS)
    max_grants = _int(doc, "max_grants", DEFAULT_MAX_GRANTS, 1, cap_mod.MAX_GRANTS)
    max_ttl = state.settings.max_capability_lifetime_s
    ttl_s = _int(doc, "ttl_s", min(cap_mod.DEFAULT_CAPABILITY_TTL_S, max_ttl), 60, max_ttl)
    rights.check_active(media, state.authorizer.tailer.view)
    rights.check_audience(media, session)  # the holder must be allowed to view it
    now = state.clock()
    iat = int(now)
    sources: tuple[str, ...] = ()
    source_exp = 0
    received = False
    via = doc.get("via_grant")
    if via is not None and not (media.is_public or media.owner == session.sub):
        receipt = await received_via(state, session, media, via)
        received, sources, source_exp = receipt.redeemed, receipt.sources, receipt.exp
        # A re-sharer's capability never outlives what it came from.
        ttl_s = min(ttl_s, receipt.exp - iat)
        if ttl_s <= 0:
            raise ShareNotAllowed(media.id)
        # The owner or a moderator revoked this holder's capability on this very proof:
        # asking again with it gets nothing (section 14.5).
        if await state.grants.reissue_denied(sources[0], session.sub):
            raise ShareNotAllowed("capability on this via_grant revoked by the owner or a moderator")
    rights.may_share(media, session.sub, received_from_owner_chain=received)
    if state.minter is None:
        raise MintingDisabled()
    cap_id = new_id("c")
    try:
        token = cap_mod.mint(
            state.minter.signer(),
            cap_id=cap_id,
            media_id=media.id,
            holder=session.sub,
            holder_key=holder_key,
            max_redeemers=max_redeemers,
            max_grants=max_grants,
            sources=sources,
            now=now,
            ttl_s=ttl_s,
        )
    except ValueError as exc:
        raise InvalidField(str(exc)) from None
    # Listed under its proof before it is handed out, in one transaction with the denial
    # check: a revocation by the owner or a moderator either ends it too or refuses it here.
    if sources and not await state.grants.record_issued(
        sources[0], session.sub, cap_id, source_exp + state.settings.token_leeway_s
    ):
        raise ShareNotAllowed("capability on this via_grant revoked by the owner or a moderator")
    await state.grants.record_capability(
        cap_id,
        session.sub,
        media.owner,
        iat + ttl_s + state.settings.token_leeway_s,
        source=sources[0] if sources else None,
        source_exp=source_exp,
    )
    # Listed under its holder before it is handed out, then the suspension checked again: a
    # suspension the first check missed either reads it listed (and revokes it) or is seen
    # here (each side writes, then reads the other's key; docs/protocol.md, section 14.5).
    await state.grants.record_held(session.sub, cap_id, iat + ttl_s + state.settings.token_leeway_s, now)
    await state.suspended.refuse(session.sub)
    return web.json_response(
        {
            "capability": token,
            "cap_id": cap_id,
            "media_id": media.id,
            "holder": session.sub,
            "max_redeemers": max_redeemers,
            "max_grants": max_grants,
            "sources": list(sources),
            "expires_at": iat + ttl_s,
            # how long a derived grant may live: the edges' token lifetime
            "max_grant_ttl_s": state.settings.max_token_lifetime_s,
        },
        status=201,
    )


async def revoke_capability(request: web.Request) -> web.Response:
    """The holder, the media's owner or a moderator revokes a capability: every grant
    derived from it, and every capability re-shared from those, is refused from then on.

    Revoked by anyone but its holder, a re-sharer's capability ends every capability that
    holder was issued on the same proof (its immediate source), and none is issued to it on
    that proof again while the proof lives; a holder that revokes its own may ask again."""
    state = request.app[STATE]
    session = await _session(request)
    cap_id = check_id(request.match_info["cap_id"], "cap_id")
    rec = await state.grants.capability_record(cap_id)
    if rec is None:
        raise CapabilityNotFound(cap_id)
    if session.sub not in (rec.holder, rec.owner) and not session.is_moderator:
        raise Forbidden("only the holder, the media's owner or a moderator may revoke it")
    siblings: frozenset[str] = frozenset()
    if rec.source is not None and session.sub != rec.holder:
        # before the revocation, so a refused re-issue never follows a published revocation;
        # it returns the holder's other capabilities on the proof, ended with this one
        siblings = await state.grants.deny_reissue(
            rec.source, rec.holder, rec.source_exp + state.settings.token_leeway_s
        )
    for sibling in sorted(siblings - {cap_id}):
        await state.revocations.publish(revocation.capability_revoked(sibling))
    # last: an edge that has applied this entry has applied the siblings' (one stream)
    entry = await state.revocations.publish(revocation.capability_revoked(cap_id))
    return web.json_response({"cap_id": cap_id, "revoked": True, "revocation_id": entry})


async def revoke_derived(
    request: web.Request, state: EdgeState, session: Session, grant_id: str
) -> web.Response:
    """``DELETE /v1/grants/{d_...}``: no record of a derived grant exists, so the grant
    itself, in the body, shows whose it is: its capability's holder (or a moderator)."""
    doc = await read_json(request, allowed={"grant"})
    token = doc.get("grant")
    gate = state.authorizer.capabilities
    if not isinstance(token, str):
        raise InvalidField("grant: the derived grant token is required")
    if gate is None:
        raise GrantNotFound(grant_id)
    d = gate.derived(token)
    if d.grant_id != grant_id:
        raise InvalidField("the grant in the body is not the one in the path")
    if session.sub != d.capability.holder and not session.is_moderator:
        raise Forbidden("only the capability's holder or a moderator may revoke it")
    entry = await state.revocations.publish(revocation.grant_revoked(grant_id))
    return web.json_response({"grant_id": grant_id, "revoked": True, "revocation_id": entry})


ROUTES = (
    Route(
        "POST",
        "/v1/capabilities",
        create_capability,
        "Issue a share capability: its holder derives per-share grants offline",
        "grants",
        responses=(201, 400, 401, 403, 404, 410, 503),
        body="media_id, holder_key, max_redeemers, max_grants, ttl_s, via_grant (re-share)",
        limit="grant",
        api=api.CREATE_CAPABILITY,
    ),
    Route(
        "DELETE",
        "/v1/capabilities/{cap_id}",
        revoke_capability,
        "Revoke a capability and every grant derived from it",
        "grants",
        responses=(200, 401, 403, 404, 503),
        limit="grant",
        api=api.REVOKE_CAPABILITY,
    ),
)
