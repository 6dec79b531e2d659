"""The HTTP boundary's error contract: ``{"error": {"code", "message"}}`` with the right status.

Every package's exception root carries ``status``/``code``/``public_message``
on its leaves, so one middleware serves cdn_auth and dm.  The detailed
reason goes to the log and metrics; clients get the stable code.  Bodies
are read with a hard size cap and parsed strictly (unknown fields are a 400).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from aiohttp import web

from . import body_deadline, strict_json
from .errors import InputTooLarge, InvalidField, MalformedRequest, ServiceError
from .redis_client import RedisFailure

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_STATUS_CODES = {
    400: "malformed_request",
    401: "session_missing",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "body_timeout",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    429: "rate_limited",
    431: "headers_too_large",
    503: "unavailable",
}


def json_error(
    status: int,
    code: str,
    message: str,
    *,
    retry_after_s: int | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> web.Response:
    hdrs = dict(headers or {})
    if retry_after_s is not None:
        hdrs["Retry-After"] = str(retry_after_s)
    if status == 401:
        hdrs.setdefault("WWW-Authenticate", 'Bearer realm="pointer-dm"')
    return web.json_response(
        {"error": {"code": code, "message": message, **(extra or {})}}, status=status, headers=hdrs
    )


def error_response(exc: Exception) -> web.Response:
    """Map any package error (anything with status/code/public_message) to a JSON response."""
    status = int(getattr(exc, "status", 500))
    headers = dict(getattr(exc, "headers", None) or {})
    message = (
        str(exc)
        if getattr(exc, "expose_detail", False)
        else str(getattr(exc, "public_message", "internal error"))
    )
    return json_error(
        status,
        str(getattr(exc, "code", "internal")),
        message,
        retry_after_s=getattr(exc, "retry_after_s", None),
        headers=headers,
        extra=getattr(exc, "body_extra", None),
    )


def error_middleware(
    roots: tuple[type[Exception], ...] = (ServiceError,),
    on_response: Callable[[int], object] | None = None,
) -> Any:
    """Map errors to the JSON contract; ``on_response(status)`` sees every answer's status
    (the services count them by status for their 5xx alerts)."""
    if on_response is None:
        return _error_middleware(roots)
    inner = _error_middleware(roots)
    count = on_response

    @web.middleware
    async def counting(request: web.Request, handler: Handler) -> web.StreamResponse:
        resp: web.StreamResponse = await inner(request, handler)
        count(resp.status)
        return resp

    return counting


def _error_middleware(roots: tuple[type[Exception], ...]) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except roots as exc:
            if int(getattr(exc, "status", 500)) >= 500:
                log.warning(
                    "request failed", extra={"path": request.path, "code": getattr(exc, "code", "")}
                )
            return error_response(exc)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = _STATUS_CODES.get(exc.status, "http_error")
            return json_error(
                exc.status,
                code,
                exc.reason,
                headers={k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")},
            )
        except RedisFailure as exc:
            # The type in the message too: a test's captured log shows only the message.
            log.warning(
                "redis error: %s",
                type(exc).__name__,
                extra={"path": request.path, "err": type(exc).__name__},
            )
            return json_error(
                503, "redis_unavailable", "the state store is unreachable", retry_after_s=1
            )
        except Exception:
            log.exception("unhandled error", extra={"path": request.path})
            return json_error(500, "internal", "internal error")

    return middleware


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    """Read the whole body, refusing anything larger than ``max_bytes`` (413) or slower
    than the app's :class:`~service_kernel.body_deadline.BodyDeadline` (408)."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise InputTooLarge(f"body over {max_bytes} bytes")
    chunks, size = [], 0
    clock = body_deadline.for_request(request)  # 408 for a body that trickles in
    while chunk := await clock.read(request.content.read(64 * 1024)):
        size += len(chunk)
        clock.got(len(chunk))
        if size > max_bytes:
            raise InputTooLarge(f"body over {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(
    request: web.Request, *, max_bytes: int = 64 * 1024, allowed: Collection[str] | None = None
) -> dict[str, Any]:
    """Parse a JSON object body; 400 for bad JSON or unknown fields, 413 for size."""
    require_json(request)
    return parse_json(await read_body(request, max_bytes), allowed)


def require_json(request: web.Request) -> None:
    ctype = request.headers.get("Content-Type", "application/json").split(";")[0].strip()
    if ctype != "application/json":
        raise MalformedRequest("Content-Type must be application/json")


def parse_json(raw: bytes, allowed: Collection[str] | None = None) -> dict[str, Any]:
    """Parse a JSON object; 400 for bad JSON (deeply nested, lone surrogates, NaN included),
    a non-object, or fields outside ``allowed``."""
    doc = strict_json.loads(raw)
    if not isinstance(doc, dict):
        raise MalformedRequest("body must be a JSON object")
    if allowed is not None:
        unknown = sorted(set(doc) - set(allowed))
        if unknown:
            raise InvalidField(f"unknown fields: {', '.join(unknown)[:200]}")
    return doc


def bearer_token(request: web.Request) -> str | None:
    """The token from ``Authorization: Bearer <token>``, or None if absent."""
    value = request.headers.get("Authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
