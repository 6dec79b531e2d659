"""Red-team, round 3: the review queue, moderator access and audit, lawful access, the
known-bad media banks and held messages, against real dm and edge processes on Redis.

Each finding's test asserts the safe behaviour and is marked ``xfail(strict=True)`` while
the finding is real (so it turns red, as XPASS, the day it is fixed and the marker must
go); the guard tests pin attacks that held."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cdn_auth.fingerprint import fingerprint_file
from cdn_auth.matching import bank_and_take_down
from dm.client import DmClient, DmClientError
from dm.identity import DevIssuer

from ..support import capabilities
from ..support.banks import bank_manifest
from ..support.media_api import upload_form
from ..support.media_samples import make_spliced_video, make_video
from ..support.services import DmFactory, DmStack, EdgeFactory, bearer

LISTS = {
    "lists": [
        {"label": "grooming", "verdict": "hold", "keywords": ["our little secret"]},
    ]
}
HELD_TEXT = "this is our little secret"


@pytest.fixture
async def sdm(make_dm: DmFactory, tmp_path: Path) -> DmStack:
    path = tmp_path / "lists.json"
    path.write_text(json.dumps(LISTS))
    return await make_dm(scan_lists=path)


async def _code(coro: Any) -> tuple[int, str]:
    with pytest.raises(DmClientError) as err:
        await coro
    return err.value.status, err.value.code


async def _queue(mod: DmClient, **params: str) -> list[dict[str, Any]]:
    return list((await mod.request("GET", "/v1/moderation/queue", params=params))["items"])


async def _send_held(c: DmClient, cid: str, **extra: Any) -> dict[str, Any]:
    held = await c.request(
        "POST", f"/v1/conversations/{cid}/messages", json_body={"text": HELD_TEXT, **extra}
    )
    assert held["held"] is True
    return dict(held)


async def _act(mod: DmClient, item_id: str, action: str) -> dict[str, Any]:
    return dict(
        await mod.request(
            "POST", f"/v1/moderation/items/{item_id}/actions", json_body={"action": action}
        )
    )


# --- Findings -------------------------------------------------------------------------


async def test_banked_video_declared_as_audio_escapes_the_pdq_bank(
    make_edge: EdgeFactory, issuer: DevIssuer, tmp_path: Path
) -> None:
    """The bank holds the PDQ hashes of a re-encode (as PDQ banks do); the uploader sends
    the footage declaring ``audio/mp4``.  The bytes are a playable MP4 video all the same
    (media elements play the container whatever the type says), served by the edge."""
    make_video(tmp_path / "b.mp4", seed=11, variant=True)
    pdq = fingerprint_file(tmp_path / "b.mp4").pdq
    assert pdq
    edge = await make_edge(bank_manifest=bank_manifest(tmp_path, "refuse", [f"pdq {h}" for h in pdq]))
    data = make_video(tmp_path / "a.mp4", seed=11)
    token = bearer(issuer.mint("mallory"))
    async with edge.client.post("/v1/media", data=upload_form(None, data), headers=token) as r:
        assert r.status == 403  # declared as video: refused, the bank works
    async with edge.client.post(
        "/v1/media", data=upload_form({"content_type": "audio/mp4"}, data), headers=token
    ) as r:
        assert r.status == 403, await r.text()


async def test_banked_footage_after_a_long_intro_is_still_matched(
    make_edge: EdgeFactory, issuer: DevIssuer, tmp_path: Path
) -> None:
    make_video(tmp_path / "b.mp4", seed=21, variant=True)
    pdq = fingerprint_file(tmp_path / "b.mp4").pdq
    edge = await make_edge(bank_manifest=bank_manifest(tmp_path, "refuse", [f"pdq {h}" for h in pdq]))
    token = bearer(issuer.mint("mallory"))
    short = make_spliced_video(tmp_path / "short.mp4", [(22, 3), (21, 3)])
    async with edge.client.post("/v1/media", data=upload_form(None, short), headers=token) as r:
        assert r.status == 403  # after a 3 s intro the footage is found
    spliced = make_spliced_video(tmp_path / "long.mp4", [(22, 17), (21, 3)])
    async with edge.client.post("/v1/media", data=upload_form(None, spliced), headers=token) as r:
        assert r.status == 403, await r.text()


@pytest.mark.parametrize("window", ["before_index", "before_record"])
async def test_hash_banked_during_an_upload_still_takes_it_down(
    make_edge: EdgeFactory,
    issuer: DevIssuer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    window: str,
) -> None:
    """The moderator's bank addition lands in the window (forced here by running it from
    a wrapper of the upload's next step; in production it is any concurrent request)."""
    edge = await make_edge()
    state = edge.state
    data = make_video(tmp_path / "a.mp4", seed=31)
    signals = [("sha256", hashlib.sha256(data).hexdigest())]
    outcome: list[str] = []

    async def bank_now() -> None:
        try:
            taken = await bank_and_take_down(
                state.banks,
                state.hash_index,
                state.registry,
                state.revocations,
                state.banks.moderation_bank,
                signals,
                by="moderator",
            )
            outcome.append(f"took down {taken}")
        except Exception as exc:  # the bank add's own failure is part of the finding
            outcome.append(f"bank add failed: {type(exc).__name__}")

    target = state.hash_index if window == "before_index" else state.registry
    name = "record" if window == "before_index" else "put"
    original = getattr(target, name)

    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        if not outcome:
            await bank_now()
        return await original(*args, **kwargs)

    monkeypatch.setattr(target, name, wrapped)
    async with edge.client.post(
        "/v1/media", data=upload_form(None, data), headers=bearer(issuer.mint("mallory"))
    ) as r:
        status, doc = r.status, await r.json()
    assert outcome, "the bank addition ran inside the window"
    if status == 403:
        return  # refused: safe
    assert status == 201
    media = await state.registry.get(doc["id"])
    assert media.status == "taken_down", (media.status, outcome)


