"""Range and conditional requests, as a video player sends them (RFC 9110 sections 13-14)."""

from __future__ import annotations

import time

import pytest

from cdn_auth import pointer, ranges
from cdn_auth.keyring import KeyRing

from ..support.services import Edge, bearer

SIZE = 100_000
ETAG = '"abc"'
LM = "Mon, 23 Nov 2026 00:00:00 GMT"


@pytest.mark.parametrize(
    "header,status,start,length",
    [
        ("bytes=0-99", 206, 0, 100),
        ("bytes=99990-", 206, 99990, 10),
        ("bytes=-10", 206, 99990, 10),
        ("bytes=-200000", 206, 0, SIZE),
        ("bytes=50-2000000", 206, 50, SIZE - 50),
        ("bytes=0-0", 206, 0, 1),
        ("bytes=100000-", 416, 0, 0),
        ("bytes=-0", 416, 0, 0),
        ("bytes=5-1", 200, 0, SIZE),  # invalid spec: ignored
        ("bytes=0-1,5-9", 200, 0, SIZE),  # multiple ranges: whole representation
        ("items=0-9", 200, 0, SIZE),  # unknown unit: ignored
        ("bytes=abc", 200, 0, SIZE),
    ],
)
def test_plan_ranges(header: str, status: int, start: int, length: int) -> None:
    p = ranges.plan({"Range": header}, size=SIZE, etag=ETAG, last_modified=LM)
    assert (p.status, p.start, p.length) == (status, start, length)
    if status == 206:
        assert p.headers["Content-Range"] == f"bytes {start}-{start + length - 1}/{SIZE}"
    if status == 416:
        assert p.headers["Content-Range"] == f"bytes */{SIZE}"


def test_plan_empty_file_range_unsatisfiable() -> None:
    assert ranges.plan({"Range": "bytes=0-"}, size=0, etag=ETAG, last_modified=LM).status == 416
    assert ranges.plan({}, size=0, etag=ETAG, last_modified=LM).status == 200


@pytest.mark.parametrize(
    "inm,status", [(ETAG, 304), ('W/"abc"', 304), ('"x", "abc"', 304), ("*", 304), ('"other"', 200)]
)
def test_plan_if_none_match(inm: str, status: int) -> None:
    assert ranges.plan({"If-None-Match": inm}, size=SIZE, etag=ETAG, last_modified=LM).status == status


@pytest.mark.parametrize(
    "if_range,status",
    [(ETAG, 206), ('"stale"', 200), ('W/"abc"', 200), (LM, 206), ("Tue, 01 Jan 2030 00:00:00 GMT", 200)],
)
def test_plan_if_range(if_range: str, status: int) -> None:
    p = ranges.plan({"Range": "bytes=0-9", "If-Range": if_range}, size=SIZE, etag=ETAG, last_modified=LM)
    assert p.status == status


# -- over HTTP, through the edge -----------------------------------------------------


@pytest.fixture
async def player(edge: Edge, issuer, ring: KeyRing):  # type: ignore[no-untyped-def]
    media, data = await edge.add_media(size=SIZE, content_type="video/webm")
    ptr = pointer.mint(
        ring.signer(), media_id=media.id, sub="bob", conversation_id="c", message_id="m", now=time.time()
    )
    url = f"/m/{media.id}?pointer={ptr}"
    return edge, url, bearer(issuer.mint("bob")), media, data


async def test_full_get_headers(player) -> None:  # type: ignore[no-untyped-def]
    edge, url, auth, media, data = player
    async with edge.client.get(url, headers=auth) as r:
        assert r.status == 200
        assert await r.read() == data
        assert r.headers["Accept-Ranges"] == "bytes"
        assert r.headers["Content-Type"] == "video/webm"
        assert r.headers["Content-Length"] == str(SIZE)
        assert r.headers["ETag"] == media.etag
        assert "private" in r.headers["Cache-Control"]


@pytest.mark.parametrize(
    "rng,lo,hi",
    [
        ("bytes=0-1023", 0, 1023),
        ("bytes=99000-", 99000, SIZE - 1),
        ("bytes=-500", SIZE - 500, SIZE - 1),
        ("bytes=1000-1000", 1000, 1000),
    ],
)
async def test_range_over_http(player, rng: str, lo: int, hi: int) -> None:  # type: ignore[no-untyped-def]
    edge, url, auth, _, data = player
    async with edge.client.get(url, headers={**auth, "Range": rng}) as r:
        assert r.status == 206
        assert r.headers["Content-Range"] == f"bytes {lo}-{hi}/{SIZE}"
        assert await r.read() == data[lo : hi + 1]


async def test_416_over_http(player) -> None:  # type: ignore[no-untyped-def]
    edge, url, auth, _, _ = player
    async with edge.client.get(url, headers={**auth, "Range": f"bytes={SIZE}-"}) as r:
        assert r.status == 416
        assert r.headers["Content-Range"] == f"bytes */{SIZE}"
        assert (await r.json())["error"]["code"] == "range_not_satisfiable"


async def test_head_has_headers_no_body(player) -> None:  # type: ignore[no-untyped-def]
    edge, url, auth, _, _ = player
    async with edge.client.head(url, headers={**auth, "Range": "bytes=0-9"}) as r:
        assert r.status == 206
        assert r.headers["Content-Length"] == "10"
        assert await r.read() == b""


async def test_if_none_match_304(player) -> None:  # type: ignore[no-untyped-def]
    edge, url, auth, media, _ = player
    async with edge.client.get(url, headers={**auth, "If-None-Match": media.etag}) as r:
        assert r.status == 304
        assert r.headers["ETag"] == media.etag
        assert await r.read() == b""


async def test_if_range_over_http(player) -> None:  # type: ignore[no-untyped-def]
    edge, url, auth, media, data = player
    h = {**auth, "Range": "bytes=10-19"}
    async with edge.client.get(url, headers={**h, "If-Range": media.etag}) as r:
        assert (r.status, await r.read()) == (206, data[10:20])
    async with edge.client.get(url, headers={**h, "If-Range": '"changed"'}) as r:
        assert (r.status, len(await r.read())) == (200, SIZE)


async def test_player_reads_whole_video_in_segments(player) -> None:  # type: ignore[no-untyped-def]
    edge, url, auth, media, data = player
    got = bytearray()
    for start in range(0, SIZE, 16384):
        h = {**auth, "Range": f"bytes={start}-{start + 16383}", "If-Range": media.etag}
        async with edge.client.get(url, headers=h) as r:
            assert r.status == 206
            got += await r.read()
    assert bytes(got) == data


async def test_origin_file_changed_is_503_not_500(player) -> None:  # type: ignore[no-untyped-def]
    edge, url, auth, media, _ = player
    (edge.state.origin.root / media.origin).write_bytes(b"short")
    async with edge.client.get(url, headers=auth) as r:
        assert r.status == 503
        assert r.headers["Retry-After"]
        assert (await r.json())["error"]["code"] == "origin_unavailable"
