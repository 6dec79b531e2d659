"""The client SDK's one error tree, keyed by the services' error codes.

Every failure a caller of :class:`dm.client.DmClient` or :class:`dm.edge_client.EdgeClient`
sees is an :class:`SdkError`: an HTTP answer (:class:`DmClientError`, with a leaf per
status class and per code that needs data of its own), a client used before it was set
up (:class:`NotSetUp`), or an envelope that does not open
(:class:`dm.envelope.EnvelopeError`)::

    try:
        await alice.send(cid, media_id=media_id)
    except RateLimited as err:
        await asyncio.sleep(err.retry_after_s or 1)
    except DeviceMismatch as err:          # sealed sends: the device list moved
        print(err.missing, err.extra)
    except DmClientError as err:           # any other answer
        print(err.status, err.code, err.message)

This module depends on nothing but the standard library, so the envelope code (shared with
the server) can root its errors here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class SdkError(Exception):
    """Root of everything the SDK raises."""


class NotSetUp(SdkError, RuntimeError):
    """The client lacks what the call needs (no user yet, no device key, no edge URL)."""


class DmClientError(SdkError):
    """A non-2xx answer: the HTTP status, the service's stable ``code``, its message, the
    ``Retry-After`` it gave (seconds) and the whole error object (``body``)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        retry_after_s: float | None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s
        self.body: dict[str, Any] = dict(body or {})


class BadRequest(DmClientError):
    """400: the request is malformed or a field is invalid."""


class Unauthorized(DmClientError):
    """401: no session, or one that does not verify."""


class Forbidden(DmClientError):
    """403: the session may not do this (a forwarded pointer, not a member, a wrong role)."""


class NotFound(DmClientError):
    """404."""


class Conflict(DmClientError):
    """409."""


class DeviceMismatch(Conflict):
    """409 ``device_mismatch``: a sealed send's envelopes do not match the conversation's
    devices.  ``missing`` are devices without an envelope, ``extra`` envelopes for devices
    that are gone: fetch the device lists again and seal anew."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        retry_after_s: float | None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(status, code, message, retry_after_s, body)
        self.missing: list[str] = [str(d) for d in self.body.get("missing_devices", ())]
        self.extra: list[str] = [str(d) for d in self.body.get("extra_devices", ())]


class Gone(DmClientError):
    """410: unsent, taken down, or revoked."""


class TooLarge(DmClientError):
    """413."""


class RateLimited(DmClientError):
    """429: wait ``retry_after_s`` and try again (sends are idempotent by key)."""


class ServerError(DmClientError):
    """5xx."""


class Unavailable(ServerError):
    """503: a dependency is down (Redis, storage, revocation state); retry later."""


_BY_CODE: dict[str, type[DmClientError]] = {
    "device_mismatch": DeviceMismatch,
    "rate_limited": RateLimited,
}
_BY_STATUS: dict[int, type[DmClientError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    413: TooLarge,
    429: RateLimited,
    503: Unavailable,
}


def error_from(status: int, doc: Any, reason: str = "", retry_after: str | None = None) -> DmClientError:
    """The exception for an answer: by its code where the code carries data or meaning of
    its own, else by status.  ``doc`` is the parsed body (anything, if it was not JSON)."""
    err = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(err, dict) and "code" in err:
        code, message, body = str(err["code"]), str(err.get("message", "")), err
    else:
        code, message, body = "http_error", reason, {}
    retry_s: float | None = None
    if retry_after is not None and retry_after.strip().isdigit():
        retry_s = float(retry_after.strip())
    cls = (
        _BY_CODE.get(code) or _BY_STATUS.get(status) or (ServerError if status >= 500 else DmClientError)
    )
    return cls(status, code, message, retry_s, body)


class UnsendIncomplete(SdkError):
    """``unsend`` succeeded (``result``: dm's answer), but this device could not open the
    sealed message (``cause``), so a grant derived for it, if any, was not revoked: unsend
    from the device that sent it, or revoke the capability."""

    def __init__(self, result: Mapping[str, Any], cause: Exception) -> None:
        super().__init__(
            f"unsent, but the message's grant could not be checked from this device: {cause}"
        )
        self.result = result
        self.cause = cause
