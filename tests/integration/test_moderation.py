"""Plain-mode scanning, the review queue, audited moderator access and lawful access.

Each test shows one row of docs/safety.md's mode-by-mode table.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from cdn_auth import token_format
from dm import envelope, moderation
from dm.client import DmClient, DmClientError
from dm.redis_keys import AUDIT_STREAM
from dm.review import Page, ReviewQueue
from dm.web_state import STATE

from ..support.media_api import upload_form
from ..support.media_samples import make_video
from ..support.messages import media_of
from ..support.services import DmFactory, DmStack, bearer, wait_until

LISTS = {
    "lists": [
        {"label": "scam", "verdict": "flag", "keywords": ["gift card", "wire the money"]},
        {
            "label": "grooming",
            "verdict": "hold",
            "keywords": ["our little secret"],
            "patterns": [r"\bdon'?t\s+tell\s+your\s+(mum|mom|parents)\b"],
        },
    ]
}


@pytest.fixture
async def sdm(make_dm: DmFactory, tmp_path: Path) -> DmStack:
    path = tmp_path / "lists.json"
    path.write_text(json.dumps(LISTS))
    return await make_dm(scan_lists=path)


async def _mod(dm: DmStack, role: str = "moderator") -> DmClient:
    return await dm.user(roles=[role])


async def _queue(mod: DmClient, **params: str) -> list[dict[str, Any]]:
    return list((await mod.request("GET", "/v1/moderation/queue", params=params))["items"])


async def _code(coro: Any) -> tuple[int, str]:
    with pytest.raises(DmClientError) as err:
        await coro
    return err.value.status, err.value.code


async def test_keyword_alert_flags_and_still_delivers(sdm: DmStack) -> None:
    alice, bob, mod = await sdm.user(), await sdm.user(), await _mod(sdm)
    conv = await alice.create_conversation([bob.uid])
    sent = await alice.send(conv["id"], text="send me a Gift  Card code now")
    assert "held" not in sent
    assert [m["id"] for m in (await bob.read(conv["id"]))["messages"]] == [sent["id"]]
    [item] = await _queue(mod)
    assert (item["source"], item["verdict"], item["labels"]) == ("alert", "flag", "scam")
    assert item["message_id"] == sent["id"] and "text" not in item  # the list shows no content


async def _all_pages(fetch: Any, limit: int) -> tuple[list[str], int]:
    """Follow next_cursor until more is false: every item id seen, and the page count."""
    seen: list[str] = []
    cursor: str | None = None
    for pages in range(1, 100):
        page = await fetch(cursor, limit)
        assert len(page["items"]) <= limit
        seen += [i["id"] for i in page["items"]]
        if not page["more"]:
            return seen, pages
        cursor = page["next_cursor"]
    raise AssertionError("the queue never ended")


async def test_queue_pages_reach_every_open_item_once(sdm: DmStack) -> None:
    """Older open items stay reachable however many closed ones are newer: the list is a
    cursor walk over both streams, not a filter of the newest few."""
    alice, bob, mod = await sdm.user(), await sdm.user(), await _mod(sdm)
    conv = await alice.create_conversation([bob.uid])
    for n in range(14):
        await alice.send(conv["id"], text=f"gift card {n}")
    everything = await _queue(mod, limit="500", status="all")
    assert len(everything) == 14 and all(i["status"] == "open" for i in everything)
    closed = {everything[n]["id"] for n in (*range(8), 10, 12)}  # the newest eight, and two
    for item_id in closed:
        await mod.request(
            "POST", f"/v1/moderation/items/{item_id}/actions", json_body={"action": "dismiss"}
        )
    want = [i["id"] for i in everything if i["id"] not in closed]

    async def http_page(cursor: str | None, limit: int) -> dict[str, Any]:
        params = {"limit": str(limit), **({"cursor": cursor} if cursor else {})}
        return dict(await mod.request("GET", "/v1/moderation/queue", params=params))

    first = await http_page(None, 2)  # the newest eight are closed: the open ones are older
    assert [i["id"] for i in first["items"]] == want[:2] and first["more"] is True
    seen, pages = await _all_pages(http_page, 2)
    assert seen == want and pages >= 2  # newest first, each exactly once
    # A bounded scan (3 entries a page here) returns short pages and keeps saying more.
    small = ReviewQueue(sdm.app[STATE].redis, scan_max=3)

    async def bounded_page(cursor: str | None, limit: int) -> dict[str, Any]:
        page = await small.page(status="open", limit=limit, cursor=cursor)
        return {"items": [it.summary() for it in page.items], **_cursor_fields(page)}

    seen, pages = await _all_pages(bounded_page, 2)
    assert seen == want and pages >= 5
    assert await _code(mod.request("GET", "/v1/moderation/queue", params={"cursor": "x"})) == (
        400,
        "bad_cursor",
    )


def _cursor_fields(page: Page) -> dict[str, Any]:
    return {"next_cursor": page.next_cursor, "more": page.more}


async def test_held_message_reaches_nobody_until_released(sdm: DmStack) -> None:
    alice, bob, mod = await sdm.user(), await sdm.user(), await _mod(sdm)
    media, _ = await sdm.edge.add_media(owner=alice.uid)
    conv = await alice.create_conversation([bob.uid])
    events = bob.stream()
    first = asyncio.ensure_future(events.__anext__())
    await asyncio.sleep(0.2)
    held = await alice.request(
        "POST",
        f"/v1/conversations/{conv['id']}/messages",
        json_body={"text": "this is our little secret", "media_id": media.id},
    )
    assert held["held"] is True
    after = await alice.send(conv["id"], text="hello")
    pushed = await asyncio.wait_for(first, 5)
    assert pushed["message"]["id"] == after["id"]  # the held one was never pushed
    for reader in (bob, alice):  # nor read, by anyone; so no pointer was minted for it
        ids = [m["id"] for m in (await reader.read(conv["id"]))["messages"]]
        assert ids == [after["id"]]
    [item] = await _queue(mod)
    assert (item["verdict"], item["held"], item["message_id"]) == ("hold", "1", held["id"])
    view = await mod.request("GET", f"/v1/moderation/items/{item['id']}")
    shown = next(m for m in view["context"] if m["id"] == held["id"])
    assert shown["held"] and shown["text"] == "this is our little secret"
    nxt = asyncio.ensure_future(events.__anext__())
    done = await mod.request(
        "POST",
        f"/v1/moderation/items/{item['id']}/actions",
        json_body={"action": "release", "reason": "context is benign"},
    )
    released = (await asyncio.wait_for(nxt, 5))["message"]
    await events.aclose()
    assert released["id"] == done["released_as"] and released["text"] == held["text"]
    assert media_of(released)["pointer"]  # delivered now, with bob's own pointer
    assert [m["id"] for m in (await bob.read(conv["id"]))["messages"]] == [after["id"], released["id"]]


async def test_moderator_opens_plain_report_in_context(sdm: DmStack) -> None:
    alice, bob, mod = await sdm.user(), await sdm.user(), await _mod(sdm)
    media, data = await sdm.edge.add_media(owner=alice.uid)
    conv = await alice.create_conversation([bob.uid])
    ids = [
        (await alice.send(conv["id"], text=f"m{i}", media_id=media.id if i == 6 else None))["id"]
        for i in range(12)
    ]
    await bob.report(conv["id"], ids[6], reason="abusive")
    [item] = await _queue(mod)
    view = await mod.request("GET", f"/v1/moderation/items/{item['id']}", params={"context": "3"})
    assert [m["id"] for m in view["context"]] == ids[3:10]
    reported = view["context"][3]
    assert reported["text"] == "m6" and view["server_copy"]["text"] == "m6"
    player = reported["media"]
    # A short-lived moderator pointer: its own lifetime (exp - iat), read from the token.
    claims = token_format.parse_unverified(player["pointer"])
    assert claims.exp - claims.iat <= 60
    r = await mod.fetch_media(player["url"], range_=(0, 99))
    assert r.status == 206 and r.body == data[:100]
    with pytest.raises(DmClientError):  # it is the moderator's, not a link anyone can use
        await bob.fetch_media(player["url"], range_=(0, 99))
    small = await mod.request("GET", f"/v1/moderation/items/{item['id']}", params={"context": "0"})
    assert [m["id"] for m in small["context"]] == [ids[6]]


async def test_moderator_opens_sealed_report_with_only_the_unlocked_message(sdm: DmStack) -> None:
    alice, bob, mod = await sdm.user(), await sdm.user(), await _mod(sdm)
    for c in (alice, bob):
        c.use_device_key(envelope.DeviceKey.generate("x25519"))
        await c.publish_key()
    media, data = await sdm.edge.add_media(owner=alice.uid)
    conv = await alice.create_conversation([bob.uid], mode="sealed")
    edge_url = str(sdm.edge.client.make_url("")).rstrip("/")
    for i in range(5):
        await alice.send_sealed(
            conv["id"], edge_url=edge_url, text=f"sealed-text-{i}", media_id=media.id if i == 2 else None
        )
    messages = (await bob.read(conv["id"]))["messages"]
    payload = bob.open_message(messages[2])
    await bob.report_sealed(messages[2], payload, reason="threat")
    [item] = await _queue(mod)
    view = await mod.request("GET", f"/v1/moderation/items/{item['id']}", params={"context": "5"})
    assert view["context"] == [] and "only the message the reporter unlocked" in view["note"]
    assert view["message"]["text"] == "sealed-text-2"
    assert view["message"]["evidence"] == "franking_verified"
    # Distinctive markers: short ones can occur by chance inside ids and tokens.
    assert "sealed-text-1" not in json.dumps(view) and "sealed-text-3" not in json.dumps(view)
    r = await mod.fetch_media(view["message"]["media"]["url"], range_=(0, 9))
    assert r.body == data[:10]
    # Opening the sealed conversation's messages directly yields nothing readable.
    status, code = await _code(
        mod.request(
            "GET",
            f"/v1/moderation/conversations/{conv['id']}/messages/{messages[1]['id']}",
            params={"justification": item["id"]},
        )
    )
    assert (status, code) == (409, "action_not_applicable")


async def test_view_without_justification_refused(sdm: DmStack) -> None:
    alice, bob, mod = await sdm.user(), await sdm.user(), await _mod(sdm)
    conv = await alice.create_conversation([bob.uid])
    other = await alice.create_conversation([(await sdm.user()).uid])
    mid = (await alice.send(conv["id"], text="hello"))["id"]
    omid = (await alice.send(other["id"], text="elsewhere"))["id"]
    await bob.report(conv["id"], mid)
    [item] = await _queue(mod)
    path = f"/v1/moderation/conversations/{conv['id']}/messages/{mid}"
    assert await _code(mod.request("GET", path)) == (403, "justification_required")
    for bogus in ("q-1-0", "lr_nothing", "because"):
        assert await _code(mod.request("GET", path, params={"justification": bogus})) == (
            403,
            "justification_required",
        )
    # An item about one conversation does not open another.
    assert await _code(
        mod.request(
            "GET",
            f"/v1/moderation/conversations/{other['id']}/messages/{omid}",
            params={"justification": item["id"]},
        )
    ) == (403, "justification_required")
    ok = await mod.request("GET", path, params={"justification": item["id"], "context": "0"})
    assert [m["text"] for m in ok["context"]] == ["hello"]
    assert await _code(bob.request("GET", path, params={"justification": item["id"]})) == (
        403,
        "role_required",
    )


async def test_every_view_and_action_in_audit_log_and_moderators_cannot_read_it(sdm: DmStack) -> None:
    alice, bob, mod = await sdm.user(), await sdm.user(), await _mod(sdm)
    auditor = await _mod(sdm, "auditor")
    media, _ = await sdm.edge.add_media(owner=alice.uid)
    conv = await alice.create_conversation([bob.uid])
    mid = (await alice.send(conv["id"], text="look", media_id=media.id))["id"]
    await bob.report(conv["id"], mid, reason="spam")
    [item] = await _queue(mod)
    await mod.request("GET", f"/v1/moderation/items/{item['id']}")
    await _code(mod.request("GET", f"/v1/moderation/conversations/{conv['id']}/messages/{mid}"))
    for action in ("take_down_media", "suspend_user", "dismiss"):
        await mod.request(
            "POST",
            f"/v1/moderation/items/{item['id']}/actions",
            json_body={"action": action, "reason": "policy 4.2"},
        )
    assert await _code(mod.request("GET", "/v1/audit")) == (403, "role_required")
    # Separation of duties: holding auditor too does not let a moderator read the log.
    both = await sdm.user(roles=["moderator", "auditor"])
    assert await _code(both.request("GET", "/v1/audit")) == (403, "role_conflict")
    entries = (await auditor.request("GET", "/v1/audit"))["entries"]
    assert [(e["action"], e["justification"]) for e in entries] == [
        ("list_queue", ""),
        ("open_item", item["id"]),
        ("open_refused", ""),
        ("take_down_media", item["id"]),
        ("take_down_media:done", item["id"]),
        ("suspend_user", item["id"]),
        ("suspend_user:done", item["id"]),
        ("dismiss", item["id"]),
        ("dismiss:done", item["id"]),
    ]
    assert {e["actor"] for e in entries} == {mod.uid}
    assert entries[3]["media_id"] == media.id and entries[5]["target_user"] == alice.uid
    assert entries[3]["detail"] == {"reason": "policy 4.2"}
    assert entries[6]["detail"] == {"item_id": item["id"], "suspended": alice.uid}
    # The actions took effect: media down at the edge, the sender suspended, item closed.
    assert await _code(alice.send(conv["id"], text="again")) == (403, "user_suspended")
    assert await _code(alice.fetch_media(str(sdm.edge.client.make_url(f"/m/{media.id}")))) == (
        410,
        "media_taken_down",
    )
    assert await _queue(mod) == []
    # No route deletes audit entries; the stream only grows.
    after = (await auditor.request("GET", "/v1/audit"))["entries"]
    assert len(after) == len(entries) + 1  # the list_queue just above


async def test_every_action_audited_first_and_none_without_its_record(
    sdm: DmStack, tmp_path: Path
) -> None:
    """Each of the six actions is on record before it takes effect: while the audit stream
    cannot be written (a real Redis WRONGTYPE error), no action happens at all."""
    alice, bob, mod = await sdm.user(), await sdm.user(), await _mod(sdm)
    auditor = await _mod(sdm, "auditor")
    state = sdm.app[STATE]
    edge = sdm.edge.client
    video = upload_form(None, make_video(tmp_path / "a.mp4", seed=11))
    async with edge.post("/v1/media", data=video, headers=bearer(alice.session_token or "")) as r:
        assert r.status == 201
        media_id = (await r.json())["id"]
    media_url = str(edge.make_url(f"/m/{media_id}"))
    conv = await alice.create_conversation([bob.uid])
    held = await alice.send(conv["id"], text="this is our little secret")  # hold: an alert
    shared = (await alice.send(conv["id"], text="look", media_id=media_id))["id"]
    await bob.report(conv["id"], shared, reason="abuse video")
    flagged = (await alice.send(conv["id"], text="a gift card for you"))["id"]
    other = (await alice.send(conv["id"], text="another gift card"))["id"]
    by_message = {i["message_id"]: i["id"] for i in await _queue(mod)}
    report = next(i["id"] for i in await _queue(mod) if i["source"] == "report")
    plan = [
        (by_message[held["id"]], "release"),
        (report, "take_down_media"),
        (report, "bank_media"),
        (report, "suspend_user"),
        (by_message[flagged], "remove_message"),
        (by_message[other], "dismiss"),
    ]
    assert {a for _, a in plan} == set(moderation.ACTIONS)

    async def visible() -> list[str]:
        return [m["id"] for m in (await bob.read(conv["id"]))["messages"]]

    before = await visible()
    await state.redis.delete(AUDIT_STREAM)
    await state.redis.set(AUDIT_STREAM, "not a stream")  # every XADD to it now fails
    for item_id, action in plan:
        assert await _code(
            mod.request("POST", f"/v1/moderation/items/{item_id}/actions", json_body={"action": action})
        ) == (503, "redis_unavailable")
    assert await visible() == before  # not released, nothing removed
    assert (await alice.fetch_media(media_url, range_=(0, 9))).status in (200, 206)
    assert not await state.store.is_suspended(alice.uid)
    assert all([(await state.queue.get(i)).open for i, _ in plan])
    await state.redis.delete(AUDIT_STREAM)
    for item_id, action in plan:
        await mod.request(
            "POST", f"/v1/moderation/items/{item_id}/actions", json_body={"action": action}
        )
    entries = [
        (e["action"], e["justification"]) for e in (await auditor.request("GET", "/v1/audit"))["entries"]
    ]
    assert entries == [x for i, a in plan for x in ((a, i), (f"{a}:done", i))]
    # And each took effect.
    after = await visible()
    assert held["id"] not in after and flagged not in after and len(after) == len(before)
    assert await _code(alice.fetch_media(media_url)) == (410, "media_taken_down")
    assert await state.store.is_suspended(alice.uid)
    assert not any([(await state.queue.get(i)).open for i, _ in plan])


async def test_legal_export_plain_messages_in_scope(sdm: DmStack) -> None:
    alice, bob, legal = await sdm.user(), await sdm.user(), await _mod(sdm, "legal")
    auditor = await _mod(sdm, "auditor")
    conv = await alice.create_conversation([bob.uid])
    early = await alice.send(conv["id"], text="before scope")
    await asyncio.sleep(0.02)
    lo = int(time.time() * 1000)
    inside = [(await alice.send(conv["id"], text=f"in {i}"))["id"] for i in range(3)]
    hi = int(time.time() * 1000)
    await asyncio.sleep(0.02)
    await bob.send(conv["id"], text="after scope")
    body = {
        "reference": "court-order-2026-117",
        "conversation_id": conv["id"],
        "from_ms": lo,
        "to_ms": hi,
    }
    assert await _code(alice.request("POST", "/v1/legal/requests", json_body=body)) == (
        403,
        "role_required",
    )
    req = await legal.request("POST", "/v1/legal/requests", json_body=body)
    export = await legal.request("GET", f"/v1/legal/requests/{req['id']}/export")
    assert export["content_available"] is True
    assert [m["id"] for m in export["messages"]] == inside
    assert early["id"] not in json.dumps(export)
    entries = (await auditor.request("GET", "/v1/audit"))["entries"]
    assert [(e["action"], e["justification"]) for e in entries] == [
        ("file_legal_request", req["id"]),
        ("legal_export", req["id"]),
    ]
    # The legal request justifies opening a message in its scope, and only there.
    mod = await _mod(sdm)
    ok = await mod.request(
        "GET",
        f"/v1/moderation/conversations/{conv['id']}/messages/{inside[0]}",
        params={"justification": req["id"], "context": "0"},
    )
    assert ok["context"][0]["text"] == "in 0"
    assert await _code(
        mod.request(
            "GET",
            f"/v1/moderation/conversations/{conv['id']}/messages/{early['id']}",
            params={"justification": req["id"]},
        )
    ) == (403, "justification_required")


async def test_legal_export_sealed_gives_metadata_and_says_content_unavailable(sdm: DmStack) -> None:
    alice, bob, legal = await sdm.user(), await sdm.user(), await _mod(sdm, "legal")
    for c in (alice, bob):
        c.use_device_key(envelope.DeviceKey.generate("x25519"))
        await c.publish_key()
    conv = await alice.create_conversation([bob.uid], mode="sealed")
    edge_url = str(sdm.edge.client.make_url("")).rstrip("/")
    secret = "the plan is at 9"
    await alice.send_sealed(conv["id"], edge_url=edge_url, text=secret)
    req = await legal.request(
        "POST",
        "/v1/legal/requests",
        json_body={
            "reference": "warrant-88",
            "conversation_id": conv["id"],
            "from_ms": int(time.time() * 1000) - 3_600_000,
            "to_ms": int(time.time() * 1000),  # stored messages only: never in the future
        },
    )
    export = await legal.request("GET", f"/v1/legal/requests/{req['id']}/export")
    assert export["content_available"] is False
    assert "not available" in export["statement"]
    [meta] = export["metadata"]
    assert meta["sender"] == alice.uid and meta["recipient_devices"] == 1  # bob's device
    assert secret not in json.dumps(export) and "messages" not in export


async def test_sealed_scanner_sees_metadata_only(sdm: DmStack, caplog: pytest.LogCaptureFixture) -> None:
    alice, bob, mod = await sdm.user(), await sdm.user(), await _mod(sdm)
    for c in (alice, bob):
        c.use_device_key(envelope.DeviceKey.generate("x25519"))
        await c.publish_key()
    conv = await alice.create_conversation([bob.uid], mode="sealed")
    edge_url = str(sdm.edge.client.make_url("")).rstrip("/")
    with caplog.at_level(logging.DEBUG, logger="dm.web_state"):
        await alice.send_sealed(conv["id"], edge_url=edge_url, text="our little secret")
        plain = await alice.create_conversation([bob.uid])
        await alice.send(plain["id"], text="hello")
    assert len((await bob.read(conv["id"]))["messages"]) == 1  # delivered: nothing to match
    assert await _queue(mod) == []
    # ... and says so, where a safety team looks: the scan metric and the scanner's log.
    async with aiohttp.ClientSession() as http, http.get(sdm.dm_url + "/metrics") as r:
        metrics = await r.text()
    assert 'dm_scans_total{mode="sealed",saw="metadata",verdict="allow"} 1.0' in metrics
    assert 'dm_scans_total{mode="plain",saw="content",verdict="allow"} 1.0' in metrics
    said = {
        (getattr(rec, "conversation_id", ""), getattr(rec, "saw", ""))
        for rec in caplog.records
        if rec.getMessage() == "scan"
    }
    assert said == {(conv["id"], "metadata"), (plain["id"], "content")}


async def test_classifier_timeout_falls_back_to_flag(make_dm: DmFactory) -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1.0)
        return web.json_response({"verdict": "allow"})

    async def quick(request: web.Request) -> web.Response:
        doc = await request.json()
        return web.json_response(
            {"verdict": "hold" if "bad" in doc["text"] else "allow", "label": "model-x"}
        )

    results = {}
    for name, handler in (("slow", slow), ("quick", quick)):
        app = web.Application()
        app.router.add_post("/classify", handler)
        server = TestServer(app)
        await server.start_server()
        try:
            dm = await make_dm(
                classifier_url=str(server.make_url("/classify")), classifier_timeout_s=0.2
            )
            alice, bob, mod = await dm.user(), await dm.user(), await _mod(dm)
            conv = await alice.create_conversation([bob.uid])
            sent = await alice.send(conv["id"], text="a bad idea")
            results[name] = (
                sent.get("held", False),
                [
                    (i["verdict"], i["labels"])
                    for i in await _queue(mod)
                    if i["conversation_id"] == conv["id"]
                ],
            )
        finally:
            await server.close()
    assert results["slow"] == (False, [("flag", "classifier_unavailable")])
    assert results["quick"] == (True, [("hold", "model-x")])


async def test_remove_message_action_unsends_it_for_everyone(sdm: DmStack) -> None:
    alice, bob, mod = await sdm.user(), await sdm.user(), await _mod(sdm)
    media, _ = await sdm.edge.add_media(owner=alice.uid)
    conv = await alice.create_conversation([bob.uid])
    mid = (await alice.send(conv["id"], text="abuse", media_id=media.id))["id"]
    url = media_of((await bob.read(conv["id"]))["messages"][0])["url"]
    await bob.report(conv["id"], mid)
    [item] = await _queue(mod)
    done = await mod.request(
        "POST", f"/v1/moderation/items/{item['id']}/actions", json_body={"action": "remove_message"}
    )
    assert done["removed"] is True
    assert (await bob.read(conv["id"]))["messages"] == []

    async def refused() -> bool:
        try:
            await bob.fetch_media(url, range_=(0, 9))
        except DmClientError as exc:
            return exc.code == "message_unsent"
        return False

    await wait_until(refused, 5, 0.05)


async def test_bank_media_action_takes_down_every_copy(sdm: DmStack, tmp_path: Path) -> None:
    """From a report, a moderator banks the media: the reported item and a re-encoded copy
    someone else uploaded are both taken down, and a fresh upload of it is refused."""
    alice, bob, carol, mod = (await sdm.user(), await sdm.user(), await sdm.user(), await _mod(sdm))
    edge = sdm.edge.client

    async def upload(c: DmClient, data: bytes) -> tuple[int, dict[str, Any]]:
        form = aiohttp.FormData()
        form.add_field(
            "metadata", json.dumps({"content_type": "video/mp4"}), content_type="application/json"
        )
        form.add_field("file", data, filename="v.mp4", content_type="video/mp4")
        async with edge.post(
            "/v1/media", data=form, headers={"Authorization": f"Bearer {c.session_token}"}
        ) as r:
            return r.status, await r.json()

    status, original = await upload(alice, make_video(tmp_path / "a.mp4", seed=9))
    assert status == 201
    status, copy = await upload(carol, make_video(tmp_path / "b.mp4", seed=9, variant=True))
    assert status == 201 and copy["sha256"] != original["sha256"]
    conv = await alice.create_conversation([bob.uid])
    mid = (await alice.send(conv["id"], media_id=original["id"]))["id"]
    await bob.report(conv["id"], mid, reason="known abuse video")
    [item] = await _queue(mod)
    done = await mod.request(
        "POST",
        f"/v1/moderation/items/{item['id']}/actions",
        json_body={"action": "bank_media", "reason": "matches NCMEC"},
    )
    assert sorted(done["taken_down"]) == sorted([original["id"], copy["id"]])
    for c, m in ((alice, original), (carol, copy)):
        assert await _code(c.fetch_media(str(edge.make_url(f"/m/{m['id']}")))) == (
            410,
            "media_taken_down",
        )
    status, refused = await upload(carol, make_video(tmp_path / "c.mp4", seed=9))
    assert (status, refused["error"]["code"]) == (403, "media_banked")


async def test_read_pages_past_held_messages_without_naming_them(sdm: DmStack) -> None:
    """Pages of one message each: a page of held entries only is passed over (the walk
    ends), and no page or cursor names a held message, whether the run is in the middle
    or at the end of the conversation."""
    alice, bob = await sdm.user(), await sdm.user()
    conv = await alice.create_conversation([bob.uid])
    first = (await alice.send(conv["id"], text="first"))["id"]
    held = [
        (await alice.request("POST", f"/v1/conversations/{conv['id']}/messages", json_body=body))["id"]
        for body in [{"text": "our little secret"}] * 3
    ]
    second = (await alice.send(conv["id"], text="second"))["id"]
    held.append(
        (
            await alice.request(
                "POST",
                f"/v1/conversations/{conv['id']}/messages",
                json_body={"text": "our little secret"},
            )
        )["id"]
    )
    pages, after = [], None
    for _ in range(10):  # bounded: the walk must end by itself
        params = {"limit": "1", **({"after": after} if after else {})}
        page = await bob.request("GET", f"/v1/conversations/{conv['id']}/messages", params=params)
        pages.append(page)
        after = page["next_cursor"]
        if not page["more"]:
            break
    assert [[m["id"] for m in p["messages"]] for p in pages] == [[first], [second], []]
    assert [p["next_cursor"] for p in pages] == [first, second, second]
    assert not any(h in json.dumps(pages) for h in held)


async def test_review_item_opens_only_its_message_and_neighbours_while_open(
    make_dm: DmFactory, tmp_path: Path
) -> None:
    """A report justifies the reported message and DM_MODERATION_CONTEXT_MAX messages
    either side, context clipped to them, and only while the item is open."""
    dm = await make_dm(moderation_context_max=1)
    alice, bob, mod = await dm.user(), await dm.user(), await _mod(dm)
    conv = await alice.create_conversation([bob.uid])
    ids = [(await alice.send(conv["id"], text=f"m{i}"))["id"] for i in range(5)]
    await bob.report(conv["id"], ids[2])
    [item] = await _queue(mod)

    def path(mid: str) -> str:
        return f"/v1/moderation/conversations/{conv['id']}/messages/{mid}"

    seen = await mod.request("GET", path(ids[1]), params={"justification": item["id"], "context": "1"})
    assert [m["text"] for m in seen["context"]] == ["m1", "m2"]  # m0 lies outside the item
    for far in (ids[0], ids[4]):
        assert await _code(
            mod.request("GET", path(far), params={"justification": item["id"], "context": "0"})
        ) == (403, "justification_required")
    await mod.request(
        "POST", f"/v1/moderation/items/{item['id']}/actions", json_body={"action": "dismiss"}
    )
    assert await _code(
        mod.request("GET", path(ids[2]), params={"justification": item["id"], "context": "0"})
    ) == (403, "justification_required")


async def test_unsent_held_message_stays_reviewable_and_cannot_be_released(sdm: DmStack) -> None:
    """The sender's unsend of a held message succeeds, tells nobody, and leaves the
    alert's server copy; a release afterwards has nothing to re-send."""
    alice, bob, mod = await sdm.user(), await sdm.user(), await _mod(sdm)
    conv = await alice.create_conversation([bob.uid])
    held = await alice.request(
        "POST", f"/v1/conversations/{conv['id']}/messages", json_body={"text": "our little secret"}
    )
    gone = await alice.request("DELETE", f"/v1/conversations/{conv['id']}/messages/{held['id']}")
    assert gone["unsent"] is True
    [item] = await _queue(mod)
    view = await mod.request("GET", f"/v1/moderation/items/{item['id']}")
    assert view["server_copy"] == {"text": "our little secret", "media_id": None}
    assert view["context"] == []  # the stored message itself is gone
    assert await _code(
        mod.request(
            "POST", f"/v1/moderation/items/{item['id']}/actions", json_body={"action": "release"}
        )
    ) == (409, "action_not_applicable")
    assert (await bob.read(conv["id"]))["messages"] == []


