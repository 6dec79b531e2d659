"""The media API: registration by upload or origin path, bounded and validated inputs."""

from __future__ import annotations

import hashlib

import aiohttp
import pytest

from dm.identity import DevIssuer

from ..support.media_api import upload_form
from ..support.services import Edge, EdgeFactory, bearer


async def test_upload_registers_and_hashes(edge: Edge, issuer: DevIssuer) -> None:
    data = b"\x00\x00\x00\x18ftypmp42" + bytes(50_000)
    meta = {
        "content_type": "video/mp4",
        "visibility": "private",
        "allow_reshare": True,
        "min_age": 16,
        "allowed_regions": ["gb", "IE"],
        "blocked_regions": [],
    }
    async with edge.client.post(
        "/v1/media", data=upload_form(meta, data), headers=bearer(issuer.mint("alice"))
    ) as r:
        assert r.status == 201
        doc = await r.json()
    assert doc["owner"] == "alice" and doc["size"] == len(data)
    assert doc["sha256"] == hashlib.sha256(data).hexdigest()
    assert doc["audience"]["allowed_regions"] == ["GB", "IE"]
    assert "origin" not in doc  # where bytes live is not the client's business
    async with edge.client.get(f"/v1/media/{doc['id']}", headers=bearer(issuer.mint("alice"))) as r:
        assert (await r.json())["id"] == doc["id"]
    async with edge.client.get(f"/v1/media/{doc['id']}", headers=bearer(issuer.mint("eve"))) as r:
        assert r.status == 403


async def test_publisher_registers_origin_path(edge: Edge, issuer: DevIssuer) -> None:
    root = edge.state.origin.ingest
    (root / "catalog").mkdir(parents=True)
    (root / "catalog" / "a.mp4").write_bytes(b"abc" * 1000)
    body = {"origin_path": "catalog/a.mp4", "owner": "alice", "visibility": "public"}
    async with edge.client.post(
        "/v1/media", json=body, headers=bearer(issuer.mint("svc", roles=["publisher"]))
    ) as r:
        assert r.status == 201
        assert (await r.json())["owner"] == "alice"
    async with edge.client.post("/v1/media", json=body, headers=bearer(issuer.mint("alice"))) as r:
        assert r.status == 403  # only a publisher names origin paths


@pytest.mark.parametrize(
    "path", ["../../etc/passwd", "/etc/passwd", "catalog/../../x", "", "a" * 600, "catalog/missing.mp4"]
)
async def test_origin_path_traversal_rejected(edge: Edge, issuer: DevIssuer, path: str) -> None:
    async with edge.client.post(
        "/v1/media", json={"origin_path": path}, headers=bearer(issuer.mint("svc", roles=["publisher"]))
    ) as r:
        assert r.status == 400
        assert (await r.json())["error"]["code"] == "invalid_field"


@pytest.mark.parametrize(
    "body,status",
    [
        (b"{not json", 400),
        (b"[1,2]", 400),
        (b'{"origin_path": "x", "surprise": 1}', 400),
        (b'{"origin_path": 5}', 400),
        (b'{"visibility": "friends", "origin_path": "x"}', 400),
        (b'{"min_age": 99, "origin_path": "x"}', 400),
        (b'{"allowed_regions": ["GBR"]}', 400),
        (b"x" * (17 * 1024), 413),
    ],
)
async def test_bad_registration_bodies_are_4xx(
    edge: Edge, issuer: DevIssuer, body: bytes, status: int
) -> None:
    async with edge.client.post(
        "/v1/media",
        data=body,
        headers={**bearer(issuer.mint("svc", roles=["publisher"])), "Content-Type": "application/json"},
    ) as r:
        assert r.status == status
        assert "error" in await r.json()


async def test_oversize_upload_is_413_and_leaves_nothing(
    make_edge: EdgeFactory, issuer: DevIssuer
) -> None:
    edge = await make_edge(max_upload_bytes=10_000)
    async with edge.client.post(
        "/v1/media", data=upload_form({}, bytes(20_000)), headers=bearer(issuer.mint("alice"))
    ) as r:
        assert r.status == 413
    uploads = edge.state.origin.root / "uploads"
    assert not uploads.exists() or not any(p.is_file() for p in uploads.rglob("*"))


async def test_upload_needs_session(edge: Edge) -> None:
    async with edge.client.post("/v1/media", data=upload_form({}, b"x")) as r:
        assert r.status == 401


async def test_multipart_with_wrong_parts_is_400(edge: Edge, issuer: DevIssuer) -> None:
    form = aiohttp.FormData()
    form.add_field("file", b"x", filename="v.mp4")
    async with edge.client.post("/v1/media", data=form, headers=bearer(issuer.mint("a"))) as r:
        assert r.status == 400


async def test_takedown_validation(edge: Edge, issuer: DevIssuer) -> None:
    mod = bearer(issuer.mint("mod", roles=["moderator"]))
    async with edge.client.post("/v1/takedowns", json={"media_id": "m_unknown"}, headers=mod) as r:
        assert r.status == 404
    async with edge.client.post("/v1/takedowns", json={"media_id": "../x"}, headers=mod) as r:
        assert r.status == 400


async def test_refused_upload_leaves_no_bytes(edge: Edge, issuer: DevIssuer) -> None:
    async with edge.client.post(
        "/v1/media",
        data=upload_form({"owner": "someone-else"}, bytes(5000)),
        headers=bearer(issuer.mint("alice")),
    ) as r:
        assert r.status == 403
    uploads = edge.state.origin.root / "uploads"
    assert not uploads.exists() or not any(p.is_file() for p in uploads.rglob("*"))
