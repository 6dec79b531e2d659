"""Known-bad media matched at the CDN: banks from files, refusal or hold at upload, and
banking later takes down every registered match at every edge, whatever the DM mode."""

from __future__ import annotations

import asyncio
import json
import math
import os
import struct
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest

from cdn_auth import fingerprint, redis_keys
from cdn_auth.fingerprint import FingerprintLimits, fingerprint_file, pdq_of_rgb
from cdn_auth.hashbank import BankFormatError, parse_signals
from cdn_auth.pdq_index import PdqIndex, distances, to_words
from dm import envelope
from dm.client import DmClient, DmClientError
from dm.identity import DevIssuer

from ..support.banks import bank_manifest
from ..support.media_api import upload_form
from ..support.media_samples import make_video
from ..support.messages import media_of
from ..support.services import DmFactory, EdgeFactory, bearer, wait_until


@pytest.mark.parametrize("signal", ["pdq_of_reencoded_copy", "video_md5", "video_sha256"])
async def test_banked_video_refused_at_upload(
    make_edge: EdgeFactory, issuer: DevIssuer, tmp_path: Path, signal: str
) -> None:
    """The upload API is the same for both DM modes: a banked file never gets a media id,
    so it can be neither pointed to (plain) nor granted (sealed)."""
    original = make_video(tmp_path / "a.mp4", seed=1)
    if signal == "pdq_of_reencoded_copy":  # the bank holds a re-encode's hashes, not ours
        make_video(tmp_path / "b.mp4", seed=1, variant=True)
        fp = fingerprint_file(tmp_path / "b.mp4")
        assert fp.md5 != fingerprint_file(tmp_path / "a.mp4").md5
        lines = [f"pdq,{h},collab,cat," for h in fp.pdq]
    else:
        fp = fingerprint_file(tmp_path / "a.mp4")
        lines = [f"{signal},{fp.md5 if signal == 'video_md5' else fp.sha256},collab,cat,"]
    edge = await make_edge(bank_manifest=bank_manifest(tmp_path, "refuse", lines, csv=True))
    async with edge.client.post(
        "/v1/media", data=upload_form(None, original), headers=bearer(issuer.mint("alice"))
    ) as r:
        assert r.status == 403
        assert (await r.json())["error"]["code"] == "media_banked"
    uploads = edge.state.origin.root / "uploads"
    assert not uploads.exists() or not any(p.is_file() for p in uploads.rglob("*"))
    other = make_video(tmp_path / "c.mp4", seed=2)  # unrelated footage still registers
    async with edge.client.post(
        "/v1/media", data=upload_form(None, other), headers=bearer(issuer.mint("alice"))
    ) as r:
        assert r.status == 201


async def test_sealed_sender_cannot_share_a_banked_video(
    make_dm: DmFactory, make_edge: EdgeFactory, tmp_path: Path
) -> None:
    """End to end in sealed mode: the SDK's upload is refused, so the sender holds no media
    id, capability or grant to seal; the recipient receives only what was not banked."""
    bad = make_video(tmp_path / "bad.mp4", seed=6)
    fp = fingerprint_file(tmp_path / "bad.mp4")
    edge = await make_edge(bank_manifest=bank_manifest(tmp_path, "refuse", [f"sha256 {fp.sha256}"]))
    dm = await make_dm(edge=edge)
    edge_url = str(edge.client.make_url("")).rstrip("/")
    alice, bob = dm.client(), await dm.user()
    alice.edge_url = edge_url
    await alice.__aenter__()
    await alice.create_user()
    for c in (alice, bob):
        c.use_device_key(envelope.DeviceKey.generate("x25519"))
        await c.publish_key()
    conv = await alice.create_conversation([bob.uid], mode="sealed")
    with pytest.raises(DmClientError) as err:
        await alice.upload_media(bad)
    assert (err.value.status, err.value.code) == (403, "media_banked")
    fine = await alice.upload_media(make_video(tmp_path / "fine.mp4", seed=7))
    await alice.send_sealed(conv["id"], edge_url=edge_url, media_id=fine["id"])
    [msg] = (await bob.read(conv["id"]))["messages"]
    assert bob.open_message(msg).media_id == fine["id"]