async def test_legal_request_justification_does_not_open_messages_outside_its_scope(
    sdm: DmStack,
) -> None:
    alice, bob = await sdm.user(), await sdm.user()
    legal, mod = await sdm.user(roles=["legal"]), await sdm.user(roles=["moderator"])
    conv = await alice.create_conversation([bob.uid])
    await alice.send(conv["id"], text="before-scope-marker")
    await asyncio.sleep(0.05)
    lo = int(time.time() * 1000)
    inside = (await alice.send(conv["id"], text="inside-scope-marker"))["id"]
    hi = int(time.time() * 1000)
    await asyncio.sleep(0.05)
    await bob.send(conv["id"], text="after-scope-marker")
    req = await legal.request(
        "POST",
        "/v1/legal/requests",
        json_body={"reference": "order-1", "conversation_id": conv["id"], "from_ms": lo, "to_ms": hi},
    )
    seen = await mod.request(
        "GET",
        f"/v1/moderation/conversations/{conv['id']}/messages/{inside}",
        params={"justification": req["id"], "context": "5"},
    )
    texts = [m["text"] for m in seen["context"]]
    assert "inside-scope-marker" in texts
    assert texts == ["inside-scope-marker"], texts


async def test_dismissed_report_does_not_justify_opening_later_messages(sdm: DmStack) -> None:
    alice, bob, mod = await sdm.user(), await sdm.user(), await sdm.user(roles=["moderator"])
    conv = await alice.create_conversation([bob.uid])
    mid = (await alice.send(conv["id"], text="reported"))["id"]
    await bob.report(conv["id"], mid, reason="spam")
    [item] = await _queue(mod)
    await _act(mod, item["id"], "dismiss")
    later = (await alice.send(conv["id"], text="private-after-dismissal"))["id"]
    path = f"/v1/moderation/conversations/{conv['id']}/messages/{later}"
    assert await _code(
        mod.request("GET", path, params={"justification": item["id"], "context": "0"})
    ) == (403, "justification_required")


async def test_sender_cannot_erase_a_held_message_before_review(sdm: DmStack) -> None:
    alice, bob, mod = await sdm.user(), await sdm.user(), await sdm.user(roles=["moderator"])
    conv = await alice.create_conversation([bob.uid])
    held = await _send_held(alice, conv["id"])
    with contextlib.suppress(
        DmClientError
    ):  # refusing the unsend of a held message is one acceptable fix
        await alice.request("DELETE", f"/v1/conversations/{conv['id']}/messages/{held['id']}")
    [item] = await _queue(mod)
    view = await mod.request("GET", f"/v1/moderation/items/{item['id']}")
    assert HELD_TEXT in json.dumps(view)


