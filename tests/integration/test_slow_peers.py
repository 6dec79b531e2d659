"""Slow and greedy peers (issue 15): WebSocket readers that stop reading, too many sockets,
request bodies that trickle in."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import time

import aiohttp
import pytest
from aiohttp import web

from cdn_auth import pointer, revocation
from cdn_auth.keyring import KeyRing
from dm.identity import DevIssuer
from dm.web_state import STATE, DmState
from service_kernel.redis_process import free_port
from service_kernel.web_errors import error_middleware, read_body

from ..support.services import DmFactory, DmStack, Edge, EdgeFactory, bearer, wait_until


async def _silent_websocket(
    dm: DmStack, token: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket client that completes the handshake and then never reads again, with a
    small receive buffer so the server's writes back up quickly."""
    host, port = dm.dm_url.removeprefix("http://").split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /v1/stream HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head[:100]
    return reader, writer


def _dropped(state: DmState, reason: str) -> float:
    value = state.metrics.registry.get_sample_value("dm_websockets_dropped_total", {"reason": reason})
    return value or 0.0


def _close_code(data: bytes) -> int | None:
    """The status code of the close frame in a server's (unmasked) WebSocket byte stream."""
    at = 0
    while at + 2 <= len(data):
        opcode, size = data[at] & 0x0F, data[at + 1] & 0x7F
        at += 2
        if size == 126:
            size, at = int.from_bytes(data[at : at + 2]), at + 2
        elif size == 127:
            size, at = int.from_bytes(data[at : at + 8]), at + 8
        if opcode == 0x8:
            return int.from_bytes(data[at : at + 2]) if size >= 2 else None
        at += size
    return None


async def test_websocket_slow_consumer_closed_with_1013(make_dm: DmFactory) -> None:
    """A client that stops reading was never reaped (send_str waited for ever on a full
    buffer); now a push that cannot be written within the deadline closes the socket with
    1013.  The client reads nothing until the server's write deadline has fired (the
    ``slow_writer`` drop, not the queue-overflow one), then reads what is left: the close
    frame 1013 ends it."""
    dm = await make_dm(ws_write_timeout_s=0.5)
    state = dm.app[STATE]
    alice, bob = await dm.user(), await dm.user()
    cid = (await alice.create_conversation([bob.uid]))["id"]  # pushes re-check membership
    reader, writer = await _silent_websocket(dm, str(bob.session_token))
    await wait_until(lambda: state.hub.connected_of(bob.uid) == 1, 5)
    text = "x" * 4000
    for batch in range(40):  # up to ~12 MB of frames, far beyond any socket buffer
        for i in range(75):  # one at a time: the app's own client pool stays small
            await state.notify.publish(
                state.notify.event(
                    "message",
                    cid,
                    [bob.uid],
                    {
                        "message_id": f"{int(time.time() * 1000)}-{batch * 75 + i}",
                        "sender": alice.uid,
                        "kind": "plain",
                        "text": text,
                    },
                )
            )
        if _dropped(state, "slow_writer"):
            break
        await asyncio.sleep(0.05)
    await wait_until(lambda: _dropped(state, "slow_writer") == 1, 30)
    # The server now writes its close frame behind what it had buffered: read it all.
    data = bytearray()
    with contextlib.suppress(ConnectionError):
        while chunk := await asyncio.wait_for(reader.read(1 << 20), 10):
            data += chunk
    await _close(writer)
    assert _close_code(bytes(data)) == 1013  # TRY_AGAIN_LATER
    assert _dropped(state, "slow_consumer") == 0  # the write deadline fired, not the queue cap
    await wait_until(lambda: state.hub.connected_of(bob.uid) == 0, 30)


async def test_websockets_capped_per_user(make_dm: DmFactory) -> None:
    dm = await make_dm(ws_max_per_user=2, rate_limits={"connect": (100, 100)})
    alice = await dm.user()
    url = f"{dm.dm_url}/v1/stream"
    async with aiohttp.ClientSession() as http:
        a = await http.ws_connect(url, headers=bearer(str(alice.session_token)))
        b = await http.ws_connect(url, headers=bearer(str(alice.session_token)))
        await wait_until(lambda: dm.app[STATE].hub.connected_of(alice.uid) == 2, 5)
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(url, headers=bearer(str(alice.session_token)))
        assert info.value.status == 429
        await a.close()
        await wait_until(lambda: dm.app[STATE].hub.connected_of(alice.uid) == 1, 5)
        c = await http.ws_connect(url, headers=bearer(str(alice.session_token)))
        await b.close()
        await c.close()


