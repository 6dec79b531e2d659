"""dm's side of the web client: the static app, its headers, and WebSocket auth without URLs."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from ..support.services import DmFactory, DmStack


async def test_stream_accepts_session_as_subprotocol(dm: DmStack) -> None:
    alice, bob = await dm.user(), await dm.user()
    assert bob.session_token is not None
    url = dm.dm_url.replace("http://", "ws://") + "/v1/stream"
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(url, protocols=("pointer-dm.v1", f"bearer.{bob.session_token}")) as ws,
    ):
        assert ws.protocol == "pointer-dm.v1", "the server must never echo the bearer protocol"
        conv = await alice.create_conversation([bob.uid])
        frame = json.loads((await ws.receive(timeout=10)).data)
        assert (frame["type"], frame["conversation_id"]) == ("joined", conv["id"])


async def test_stream_session_in_url_rejected(dm: DmStack) -> None:
    """``?access_token=`` is gone: a session in a URL ends up in logs and histories."""
    bob = await dm.user()
    url = dm.dm_url.replace("http://", "ws://") + "/v1/stream"
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await http.ws_connect(url, params={"access_token": bob.session_token or ""})
        assert err.value.status == 401


async def test_stream_bad_subprotocol_session_rejected(dm: DmStack) -> None:
    url = dm.dm_url.replace("http://", "ws://") + "/v1/stream"
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await http.ws_connect(url, protocols=("pointer-dm.v1", "bearer.not-a-jwt"))
        assert err.value.status == 401


async def test_web_client_served_with_strict_headers(dm: DmStack) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(dm.dm_url + "/app/") as r:
            assert r.status == 200 and r.content_type == "text/html"
            csp = r.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
            assert f"media-src {dm.edge.client.make_url('').origin()}" in csp
            assert r.headers["Referrer-Policy"] == "no-referrer"
            assert "/app/app.js" in await r.text()
        for name in ("app.js", "app.css"):
            async with http.get(f"{dm.dm_url}/app/{name}") as r:
                assert r.status == 200
        async with http.get(dm.dm_url + "/app/config.json") as r:
            cfg = await r.json()
            assert cfg["dev_issuer"] is True
            assert cfg["edge_url"] == str(dm.edge.client.make_url("")).rstrip("/")


@pytest.mark.parametrize("name", ["..%2Fapp.py", "%2E%2E%2Fweb_app.py", "index.html.bak", "settings.py"])
async def test_web_client_serves_only_its_own_files(dm: DmStack, name: str) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{dm.dm_url}/app/{name}") as r:
        assert r.status == 404
        assert (await r.json())["error"]["code"] == "not_found"


async def test_web_client_can_be_switched_off(make_dm: DmFactory) -> None:
    stack = await make_dm(web_client=False)
    async with aiohttp.ClientSession() as http, http.get(stack.dm_url + "/app/") as r:
        assert r.status == 404
        assert (await r.json())["error"]["code"] == "web_client_disabled"


def test_web_command_prints_the_client_url(tmp_path: Path) -> None:
    """``python -m loadtests web`` (``make web``): the stack starts and the printed URL serves."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "loadtests",
            "web",
            "--dir",
            str(tmp_path / "web"),
            "--exit-after-s",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    with proc, proc.stdout:
        first = proc.stdout.readline()
        assert first.startswith("Web client:  http://127.0.0.1:"), first
        url = first.split()[-1]
        with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 - our own http URL
            assert r.status == 200 and b"/app/app.js" in r.read()
        with urllib.request.urlopen(url + "config.json", timeout=10) as r:  # noqa: S310
            assert json.loads(r.read())["dev_issuer"] is True
        proc.stdout.read()  # the rest of what it prints, so it never blocks on a full pipe
        assert proc.wait(timeout=90) == 0
