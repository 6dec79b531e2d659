"""The Python client SDK (async, aiohttp) for the dm service and the edge.

    async with DmClient("http://127.0.0.1:8090", edge_url="http://127.0.0.1:8080") as alice:
        await alice.create_user(age="adult", region="GB")
        media = await alice.upload_media(video_bytes)          # the edge's media API
        conv = await alice.create_conversation([bob_id])
        msg = await alice.send(conv["id"], media_id=media["id"], text="look")
    async for event in bob.stream():           # reconnects, resumes by cursor
        ...
    data = await bob.fetch_media(event["message"]["media"]["url"], range_=(0, 65535))

``client.edge`` is an :class:`~dm.edge_client.EdgeClient` bound to the same session and
connection pool.  Every non-2xx answer raises a :class:`~dm.sdk_errors.DmClientError`
leaf chosen by the service's error code and status (``DeviceMismatch`` with its
``missing``/``extra`` devices, ``RateLimited`` with ``retry_after_s``, ...); the whole
tree is in :mod:`dm.sdk_errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any, cast

import aiohttp

from cdn_auth import capability as cap_mod
from cdn_auth.errors import TokenError
from service_kernel.encoding import b64url_encode

from . import envelope
from .capabilities import CapabilityWallet, DerivedGrant
from .edge_client import EdgeClient, HttpOwner, MediaResponse, raise_for
from .envelope import DeviceKey
from .sdk_errors import DeviceMismatch, DmClientError, NotSetUp, UnsendIncomplete
from .sdk_types import (
    BlockState,
    Capability,
    Conversation,
    DeviceKeyRecord,
    Grant,
    MediaRecord,
    MemberRemoved,
    Message,
    MessagePage,
    PublishedKey,
    Reported,
    StreamEvent,
    Unsent,
    UserSession,
)

__all__ = ["DmClient", "DmClientError", "EdgeClient", "MediaResponse"]
_raise_for = raise_for
#: Sent messages' derived grants are kept for their unsend; past this many, the expired
#: ones are dropped (an expired grant needs no revoking).
DERIVED_SENT_PRUNE_AT = 1024


class DmClient(HttpOwner):
    """One user's device, signed in to ``base_url`` (dm); ``edge_url`` names the media API /
    edge once, for :attr:`edge`, :meth:`upload_media` and grants."""

    def __init__(
        self,
        base_url: str,
        *,
        session_token: str | None = None,
        http: aiohttp.ClientSession | None = None,
        edge_url: str | None = None,
    ) -> None:
        super().__init__(http)
        self.base_url = base_url.rstrip("/")
        self.edge_url = edge_url.rstrip("/") if edge_url else None
        self.session_token = session_token
        self.user_id: str | None = None
        self.device_id: str | None = None
        self.device_key: DeviceKey | None = None
        #: Share capabilities this device holds (sealed mode: grants made offline).
        self.capabilities = CapabilityWallet()
        #: Derived grants of sealed messages this client sent, so unsend can revoke them
        #: (dm never sees them: it could not tell they are this sender's).
        self._derived_sent: dict[tuple[str, str], tuple[DerivedGrant, str | None]] = {}

    @property
    def uid(self) -> str:
        """This client's user id (after :meth:`create_user`, or set by the caller)."""
        if self.user_id is None:
            raise NotSetUp("no user yet: call create_user() or set user_id")
        return self.user_id

    @property
    def edge(self) -> EdgeClient:
        """The edge client for ``edge_url``, with this client's session and connections."""
        if self.edge_url is None:
            raise NotSetUp("no edge_url: pass DmClient(..., edge_url=...)")
        return self._edge(self.edge_url)

    def _edge(self, base_url: str) -> EdgeClient:
        return EdgeClient(base_url, session_token=lambda: self.session_token, http=self.http)

    async def upload_media(self, data: bytes, **options: Any) -> MediaRecord:
        """Upload and register a video owned by this user (options: ``content_type``,
        ``visibility``, ``allow_reshare``, ``min_age``, ``allowed_regions``,
        ``blocked_regions``: see :meth:`EdgeClient.upload_media`); the media record."""
        return await self.edge.upload_media(data, **options)

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        h = dict(extra or {})
        if self.session_token:
            h["Authorization"] = f"Bearer {self.session_token}"
        return h

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        async with self.http.request(
            method, self.base_url + path, json=json_body, params=params, headers=self._headers(headers)
        ) as resp:
            await _raise_for(resp)
            return await resp.json()

    # -- identity ---------------------------------------------------------------------
    async def create_user(
        self, *, age: str | int = "adult", region: str = "GB", roles: list[str] | None = None
    ) -> UserSession:
        """Dev issuer: create a user and adopt its session."""
        doc = await self.request(
            "POST", "/v1/users", json_body={"age": age, "region": region, "roles": roles or []}
        )
        self.session_token, self.user_id = doc["session_token"], doc["user_id"]
        self.device_id = doc["device_id"]
        return cast(UserSession, dict(doc))

    async def link_device(self) -> DmClient:
        """Dev issuer: a second device of this user, as a new client sharing the HTTP session."""
        doc = await self.request("POST", "/v1/devices")
        other = DmClient(
            self.base_url, session_token=doc["session_token"], http=self.http, edge_url=self.edge_url
        )
        other.user_id, other.device_id = doc["user_id"], doc["device_id"]
        return other

    # -- conversations ------------------------------------------------------------------
    async def create_conversation(self, members: list[str], mode: str | None = None) -> Conversation:
        body: dict[str, Any] = {"members": members}
        if mode:
            body["mode"] = mode
        return cast(Conversation, dict(await self.request("POST", "/v1/conversations", json_body=body)))

    async def leave(self, cid: str, user_id: str | None = None) -> MemberRemoved:
        target = user_id or self.user_id
        doc = await self.request("DELETE", f"/v1/conversations/{cid}/members/{target}")
        return cast(MemberRemoved, dict(doc))

    async def block(self, user_id: str) -> BlockState:
        return cast(BlockState, dict(await self.request("POST", f"/v1/blocks/{user_id}")))

    # -- messages ------------------------------------------------------------------------
    async def send(
        self,
        cid: str,
        *,
        text: str | None = None,
        media_id: str | None = None,
        idempotency_key: str | None = None,
        body: dict[str, Any] | None = None,
        retries: int = 3,
    ) -> Message:
        """Send; retries 503/429 answers with the same Idempotency-Key, so never twice."""
        payload = dict(body or {})
        if text is not None:
            payload["text"] = text
        if media_id is not None:
            payload["media_id"] = media_id
        key = idempotency_key or uuid.uuid4().hex
        for attempt in range(retries + 1):
            try:
                doc = await self.request(
                    "POST",
                    f"/v1/conversations/{cid}/messages",
                    json_body=payload,
                    headers={"Idempotency-Key": key},
                )
                return cast(Message, dict(doc))
            except DmClientError as err:
                if err.status not in (429, 503) or attempt == retries:
                    raise
                await asyncio.sleep(min(err.retry_after_s or 0.2, 2.0))
            except aiohttp.ClientConnectionError:
                if attempt == retries:
                    raise
                await asyncio.sleep(0.2)
        raise AssertionError("unreachable")

    async def read(self, cid: str, *, after: str | None = None, limit: int = 50) -> MessagePage:
        params = {"limit": str(limit)}
        if after:
            params["after"] = after
        doc = await self.request("GET", f"/v1/conversations/{cid}/messages", params=params)
        return cast(MessagePage, dict(doc))

    async def unsend(self, cid: str, message_id: str) -> Unsent:
        """Unsend; a sealed message's derived grant is then revoked (dm revokes only grants
        it was told of, i.e. minted ones).

        The grant is the one this client derived for it, or, unsent from another device of
        the sender (or after a restart), the one in this device's own envelope of the
        message (read before the unsend: the message is gone after it), if this user holds
        its capability.  A failed revocation raises after the unsend and keeps the grant, so
        a retry revokes it; a sealed message whose envelope for this device does not open
        is unsent, then :class:`UnsendIncomplete` says its grant could not be checked.  (A
        device with no envelope of the message, i.e. the sending device after a restart or
        one linked after the send, cannot see its grant: revoke the capability then.)"""
        key = (cid, message_id)
        held = self._derived_sent.get(key)
        unchecked: Exception | None = None
        if held is None:
            try:
                found = await self._own_derived_grant(cid, message_id)
            except (envelope.EnvelopeError, NotSetUp) as exc:
                found, unchecked = None, exc
            held = None if found is None else (found, None)
        done = cast(
            Unsent, dict(await self.request("DELETE", f"/v1/conversations/{cid}/messages/{message_id}"))
        )
        if held is not None:  # after dm said yes (a refused unsend revokes nothing); a
            self._derived_sent[key] = held  # failure here leaves it held: a retry revokes it
            derived, edge_url = held
            edge = self._edge(await self._edge_url_for(edge_url))
            try:
                await edge.revoke_grant(derived.grant_id, derived.token)
            except DmClientError as err:
                if err.code != "token_expired":  # an expired grant needs no revoking
                    raise
            del self._derived_sent[key]
        if unchecked is not None:
            raise UnsendIncomplete(done, unchecked)
        return done

    async def _own_derived_grant(self, cid: str, message_id: str) -> DerivedGrant | None:
        """The derived grant in this user's sealed message ``message_id``, read from this
        device's envelope, if this user holds its capability (so may revoke it); None when
        there is none (not found, plain, another sender, no grant, a minted grant)."""
        before = _id_before(message_id)
        if before is None or self.device_key is None:
            return None  # not a message id (dm answers 400), or a device with no envelopes
        page = await self.read(cid, after=before, limit=1)
        msg = next((m for m in page.get("messages", []) if m.get("id") == message_id), None)
        if msg is None or msg.get("kind") != "sealed" or msg.get("sender") != self.user_id:
            return None
        if not msg.get("envelope"):
            # The sending device gets no envelope of its own message (it keeps what it
            # derived in ``_derived_sent``), nor does a device linked after the send.
            return None
        grant = self.open_message(msg).grant
        if not grant or not cap_mod.is_derived(grant):
            return None
        try:
            claims = cap_mod.peek_derived(grant)
        except TokenError:
            return None  # not a grant any edge would honour: nothing to revoke
        if claims.holder != self.uid:
            return None  # forwarded from someone else's capability: not ours to revoke
        return DerivedGrant(grant, claims.grant_id, claims.exp)

    async def _edge_url_for(self, edge_url: str | None) -> str:
        """``edge_url``, else :attr:`edge_url`, else the edge dm names (its web client's
        configuration); :class:`NotSetUp` if none is known."""
        if edge_url or self.edge_url:
            return str(edge_url or self.edge_url)
        try:
            doc = await self.request("GET", "/app/config.json")
        except DmClientError as exc:
            raise NotSetUp(f"no edge_url, and dm names none ({exc.code})") from exc
        url = doc.get("edge_url") if isinstance(doc, dict) else None
        if not isinstance(url, str) or not url:
            raise NotSetUp("no edge_url, and dm names none")
        return url.rstrip("/")

    def _remember_derived(
        self, key: tuple[str, str], derived: DerivedGrant, edge_url: str | None
    ) -> None:
        """Keep a sent message's derived grant for its unsend; past DERIVED_SENT_PRUNE_AT
        entries, those whose grant has expired (nothing left to revoke) are dropped."""
        if len(self._derived_sent) >= DERIVED_SENT_PRUNE_AT:
            now = time.time()
            for k in [k for k, (g, _) in self._derived_sent.items() if g.expires_at < now]:
                del self._derived_sent[k]
        self._derived_sent[key] = (derived, edge_url)

    def derived_grant_of(self, cid: str, message_id: str) -> DerivedGrant | None:
        """The grant this client derived for a sealed message it sent (None if it asked
        the media API for one, or sent no media, or the grant has expired and was
        forgotten)."""
        held = self._derived_sent.get((cid, message_id))
        return None if held is None else held[0]

    async def report(self, cid: str, message_id: str, reason: str = "", **extra: Any) -> Reported:
        doc = await self.request(
            "POST",
            "/v1/reports",
            json_body={"conversation_id": cid, "message_id": message_id, "reason": reason, **extra},
        )
        return cast(Reported, dict(doc))

    async def stream(
        self, *, cursor: str | None = None, reconnect: bool = True
    ) -> AsyncGenerator[StreamEvent, None]:
        """Yield pushed events forever; on a drop, reconnect with the last cursor seen."""
        delay = 0.05
        while True:
            params = {"cursor": cursor} if cursor else {}
            wait = delay
            try:
                async with self.http.ws_connect(
                    self.base_url + "/v1/stream", params=params, headers=self._headers(), heartbeat=20
                ) as ws:
                    delay = 0.05
                    async for msg in ws:
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            break
                        event: StreamEvent = json.loads(msg.data)
                        cursor = event.get("cursor", cursor)
                        yield event
            except aiohttp.WSServerHandshakeError as err:
                if err.status in (400, 401, 403):
                    raise DmClientError(err.status, "stream_refused", err.message, None) from err
                # 429 (a replay over its budget, too many sockets) or 503: the server's
                # Retry-After, not the backoff (asking sooner is refused, and paced).
                retry_after = err.headers.get("Retry-After", "") if err.headers else ""
                if retry_after.isascii() and retry_after.isdigit():
                    wait = max(delay, min(float(retry_after), 300.0))
            except (TimeoutError, aiohttp.ClientConnectionError):
                pass
            if not reconnect:
                return
            await asyncio.sleep(wait)
            delay = min(delay * 2, 2.0)

    # -- sealed mode -------------------------------------------------------------------------
    def use_device_key(self, key: DeviceKey) -> None:
        self.device_key = key

    async def publish_key(self) -> PublishedKey:
        """Publish this device's HPKE public key in the directory."""
        if self.device_key is None or self.device_id is None:
            raise NotSetUp("set a device key (use_device_key) after create_user")
        body = {
            "suite": self.device_key.suite,
            "public_key": b64url_encode(self.device_key.public_bytes()),
        }
        doc = await self.request("PUT", f"/v1/devices/{self.device_id}/key", json_body=body)
        return cast(PublishedKey, dict(doc))

    async def devices_of(self, user_id: str) -> list[DeviceKeyRecord]:
        return list((await self.request("GET", f"/v1/users/{user_id}/devices"))["devices"])

    async def conversation(self, cid: str) -> Conversation:
        return cast(Conversation, dict(await self.request("GET", f"/v1/conversations/{cid}")))

    async def request_grant(
        self, edge_url: str | None, media_id: str, redeemers: int, via_grant: str | None = None
    ) -> Grant:
        """A grant for ``media_id`` (sealed mode); ``edge_url`` None means :attr:`edge_url`."""
        edge = self._edge(edge_url) if edge_url else self.edge
        return await edge.request_grant(media_id, redeemers, via_grant)

    async def revoke_grant(self, edge_url: str | None, grant_id: str, grant: str | None = None) -> None:
        """Revoke a grant; a derived one (``d_...``) needs its token, ``grant``."""
        edge = self._edge(edge_url) if edge_url else self.edge
        await edge.revoke_grant(grant_id, grant)

    async def obtain_capability(
        self,
        media_id: str,
        *,
        edge_url: str | None = None,
        via_grant: str | None = None,
        max_redeemers: int | None = None,
        max_grants: int | None = None,
        ttl_s: int | None = None,
    ) -> Capability:
        """Ask once for a capability to share ``media_id`` (a re-sharer names the grant it
        received and redeemed as ``via_grant``) and hold it: later :meth:`send_sealed` calls
        for this media derive their grants on this device, with no round trip."""
        edge = self._edge(edge_url) if edge_url else self.edge
        cap = await edge.request_capability(
            media_id,
            self.capabilities.public_key,
            max_redeemers=max_redeemers,
            max_grants=max_grants,
            ttl_s=ttl_s,
            via_grant=via_grant,
        )
        self.capabilities.hold(cap)
        return cap

    async def revoke_capability(self, media_id: str, *, edge_url: str | None = None) -> None:
        """Revoke the held capability for ``media_id``: every grant made from it stops.

        The wallet forgets it only once the edge has revoked it: a failed request raises and
        leaves it held, so a retry revokes it."""
        cap = self.capabilities.stored(media_id)
        if cap is None:
            return
        edge = self._edge(edge_url) if edge_url else self.edge
        await edge.revoke_capability(cap["cap_id"])
        self.capabilities.forget(media_id, cap["cap_id"])

    async def send_sealed(
        self,
        cid: str,
        *,
        edge_url: str | None = None,
        media_id: str | None = None,
        text: str | None = None,
        via_grant: str | None = None,
        capability: bool | None = None,
    ) -> Message:
        """Seal ``{media_id, grant, text, franking key}`` to every other device and send.

        The grant (redeemers = the other members) is derived here from a held capability
        (:meth:`obtain_capability`) when there is one: no round trip.  ``capability=True``
        obtains one first if none is held (so does the default, ``None``, when ``via_grant``
        is a derived grant: only a capability can re-share one); ``False`` always asks
        ``edge_url`` (default:
        :attr:`edge_url`) for a grant, as does a send with no usable capability.  On a 409
        device mismatch, refreshes the device list and seals again, once.
        """
        members = [u for u in (await self.conversation(cid))["members"] if u != self.uid]
        grant = grant_id = None
        derived: DerivedGrant | None = None
        if media_id is not None:
            n = max(1, len(members))
            # A re-share of a derived grant goes through a capability (which keeps the
            # re-share chain): POST /v1/grants refuses one as via_grant.
            by_derived = capability is None and via_grant is not None and cap_mod.is_derived(via_grant)
            if (capability or by_derived) and self.capabilities.held(media_id) is None:
                await self.obtain_capability(media_id, edge_url=edge_url, via_grant=via_grant)
            if capability is not False:
                derived = self.capabilities.derive(media_id, n)
            if derived is not None:
                grant = derived.token  # dm gets no grant id: it could not check it is ours
            else:
                g = await self.request_grant(edge_url, media_id, n, via_grant)
                grant, grant_id = g["grant"], g["grant_id"]
        payload = envelope.Payload(media_id, grant, text, envelope.new_franking_key())
        cmid = envelope.new_client_message_id()
        for attempt in (0, 1):
            devices = {u: await self.devices_of(u) for u in [*members, self.uid]}
            body = self._seal_all(cid, cmid, payload, devices)
            if grant_id:
                body["grant_id"] = grant_id
            try:
                doc = await self.request("POST", f"/v1/conversations/{cid}/messages", json_body=body)
                sent = cast(Message, dict(doc))
                if derived is not None:
                    self._remember_derived((cid, str(sent["id"])), derived, edge_url)
                    # The next share's grant, made once this one's caller has moved on.
                    asyncio.get_running_loop().call_soon(self._prepare_spare, media_id, n)
                return sent
            except DeviceMismatch:
                if attempt == 1:
                    raise
        raise AssertionError("unreachable")

    def _prepare_spare(self, media_id: str | None, redeemers: int) -> None:
        if media_id is not None:
            # ValueError: the capability ended meanwhile; the next share derives anew.
            with contextlib.suppress(ValueError):
                self.capabilities.prepare(media_id, redeemers)

    def _seal_all(
        self,
        cid: str,
        cmid: str,
        payload: envelope.Payload,
        devices: Mapping[str, Sequence[Mapping[str, Any]]],
    ) -> dict[str, Any]:
        assert self.device_id is not None
        return envelope.seal_body(cid, self.uid, self.device_id, cmid, payload, devices)

    def open_message(self, message: Mapping[str, Any]) -> envelope.Payload:
        """Open this device's envelope and check the franking commitment; raise if either fails."""
        if self.device_key is None or self.device_id is None:
            raise NotSetUp("no device key")
        return envelope.open_message(self.device_key, self.uid, self.device_id, message)

    async def report_sealed(
        self, message: Mapping[str, Any], payload: envelope.Payload, reason: str = ""
    ) -> Reported:
        """Reveal one message's plaintext and franking key to the moderators, verifiably."""
        f = message["franking"]
        sealed = {
            "client_message_id": message["client_message_id"],
            "sender": message["sender"],
            "ts_ms": f["ts_ms"],
            "commitment": f["commitment"],
            "countersignature": f["countersignature"],
            "franking_key": b64url_encode(payload.franking_key),
            "media_id": payload.media_id,
            "grant": payload.grant,
            "text": payload.text,
        }
        doc = await self.request(
            "POST",
            "/v1/reports",
            json_body={
                "conversation_id": message["conversation_id"],
                "sealed": sealed,
                "reason": reason,
            },
        )
        return cast(Reported, dict(doc))

    # -- the edge -------------------------------------------------------------------------
    async def fetch_media(
        self,
        url: str,
        *,
        range_: tuple[int, int | None] | None = None,
        headers: dict[str, str] | None = None,
        method: str = "GET",
        grant: str | None = None,
    ) -> MediaResponse:
        """Fetch through the edge with this session, as a player would (optionally a Range).

        ``url`` is a pointer URL from a plain message, or ``{edge}/m/{media_id}``
        with ``grant`` from an opened sealed message.
        """
        edge = self.edge if self.edge_url and "://" not in url else self._edge("")
        return await edge.fetch(url, range_=range_, grant=grant, headers=headers, method=method)


def _id_before(message_id: str) -> str | None:
    """The cursor just before a message id (``ms-seq``), so a page of one from it is that
    message; None if it is no message id (or the very first one possible)."""
    ms, _, seq = message_id.partition("-")
    if not (ms.isascii() and seq.isascii() and ms.isdigit() and seq.isdigit()):
        return None
    if int(seq) > 0:
        return f"{int(ms)}-{int(seq) - 1}"
    if int(ms) == 0:
        return None
    return f"{int(ms) - 1}-9999999999"  # the largest sequence a cursor may spell
