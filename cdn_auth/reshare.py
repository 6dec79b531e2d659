"""Proof of receipt for a re-share: a grant or derived grant the requester has redeemed.

Shared by ``POST /v1/capabilities`` and, for a derived ``via_grant``, ``POST /v1/grants``
(which checks it, so a revoked one is answered 410, then refuses it: a minted grant would
drop the chain).
The proof counts only while it is live now (not revoked; for a derived grant, neither its
capability nor any of that capability's sources), so revoking a source is honoured by
every route that could turn it into a new share.
"""

from __future__ import annotations

from typing import NamedTuple

from service_kernel.errors import InvalidField

from .capability import MAX_SOURCES, is_derived
from .capability_gate import check_live
from .errors import GrantMediaMismatch, GrantRevoked, RevocationStale, ShareNotAllowed
from .media import Media
from .session import Session
from .web_state import EdgeState


class Receipt(NamedTuple):
    #: The requester is bound to the grant as a redeemer (has fetched with it).
    redeemed: bool
    #: The re-share chain a capability made from it must name: the grant, and for a derived
    #: grant its capability and that capability's own sources.
    sources: tuple[str, ...]
    #: The grant's expiry: a capability made from it lives no longer.
    exp: int


async def received_via(state: EdgeState, session: Session, media: Media, via: object) -> Receipt:
    if not isinstance(via, str):
        raise InvalidField("via_grant must be a grant token")
    authorizer = state.authorizer
    gate = authorizer.capabilities
    if gate is not None and is_derived(via):
        d = gate.derived(via)
        if d.capability.media_id != media.id:
            raise GrantMediaMismatch(d.grant_id)
        _fresh(state)
        check_live(d, media, authorizer.tailer.view)
        sources = (d.grant_id, d.capability.cap_id, *d.capability.sources)
        if len(sources) > MAX_SOURCES:
            raise ShareNotAllowed("re-share chain too long")
        return Receipt(await gate.bindings.is_bound(d, session.sub), sources, d.exp)
    g = authorizer.grant(via)
    if g.media_id != media.id:
        raise GrantMediaMismatch(g.grant_id)
    _fresh(state)
    if authorizer.tailer.view.is_grant_revoked(g.grant_id):
        raise GrantRevoked(g.grant_id)
    return Receipt(await authorizer.redemptions.is_bound(g.grant_id, session.sub), (g.grant_id,), g.exp)


def _fresh(state: EdgeState) -> None:
    if not state.authorizer.tail_fresh():
        raise RevocationStale(f"tail age {state.authorizer.tailer.age_s():.1f}s")
