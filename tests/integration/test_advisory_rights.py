"""Regression tests for the bypasses found in the rights review (issue 9), one per finding.

Each test is named for the attack it stops and failed on the code before the fix.  The
reference model and the stateful test (test_rights_stateful.py) look for the next ones.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from dm.client import DmClient, DmClientError
from dm.identity import DevIssuer
from dm.sdk_types import Message, StreamEvent
from dm.settings import DmSettings
from dm.web_state import STATE as STATE_DM

from ..support.messages import media_of, stored_unannounced
from ..support.services import DmStack, Edge, bearer, wait_until


def _form(meta: dict[str, Any], data: bytes) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("metadata", json.dumps(meta), content_type="application/json")
    form.add_field("file", data, filename="v.mp4", content_type="video/mp4")
    return form


# -- finding 1: anyone could become moderator or publisher ------------------------------------


def test_dev_issuer_and_its_roles_are_off_by_default() -> None:
    settings = DmSettings.load()
    assert settings.dev_issuer is False
    assert settings.dev_issuer_roles is False


async def test_dev_issuer_grants_no_roles_without_second_switch(make_dm: Any) -> None:
    dm = await make_dm(dev_issuer_roles=False)
    c = dm.client()
    with pytest.raises(DmClientError) as info:
        await c.create_user(roles=["moderator"])
    assert (info.value.status, info.value.code) == (403, "dev_issuer_roles_disabled")
    await c.create_user()  # a plain user is still fine
    await c.close()


async def test_publisher_cannot_alias_another_users_upload(edge: Edge, issuer: DevIssuer) -> None:
    data = b"\x00\x00\x00\x18ftypmp42" + os.urandom(4096)
    async with edge.client.post(
        "/v1/media", data=_form({"visibility": "private"}, data), headers=bearer(issuer.mint("alice"))
    ) as r:
        assert r.status == 201
        private_id = (await r.json())["id"]
    upload_rel = f"uploads/{private_id[-2:]}/{private_id}"
    assert (edge.state.origin.root / upload_rel).is_file()
    publisher = bearer(issuer.mint("mallory", roles=["publisher"]))
    # The upload path follows from the media id that every pointer URL shows; a link in the
    # ingest root pointing at it must not work either.
    (edge.state.origin.ingest / "evil.mp4").symlink_to(edge.state.origin.root / upload_rel)
    for origin_path in (
        upload_rel,
        f"../{upload_rel}",
        "evil.mp4",
        f"../../{edge.state.origin.root.name}/{upload_rel}",
    ):
        async with edge.client.post(
            "/v1/media", headers=publisher, json={"origin_path": origin_path, "visibility": "public"}
        ) as r:
            assert r.status == 400, origin_path
            assert (await r.json())["error"]["code"] == "invalid_field"


# -- finding 9: hardening ------------------------------------------------------------------------


async def test_media_is_served_with_nosniff(edge: Edge, issuer: DevIssuer) -> None:
    media, _ = await edge.add_media(owner="alice", visibility="public")
    async with edge.client.get(f"/m/{media.id}", headers=bearer(issuer.mint("bob"))) as r:
        assert r.status == 200
        assert r.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    "ctype", ["text/html", "image/svg+xml", "application/javascript", "application/octet-stream"]
)
async def test_non_media_content_types_are_refused(edge: Edge, issuer: DevIssuer, ctype: str) -> None:
    async with edge.client.post(
        "/v1/media", data=_form({"content_type": ctype}, b"<svg/>"), headers=bearer(issuer.mint("alice"))
    ) as r:
        assert r.status == 400
        assert (await r.json())["error"]["code"] == "invalid_field"


async def test_session_without_jwt_typ_is_refused(edge: Edge, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(
        (tmp_path / "session-keys" / "issuer.key").read_bytes(), password=None
    )
    issuer = DevIssuer.load_or_create(tmp_path / "session-keys")
    now = int(time.time())
    claims = {"iss": issuer.issuer, "aud": issuer.audience, "sub": "bob", "iat": now, "exp": now + 600}
    media, _ = await edge.add_media(owner="alice", visibility="public")
    for typ in ("dpop+jwt", "secevent+jwt", None):
        headers: dict[str, Any] = {"kid": issuer.kid, "typ": typ}
        token = jwt.encode(claims, key, algorithm="EdDSA", headers=headers)  # type: ignore[arg-type]
        async with edge.client.get(f"/m/{media.id}", headers=bearer(token)) as r:
            assert r.status == 401, typ


async def test_session_lifetime_is_capped(edge: Edge, issuer: DevIssuer) -> None:
    media, _ = await edge.add_media(owner="alice", visibility="public")
    token = issuer.mint("bob", ttl_s=30 * 24 * 3600)
    async with edge.client.get(f"/m/{media.id}", headers=bearer(token)) as r:
        assert r.status == 401
        assert (await r.json())["error"]["code"] == "session_invalid"
    async with edge.client.get(f"/m/{media.id}", headers=bearer(issuer.mint("bob"))) as r:
        assert r.status == 200


async def test_dev_issuer_refuses_ttl_over_the_cap(dm: DmStack) -> None:
    c = dm.client()
    with pytest.raises(DmClientError) as info:
        await c.request("POST", "/v1/users", json_body={"ttl_s": 7 * 24 * 3600})
    assert info.value.status == 400
    await c.close()


def test_dev_issuer_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    DevIssuer.load_or_create(tmp_path / "keys")
    (tmp_path / "keys" / "issuer.key").chmod(0o644)
    with pytest.raises(PermissionError):
        DevIssuer.load_or_create(tmp_path / "keys")


async def test_huge_multipart_metadata_is_413_without_buffering(edge: Edge, issuer: DevIssuer) -> None:
    boundary = "b0undary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="metadata"\r\n'
            "Content-Type: application/json\r\n\r\n{"
        ).encode()
        + b" " * (4 * 1024 * 1024)
        + f"}}\r\n--{boundary}--\r\n".encode()
    )
    async with edge.client.post(
        "/v1/media",
        data=io.BytesIO(body),
        headers={
            **bearer(issuer.mint("alice")),
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        },
    ) as r:
        assert r.status == 413


# -- helpers for the dm findings ----------------------------------------------------------------


async def _replay(c: DmClient, dm: DmStack, marker_from: DmClient) -> list[StreamEvent]:
    """Every event ``c`` gets replaying its stream from the very start, up to a marker message
    that ``marker_from`` sends in a fresh 1:1 (so the replay has a known end)."""
    conv = await marker_from.create_conversation([c.uid])
    await marker_from.send(conv["id"], text="end-of-replay")
    events: list[StreamEvent] = []
    stream = c.stream(cursor="0-0", reconnect=False)

    async def collect() -> None:
        async for ev in stream:
            events.append(ev)
            if ev["type"] == "message" and ev["message"].get("text") == "end-of-replay":
                return

    await asyncio.wait_for(collect(), 10)
    await stream.aclose()
    return events


def _pointer_events(events: list[StreamEvent], cid: str) -> list[StreamEvent]:
    return [
        e
        for e in events
        if e["type"] == "message" and e["conversation_id"] == cid and _has_pointer(e["message"])
    ]


def _has_pointer(message: Message) -> bool:
    media = message.get("media")
    return media is not None and bool(media.get("pointer"))


async def _status(c: DmClient, url: str, **kw: Any) -> int:
    try:
        return (await c.fetch_media(url, range_=(0, 0), **kw)).status
    except DmClientError as err:
        return err.status


# -- finding 2: replay re-minted pointers after removal and after unsend -------------------------


async def test_replay_mints_no_pointer_for_a_removed_member(dm: DmStack) -> None:
    alice, bob, carol = await dm.user(), await dm.user(), await dm.user()
    media, _ = await dm.edge.add_media(owner=alice.uid)
    group = await alice.create_conversation([bob.uid, carol.uid])
    await alice.send(group["id"], media_id=media.id)
    assert _pointer_events(await _replay(carol, dm, alice), group["id"])  # control: a member
    await alice.leave(group["id"], carol.uid)
    assert _pointer_events(await _replay(carol, dm, alice), group["id"]) == []
    # Bob, still a member, replays and plays as before.
    [ev] = _pointer_events(await _replay(bob, dm, alice), group["id"])
    assert await _status(bob, media_of(ev["message"])["url"]) == 206


async def test_replay_mints_no_pointer_for_an_unsent_message(dm: DmStack) -> None:
    alice, bob = await dm.user(), await dm.user()
    media, _ = await dm.edge.add_media(owner=alice.uid)
    conv = await alice.create_conversation([bob.uid])
    sent = await alice.send(conv["id"], media_id=media.id)
    await alice.unsend(conv["id"], sent["id"])
    events = await _replay(bob, dm, alice)
    assert _pointer_events(events, conv["id"]) == []
    assert any(e["type"] == "unsent" and e["message_id"] == sent["id"] for e in events)


# -- finding 3: revoked recipients kept re-share rights ------------------------------------------


async def test_revoked_grant_gives_no_reshare_rights(dm: DmStack) -> None:
    alice, bob = await dm.user(), await dm.user()
    media, _ = await dm.edge.add_media(owner=alice.uid, allow_reshare=True)
    edge = str(dm.edge.client.make_url("")).rstrip("/")
    g = await alice.request_grant(edge, media.id, 1)
    await bob.fetch_media(f"{edge}/m/{media.id}", grant=g["grant"], range_=(0, 0))
    again = await bob.request_grant(edge, media.id, 1, via_grant=g["grant"])  # control
    assert again["media_id"] == media.id
    await alice.revoke_grant(edge, g["grant_id"])

    async def refused() -> bool:
        try:
            await bob.request_grant(edge, media.id, 1, via_grant=g["grant"])
        except DmClientError as err:
            return (err.status, err.code) == (410, "grant_revoked")
        return False

    await wait_until(refused, timeout_s=2.0)


async def test_unsend_ends_plain_reshare_rights(dm: DmStack) -> None:
    alice, bob, carol = await dm.user(), await dm.user(), await dm.user()
    media, _ = await dm.edge.add_media(owner=alice.uid, allow_reshare=True)
    conv = await alice.create_conversation([bob.uid])
    sent = await alice.send(conv["id"], media_id=media.id)
    onward = await bob.create_conversation([carol.uid])
    await bob.send(onward["id"], media_id=media.id)  # control: Bob holds it, may re-share
    await alice.unsend(conv["id"], sent["id"])
    with pytest.raises(DmClientError) as info:
        await bob.send(onward["id"], media_id=media.id)
    assert (info.value.status, info.value.code) == (403, "share_not_allowed")


async def test_removal_ends_plain_reshare_rights(dm: DmStack) -> None:
    alice, bob, carol = await dm.user(), await dm.user(), await dm.user()
    media, _ = await dm.edge.add_media(owner=alice.uid, allow_reshare=True)
    group = await alice.create_conversation([bob.uid, carol.uid])
    await alice.send(group["id"], media_id=media.id)
    onward = await bob.create_conversation([carol.uid])
    await alice.leave(group["id"], bob.uid)
    with pytest.raises(DmClientError) as info:
        await bob.send(onward["id"], media_id=media.id)
    assert (info.value.status, info.value.code) == (403, "share_not_allowed")
    # Carol still holds it through the group and may re-share it.
    back = await carol.create_conversation([alice.uid])
    await carol.send(back["id"], media_id=media.id)


# -- finding 6: a zero-padded message id unsent the message but revoked nothing ------------------


async def test_unsend_with_zero_padded_message_id_revokes_the_pointer(dm: DmStack) -> None:
    alice, bob = await dm.user(), await dm.user()
    media, _ = await dm.edge.add_media(owner=alice.uid)
    conv = await alice.create_conversation([bob.uid])
    sent = await alice.send(conv["id"], media_id=media.id)
    url = media_of((await bob.read(conv["id"]))["messages"][0])["url"]
    done = await alice.unsend(conv["id"], "0" + sent["id"])
    assert done["message_id"] == sent["id"]  # canonical in the answer

    async def gone() -> bool:
        return await _status(bob, url) == 410

    await wait_until(gone, timeout_s=2.0)
    again = await alice.unsend(conv["id"], sent["id"])  # the real id: already unsent, fine
    assert again["unsent"] is True


@pytest.mark.parametrize("cursor", ["\u0661\u0662-\u0660", "12-\uff10", "0x1-0"])
async def test_non_ascii_digit_cursors_are_400_not_503(dm: DmStack, cursor: str) -> None:
    alice, bob = await dm.user(), await dm.user()
    conv = await alice.create_conversation([bob.uid])
    with pytest.raises(DmClientError) as info:
        await alice.read(conv["id"], after=cursor)
    assert (info.value.status, info.value.code) == (400, "bad_cursor")


# -- finding 7: report with an out-of-range ts_ms answered 500 -----------------------------------


@pytest.mark.parametrize("ts_ms", [-1, 2**64, 10**30])
async def test_report_with_out_of_range_ts_ms_is_400(dm: DmStack, ts_ms: int) -> None:
    alice, bob = await dm.user(), await dm.user()
    conv = await alice.create_conversation([bob.uid], mode="sealed")
    b64 = "A" * 43
    sealed = {
        "client_message_id": "s_1",
        "sender": alice.uid,
        "ts_ms": ts_ms,
        "commitment": b64,
        "countersignature": b64,
        "franking_key": b64,
    }
    with pytest.raises(DmClientError) as info:
        await bob.request(
            "POST",
            "/v1/reports",
            json_body={"conversation_id": conv["id"], "sealed": sealed, "reason": "x"},
        )
    assert (info.value.status, info.value.code) == (400, "invalid_field")


# -- finding 8: a send whose announce step failed was never announced ----------------------------


async def test_idempotent_retry_completes_a_failed_announce(dm: DmStack) -> None:
    alice, bob, carol = await dm.user(), await dm.user(), await dm.user()
    media, _ = await dm.edge.add_media(owner=alice.uid, allow_reshare=True)
    conv = await alice.create_conversation([bob.uid])
    first, body = await stored_unannounced(
        dm.app[STATE_DM].store, conv["id"], alice.uid, media.id, "retry-1"
    )
    events = bob.stream()
    nxt = asyncio.ensure_future(events.__anext__())
    await asyncio.sleep(0.2)
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{dm.dm_url}/v1/conversations/{conv['id']}/messages",
            data=body,
            headers={
                **bearer(alice.session_token or ""),
                "Idempotency-Key": "retry-1",
                "Content-Type": "application/json",
            },
        ) as r,
    ):
        assert r.status == 200 and r.headers["Idempotent-Replayed"] == "true"
    pushed = await asyncio.wait_for(nxt, 5)
    assert pushed["message"]["id"] == first.message_id
    await events.aclose()
    onward = await bob.create_conversation([carol.uid])
    await bob.send(onward["id"], media_id=media.id)  # the received index was written too


async def test_retry_after_unsend_is_410(dm: DmStack) -> None:
    alice, bob = await dm.user(), await dm.user()
    conv = await alice.create_conversation([bob.uid])
    sent = await alice.send(conv["id"], text="oops", idempotency_key="k-1")
    await alice.unsend(conv["id"], sent["id"])
    with pytest.raises(DmClientError) as info:
        await alice.send(conv["id"], text="oops", idempotency_key="k-1")
    assert (info.value.status, info.value.code) == (410, "message_unsent")


# -- red-team review: ids from the identity provider --------------------------------------------


@pytest.mark.parametrize("sub", ["a,b", "a/b", "a{b}", "a b", "a\x00b", ""])
async def test_session_sub_with_separator_characters_is_refused(edge: Edge, sub: str) -> None:
    issuer = DevIssuer.load_or_create(edge.tmp / "session-keys")
    media, _ = await edge.add_media(owner="alice", visibility="public")
    async with edge.client.get(f"/m/{media.id}", headers=bearer(issuer.mint(sub))) as r:
        assert r.status == 401
    async with edge.client.get(f"/m/{media.id}", headers=bearer(issuer.mint("auth0|abc"))) as r:
        assert r.status == 200  # an IdP's usual id syntax still works
