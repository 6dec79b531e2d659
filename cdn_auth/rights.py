"""Where every "may this user see / share this media?" rule is decided.

Pure functions over verified inputs; each failure raises its own leaf of
:class:`cdn_auth.errors.CdnAuthError`, so the edge reports exactly which
rule said no.
"""

from __future__ import annotations

from .errors import (
    AgeRestricted,
    MediaHeld,
    MediaTakenDown,
    MessageUnsent,
    NotAMember,
    PointerMediaMismatch,
    PointerWrongRecipient,
    RegionRestricted,
    ShareNotAllowed,
)
from .media import Media
from .pointer import Pointer
from .revocation_view import RevocationView
from .session import Session


def check_active(media: Media, view: RevocationView | None = None) -> None:
    if media.status != "active" or (view is not None and view.is_taken_down(media.id)):
        raise MediaHeld(media.id) if media.status == "held" else MediaTakenDown(media.id)


def check_audience(media: Media, session: Session) -> None:
    """Age and region gates, applied with the session's claims; unknown claims fail closed."""
    rules = media.audience
    if rules.min_age > 0 and (session.age is None or session.age < rules.min_age):
        raise AgeRestricted(f"age {session.age} < {rules.min_age}")
    if rules.allowed_regions or rules.blocked_regions:
        region = session.region
        if (
            region is None
            or region in rules.blocked_regions
            or (rules.allowed_regions and region not in rules.allowed_regions)
        ):
            raise RegionRestricted(f"region {region}")


def check_pointer_binding(pointer: Pointer, media_id: str, session: Session) -> None:
    if pointer.media_id != media_id:
        raise PointerMediaMismatch(f"pointer for {pointer.media_id}")
    if pointer.sub != session.sub:
        raise PointerWrongRecipient("pointer sub differs from the session user")


def check_not_revoked(pointer: Pointer, view: RevocationView) -> None:
    """Unsent message: 410.  Recipient left or was removed: 403, whatever the pointer's
    ``iat`` (conversations have no re-add, so a pointer minted after the leave, e.g. by
    a replay or a stale cache, is as dead as one minted before it)."""
    if view.is_unsent(pointer.conversation_id, pointer.message_id):
        raise MessageUnsent(pointer.message_id)
    if view.left_at(pointer.conversation_id, pointer.sub) is not None:
        raise NotAMember(pointer.conversation_id)


def may_view(media: Media, session: Session) -> None:
    """Viewing without a pointer: public media, or the owner's own."""
    check_active(media)
    if media.owner != session.sub:
        check_audience(media, session)


def may_share(media: Media, user_id: str, *, received_from_owner_chain: bool = False) -> None:
    """Whether ``user_id`` may send a pointer to ``media``.

    Public media: anyone.  Private: the owner; or, if the owner allowed
    re-sharing, someone who received it (the caller, which knows the
    conversations, says so with ``received_from_owner_chain``).
    """
    check_active(media)
    if media.is_public or media.owner == user_id:
        return
    if media.allow_reshare and received_from_owner_chain:
        return
    raise ShareNotAllowed(media.id)
