"""The errors every service shares: the root every package's errors derive from, and the
generic input, size, time and rate failures the HTTP plumbing raises.

Each package keeps its own root below :class:`ServiceError` (``cdn_auth.errors.CdnAuthError``,
``dm.errors.DmError``) so callers can catch one package's errors; the HTTP layer maps any
:class:`ServiceError` to ``{"error": {"code", "message"}}`` without a table of its own.
``detail`` is for logs and metrics and never reaches a client unless ``expose_detail``.
"""

from __future__ import annotations


class ServiceError(Exception):
    """What every service's exception root shares: an HTTP status and a stable code.

    Each package keeps its own root below this (:class:`CdnAuthError`,
    ``dm.errors.DmError``) so callers can catch one package's errors.
    """

    status: int = 400
    code: str = "bad_request"
    public_message: str = "bad request"
    retry_after_s: int | None = None
    #: Whether ``detail`` may be shown to the client (input validation only).
    expose_detail: bool = False

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.public_message)
        self.detail = detail or self.public_message


# -- 400: malformed input ---------------------------------------------------
class MalformedRequest(ServiceError):
    status, code, public_message = 400, "malformed_request", "the request is malformed"
    expose_detail = True


class InvalidField(MalformedRequest):
    code, public_message = "invalid_field", "a field is missing or invalid"


class UnreadableBody(MalformedRequest):
    """The body's transfer or content encoding is broken (a ``Content-Encoding: deflate``
    that is not deflate, bad chunks): the client's fault, a 400, never an unhandled 500."""

    code, public_message = "unreadable_body", "the request body could not be read"
    expose_detail = False


class InputTooLarge(ServiceError):
    status, code, public_message = 413, "too_large", "the request is too large"
    expose_detail = True


class BodyTimeout(ServiceError):
    """The request body arrived too slowly (see :mod:`service_kernel.body_deadline`)."""

    status, code, public_message = 408, "body_timeout", "the request body arrived too slowly"
    expose_detail = True


class ClientGone(ServiceError):
    """The client closed its connection while its request body was being read.  Nobody is
    left to answer, and it is not the server's failure: answered (to no one) and counted as
    499, nginx's "client closed request", not logged as an unhandled 500 (which a client
    could otherwise produce at will, and which the 5xx alerts count)."""

    status, code, public_message = 499, "client_closed_request", "the client closed the connection"


# -- 429: rate limits -------------------------------------------------------------
class RateLimited(ServiceError):
    """A per-user (or per-address) limit of :mod:`service_kernel.rate_limit` was reached."""

    status, code, public_message = 429, "rate_limited", "too many requests; slow down"
    retry_after_s = 1
    #: A repeat refusal that could not be paced: its connection is closed, not answered.
    drop = False
