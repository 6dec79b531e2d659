"""Regression tests for the bypasses found in the rights review (issue 9), one per finding.

Each test is named for the attack it stops and failed on the code before the fix.  The
reference model and the stateful test (test_rights_stateful.py) look for the next ones.
"""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from dm.client import DmClientError
from dm.identity import DevIssuer
from dm.settings import DmSettings

from .conftest import DmStack, Edge, bearer


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
    async with edge.client.post("/v1/media", data=_form({"visibility": "private"}, data),
                                headers=bearer(issuer.mint("alice"))) as r:
        assert r.status == 201
        private_id = (await r.json())["id"]
    upload_rel = f"uploads/{private_id[-2:]}/{private_id}"
    assert (edge.state.origin.root / upload_rel).is_file()
    publisher = bearer(issuer.mint("mallory", roles=["publisher"]))
    # The upload path follows from the media id that every pointer URL shows; a link in the
    # ingest root pointing at it must not work either.
    (edge.state.origin.ingest / "evil.mp4").symlink_to(edge.state.origin.root / upload_rel)
    for origin_path in (upload_rel, f"../{upload_rel}", "evil.mp4",
                        f"../../{edge.state.origin.root.name}/{upload_rel}"):
        async with edge.client.post("/v1/media", headers=publisher, json={
                "origin_path": origin_path, "visibility": "public"}) as r:
            assert r.status == 400, origin_path
            assert (await r.json())["error"]["code"] == "invalid_field"


# -- finding 9: hardening ------------------------------------------------------------------------


async def test_media_is_served_with_nosniff(edge: Edge, issuer: DevIssuer) -> None:
    media, _ = await edge.add_media(owner="alice", visibility="public")
    async with edge.client.get(f"/m/{media.id}", headers=bearer(issuer.mint("bob"))) as r:
        assert r.status == 200
        assert r.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("ctype", ["text/html", "image/svg+xml", "application/javascript",
                                   "application/octet-stream"])
async def test_non_media_content_types_are_refused(edge: Edge, issuer: DevIssuer,
                                                   ctype: str) -> None:
    async with edge.client.post("/v1/media", data=_form({"content_type": ctype}, b"<svg/>"),
                                headers=bearer(issuer.mint("alice"))) as r:
        assert r.status == 400
        assert (await r.json())["error"]["code"] == "invalid_field"


async def test_session_without_jwt_typ_is_refused(edge: Edge, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(
        (tmp_path / "session-keys" / "issuer.key").read_bytes(), password=None)
    issuer = DevIssuer.load_or_create(tmp_path / "session-keys")
    now = int(time.time())
    claims = {"iss": issuer.issuer, "aud": issuer.audience, "sub": "bob", "iat": now,
              "exp": now + 600}
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


async def test_huge_multipart_metadata_is_413_without_buffering(edge: Edge,
                                                              issuer: DevIssuer) -> None:
    boundary = "b0undary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"metadata\"\r\n"
            "Content-Type: application/json\r\n\r\n{").encode() + b" " * (4 * 1024 * 1024) \
        + f"}}\r\n--{boundary}--\r\n".encode()
    async with edge.client.post("/v1/media", data=io.BytesIO(body), headers={
            **bearer(issuer.mint("alice")),
            "Content-Type": f"multipart/form-data; boundary={boundary}"}) as r:
        assert r.status == 413