async def test_unsend_of_a_held_message_is_announced_to_nobody(sdm: DmStack) -> None:
    alice, bob = await sdm.user(), await sdm.user()
    conv = await alice.create_conversation([bob.uid])
    events = bob.stream()
    first = asyncio.ensure_future(events.__anext__())
    await asyncio.sleep(0.3)
    held = await _send_held(alice, conv["id"])
    with contextlib.suppress(DmClientError):  # a refusal is also safe: then nothing is announced
        await alice.request("DELETE", f"/v1/conversations/{conv['id']}/messages/{held['id']}")
    after = await alice.send(conv["id"], text="hello")
    try:
        pushed = await asyncio.wait_for(first, 10)
    finally:
        await events.aclose()
    assert held["id"] not in json.dumps(pushed), pushed
    assert pushed["message"]["id"] == after["id"]


async def test_member_cannot_report_a_held_message_it_never_received(sdm: DmStack) -> None:
    alice, bob = await sdm.user(), await sdm.user()
    media, _ = await sdm.edge.add_media(owner=alice.uid)
    conv = await alice.create_conversation([bob.uid])
    held = await _send_held(alice, conv["id"], media_id=media.id)
    assert (await bob.read(conv["id"]))["messages"] == []
    assert await _code(bob.report(conv["id"], held["id"])) == (404, "message_not_found")


async def test_read_cursor_does_not_name_a_held_message(sdm: DmStack) -> None:
    alice, bob = await sdm.user(), await sdm.user()
    conv = await alice.create_conversation([bob.uid])
    await alice.send(conv["id"], text="hello")
    held = await _send_held(alice, conv["id"])
    page = await bob.read(conv["id"])
    assert len(page["messages"]) == 1
    assert held["id"] not in json.dumps(page), page


async def test_open_queue_is_not_hidden_behind_newer_closed_items(sdm: DmStack) -> None:
    alice, bob, mod = await sdm.user(), await sdm.user(), await sdm.user(roles=["moderator"])
    conv = await alice.create_conversation([bob.uid])
    ids = [(await alice.send(conv["id"], text=f"m{i}"))["id"] for i in range(5)]
    first = "q-" + str((await bob.report(conv["id"], ids[0], reason="the real one"))["report_id"])
    for mid in ids[1:]:  # four decoys, each dismissed at once
        await bob.report(conv["id"], mid, reason="decoy")
    for it in await _queue(mod, limit="10"):
        if it["id"] != first:
            await _act(mod, it["id"], "dismiss")
    assert [it["id"] for it in await _queue(mod, limit="10")] == [first]  # it is open
    assert [it["id"] for it in await _queue(mod, limit="1")] == [first]


@pytest.mark.parametrize(
    "text",
    [
        "this is our little sec\u00adret",  # soft hyphen: invisible when rendered
        "this is our li\u200dttle secret",  # zero-width joiner
        "this is " + "".join(chr(ord(c) + 0xFEE0) if c != " " else c for c in "our little secret"),
    ],
    ids=["soft_hyphen", "zero_width_joiner", "fullwidth"],
)
async def test_invisible_or_fullwidth_characters_do_not_evade_a_hold_list(
    sdm: DmStack, text: str
) -> None:
    alice, bob = await sdm.user(), await sdm.user()
    conv = await alice.create_conversation([bob.uid])
    sent = await alice.request(
        "POST", f"/v1/conversations/{conv['id']}/messages", json_body={"text": text}
    )
    assert sent.get("held") is True
    assert (await bob.read(conv["id"]))["messages"] == []


@pytest.mark.parametrize(
    ("from_ms", "to_ms"), [(-1000, 0), (2**64, 2**64 + 1000)], ids=["negative", "past_2_64"]
)
async def test_legal_request_with_an_out_of_range_scope_is_refused_not_an_outage(
    sdm: DmStack, from_ms: int, to_ms: int
) -> None:
    alice, bob, legal = await sdm.user(), await sdm.user(), await sdm.user(roles=["legal"])
    conv = await alice.create_conversation([bob.uid])
    await alice.send(conv["id"], text="x")
    body = {"reference": "r", "conversation_id": conv["id"], "from_ms": from_ms, "to_ms": to_ms}
    try:
        req = await legal.request("POST", "/v1/legal/requests", json_body=body)
    except DmClientError as exc:
        assert (exc.status, exc.code) == (400, "invalid_field")
        return
    await legal.request("GET", f"/v1/legal/requests/{req['id']}/export")