async def test_a_suspension_reaches_every_dm_process(make_dm: DmFactory) -> None:
    """A send checks suspension from a per-process cache (a Redis round trip per send
    otherwise).  The suspending process refuses the next send at once; another process,
    whose cache already says "not suspended" and would keep saying so for an hour here,
    drops that when the notify stream brings the suspension, not when the entry expires."""
    one = await make_dm(suspension_cache_ttl_s=3600)
    two = await make_dm(edge=one.edge, suspension_cache_ttl_s=3600)
    alice, bob, mod = await one.user(), await one.user(), await _mod(one)
    conv = await alice.create_conversation([bob.uid])
    alice_two = two.client()
    alice_two.session_token = alice.session_token
    mid = (await alice.send(conv["id"], text="hello"))["id"]
    await alice_two.send(conv["id"], text="from the other process")  # caches "not suspended"
    assert two.app[STATE].suspension_cache.get(str(alice.uid)) is False
    await bob.report(conv["id"], mid, reason="abuse")
    [item] = await _queue(mod)
    await mod.request(
        "POST",
        f"/v1/moderation/items/{item['id']}/actions",
        json_body={"action": "suspend_user", "reason": "policy 3.1"},
    )
    assert await _code(alice.send(conv["id"], text="again")) == (403, "user_suspended")
    await wait_until(lambda: two.app[STATE].suspension_cache.get(str(alice.uid)) is None, 10)
    assert await _code(alice_two.send(conv["id"], text="again")) == (403, "user_suspended")
    # Nor does a suspended user open conversations (each pushes "joined" to its members).
    carol = await one.user()
    assert await _code(alice.create_conversation([carol.uid])) == (403, "user_suspended")