async def test_hold_bank_registers_media_held_until_released(
    make_dm: DmFactory, make_edge: EdgeFactory, issuer: DevIssuer, tmp_path: Path
) -> None:
    make_video(tmp_path / "b.mp4", seed=3, variant=True)
    lines = [f"pdq {h}" for h in fingerprint_file(tmp_path / "b.mp4").pdq]
    # A release reaches edges when their cached record expires (a takedown is pushed at once).
    edge = await make_edge(bank_manifest=bank_manifest(tmp_path, "hold", lines), media_cache_ttl_s=0.5)
    dm = await make_dm(edge=edge)
    alice = await dm.user()
    mod = await dm.user(roles=["moderator"])
    data = make_video(tmp_path / "a.mp4", seed=3)
    async with edge.client.post(
        "/v1/media", data=upload_form(None, data), headers=bearer(alice.session_token or "")
    ) as r:
        assert r.status == 201
        media = await r.json()
    assert media["status"] == "held"
    url = str(edge.client.make_url(f"/m/{media['id']}"))
    with pytest.raises(DmClientError) as err:
        await alice.fetch_media(url)
    assert (err.value.status, err.value.code) == (410, "media_held")
    queue = (await mod.request("GET", "/v1/moderation/queue"))["items"]
    item = next(i for i in queue if i.get("media_id") == media["id"])
    assert item["source"] == "media_hold"
    await mod.request(
        "POST",
        f"/v1/moderation/items/{item['id']}/actions",
        json_body={"action": "release", "reason": "false positive"},
    )
    await wait_until(lambda: _fetch_ok(alice, url), 10, 0.1)


@pytest.mark.parametrize("action", ["refuse", "hold"])
async def test_banked_video_registered_by_origin_path_refused_or_held_like_an_upload(
    make_edge: EdgeFactory, issuer: DevIssuer, tmp_path: Path, action: str
) -> None:
    """A publisher's origin path is screened as an upload is: a refusing bank leaves no
    record and no stored copy; a holding bank registers it held, served to nobody."""
    make_video(tmp_path / "b.mp4", seed=5, variant=True)  # the bank has a re-encode's hashes
    lines = [f"pdq {h}" for h in fingerprint_file(tmp_path / "b.mp4").pdq]
    edge = await make_edge(bank_manifest=bank_manifest(tmp_path, action, lines))
    (edge.state.origin.ingest / "show.mp4").write_bytes(make_video(tmp_path / "a.mp4", seed=5))
    publisher = bearer(issuer.mint("studio", roles=["publisher"]))
    async with edge.client.post(
        "/v1/media", headers=publisher, json={"origin_path": "show.mp4", "visibility": "public"}
    ) as r:
        doc = await r.json()
        status = r.status
    catalog = edge.state.origin.root / "catalog"
    stored = [p for p in catalog.rglob("*") if p.is_file()] if catalog.exists() else []
    if action == "refuse":
        assert (status, doc["error"]["code"]) == (403, "media_banked")
        assert stored == []  # the catalog copy is deleted as an upload's bytes are
        assert (edge.state.origin.ingest / "show.mp4").is_file()  # the drop box is the publisher's
        return
    assert (status, doc["status"]) == (201, "held") and len(stored) == 1
    async with edge.client.get(f"/m/{doc['id']}", headers=bearer(issuer.mint("bob"))) as r:
        assert r.status == 410
        assert (await r.json())["error"]["code"] == "media_held"


async def _fetch_ok(c: DmClient, url: str, grant: str | None = None) -> bool:
    try:
        return (await c.fetch_media(url, range_=(0, 9), grant=grant)).status in (200, 206)
    except DmClientError:
        return False


