"""The exception tree of dm: one root, one leaf per failure, status and code on the leaf."""

from __future__ import annotations

from service_kernel.errors import ServiceError


class DmError(ServiceError):
    """Root of every error raised by dm."""


class BadRequest(DmError):
    status, code, public_message, expose_detail = 400, "malformed_request", "malformed", True


class BadCursor(BadRequest):
    code, public_message = "bad_cursor", "the cursor is not valid"


class SealedNeedsEnvelopes(BadRequest):
    code, public_message = (
        "sealed_conversation",
        "a sealed conversation accepts only envelopes, never plaintext media ids or text",
    )


class TooLarge(DmError):
    status, code, public_message, expose_detail = 413, "too_large", "too large", True


class NotMember(DmError):
    status, code, public_message = 403, "not_a_member", "you are not in this conversation"


class Blocked(DmError):
    status, code, public_message = 403, "blocked", "you cannot message this user"


class NotAllowed(DmError):
    status, code, public_message = 403, "forbidden", "not allowed"


class DevIssuerDisabled(DmError):
    status, code, public_message = (
        404,
        "dev_issuer_disabled",
        "this deployment trusts an external identity provider",
    )


class DevIssuerRolesDisabled(DmError):
    status, code, public_message = (
        403,
        "dev_issuer_roles_disabled",
        "the dev issuer grants no roles here (DM_DEV_ISSUER_ROLES is off)",
    )


class SignInRefused(DmError):
    status, code, public_message = (
        403,
        "sign_in_refused",
        "that sign-in key is not this user's (it is the one POST /v1/users returned)",
    )


class NotFound(DmError):
    status, code, public_message = 404, "not_found", "not found"


class UnknownUser(NotFound):
    code, public_message = "user_not_found", "no such user"
    expose_detail = True


class ConversationNotFound(NotFound):
    code, public_message = "conversation_not_found", "no such conversation"


class MessageNotFound(NotFound):
    code, public_message = "message_not_found", "no such message"


class WebClientDisabled(NotFound):
    code, public_message = "web_client_disabled", "the web client is switched off"


class MessageUnsent(DmError):
    status, code, public_message = 410, "message_unsent", "the message was unsent"


class DeviceMismatch(DmError):
    """Like Signal's mismatched-devices answer: the sender's device list is stale."""

    status, code, public_message = (
        409,
        "device_mismatch",
        "envelopes do not match the conversation's current devices",
    )

    def __init__(self, missing: list[str], extra: list[str]) -> None:
        super().__init__(f"missing {len(missing)}, extra {len(extra)}")
        self.body_extra = {"missing_devices": missing, "extra_devices": extra}


class ReportUnverified(DmError):
    status, code, public_message = (
        403,
        "report_unverified",
        "the report does not match the franking commitment or countersignature",
    )


class IdempotencyConflict(DmError):
    status, code, public_message = (
        409,
        "idempotency_conflict",
        "this Idempotency-Key was used with a different request",
    )


class RateLimited(DmError):
    status, code, public_message = 429, "rate_limited", "too many messages; slow down"
    retry_after_s = 1


class TooManySockets(DmError):
    status, code, public_message = (
        429,
        "too_many_streams",
        "too many open streams for this user; close one",
    )
    retry_after_s = 5


class StreamsFull(DmError):
    status, code, public_message = (
        503,
        "streams_full",
        "this server holds all the streams it can; retry (another may have room)",
    )
    retry_after_s = 1


class JustificationRequired(DmError):
    """Moderator access to content needs a report, alert or legal-request id that covers it."""

    status, code, public_message = (
        403,
        "justification_required",
        "opening content needs a report, alert or legal-request id that covers it",
    )


class RoleRequired(DmError):
    status, code, public_message = 403, "role_required", "this needs a role you do not have"


class RoleConflict(DmError):
    """Separation of duties: a session that moderates may not read the record of moderation."""

    status, code, public_message = (
        403,
        "role_conflict",
        "a moderator session cannot read the audit log, whatever other roles it holds",
    )


class UserSuspended(DmError):
    status, code, public_message = (
        403,
        "user_suspended",
        "this account is suspended: it cannot send or open conversations",
    )


class ReviewItemNotFound(NotFound):
    code, public_message = "review_item_not_found", "no such review item"


class LegalRequestNotFound(NotFound):
    code, public_message = "legal_request_not_found", "no such legal request"


class ItemClosed(DmError):
    status, code, public_message = 409, "item_closed", "this review item was already decided"


class ActionNotApplicable(DmError):
    status, code, public_message, expose_detail = (
        409,
        "action_not_applicable",
        "this action does not apply to this item",
        True,
    )


# -- files an operator supplies (callers name the failure: a ValueError, not an HTTP answer)
class ScanListError(ValueError):
    """A scan list file that cannot be used; says why."""
