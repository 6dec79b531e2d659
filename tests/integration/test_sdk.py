"""The client SDK as a library: media through the edge client, one error tree by code."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import tomllib

import pytest

from dm import envelope
from dm.client import DmClient
from dm.sdk_errors import (
    DeviceMismatch,
    DmClientError,
    Forbidden,
    Gone,
    NotSetUp,
    RateLimited,
    SdkError,
    error_from,
)
from dm.sdk_types import Grant, MediaRecord
from loadtests.load.seed import video_bytes

from ..support.messages import media_of
from ..support.paths import REPO_ROOT
from ..support.sealed import edge_url, sealed_user
from ..support.services import DmFactory, DmStack, wait_until

ROOT = REPO_ROOT


async def sdk_user(dm: DmStack) -> DmClient:
    """A signed-in client whose edge URL is set once."""
    c = DmClient(dm.dm_url, edge_url=edge_url(dm))
    dm.clients.append(c)
    await c.create_user()
    return c


async def test_upload_share_and_play_through_the_sdk(dm: DmStack) -> None:
    alice, bob, carol = await sdk_user(dm), await sdk_user(dm), await sdk_user(dm)
    data = video_bytes(300_000)
    media = await alice.upload_media(data, min_age=16, allowed_regions=["gb"])
    assert media["owner"] == alice.uid and media["size"] == len(data)
    assert set(media) == set(MediaRecord.__annotations__)  # the type says what is there
    assert media["sha256"] == hashlib.sha256(data).hexdigest()
    assert (await alice.edge.media(media["id"]))["audience"]["allowed_regions"] == ["GB"]
    conv = await alice.create_conversation([bob.uid])
    sent = await alice.send(conv["id"], media_id=media["id"])
    url = media_of(next(m for m in (await bob.read(conv["id"]))["messages"] if m["id"] == sent["id"]))[
        "url"
    ]
    part = await bob.fetch_media(url, range_=(10, 19))
    assert (part.status, part.body) == (206, data[10:20])
    with pytest.raises(Forbidden) as forwarded:  # carol holds bob's link
        await carol.fetch_media(url, range_=(0, 9))
    assert forwarded.value.code == "pointer_wrong_recipient"
    await alice.unsend(conv["id"], sent["id"])

    async def refused() -> bool:
        try:
            await bob.fetch_media(url, range_=(0, 9))
        except Gone as exc:
            return exc.code == "message_unsent"
        return False

    await wait_until(refused, timeout_s=5.0)


async def test_grants_through_the_edge_client(dm: DmStack) -> None:
    alice, bob = await sealed_user(dm), await sealed_user(dm)
    alice.edge_url = bob.edge_url = edge_url(dm)
    media = await alice.upload_media(video_bytes(50_000))
    conv = await alice.create_conversation([bob.uid], mode="sealed")
    await alice.send_sealed(conv["id"], media_id=media["id"], text="x")  # edge_url set once
    grant = await alice.edge.request_grant(media["id"], redeemers=1)
    assert set(grant) == set(Grant.__annotations__)
    msg = (await bob.read(conv["id"]))["messages"][-1]
    payload = bob.open_message(msg)
    assert payload.grant is not None
    got = await bob.edge.fetch(f"/m/{media['id']}", grant=payload.grant, range_=(0, 99))
    assert got.status == 206 and len(got.body) == 100


async def test_device_mismatch_carries_missing_and_extra(dm: DmStack) -> None:
    alice, bob = await sealed_user(dm), await sealed_user(dm)
    conv = await alice.create_conversation([bob.uid], mode="sealed")
    stale = await alice.devices_of(bob.uid)
    bob2 = await bob.link_device()
    bob2.use_device_key(envelope.DeviceKey.generate("x25519"))
    await bob2.publish_key()
    body = alice._seal_all(
        conv["id"],
        "s_stale",
        envelope.Payload(None, None, "hi", envelope.new_franking_key()),
        {bob.uid: stale, alice.uid: await alice.devices_of(alice.uid)},
    )
    with pytest.raises(DeviceMismatch) as info:
        await alice.request("POST", f"/v1/conversations/{conv['id']}/messages", json_body=body)
    assert info.value.missing == [f"{bob.uid}/{bob2.device_id}"]
    assert info.value.extra == []
    assert (info.value.status, info.value.code) == (409, "device_mismatch")


async def test_rate_limited_carries_retry_after(make_dm: DmFactory) -> None:
    dm = await make_dm(send_rate_per_s=1)
    alice, bob = await sdk_user(dm), await sdk_user(dm)
    conv = await alice.create_conversation([bob.uid])
    with pytest.raises(RateLimited) as info:
        for _ in range(5):
            await alice.send(conv["id"], text="hi", retries=0)
    assert info.value.retry_after_s is not None and info.value.retry_after_s >= 1


def test_one_tree_for_http_setup_and_envelope_errors() -> None:
    assert issubclass(DmClientError, SdkError)
    assert issubclass(NotSetUp, SdkError) and issubclass(NotSetUp, RuntimeError)
    assert issubclass(envelope.EnvelopeError, SdkError)
    with pytest.raises(NotSetUp):
        DmClient("http://127.0.0.1:1").edge  # noqa: B018 - the property raises
    odd = error_from(502, "<html>bad gateway</html>", "Bad Gateway")
    assert (odd.status, odd.code, odd.message) == (502, "http_error", "Bad Gateway")
    assert isinstance(error_from(418, {"error": {"code": "teapot", "message": ""}}), DmClientError)


#: What only the services need (Redis client, settings, metrics, JWT verification).
SERVER_ONLY = ("redis", "pydantic", "pydantic_settings", "prometheus_client", "jwt")


def test_sdk_extra_installs_no_server_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = {_name(d) for d in project["dependencies"]}
    extras = project["optional-dependencies"]
    assert base == {_name(d) for d in extras["sdk"]} == {"aiohttp", "cryptography"}
    server = {_name(d) for d in extras["server"]}
    assert {"redis", "pydantic", "prometheus-client", "pyjwt"} <= server
    for extra in ("test", "load"):  # what runs or drives the services brings them
        assert "pointer-dm[server]" in extras[extra], extra


def test_sdk_imports_without_server_dependencies() -> None:
    """The SDK modules import and build clients with every server-only package blocked."""
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {SERVER_ONLY!r}:
            raise ImportError("server-only: " + name)
sys.meta_path.insert(0, Block())
from dm.client import DmClient
from dm.edge_client import EdgeClient, encode_upload
from dm.sdk_errors import error_from
from dm import envelope
key = envelope.DeviceKey.generate("x25519")
assert DmClient("http://127.0.0.1:1", edge_url="http://127.0.0.1:2/").edge_url.endswith(":2")
assert EdgeClient("http://127.0.0.1:2").url("/m/m_x") == "http://127.0.0.1:2/m/m_x"
body, ctype = encode_upload({{"content_type": "video/mp4"}}, b"x")
assert ctype.startswith("multipart/form-data; boundary=")
print("ok")
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False, cwd=ROOT
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower()