async def test_padded_item_id_is_not_an_open_alias_of_a_closed_item(sdm: DmStack) -> None:
    alice, bob, mod = await sdm.user(), await sdm.user(), await sdm.user(roles=["moderator"])
    conv = await alice.create_conversation([bob.uid])
    await _send_held(alice, conv["id"])
    [item] = await _queue(mod)
    await _act(mod, item["id"], "dismiss")
    assert await _code(_act(mod, item["id"], "release")) == (409, "item_closed")
    alias = "q-0" + item["id"][2:]
    with contextlib.suppress(DmClientError):  # refused (404 or 409) is the safe outcome
        await _act(mod, alias, "release")
    assert (await bob.read(conv["id"]))["messages"] == []


async def test_open_message_zero_id_is_not_an_outage(sdm: DmStack) -> None:
    alice, bob, mod = await sdm.user(), await sdm.user(), await sdm.user(roles=["moderator"])
    conv = await alice.create_conversation([bob.uid])
    mid = (await alice.send(conv["id"], text="x"))["id"]
    await bob.report(conv["id"], mid)
    [item] = await _queue(mod)
    status, _ = await _code(
        mod.request(
            "GET",
            f"/v1/moderation/conversations/{conv['id']}/messages/0-0",
            params={"justification": item["id"]},
        )
    )
    assert status in (400, 404), status


async def test_websocket_cap_per_user_holds_across_dm_processes(make_dm: DmFactory) -> None:
    dm1 = await make_dm(ws_max_per_user=2)
    dm2 = await make_dm(edge=dm1.edge, ws_max_per_user=2)
    alice = await dm1.user()
    headers = bearer(alice.session_token or "")
    async with aiohttp.ClientSession() as http:
        held = [await http.ws_connect(dm1.dm_url + "/v1/stream", headers=headers) for _ in range(2)]
        try:
            with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                held.append(await http.ws_connect(dm1.dm_url + "/v1/stream", headers=headers))
            assert err.value.status == 429  # the cap works within one process
            with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                held.append(await http.ws_connect(dm2.dm_url + "/v1/stream", headers=headers))
            assert err.value.status == 429
        finally:
            for ws in held:
                await ws.close()


async def test_refused_moderator_action_is_audited(sdm: DmStack) -> None:
    alice, bob, mod = await sdm.user(), await sdm.user(), await sdm.user(roles=["moderator"])
    auditor = await sdm.user(roles=["auditor"])
    conv = await alice.create_conversation([bob.uid])
    mid = (await alice.send(conv["id"], text="x"))["id"]
    await bob.report(conv["id"], mid)
    [item] = await _queue(mod)
    await _act(mod, item["id"], "dismiss")
    before = (await auditor.request("GET", "/v1/audit"))["entries"]
    assert await _code(_act(mod, item["id"], "release")) == (409, "item_closed")
    assert await _code(_act(mod, item["id"], "take_down_media")) == (409, "action_not_applicable")
    after = (await auditor.request("GET", "/v1/audit"))["entries"]
    refused = [e for e in after[len(before) :] if e["justification"] == item["id"]]
    assert len(refused) == 2, refused


async def test_playback_session_minting_is_rate_limited(
    make_edge: EdgeFactory, issuer: DevIssuer, tmp_path: Path
) -> None:
    edge = await make_edge(playback_secret_path=tmp_path / "playback.key")
    headers = bearer(issuer.mint("mallory"))
    statuses = []
    for _ in range(300):
        async with edge.client.post("/v1/playback-session", headers=headers) as r:
            statuses.append(r.status)
            if r.status == 429:
                break
    assert statuses[0] == 201
    assert statuses[-1] == 429, f"{len(statuses)} sessions minted, none refused"


def test_operations_rate_limit_table_names_every_declared_limit() -> None:
    """Finding 17 (fixed): operations.md 15.1 lists every limit the code declares."""
    from cdn_auth.settings import DEFAULT_RATE_LIMITS as EDGE_LIMITS
    from dm.settings import DEFAULT_RATE_LIMITS as DM_LIMITS

    doc = (Path(__file__).parents[2] / "docs" / "operations.md").read_text()
    section = doc.split("### 15.1", 1)[1].split("### 15.2", 1)[0]
    rows = [line.split("|") for line in section.splitlines() if line.startswith("| ")]
    named = {(r[1].strip(), r[2].strip().split("`")[1]) for r in rows if r[2].strip().startswith("`")}
    declared = {("dm", n) for n in DM_LIMITS} | {("edge", n) for n in EDGE_LIMITS}
    assert declared - named == set()


