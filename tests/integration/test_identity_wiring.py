"""Production wiring: the edge trusts dm's published JWKS by URL; device keys on the client."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from cdn_auth.keyring import KeyRing
from dm import device_store, envelope
from dm.client import DmClient
from dm.identity import JWKS_FILE, DevIssuer

from ..support.edge import fetch, mint
from ..support.services import DmFactory, DmStack, EdgeFactory, bearer
from ..support.streams import pushes_after_a_send


async def test_edge_verifies_sessions_against_dm_jwks_url(
    make_dm: DmFactory, make_edge: EdgeFactory, ring: KeyRing
) -> None:
    dm = await make_dm()
    # A second edge that knows nothing but dm's JWKS URL, as with an external IdP.
    edge = await make_edge(session_jwks=f"{dm.dm_url}/.well-known/jwks.json")
    bob = await dm.user()
    media, data = await edge.add_media(owner="alice")
    assert bob.session_token is not None
    status, body = await fetch(edge, media.id, bob.session_token, mint(ring, media, sub=bob.uid))
    assert (status, body) == (200, data)
    async with edge.client.get(f"/m/{media.id}", headers=bearer("x.y.z")) as r:
        assert r.status == 401


@pytest.mark.parametrize("suite", ["x25519", "mlkem768-x25519"])
def test_device_key_files_are_owner_only_and_reload(tmp_path: Path, suite: str) -> None:
    path = tmp_path / "keys" / "device.json"
    key = device_store.load_or_create(path, suite)
    assert path.stat().st_mode & 0o777 == 0o600
    again = device_store.load_or_create(path, suite)
    assert again.public_bytes() == key.public_bytes()
    with pytest.raises(ValueError):
        device_store.load_or_create(path, "x25519" if suite != "x25519" else "mlkem768-x25519")
    path.chmod(0o644)
    with pytest.raises(PermissionError):
        device_store.load(path)
    assert isinstance(key, envelope.DeviceKey) and suite in repr(key) and "seed" not in repr(key)


async def test_a_held_websocket_ends_when_its_session_key_is_retired(
    dm: DmStack, tmp_path: Path
) -> None:
    """A socket opened under a session whose key the identity provider then retires gets no
    further push (and no pointer minted for one): it is closed with 1008 instead."""
    alice, bob = await dm.user(), await dm.user()
    conv = await alice.create_conversation([bob.uid])
    assert bob.session_token is not None
    async with bob.http.ws_connect(dm.dm_url + "/v1/stream", headers=bearer(bob.session_token)) as ws:
        await alice.send(conv["id"], text="before")
        while True:  # the socket works: the message arrives
            event = await ws.receive_json(timeout=10)
            if event.get("type") == "message":
                break
        successor = DevIssuer.generate()
        successor.write_jwks(tmp_path / "session-keys" / JWKS_FILE)  # bob's key retired
        alice2 = DmClient(dm.dm_url, session_token=successor.mint(alice.uid), http=alice.http)

        pushed, msg = await pushes_after_a_send(ws, alice2, conv["id"])
        assert not any('"after"' in p for p in pushed), pushed
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, aiohttp.WSCloseCode.POLICY_VIOLATION)