async def test_websockets_capped_per_process(make_dm: DmFactory) -> None:
    """ws_max_total caps the sockets one process holds, whoever holds them: 503
    streams_full (another process may have room), with Retry-After."""
    dm = await make_dm(ws_max_total=2, ws_max_per_user=10, rate_limits={"connect": (100, 100)})
    state = dm.app[STATE]
    alice, bob = await dm.user(), await dm.user()
    url = f"{dm.dm_url}/v1/stream"
    async with aiohttp.ClientSession() as http:
        a = await http.ws_connect(url, headers=bearer(str(alice.session_token)))
        b = await http.ws_connect(url, headers=bearer(str(bob.session_token)))
        await wait_until(lambda: state.hub.connected == 2, 5)
        async with http.get(
            url,
            headers={
                **bearer(str(bob.session_token)),
                "Upgrade": "websocket",
                "Connection": "Upgrade",
                "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
            },
        ) as r:
            assert r.status == 503
            assert (await r.json())["error"]["code"] == "streams_full"
            assert r.headers["Retry-After"] == "1"
        await a.close()
        await wait_until(lambda: state.hub.connected == 1, 5)
        c = await http.ws_connect(url, headers=bearer(str(bob.session_token)))  # room again
        await b.close()
        await c.close()


async def _trickle(url: str, head: str, first: bytes) -> bytes:
    """Send a request head and the first body bytes, then one byte every 0.25 s: the
    service's answer (empty if it never answered within 10 s)."""
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(head.encode() + b"Content-Length: 1000\r\n\r\n" + first)
    await writer.drain()
    answer = b""
    for _ in range(40):
        try:
            answer = await asyncio.wait_for(reader.read(1000), 0.25)
        except TimeoutError:
            writer.write(b" ")
            await writer.drain()
            continue
        break
    await _close(writer)
    return answer


async def test_slow_request_body_times_out(make_dm: DmFactory) -> None:
    """One body byte every so often held the connection for ever; now 408 once the body
    falls below the floor rate after the grace period."""
    dm = await make_dm(body_grace_s=0.5, body_min_rate_bps=1000)
    answer = await _trickle(
        dm.dm_url, "POST /v1/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n", b"{"
    )
    assert b" 408 " in answer[:20] and b"body_timeout" in answer


async def test_slow_upload_to_the_edge_times_out(make_edge: EdgeFactory, issuer: DevIssuer) -> None:
    """The same deadline on the edge's multipart ``POST /v1/media`` (each part read is
    bounded by what has arrived so far)."""
    edge = await make_edge(body_grace_s=0.5, body_min_rate_bps=1000)
    answer = await _trickle(
        str(edge.client.make_url("")),
        "POST /v1/media HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {issuer.mint('alice')}\r\n"
        "Content-Type: multipart/form-data; boundary=b0undary\r\n",
        b"--b0undary\r\nContent-Disposition: form-data; name=metadata\r\n",
    )
    assert b" 408 " in answer[:20] and b"body_timeout" in answer


async def test_slow_grant_body_times_out(make_edge: EdgeFactory, issuer: DevIssuer) -> None:
    """And on the edge's JSON ``POST /v1/grants``."""
    edge = await make_edge(body_grace_s=0.5, body_min_rate_bps=1000)
    answer = await _trickle(
        str(edge.client.make_url("")),
        "POST /v1/grants HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {issuer.mint('alice')}\r\n"
        "Content-Type: application/json\r\n",
        b"{",
    )
    assert b" 408 " in answer[:20] and b"body_timeout" in answer


