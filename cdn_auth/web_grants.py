"""Grants for the encrypted-pointer mode: ``POST /v1/grants`` mints, ``DELETE`` revokes.

cdn_auth checks that the requester may share the media and learns that it
is being shared and how widely, never with whom: the grant names a count
of redeemers, not users.  Re-sharing private media needs the owner's
permission and proof of receipt: a grant for the same media that the
requester has redeemed (``via_grant``); a derived grant is no such proof here (it would
lose its re-share chain): it is re-shared with ``POST /v1/capabilities``.
"""

from __future__ import annotations

from aiohttp import web

from service_kernel.errors import InvalidField
from service_kernel.ids import check_id, new_id
from service_kernel.openapi import Route
from service_kernel.web_errors import read_json

from . import api_schemas as api
from . import grant as grant_mod
from . import revocation, rights
from .capability import is_derived
from .errors import (
    Forbidden,
    GrantMediaMismatch,
    GrantNotFound,
    GrantRevoked,
    MintingDisabled,
    RevocationStale,
    ShareNeedsCapability,
)
from .reshare import received_via
from .web_capabilities import revoke_derived
from .web_media import _session
from .web_state import STATE


async def create_grant(request: web.Request) -> web.Response:
    state = request.app[STATE]
    session = await _session(request)
    await state.suspended.refuse(session.sub)  # no new tokens for media either
    doc = await read_json(request, allowed={"media_id", "redeemers", "via_grant", "ttl_s"})
    media = await state.registry.get(check_id(doc.get("media_id"), "media_id"))
    redeemers = doc.get("redeemers")
    if (
        not isinstance(redeemers, int)
        or isinstance(redeemers, bool)
        or not 1 <= redeemers <= grant_mod.MAX_REDEEMERS
    ):
        raise InvalidField(f"redeemers must be an integer 1..{grant_mod.MAX_REDEEMERS}")
    max_ttl = state.settings.max_token_lifetime_s
    ttl_s = doc.get("ttl_s", min(grant_mod.DEFAULT_GRANT_TTL_S, max_ttl))
    if not isinstance(ttl_s, int) or not 10 <= ttl_s <= max_ttl:
        raise InvalidField(f"ttl_s must be 10..{max_ttl}")
    rights.check_active(media, state.authorizer.tailer.view)
    rights.check_audience(media, session)  # the sharer must be allowed to view it
    received = False
    via = doc.get("via_grant")
    reshare = via is not None and not (media.is_public or media.owner == session.sub)
    if reshare and isinstance(via, str) and is_derived(via):
        # A derived grant (cdn_auth.capability) is checked as a proof (so a revoked one is
        # still answered 410), but never turned into a minted grant: a grant carries no
        # re-share chain, so revoking the capability (or any source) the derived grant came
        # from would not end it, and it would outlive the derived grant.  POST
        # /v1/capabilities, which records the chain, is the way to re-share it.
        await received_via(state, session, media, via)
        raise ShareNeedsCapability("a derived grant as via_grant")
    elif reshare:
        if not isinstance(via, str):
            raise InvalidField("via_grant must be a grant token")
        prior = state.authorizer.grant(via)
        if prior.media_id != media.id:
            raise GrantMediaMismatch(prior.grant_id)
        # Re-share rights come from holding the media *now*: a revoked grant (revoked by
        # its sharer, or by the unsend of the message that carried it) gives none.
        if not state.authorizer.tail_fresh():
            raise RevocationStale(f"tail age {state.authorizer.tailer.age_s():.1f}s")
        if state.authorizer.tailer.view.is_grant_revoked(prior.grant_id):
            raise GrantRevoked(prior.grant_id)
        received = await state.authorizer.redemptions.is_bound(prior.grant_id, session.sub)
    rights.may_share(media, session.sub, received_from_owner_chain=received)
    if state.minter is None:
        raise MintingDisabled()
    grant_id = new_id("g")
    now = state.clock()
    token = grant_mod.mint(
        state.minter.signer(),
        grant_id=grant_id,
        media_id=media.id,
        max_redeemers=redeemers,
        sharer=session.sub,
        now=now,
        ttl_s=ttl_s,
    )
    expire_at = int(now) + ttl_s + state.settings.token_leeway_s
    await state.grants.record(grant_id, session.sub, expire_at)
    # Listed under its sharer, then the suspension checked again, as for a capability
    # (web_capabilities.create_capability): a suspension either revokes it or refuses it.
    await state.grants.record_held(session.sub, grant_id, expire_at, now)
    await state.suspended.refuse(session.sub)
    return web.json_response(
        {
            "grant": token,
            "grant_id": grant_id,
            "media_id": media.id,
            "max_redeemers": redeemers,
            "expires_at": int(now) + ttl_s,
        },
        status=201,
    )


async def revoke_grant(request: web.Request) -> web.Response:
    """The sharer (or a moderator) revokes a grant; every edge answers 410 for it."""
    state = request.app[STATE]
    session = await _session(request)
    grant_id = check_id(request.match_info["grant_id"], "grant_id")
    if grant_id.startswith("d_"):  # derived grants have no record: the body proves whose
        return await revoke_derived(request, state, session, grant_id)
    sharer = await state.grants.sharer(grant_id)
    if sharer is None:
        raise GrantNotFound(grant_id)
    if sharer != session.sub and not session.is_moderator:
        raise Forbidden("only the grant's sharer or a moderator may revoke it")
    entry = await state.revocations.publish(revocation.grant_revoked(grant_id))
    return web.json_response({"grant_id": grant_id, "revoked": True, "revocation_id": entry})


ROUTES = (
    Route(
        "POST",
        "/v1/grants",
        create_grant,
        "Mint a grant for sharing media in sealed mode",
        "grants",
        responses=(201, 400, 401, 403, 404, 410, 503),
        body="media_id, redeemers, via_grant (re-share), ttl_s",
        limit="grant",
        api=api.CREATE_GRANT,
    ),
    Route(
        "DELETE",
        "/v1/grants/{grant_id}",
        revoke_grant,
        "Revoke a grant",
        "grants",
        responses=(200, 401, 403, 404, 503),
        limit="grant",
        api=api.REVOKE_GRANT,
    ),
)
