"""The media API: register a hosted video, read its record, take it down.

``POST /v1/media`` takes either JSON naming a file already in the origin
directory (``origin_path``; for sessions with the ``publisher`` role, as a
content pipeline would be) or a ``multipart/form-data`` upload with a
``metadata`` JSON part followed by a ``file`` part, streamed to disk.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from aiohttp import BodyPartReader, web

from service_kernel import body_deadline
from service_kernel.errors import InputTooLarge, InvalidField, MalformedRequest
from service_kernel.ids import check_id, new_id
from service_kernel.openapi import Route
from service_kernel.web_errors import bearer_token, parse_json, read_json

from . import api_schemas as api
from . import revocation
from .audit import AuditLog
from .errors import Forbidden, MediaBanked, NotModerator, SessionMissing
from .fingerprint import FingerprintLimits, fingerprint_file
from .media import Media, check_content_type, parse_rules
from .origin import StoredObject
from .session import Session
from .web_state import STATE, EdgeState

_META_FIELDS = {
    "origin_path",
    "content_type",
    "visibility",
    "allow_reshare",
    "min_age",
    "allowed_regions",
    "blocked_regions",
    "owner",
}
MAX_META_BYTES = 16 * 1024
log = logging.getLogger(__name__)


async def _session(request: web.Request) -> Session:
    token = bearer_token(request)
    if token is None:
        raise SessionMissing()
    return await request.app[STATE].authorizer.session(token)


async def create_media(request: web.Request) -> web.Response:
    state = request.app[STATE]
    session = await _session(request)
    await state.suspended.refuse(session.sub)  # before a byte of the body is read
    ctype = request.headers.get("Content-Type", "").split(";")[0].strip()
    media_id = new_id("m")
    if ctype == "multipart/form-data":
        meta, stored = await _from_upload(request, state, session, media_id)
    else:
        meta = await read_json(request, max_bytes=MAX_META_BYTES, allowed=_META_FIELDS)
        if "publisher" not in session.roles:
            raise Forbidden("registering an origin path needs the publisher role")
        if not isinstance(meta.get("origin_path"), str):
            raise InvalidField("origin_path is required (or upload the bytes as multipart)")
        stored = await state.origin.describe(meta["origin_path"])
    media = _record(meta, session, media_id, stored, int(state.clock()))
    media = await _screen(state, media, uploaded=ctype == "multipart/form-data")
    # A bank sweep may have reached this id since the match: put applies its takedown.
    media = await state.registry.put(media)
    if media.status == "held":
        await state.registry.announce_hold(media, int(state.clock()))
    return web.json_response(
        media.public_view(), status=201, headers={"Location": f"/v1/media/{media.id}"}
    )


async def _screen(state: EdgeState, media: Media, *, uploaded: bool) -> Media:
    """Hash the file and match it against the banks (both modes: the video is on the CDN
    even when the DM that shares it is sealed).  A refusing bank's match fails the
    registration (an upload's bytes are deleted); a holding bank's registers it held.
    The hashes are indexed *before* the match, so a bank entry added at any moment is seen
    by this match or finds the item in its sweep (see cdn_auth.matching)."""
    path = state.origin.root / media.origin
    limits = FingerprintLimits(
        max_frames=state.settings.fingerprint_max_frames, budget_s=state.settings.fingerprint_budget_s
    )
    fp = await asyncio.to_thread(fingerprint_file, path, limits)
    await state.hash_index.record(media.id, fp)
    match = await state.banks.match(fp)
    if match is None:
        return media
    log.warning(
        "media %s (owner %s) matched bank %s: %s", media.id, media.owner, match.bank, match.action
    )
    state.metrics.bank_matches.labels(match.bank, match.action).inc()
    if match.action == "hold":
        return replace(media, status="held")
    await state.hash_index.forget(media.id, fp)  # no record will exist
    # An upload's bytes go; so does an origin path's catalog copy unless a registered
    # record shares it (identical content is stored once).  The publisher's file in
    # the ingest drop box is theirs and stays.
    if uploaded or not await state.hash_index.find([("sha256", fp.sha256)]):
        path.unlink(missing_ok=True)
    raise MediaBanked(f"bank {match.bank}")


def _record(
    meta: dict[str, Any], session: Session, media_id: str, stored: StoredObject, now: int
) -> Media:
    visibility, allow_reshare, rules = parse_rules(meta)
    owner = session.sub
    if "owner" in meta:
        if "publisher" not in session.roles:
            raise Forbidden("only a publisher may register media for another owner")
        if not isinstance(meta["owner"], str) or not 0 < len(meta["owner"]) <= 255:
            raise InvalidField("owner must be a user id")
        owner = meta["owner"]
    return Media(
        id=media_id,
        owner=owner,
        visibility=visibility,
        allow_reshare=allow_reshare,
        audience=rules,
        status="active",
        content_type=check_content_type(meta.get("content_type", "video/mp4")),
        size=stored.size,
        sha256=stored.sha256,
        origin=stored.relpath,
        created_at=now,
    )


async def _from_upload(
    request: web.Request, state: EdgeState, session: Session, media_id: str
) -> tuple[dict[str, Any], StoredObject]:
    clock = body_deadline.for_request(request)  # 408 for an upload that trickles in
    try:
        reader = await request.multipart()
        part = await clock.read(reader.next())
        if not isinstance(part, BodyPartReader) or part.name != "metadata":
            raise MalformedRequest("the first part must be 'metadata' (JSON)")
        raw = await clock.read(_read_bounded(part, MAX_META_BYTES))
        meta = parse_json(raw)
        if set(meta) - _META_FIELDS or "origin_path" in meta:
            raise InvalidField("metadata must be an object of known fields, without origin_path")
        # Validate everything before writing a byte, so a refusal leaves nothing on disk.
        _record(meta, session, media_id, StoredObject("", 0, ""), 0)
        part = await clock.read(reader.next())
        if not isinstance(part, BodyPartReader) or part.name != "file":
            raise MalformedRequest("the second part must be 'file'")
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedRequest(f"bad multipart body: {exc}") from None

    file_part = part

    async def chunks() -> AsyncIterator[bytes]:
        while chunk := await clock.read(file_part.read_chunk(256 * 1024)):
            clock.got(len(chunk))
            yield chunk

    stored = await state.origin.store(media_id, chunks(), state.settings.max_upload_bytes)
    return meta, stored


async def _read_bounded(part: BodyPartReader, max_bytes: int) -> bytes:
    """A part's bytes, refusing (413) past ``max_bytes`` without reading further:
    ``BodyPartReader.read()`` would buffer the whole part, however large."""
    chunks, size = [], 0
    while chunk := await part.read_chunk(8192):
        size += len(chunk)
        if size > max_bytes:
            raise InputTooLarge(f"metadata part over {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def get_media(request: web.Request) -> web.Response:
    state = request.app[STATE]
    session = await _session(request)
    media_id = check_id(request.match_info["media_id"], "media_id")
    media = await state.registry.get(media_id)
    if not (media.is_public or media.owner == session.sub or session.is_moderator):
        raise Forbidden("not your media")
    return web.json_response(media.public_view())


async def takedown(request: web.Request) -> web.Response:
    """A moderator takes media down: the registry says so and every edge hears it.

    Audited like dm's moderation actions, in the same log (``cdn_auth.audit``): the
    attempt (``take_down_media``, with the moderator's reason) before it takes effect, so
    a failed audit write stops it, then its outcome (``:done`` or ``:failed``).  The edge
    knows no review item, so the reason given is the justification on record."""
    state = request.app[STATE]
    session = await _session(request)
    if not session.is_moderator:
        raise NotModerator()
    doc = await read_json(request, allowed={"media_id", "reason"})
    media_id = check_id(doc.get("media_id"), "media_id")
    reason = doc.get("reason", "")
    if not isinstance(reason, str) or len(reason) > 1000:
        raise InvalidField("reason must be a string of at most 1000 characters")
    log_ = AuditLog(state.redis)

    async def audit(action: str, detail: dict[str, Any]) -> None:
        await log_.record(
            actor=session.sub,
            roles=session.roles,
            action=action,
            justification="",
            media_id=media_id,
            detail={"via": "edge", **detail},
        )

    await audit("take_down_media", {"reason": reason})
    try:
        media = await state.registry.set_status(media_id, "taken_down", reason=reason, by=session.sub)
        # Published on every call, so a retry after a failure here still reaches every edge.
        entry = await state.revocations.publish(revocation.takedown(media_id))
    except Exception as exc:
        await audit("take_down_media:failed", {"error": getattr(exc, "code", type(exc).__name__)})
        raise
    await audit("take_down_media:done", {"revocation_id": entry})
    return web.json_response(
        {"media_id": media.id, "status": media.status, "revocation_id": entry, "at": int(state.clock())}
    )


ROUTES = (
    Route(
        "POST",
        "/v1/media",
        create_media,
        "Register a hosted video (JSON origin_path, or multipart metadata+file)",
        "media",
        responses=(201, 400, 401, 403, 413, 503),
        body="metadata: content_type, visibility, allow_reshare, min_age, allowed_regions, "
        "blocked_regions, origin_path | multipart file",
        limit="media_create",
        api=api.CREATE_MEDIA,
    ),
    Route(
        "GET",
        "/v1/media/{media_id}",
        get_media,
        "A media record",
        "media",
        responses=(200, 401, 403, 404, 503),
        limit="media_lookup",
        api=api.GET_MEDIA,
    ),
    Route(
        "POST",
        "/v1/takedowns",
        takedown,
        "Take media down at every edge (moderator)",
        "media",
        auth="moderator",
        responses=(200, 400, 401, 403, 404, 503),
        body="media_id, reason",
        limit="takedown",
        api=api.TAKEDOWN,
    ),
)