async def _open_media_stream(
    edge: Edge,
    issuer: DevIssuer,
    ring: KeyRing,
    media_id: str,
    *,
    rcvbuf: int | None = None,
    grant: str | None = None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """GET the whole media as Bob with a raw socket and read the response head only: with
    a pointer (conversation c_1, message 1-0), or with ``grant`` (sealed mode)."""
    # Building a large test file blocks the loop for seconds, so the revocation tail may
    # look stale (503) until its next read: wait for it, as a live edge would be.
    await wait_until(edge.state.authorizer.tail_fresh, 10)
    if grant is None:
        ptr = pointer.mint(
            ring.signer(),
            media_id=media_id,
            sub="bob",
            conversation_id="c_1",
            message_id="1-0",
            now=time.time(),
            ttl_s=300,
        )
        target = f"/m/{media_id}?pointer={ptr}"
    else:
        target = f"/m/{media_id}"
    url = edge.client.make_url("/")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (url.host, url.port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=16 * 1024)
    writer.write(
        (
            f"GET {target} HTTP/1.1\r\nHost: x\r\n"
            + (f"X-Grant: {grant}\r\n" if grant else "")
            + f"Authorization: Bearer {issuer.mint('bob')}\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    return reader, writer


async def _read_to_end(reader: asyncio.StreamReader, timeout_s: float) -> int:
    got = 0
    with contextlib.suppress(ConnectionError):
        while chunk := await asyncio.wait_for(reader.read(256 * 1024), timeout_s):
            got += len(chunk)
    return got


async def test_open_media_response_stops_on_takedown(
    make_edge: EdgeFactory, issuer: DevIssuer, ring: KeyRing
) -> None:
    """After a takedown an open response delivered 13 MB more and stayed open; now it
    stops within one window of the takedown reaching the edge."""
    edge = await make_edge(stream_window_bytes=256 * 1024)
    size = 12 * 1024 * 1024
    media, _ = await edge.add_media(owner="alice", size=size)
    reader, writer = await _open_media_stream(edge, issuer, ring, media.id)
    first = await reader.readexactly(512 * 1024)  # the stream is flowing
    assert len(first) == 512 * 1024
    await edge.state.revocations.publish(revocation.takedown(media.id))
    await wait_until(lambda: edge.state.authorizer.tailer.view.is_taken_down(media.id), 5)
    rest = await _read_to_end(reader, 10)
    await _close(writer)
    assert len(first) + rest < size  # cut short, not the whole file


@pytest.mark.parametrize("what", ["unsend", "leave", "grant_revoked"])
async def test_open_media_response_stops_on_revocation(
    make_edge: EdgeFactory, issuer: DevIssuer, ring: KeyRing, what: str
) -> None:
    """The same for an unsend of the message and the reader leaving the conversation (a
    pointer's response), and a revoked grant (a sealed-mode response): each is re-checked
    between windows (``Authorizer.still_allowed``)."""
    edge = await make_edge(stream_window_bytes=256 * 1024)
    size = 12 * 1024 * 1024
    media, _ = await edge.add_media(owner="alice", size=size)
    grant: dict[str, str] = {}
    if what == "grant_revoked":
        answer = await edge.client.post(
            "/v1/grants",
            json={"media_id": media.id, "redeemers": 1},
            headers=bearer(issuer.mint("alice")),
        )
        assert answer.status == 201, await answer.text()
        grant = await answer.json()
    reader, writer = await _open_media_stream(edge, issuer, ring, media.id, grant=grant.get("grant"))
    first = await reader.readexactly(512 * 1024)  # the stream is flowing
    assert len(first) == 512 * 1024
    view = edge.state.authorizer.tailer.view
    if what == "unsend":
        event, seen = revocation.unsent("c_1", "1-0"), lambda: view.is_unsent("c_1", "1-0")
    elif what == "leave":
        event, seen = revocation.left("c_1", "bob"), lambda: view.left_at("c_1", "bob") is not None
    else:
        event = revocation.grant_revoked(grant["grant_id"])
        seen = lambda: view.is_grant_revoked(grant["grant_id"])  # noqa: E731
    await edge.state.revocations.publish(event)
    await wait_until(seen, 5)
    rest = await _read_to_end(reader, 10)
    await _close(writer)
    assert len(first) + rest < size  # cut short, not the whole file


async def test_media_response_to_a_reader_that_stopped_is_dropped(
    make_edge: EdgeFactory, issuer: DevIssuer, ring: KeyRing
) -> None:
    """No write deadline: a client that stopped reading held its response for ever."""
    edge = await make_edge(stream_window_bytes=256 * 1024, write_timeout_s=0.5)
    size = 16 * 1024 * 1024
    media, _ = await edge.add_media(owner="alice", size=size)
    reader, writer = await _open_media_stream(edge, issuer, ring, media.id, rcvbuf=4096)
    await asyncio.sleep(3.0)  # read nothing: the server's window cannot be written in time
    rest = await _read_to_end(reader, 10)  # what was buffered, then the end (no hang)
    await _close(writer)
    assert rest < size


async def _close(writer: asyncio.StreamWriter) -> None:
    """Close a raw test connection and wait for it (an unawaited close leaves a socket for
    the garbage collector, which reports it during some later test)."""
    writer.close()
    with contextlib.suppress(ConnectionError, OSError):
        await writer.wait_closed()


async def test_a_client_that_leaves_mid_body_is_a_499_not_an_unhandled_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A client closing its connection half-way through its body was logged as an
    "unhandled error" with a traceback and counted as a 500 (wrk's end of run produced them
    in ``bench dm``): any client could fill the error log and trip the 5xx alert at will.
    Served as ``serve`` does (aiohttp's test server cancels the handler instead, which
    hides the read's ConnectionResetError), with the services' error middleware."""
    statuses: list[int] = []

    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"size": len(await read_body(request, 64 * 1024))})

    app = web.Application(middlewares=[error_middleware(on_response=statuses.append)])
    app.router.add_post("/echo", echo)
    runner = web.AppRunner(app, handler_cancellation=False)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        for _ in range(3):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.transport.abort()  # gone, mid-body
        await wait_until(lambda: len(statuses) == 3, 5)
        assert statuses == [499, 499, 499]
        assert not [r for r in caplog.records if r.getMessage() == "unhandled error"]
    finally:
        await runner.cleanup()