async def test_moderator_takedown_at_the_edge_is_audited(sdm: DmStack) -> None:
    """Decision (docs/safety.md): the edge route stays open to moderators (a takedown needs
    no review item: a tip from outside is reason enough), and is audited in the one log dm's
    auditors read, the attempt before it takes effect and its outcome after, with the
    moderator's reason as the justification on record."""
    alice, mod = await sdm.user(), await sdm.user(roles=["moderator"])
    auditor = await sdm.user(roles=["auditor"])
    media, _ = await sdm.edge.add_media(owner=alice.uid)
    async with sdm.edge.client.post(
        "/v1/takedowns",
        json={"media_id": media.id, "reason": "no report, no alert"},
        headers=bearer(mod.session_token or ""),
    ) as r:
        assert r.status == 200  # done, at every edge
    entries = (await auditor.request("GET", "/v1/audit"))["entries"]
    mine = [e for e in entries if e["media_id"] == media.id]
    assert [(e["action"], e["actor"]) for e in mine] == [
        ("take_down_media", mod.uid),
        ("take_down_media:done", mod.uid),
    ], entries
    assert mine[0]["detail"] == {"via": "edge", "reason": "no report, no alert"}
    assert "moderator" in mine[0]["roles"]


async def test_legal_request_scope_cannot_reach_into_the_future(sdm: DmStack) -> None:
    alice, bob, legal = await sdm.user(), await sdm.user(), await sdm.user(roles=["legal"])
    conv = await alice.create_conversation([bob.uid])
    now = int(time.time() * 1000)
    body = {
        "reference": "order-9",
        "conversation_id": conv["id"],
        "from_ms": now - 60_000,
        "to_ms": now + 30 * 24 * 3600 * 1000,
    }
    assert await _code(legal.request("POST", "/v1/legal/requests", json_body=body)) == (
        400,
        "invalid_field",
    )


async def test_suspended_user_cannot_upload_media(sdm: DmStack, tmp_path: Path) -> None:
    alice, bob, mod = await sdm.user(), await sdm.user(), await sdm.user(roles=["moderator"])
    own, _ = await sdm.edge.add_media(owner=alice.uid)
    conv = await alice.create_conversation([bob.uid])
    mid = (await alice.send(conv["id"], text="abuse"))["id"]
    await bob.report(conv["id"], mid)
    [item] = await _queue(mod)
    await _act(mod, item["id"], "suspend_user")
    assert await _code(alice.send(conv["id"], text="again")) == (403, "user_suspended")
    data = make_video(tmp_path / "v.mp4", seed=41)
    async with sdm.edge.client.post(
        "/v1/media", data=upload_form(None, data), headers=bearer(alice.session_token or "")
    ) as r:
        assert r.status == 403, await r.text()
    # Nor new tokens for media already up: no grant, no share capability.
    session = alice.session_token or ""
    status, doc = await capabilities.call(
        sdm.edge, "POST", "/v1/grants", session, {"media_id": own.id, "redeemers": 1}
    )
    assert (status, doc["error"]["code"]) == (403, "user_suspended")
    status, doc = await capabilities.issue(sdm.edge, session, own.id, Ed25519PrivateKey.generate())
    assert (status, doc["error"]["code"]) == (403, "user_suspended")


async def test_bank_media_failing_part_way_is_still_audited(sdm: DmStack) -> None:
    alice, bob, mod = await sdm.user(), await sdm.user(), await sdm.user(roles=["moderator"])
    auditor = await sdm.user(roles=["auditor"])
    edge = sdm.edge.state
    media, _ = await sdm.edge.add_media(owner=alice.uid)
    fp = fingerprint_file(edge.origin.root / media.origin)
    await edge.hash_index.record(media.id, fp)
    # Another upload of the same bytes, between its index write and its record write
    # (finding 18's window); its id sorts before the reported one.
    await edge.hash_index.record("m_0inflight", fp)
    conv = await alice.create_conversation([bob.uid])
    mid = (await alice.send(conv["id"], text="look", media_id=media.id))["id"]
    await bob.report(conv["id"], mid)
    [item] = await _queue(mod)
    with contextlib.suppress(DmClientError):  # today: 404 media_not_found (the in-flight id)
        await _act(mod, item["id"], "bank_media")
    banks = {b["name"]: b for b in await _edge_banks(sdm, mod)}
    assert banks["moderation"]["sha256"] == 1  # the addition took effect
    entries = (await auditor.request("GET", "/v1/audit"))["entries"]
    assert any(e["action"] == "bank_media" for e in entries), [e["action"] for e in entries]
    assert (await edge.registry.get(media.id)).status == "taken_down"