async def _gone(c: DmClient, url: str, grant: str | None = None) -> bool:
    try:
        await c.fetch_media(url, range_=(0, 9), grant=grant)
    except DmClientError as exc:
        return exc.status == 410
    return False


@pytest.mark.parametrize("mode", ["plain", "sealed"])
async def test_banked_later_taken_down_at_every_edge(
    make_dm: DmFactory, make_edge: EdgeFactory, tmp_path: Path, mode: str
) -> None:
    edge1, edge2 = await make_edge(), await make_edge()
    dm = await make_dm(edge=edge1)
    alice, bob = await dm.user(), await dm.user()
    mod = await dm.user(roles=["moderator"])
    data = make_video(tmp_path / "a.mp4", seed=4)
    async with edge1.client.post(
        "/v1/media", data=upload_form(None, data), headers=bearer(alice.session_token or "")
    ) as r:
        assert r.status == 201
        media_id = (await r.json())["id"]
    urls: list[str]
    grant: str | None = None
    if mode == "plain":
        conv = await alice.create_conversation([bob.uid])
        await alice.send(conv["id"], media_id=media_id)
        pointer_url = media_of((await bob.read(conv["id"]))["messages"][-1])["url"]
        path = pointer_url.split("/m/", 1)[1]
        urls = [str(e.client.make_url("")).rstrip("/") + "/m/" + path for e in (edge1, edge2)]
    else:
        for c in (alice, bob):
            c.use_device_key(envelope.DeviceKey.generate("x25519"))
            await c.publish_key()
        conv = await alice.create_conversation([bob.uid], mode="sealed")
        edge_url = str(edge1.client.make_url("")).rstrip("/")
        await alice.send_sealed(conv["id"], edge_url=edge_url, media_id=media_id)
        grant = bob.open_message((await bob.read(conv["id"]))["messages"][-1]).grant
        urls = [str(e.client.make_url(f"/m/{media_id}")) for e in (edge1, edge2)]
    for url in urls:
        assert await _fetch_ok(bob, url, grant)
    # A moderator banks a re-encoded copy's perceptual hashes (found elsewhere, say).
    make_video(tmp_path / "b.mp4", seed=4, variant=True)
    signals = [{"signal_type": "pdq", "signal": h} for h in fingerprint_file(tmp_path / "b.mp4").pdq]
    async with edge2.client.post(
        "/v1/banks/moderation/signals",
        json={"signals": signals},
        headers=bearer(mod.session_token or ""),
    ) as r:
        assert r.status == 200, await r.text()
        assert (await r.json())["taken_down"] == [media_id]
    for url in urls:
        await wait_until(lambda u=url: _gone(bob, u, grant), 5, 0.05)  # type: ignore[misc]
    async with edge1.client.post(
        "/v1/media", data=upload_form(None, data), headers=bearer(alice.session_token or "")
    ) as r:
        assert r.status == 403  # and it cannot come back


async def test_only_moderators_add_to_banks(make_edge: EdgeFactory, issuer: DevIssuer) -> None:
    edge = await make_edge()
    body = {"signals": [{"signal_type": "video_md5", "signal": "0" * 32}]}
    async with edge.client.post(
        "/v1/banks/moderation/signals", json=body, headers=bearer(issuer.mint("alice"))
    ) as r:
        assert r.status == 403
    mod = bearer(issuer.mint("mod", roles=["moderator"]))
    async with edge.client.post("/v1/banks/nope/signals", json=body, headers=mod) as r:
        assert r.status == 400
    bad = {"signals": [{"signal_type": "pdq", "signal": "xyz"}]}
    async with edge.client.post("/v1/banks/moderation/signals", json=bad, headers=mod) as r:
        assert (r.status, (await r.json())["error"]["code"]) == (400, "invalid_field")


