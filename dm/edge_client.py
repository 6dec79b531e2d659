"""The SDK's client for the media API and edge (``cdn_auth``), its base URL set once.

    async with EdgeClient("http://127.0.0.1:8080", session_token=alice_token) as edge:
        media = await edge.upload_media(open("clip.mp4", "rb").read())
        grant = await edge.request_grant(media["id"], redeemers=1)
        part = await edge.fetch(f"/m/{media['id']}", grant=grant["grant"], range_=(0, 65535))

A :class:`dm.client.DmClient` made with ``edge_url=`` hands out one bound to its own
session and HTTP connection pool as ``client.edge``.  Failures raise the tree of
:mod:`dm.sdk_errors`.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, cast

import aiohttp
from multidict import CIMultiDict

from .sdk_errors import error_from
from .sdk_types import Capability, Grant, MediaRecord


@dataclass
class MediaResponse:
    status: int
    headers: CIMultiDict[str]  # case-insensitive, as HTTP headers are
    body: bytes


def media_metadata(
    *,
    content_type: str = "video/mp4",
    visibility: str = "private",
    allow_reshare: bool | None = None,
    min_age: int | None = None,
    allowed_regions: list[str] | None = None,
    blocked_regions: list[str] | None = None,
) -> dict[str, Any]:
    """The ``metadata`` of a media registration, with only the fields given."""
    meta: dict[str, Any] = {"content_type": content_type, "visibility": visibility}
    for name, value in (
        ("allow_reshare", allow_reshare),
        ("min_age", min_age),
        ("allowed_regions", allowed_regions),
        ("blocked_regions", blocked_regions),
    ):
        if value is not None:
            meta[name] = value
    return meta


def encode_upload(meta: dict[str, Any], data: bytes, *, filename: str = "upload") -> tuple[bytes, str]:
    """``POST /v1/media`` multipart body (a ``metadata`` JSON part, then the ``file``) and its
    Content-Type, for clients without aiohttp (the gevent load generator uses it)."""
    boundary = "pdm" + uuid.uuid4().hex
    ctype = str(meta.get("content_type", "application/octet-stream"))
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="metadata"\r\n'
        f"Content-Type: application/json\r\n\r\n{json.dumps(meta)}\r\n"
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="{filename}"\r\nContent-Type: {ctype}\r\n\r\n'
    ).encode()
    return (
        head + data + f"\r\n--{boundary}--\r\n".encode(),
        f"multipart/form-data; boundary={boundary}",
    )


async def raise_for(resp: aiohttp.ClientResponse) -> None:
    """Raise the :mod:`dm.sdk_errors` exception for a non-2xx answer."""
    if resp.status < 400:
        return
    try:
        doc: Any = await resp.json(content_type=None)
    except (ValueError, aiohttp.ContentTypeError):
        doc = None
    raise error_from(resp.status, doc, resp.reason or "", resp.headers.get("Retry-After"))


class HttpOwner:
    """An aiohttp session shared with the caller (``http=``) or owned and closed here; the
    lifecycle both SDK clients have (``async with``, :meth:`close`, :attr:`http`)."""

    def __init__(self, http: aiohttp.ClientSession | None) -> None:
        self._http = http
        self._own_http = http is None

    async def __aenter__(self) -> Self:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_http and self._http is not None:
            await self._http.close()
            self._http = None

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        return self._http


class EdgeClient(HttpOwner):
    """Media registration, grants and fetches against one ``cdn_auth`` base URL.

    ``session_token`` may be a string or a callable returning the current one (a
    :class:`~dm.client.DmClient` passes its own, so a later sign-in is seen).
    """

    def __init__(
        self,
        base_url: str,
        *,
        session_token: str | Callable[[], str | None] | None = None,
        http: aiohttp.ClientSession | None = None,
    ) -> None:
        super().__init__(http)
        self.base_url = base_url.rstrip("/")
        self._token = session_token

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        h = dict(extra or {})
        token = self._token() if callable(self._token) else self._token
        if token:
            h["Authorization"] = f"Bearer {token}"
        return h

    def url(self, path_or_url: str) -> str:
        """A path (``/m/...``) on this edge; full URLs (pointer URLs) pass unchanged."""
        return path_or_url if "://" in path_or_url else self.base_url + path_or_url

    async def _json(self, method: str, path: str, **kw: Any) -> Any:
        headers = self._headers(kw.pop("headers", None))
        async with self.http.request(method, self.url(path), headers=headers, **kw) as resp:
            await raise_for(resp)
            return await resp.json() if resp.status != 204 else None

    # -- media ---------------------------------------------------------------------------
    async def upload_media(
        self,
        data: bytes,
        *,
        content_type: str = "video/mp4",
        visibility: str = "private",
        allow_reshare: bool | None = None,
        min_age: int | None = None,
        allowed_regions: list[str] | None = None,
        blocked_regions: list[str] | None = None,
        filename: str = "upload",
    ) -> MediaRecord:
        """Upload bytes and register them, owned by this session's user; the record."""
        meta = media_metadata(
            content_type=content_type,
            visibility=visibility,
            allow_reshare=allow_reshare,
            min_age=min_age,
            allowed_regions=allowed_regions,
            blocked_regions=blocked_regions,
        )
        body, ctype = encode_upload(meta, data, filename=filename)
        # A file-like body streams in chunks; raw bytes of megabytes would block the loop.
        return cast(
            MediaRecord,
            await self._json(
                "POST", "/v1/media", data=io.BytesIO(body), headers={"Content-Type": ctype}
            ),
        )

    async def register_media(
        self,
        origin_path: str,
        *,
        owner: str | None = None,
        content_type: str = "video/mp4",
        visibility: str = "private",
        allow_reshare: bool | None = None,
    ) -> MediaRecord:
        """Register a file already under the origin's ingest root (publisher role)."""
        body = {
            **media_metadata(
                content_type=content_type, visibility=visibility, allow_reshare=allow_reshare
            ),
            "origin_path": origin_path,
        }
        if owner is not None:
            body["owner"] = owner
        return cast(MediaRecord, await self._json("POST", "/v1/media", json=body))

    async def media(self, media_id: str) -> MediaRecord:
        return cast(MediaRecord, await self._json("GET", f"/v1/media/{media_id}"))

    async def take_down(self, media_id: str, reason: str = "") -> dict[str, Any]:
        """Moderators: take media down at every edge."""
        return dict(
            await self._json("POST", "/v1/takedowns", json={"media_id": media_id, "reason": reason})
        )

    # -- grants (sealed mode) ----------------------------------------------------------------
    async def request_grant(self, media_id: str, redeemers: int, via_grant: str | None = None) -> Grant:
        body: dict[str, Any] = {"media_id": media_id, "redeemers": redeemers}
        if via_grant:
            body["via_grant"] = via_grant
        return cast(Grant, await self._json("POST", "/v1/grants", json=body))

    async def revoke_grant(self, grant_id: str, grant: str | None = None) -> None:
        """Revoke a grant; a derived grant (``d_...``) needs its token as proof."""
        kw = {"json": {"grant": grant}} if grant is not None else {}
        await self._json("DELETE", f"/v1/grants/{grant_id}", **kw)

    # -- capabilities (sealed mode, grants made offline) -------------------------------------
    async def request_capability(
        self,
        media_id: str,
        holder_key: str,
        *,
        max_redeemers: int | None = None,
        max_grants: int | None = None,
        ttl_s: int | None = None,
        via_grant: str | None = None,
    ) -> Capability:
        """A capability for ``media_id`` naming ``holder_key`` (base64url Ed25519 public
        key; see :class:`dm.capabilities.CapabilityWallet`)."""
        body: dict[str, Any] = {"media_id": media_id, "holder_key": holder_key}
        for name, value in (
            ("max_redeemers", max_redeemers),
            ("max_grants", max_grants),
            ("ttl_s", ttl_s),
            ("via_grant", via_grant),
        ):
            if value is not None:
                body[name] = value
        return cast(Capability, await self._json("POST", "/v1/capabilities", json=body))

    async def revoke_capability(self, cap_id: str) -> None:
        await self._json("DELETE", f"/v1/capabilities/{cap_id}")

    # -- bytes ---------------------------------------------------------------------------------
    async def fetch(
        self,
        url: str,
        *,
        range_: tuple[int, int | None] | None = None,
        grant: str | None = None,
        headers: dict[str, str] | None = None,
        method: str = "GET",
    ) -> MediaResponse:
        """Fetch as a player would: a pointer URL from a plain message, or ``/m/{id}`` with
        ``grant`` from an opened sealed message; optionally a ``Range``."""
        h = self._headers(headers)
        if grant is not None:
            h["X-Grant"] = grant
        if range_ is not None:
            start, end = range_
            h["Range"] = f"bytes={start}-{'' if end is None else end}"
        async with self.http.request(method, self.url(url), headers=h) as resp:
            await raise_for(resp)
            return MediaResponse(resp.status, CIMultiDict(resp.headers), await resp.read())
