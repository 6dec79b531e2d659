"""The exception tree of cdn_auth.

One root, :class:`CdnAuthError`; one leaf per failure.  Every leaf carries
the HTTP status and a stable machine-readable ``code``; the HTTP layer maps
them to ``{"error": {"code", "message"}}`` bodies without a lookup table of
its own.  ``detail`` is for logs and metrics and never reaches a client.
"""

from __future__ import annotations

from service_kernel.errors import ServiceError


class CdnAuthError(ServiceError):
    """Root of every error raised by cdn_auth."""


# -- 401: the session -------------------------------------------------------
class SessionError(CdnAuthError):
    status, code, public_message = 401, "session_invalid", "no valid session"


class SessionMissing(SessionError):
    code, public_message = "session_missing", "an Authorization: Bearer session is required"


class SessionInvalid(SessionError):
    code, public_message = "session_invalid", "the session token is not valid"


class SessionExpired(SessionInvalid):
    code, public_message = "session_expired", "the session token has expired"


class PlaybackEnded(SessionInvalid):
    code, public_message = "playback_ended", "this media cookie was ended by a sign-out"


# -- 403 / 410: tokens that authorize one fetch ------------------------------
class TokenError(CdnAuthError):
    """A pointer or grant failed verification."""

    status, code, public_message = 403, "token_invalid", "the media token is not valid"


class TokenMalformed(TokenError):
    code, public_message = "token_malformed", "the media token is malformed"


class TokenBadSignature(TokenError):
    code, public_message = "token_bad_signature", "the media token signature does not verify"


class TokenUnknownKey(TokenError):
    code, public_message = "token_unknown_key", "the media token was signed by an unknown key"


class TokenExpired(TokenError):
    code, public_message = "token_expired", "the media token has expired"


class TokenNotYetValid(TokenError):
    code, public_message = "token_not_yet_valid", "the media token is dated in the future"


class TokenWrongType(TokenError):
    code, public_message = "token_wrong_type", "the media token is of the wrong type"


class PointerMissing(TokenError):
    code, public_message = "pointer_required", "this media needs a pointer or a grant"


class TokenAmbiguous(TokenError):
    code, public_message = "token_ambiguous", "send a pointer or a grant, not both"


class PointerMediaMismatch(TokenError):
    code, public_message = "pointer_media_mismatch", "the pointer is for another media item"


class PointerWrongRecipient(TokenError):
    code, public_message = "pointer_wrong_recipient", "the pointer was issued to another user"


# -- rights ------------------------------------------------------------------
class CapabilityBoundsExceeded(TokenError):
    """A derived grant asks for more than its capability allows (N, or a later expiry)."""

    code, public_message = ("capability_bounds", "the grant exceeds what its capability allows")


class Forbidden(CdnAuthError):
    status, code, public_message = 403, "forbidden", "not allowed"


class NotAMember(Forbidden):
    code, public_message = "not_a_member", "the recipient is no longer in the conversation"


class AgeRestricted(Forbidden):
    code, public_message = "age_restricted", "this media is restricted by age"


class RegionRestricted(Forbidden):
    code, public_message = "region_restricted", "this media is not available in your region"


class ShareNotAllowed(Forbidden):
    code, public_message = "share_not_allowed", "you may not share this media"


class ShareNeedsCapability(ShareNotAllowed):
    """``POST /v1/grants`` with a derived grant as ``via_grant``: a minted grant would drop
    the re-share chain, so that re-share goes through ``POST /v1/capabilities``."""

    public_message = (
        "re-share media received through a capability with POST /v1/capabilities, "
        "which carries the chain"
    )


class GrantExhausted(Forbidden):
    code, public_message = "grant_exhausted", "this grant has been redeemed by all it allows"


class GrantMediaMismatch(Forbidden):
    code, public_message = "grant_media_mismatch", "the grant is for another media item"


class CapabilityExhausted(Forbidden):
    code, public_message = ("capability_exhausted", "the capability's grants have all been redeemed")


class NotModerator(Forbidden):
    code, public_message = "moderator_required", "only a moderator may do this"


class MediaBanked(Forbidden):
    """The file matches a hash bank whose action is refuse (which bank is not said)."""

    code, public_message = "media_banked", "this file matches a list of known-bad media"


class UserSuspended(Forbidden):
    """A moderator suspended the caller (dm's suspend_user action): no media registrations."""

    code, public_message = "user_suspended", "this account cannot register or share media"


class Gone(CdnAuthError):
    status, code, public_message = 410, "gone", "gone"


class MessageUnsent(Gone):
    code, public_message = "message_unsent", "the message carrying this media was unsent"


class MediaTakenDown(Gone):
    code, public_message = "media_taken_down", "this media has been taken down"


class MediaHeld(MediaTakenDown):
    code, public_message = "media_held", "this media is held for review"


class GrantRevoked(Gone):
    code, public_message = "grant_revoked", "the grant has been revoked"


class CapabilityRevoked(Gone):
    code, public_message = "capability_revoked", "the capability behind this grant was revoked"


class CapabilitySourceRevoked(Gone):
    """A re-sharer's capability whose source (the grant it came through, or that grant's
    own chain) was revoked: the re-share right is gone."""

    code, public_message = (
        "capability_source_revoked",
        "the share this capability came from was revoked",
    )


# -- 404 / 409 / 416 -----------------------------------------------------------
class NotFound(CdnAuthError):
    status, code, public_message = 404, "not_found", "not found"


class CapabilityNotFound(NotFound):
    code, public_message = "capability_not_found", "no such capability"


class MediaNotFound(NotFound):
    code, public_message = "media_not_found", "no such media"


class GrantNotFound(NotFound):
    code, public_message = "grant_not_found", "no such grant"


class PlaybackDisabled(NotFound):
    code, public_message = "playback_disabled", "browser playback is not configured on this edge"


class Conflict(CdnAuthError):
    status, code, public_message = 409, "conflict", "conflict"


class RangeNotSatisfiable(CdnAuthError):
    status, code, public_message = 416, "range_not_satisfiable", "the range is not satisfiable"

    def __init__(self, size: int) -> None:
        super().__init__(f"range outside 0..{size}")
        self.size = size


# -- 503: dependencies -----------------------------------------------------------
class Unavailable(CdnAuthError):
    status, code, public_message = 503, "unavailable", "a dependency is unavailable"
    retry_after_s = 1


class RedisUnavailable(Unavailable):
    code, public_message = "redis_unavailable", "the state store is unreachable"


class StorageUnavailable(Unavailable):
    """The origin directory cannot be written or read (permissions, full disk, a broken
    mount): the operator's problem, never the client's, and never a bare 500."""

    code, public_message = "storage_unavailable", "media storage is unavailable; retry later"
    retry_after_s = 30


class RevocationStale(Unavailable):
    code, public_message = "revocation_stale", "revocation state is stale; retry shortly"


class OriginUnavailable(Unavailable):
    code, public_message = "origin_unavailable", "the media bytes are unavailable"


class MintingDisabled(Unavailable):
    code, public_message = "minting_disabled", "this node verifies only; it holds no signing key"


class KeyRingError(CdnAuthError):
    """A key ring on disk is missing, corrupt or would be left unusable."""

    status, code, public_message = 500, "keyring_error", "key ring error"


# -- files an operator supplies (read at start-up or by a moderator's request; callers
# -- name the failure, so these are ValueErrors, not HTTP answers) ---------------
class BankFormatError(ValueError):
    """A bank file or signal that cannot be read; says where."""