async def _edge_banks(dm: DmStack, mod: DmClient) -> list[dict[str, Any]]:
    async with dm.edge.client.get("/v1/banks", headers=bearer(mod.session_token or "")) as r:
        assert r.status == 200
        return list((await r.json())["banks"])


# --- Guards: attacks that held -----------------------------------------------------------


async def test_guard_x_forwarded_for_does_not_reset_the_signup_limit(make_dm: DmFactory) -> None:
    dm = await make_dm(rate_limits={"signup": (0.01, 2)})
    async with aiohttp.ClientSession() as http:
        statuses = []
        for i in range(4):
            async with http.post(
                dm.dm_url + "/v1/users",
                json={"age": "adult", "region": "GB"},
                headers={"X-Forwarded-For": f"203.0.113.{i}", "X-Real-IP": f"203.0.113.{i}"},
            ) as r:
                statuses.append(r.status)
    assert statuses == [201, 201, 429, 429]


async def test_guard_auditor_and_legal_roles_cannot_open_or_act(sdm: DmStack) -> None:
    alice, bob, mod = await sdm.user(), await sdm.user(), await sdm.user(roles=["moderator"])
    conv = await alice.create_conversation([bob.uid])
    mid = (await alice.send(conv["id"], text="hello"))["id"]
    await bob.report(conv["id"], mid)
    [item] = await _queue(mod)
    for role in ("auditor", "legal"):
        staff = await sdm.user(roles=[role])
        assert await _code(staff.request("GET", f"/v1/moderation/items/{item['id']}")) == (
            403,
            "role_required",
        )
        assert await _code(_act(staff, item["id"], "dismiss")) == (403, "role_required")
        assert await _code(
            staff.request(
                "GET",
                f"/v1/moderation/conversations/{conv['id']}/messages/{mid}",
                params={"justification": item["id"]},
            )
        ) == (403, "role_required")
    assert (await _queue(mod))[0]["status"] == "open"


async def test_guard_held_message_is_in_no_read_and_no_replay(sdm: DmStack) -> None:
    """Replay by cursor (the WebSocket's ``?cursor=``) skips the held message as reads do."""
    alice, bob = await sdm.user(), await sdm.user()
    conv = await alice.create_conversation([bob.uid])
    events = bob.stream()
    pending = asyncio.ensure_future(events.__anext__())
    await asyncio.sleep(0.3)
    before = await alice.send(conv["id"], text="before")
    got = await asyncio.wait_for(pending, 10)
    await events.aclose()
    assert got["message"]["id"] == before["id"]
    held = await _send_held(alice, conv["id"])
    after = await alice.send(conv["id"], text="after")
    replay = bob.stream(cursor=str(got["cursor"]), reconnect=False)
    try:
        first = await asyncio.wait_for(replay.__anext__(), 10)
    finally:
        await replay.aclose()
    assert first["message"]["id"] == after["id"] and held["id"] not in json.dumps(first)
    for reader in (alice, bob):
        page = await reader.read(conv["id"])
        assert [m["id"] for m in page["messages"]] == [before["id"], after["id"]]


async def test_guard_banked_video_with_one_byte_changed_is_still_refused(
    make_edge: EdgeFactory, issuer: DevIssuer, tmp_path: Path
) -> None:
    """Exact hashes miss a one-byte change; the keyframes' PDQ does not (declared as video)."""
    data = make_video(tmp_path / "a.mp4", seed=51)
    fp = fingerprint_file(tmp_path / "a.mp4")
    edge = await make_edge(bank_manifest=bank_manifest(tmp_path, "refuse", [f"pdq {h}" for h in fp.pdq]))
    token = bearer(issuer.mint("mallory"))
    for variant in (data + b"\0", data[:-1] + bytes([data[-1] ^ 1])):
        assert hashlib.sha256(variant).hexdigest() != fp.sha256
        async with edge.client.post("/v1/media", data=upload_form(None, variant), headers=token) as r:
            assert r.status == 403, await r.text()