def test_bank_files_in_threatexchange_forms() -> None:
    h = "f" * 64
    csv_text = f"signal_type,signal_str,collab,category,tags\npdq,{h},c,x,\nvideo_md5,{'a' * 32},c,x,\n"
    assert parse_signals(csv_text) == [("pdq", h), ("md5", "a" * 32)]
    lines = f"# comment\n\nvideo_sha256 {'B' * 64}\npdq,{h}\n"
    assert parse_signals(lines) == [("sha256", "b" * 64), ("pdq", h)]
    with pytest.raises(BankFormatError, match="line 2"):
        parse_signals(f"pdq {h}\ntmk {h}\n")
    with pytest.raises(BankFormatError, match="line 1"):
        parse_signals("video_md5 123\n")


def test_pdq_index_finds_exactly_what_brute_force_finds() -> None:
    rng = np.random.default_rng(7)
    bank = [bytes(x) for x in rng.integers(0, 256, size=(20_000, 32), dtype=np.uint8)]
    index = PdqIndex(bank, threshold=31)
    words = to_words(bank)
    for i in range(60):
        if i % 2:
            q = bytearray(bank[int(rng.integers(len(bank)))])
            for b in rng.choice(256, size=int(rng.integers(0, 40)), replace=False):
                q[b // 8] ^= 1 << (b % 8)
            query = bytes(q)
        else:
            query = os.urandom(32)
        d = distances(words, to_words([query])[0])
        expected = [(int(p), int(d[p])) for p in np.nonzero(d <= 31)[0]]
        assert index.search(query) == expected


async def test_fingerprint_of_undecodable_file_keeps_exact_hashes(tmp_path: Path) -> None:
    (tmp_path / "x.mp4").write_bytes(b"not a video" * 100)
    fp = await asyncio.to_thread(fingerprint_file, tmp_path / "x.mp4")
    assert fp.pdq == () and len(fp.md5) == 32 and len(fp.sha256) == 64


def _keyframe_hashes(path: Path) -> dict[int, str]:
    """PDQ of every keyframe, by second (the sample videos have one a second)."""
    out = {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.skip_frame = "NONKEY"
        for frame in container.decode(stream):
            out[round(float(frame.time or 0.0))] = pdq_of_rgb(frame.to_ndarray(format="rgb24"))[0]
    return out


def test_long_video_is_sampled_across_its_whole_length(tmp_path: Path) -> None:
    """40 one-second scenes, 8 samples: the first keyframe of each of 8 windows from the
    first keyframe (0 s) to the last (39 s) is hashed, not the first 8 keyframes."""
    make_video(tmp_path / "long.mp4", seed=51, seconds=40)
    by_time = _keyframe_hashes(tmp_path / "long.mp4")
    assert sorted(by_time) == list(range(40))
    fp = fingerprint_file(tmp_path / "long.mp4", FingerprintLimits(max_frames=8))
    assert set(fp.pdq) == {by_time[math.ceil(i * 39 / 7)] for i in range(8)}  # 0, 6, ..., 39


def test_a_video_stating_a_short_duration_is_still_sampled_to_its_end(tmp_path: Path) -> None:
    """The MP4 header's durations are the uploader's to write: a 40 s video stating 5 s is
    sampled by when its last keyframe plays, not read from the start only."""
    make_video(tmp_path / "long.mp4", seed=53, seconds=40)
    data = bytearray((tmp_path / "long.mp4").read_bytes())
    for box, field in ((b"mvhd", 16), (b"tkhd", 20), (b"mdhd", 16)):  # version 0 boxes
        at = data.index(box) + 4 + field
        scale = 1000 if box == b"tkhd" else struct.unpack(">I", data[at - 4 : at])[0]
        data[at : at + 4] = struct.pack(">I", 5 * scale)
    (tmp_path / "lie.mp4").write_bytes(data)
    with av.open(str(tmp_path / "lie.mp4")) as container:
        assert container.duration == 5_000_000  # what the header now says
    by_time = _keyframe_hashes(tmp_path / "lie.mp4")
    fp = fingerprint_file(tmp_path / "lie.mp4", FingerprintLimits(max_frames=8))
    assert by_time[39] in fp.pdq and by_time[34] in fp.pdq


def test_sampling_order_spreads_every_prefix() -> None:
    """Windows are visited coarse to fine, so a decode budget running out part-way still
    leaves samples spread over the whole file."""
    order = fingerprint._coarse_to_fine(16)
    assert sorted(order) == list(range(16))
    assert set(order[:2]) == {0, 8} and set(order[:4]) == {0, 4, 8, 12}
    assert sorted(fingerprint._coarse_to_fine(5)) == list(range(5))


async def test_refused_upload_leaves_no_hashes_indexed(
    make_edge: EdgeFactory, issuer: DevIssuer, tmp_path: Path
) -> None:
    """Hashes are indexed before the bank match (so a concurrent bank addition finds the
    upload); a refused upload's are dropped again, as no record will ever carry them."""
    data = make_video(tmp_path / "a.mp4", seed=52)
    fp = fingerprint_file(tmp_path / "a.mp4")
    edge = await make_edge(bank_manifest=bank_manifest(tmp_path, "refuse", [f"md5 {fp.md5}"]))
    async with edge.client.post(
        "/v1/media", data=upload_form(None, data), headers=bearer(issuer.mint("mallory"))
    ) as r:
        assert r.status == 403
    assert await edge.state.hash_index.find(fp.signals()) == set()


async def test_takedown_reaching_an_id_before_its_record_is_applied_at_registration(
    make_edge: EdgeFactory,
) -> None:
    """A bank sweep that finds an upload in flight (indexed, not yet registered) leaves a
    pending takedown; the registration applies it, atomically, and consumes it."""
    edge = await make_edge()
    registry, redis = edge.state.registry, edge.state.redis
    media, _ = await edge.add_media()
    early = replace(media, id=media.id + "x")
    assert await registry.take_down(early.id, reason="matched bank moderation", by="mod") is False
    assert (
        0 < await redis.ttl(redis_keys.pending_takedown(early.id)) <= redis_keys.PENDING_TAKEDOWN_TTL_S
    )
    assert (await registry.put(early)).status == "taken_down"
    assert (await registry.get(early.id)).status == "taken_down"
    assert not await redis.exists(redis_keys.pending_takedown(early.id))
    assert await registry.take_down(media.id, reason="matched bank moderation", by="mod") is True
    assert (await registry.get(media.id)).status == "taken_down"
    assert not await redis.exists(redis_keys.pending_takedown(media.id))


def test_matcher_benchmark_prints_the_contracted_keys(capsys: pytest.CaptureFixture[str]) -> None:
    from loadtests.bench.__main__ import main as bench

    assert (
        bench(["matcher", "--json", "--sizes", "1000,10000", "--queries", "20", "--repeats", "1"]) == 0
    )
    doc = json.loads(capsys.readouterr().out)
    for tag in ("1e3", "1e4"):
        assert doc[f"lookups_per_s_per_core_{tag}"] > 0 and doc[f"bytes_per_hash_{tag}"] > 32
    assert [r["found"] for r in doc["runs"]] == [10, 10]  # every near-duplicate query found


async def test_concurrent_bank_syncs_load_every_signal_once(make_edge: EdgeFactory) -> None:
    """Every upload and media send syncs the banks: two syncs reading the same tail both
    counted it, the process's offset overshot the list, and the next banked signals were
    never loaded there (so a re-upload of that content was accepted)."""
    edge = await make_edge()
    banks = edge.state.banks
    redis = banks._redis
    key = redis_keys.bank_signals(banks.moderation_bank)
    before = len(banks.banks[banks.moderation_bank])
    await redis.rpush(key, *(f"sha256,{i:064x}" for i in range(1, 4)))
    await asyncio.gather(*(banks.sync() for _ in range(8)))
    await redis.rpush(key, f"sha256,{99:064x}")
    await banks.sync()
    bank = banks.banks[banks.moderation_bank]
    assert len(bank) == before + 4
    assert f"{99:064x}" in bank.sha256
