"""Every parser a client can reach: any input gives a declared error, never another exception.

Pure parsers (tokens, envelopes, Range, ids, cursors, sessions) are called
directly; report bodies and multipart uploads go through the real apps
(real Redis), where the property is "a status the route declares, never a
500, and errors as ``{"error": {"code", "message"}}``".
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cdn_auth import grant, pointer, ranges
from cdn_auth import token_format as tf
from cdn_auth.errors import SessionError, TokenError
from cdn_auth.keyring import KeyRing
from cdn_auth.session import JwksSource, SessionVerifier
from cdn_auth.token_format import Alg, TokenType
from cdn_auth.web_media import ROUTES as MEDIA_ROUTES
from dm import envelope
from dm.errors import BadCursor
from dm.identity import JWKS_FILE, DevIssuer
from dm.web_messages import check_cursor
from dm.web_reports import ROUTES as REPORT_ROUTES
from service_kernel.encoding import b64url_decode, b64url_encode
from service_kernel.errors import InvalidField
from service_kernel.ids import check_id

from ..support.services import DmFactory, DmStack, Edge, EdgeFactory, bearer

FAST = settings(max_examples=200, deadline=None)
HTTP = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
#: Text with every kind of character, lone surrogates included (JSON can carry them).
ANY_TEXT = st.text(st.characters() | st.characters(categories=["Cs"]), max_size=80)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=12,
)


def declared(routes: tuple[Any, ...], method: str, path: str) -> set[int]:
    """The statuses a route documents (a rate-limited route may also answer 429)."""
    route = next(r for r in routes if r.method == method and r.path == path)
    return {*route.responses, *((429,) if route.limit else ())}


@pytest.fixture
async def open_dm(make_dm: DmFactory, make_edge: EdgeFactory) -> DmStack:
    """dm and edge with rate limits off: these properties are about parsing, and a limit
    would answer 429 before the parser runs."""
    return await make_dm(edge=await make_edge(rate_limits_enabled=False), rate_limits_enabled=False)


@pytest.fixture
async def open_edge(make_edge: EdgeFactory) -> Edge:
    return await make_edge(rate_limits_enabled=False)


# -- tokens -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def token_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[tf.SigningKey, dict[str, Any]]:
    ring = KeyRing.create(tmp_path_factory.mktemp("ring"), Alg.ED25519)
    from cdn_auth.keyset import keys_from_jwks

    return ring.signer(), keys_from_jwks(ring.verify_jwks())


def _verify_any(token: str, keys: dict[str, Any], now: float) -> None:
    for verify in (pointer.verify, grant.verify):
        with contextlib.suppress(TokenError):
            verify(token, keys, now, max_lifetime_s=3600)


@FAST
@given(
    token=st.text(max_size=300)
    | st.from_regex(r"[A-Za-z0-9_-]{0,200}\.[A-Za-z0-9_-]{0,100}", fullmatch=True)
)
def test_any_token_text_is_a_token_error(token_keys: Any, token: str) -> None:
    _verify_any(token, token_keys[1], time.time())


@FAST
@given(body=st.binary(max_size=200), sig=st.binary(max_size=80))
def test_any_token_bytes_are_a_token_error(token_keys: Any, body: bytes, sig: bytes) -> None:
    _verify_any(b64url_encode(body) + "." + b64url_encode(sig), token_keys[1], time.time())


@FAST
@given(
    fields=st.binary(max_size=120),
    type_=st.sampled_from(list(TokenType)),
    iat=st.integers(0, 2**64 - 1),
    life=st.integers(0, 2**64 - 1),
)
def test_signed_garbage_fields_are_a_token_error(
    token_keys: Any, fields: bytes, type_: TokenType, iat: int, life: int
) -> None:
    """Correctly signed tokens (as a key holder's bug could mint) with any body fields."""
    key, keys = token_keys
    token = tf.encode(type_, key, iat, min(iat + life, 2**64 - 1), fields)
    _verify_any(token, keys, float(iat + 1))


@FAST
@given(data=st.data())
def test_flipped_byte_in_a_real_pointer_is_refused(token_keys: Any, data: st.DataObject) -> None:
    key, keys = token_keys
    now = time.time()
    good = pointer.mint(
        key, media_id="m_1", sub="u_1", conversation_id="c_1", message_id="1-0", now=now, ttl_s=300
    )
    body, _, sig = good.partition(".")
    raw = bytearray(b64url_decode(body))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= data.draw(st.integers(1, 255))
    with pytest.raises(TokenError):
        pointer.verify(b64url_encode(bytes(raw)) + "." + sig, keys, now, max_lifetime_s=3600)


# -- envelopes -----------------------------------------------------------------------------------


@FAST
@given(raw=st.binary(max_size=400))
def test_any_envelope_bytes_are_an_envelope_error(raw: bytes) -> None:
    key = _DEVICE
    try:
        suite = envelope.envelope_suite(raw)
    except envelope.EnvelopeError:
        return
    assert suite in envelope.SUITES
    with pytest.raises(envelope.EnvelopeError):
        envelope.open_envelope(key, envelope.Binding("c", "s", "m", "u", "d"), raw)


_DEVICE = envelope.DeviceKey.generate("x25519")


@FAST
@given(raw=st.binary(max_size=200) | JSON.map(lambda v: json.dumps(v).encode()))
def test_any_payload_is_a_payload_or_an_envelope_error(raw: bytes) -> None:
    try:
        p = envelope.Payload.decode(raw)
    except envelope.EnvelopeError:
        return
    assert len(p.franking_key) == envelope.FK_BYTES


# -- Range, ids, cursors -----------------------------------------------------------------------------


@FAST
@given(
    value=st.text(max_size=60)
    | st.from_regex(r"\s*bytes\s*=\s*\d{0,21}\s*-\s*\d{0,21}\s*", fullmatch=True),
    size=st.integers(0, 2**63),
)
def test_any_range_header_plans_a_window_inside_the_file(value: str, size: int) -> None:
    window = ranges.parse_range(value, size)
    if isinstance(window, tuple):
        start, end = window
        assert 0 <= start <= end < size
    p = ranges.plan(
        {"Range": value, "If-Range": value, "If-None-Match": value},
        size=size,
        etag='"e"',
        last_modified="x",
    )
    assert p.status in (200, 206, 304, 416)
    assert p.start >= 0 and p.start + p.length <= size


@FAST
@given(value=JSON | ANY_TEXT)
def test_any_id_is_itself_or_invalid_field(value: Any) -> None:
    with contextlib.suppress(InvalidField):
        assert check_id(value, "id") == value


@FAST
@given(value=ANY_TEXT | st.from_regex(r"[0-9]{1,20}-[0-9]{1,12}", fullmatch=True))
def test_any_cursor_is_canonical_or_bad_cursor(value: str) -> None:
    try:
        c = check_cursor(value)
    except BadCursor:
        return
    ms, seq = c.split("-")
    assert c == f"{int(ms)}-{int(seq)}" and c.isascii() and check_cursor(c) == c


# -- sessions -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> tuple[DevIssuer, SessionVerifier]:
    path: Path = tmp_path_factory.mktemp("session-keys")
    issuer = DevIssuer.load_or_create(path)
    return issuer, SessionVerifier(
        JwksSource(str(path / JWKS_FILE)), issuer="pointer-dm-dev", audience="pointer-dm"
    )


@settings(max_examples=60, deadline=None)
@given(
    token=st.text(max_size=200)
    | st.from_regex(r"[A-Za-z0-9_-]{0,60}\.[A-Za-z0-9_-]{0,60}\.[A-Za-z0-9_-]{0,60}", fullmatch=True)
)
async def test_any_session_text_is_a_session_error(sessions: Any, token: str) -> None:
    with pytest.raises(SessionError):
        await sessions[1].verify(token)


@settings(max_examples=60, deadline=None)
@given(
    claims=st.dictionaries(
        st.sampled_from(["sub", "dev", "age", "region", "roles", "iat", "exp", "nbf", "iss", "aud"]),
        JSON,
        max_size=10,
    )
)
async def test_issuer_signed_odd_claims_are_a_session_or_a_session_error(
    sessions: Any, claims: dict[str, Any]
) -> None:
    """Even claims the trusted issuer signed never raise anything but a session error."""
    issuer, verifier = sessions
    now = int(time.time())
    base = {"iss": "pointer-dm-dev", "aud": "pointer-dm", "sub": "u", "iat": now, "exp": now + 60}
    try:
        token = issuer.mint("u", extra={**base, **claims})
    except (TypeError, ValueError, OverflowError):
        assume(False)  # not encodable as a JWT at all
        return
    with contextlib.suppress(SessionError):
        await verifier.verify(token)


# -- report bodies and multipart uploads, through the real apps ------------------------------


async def _post_json(dm: DmStack, token: str, doc: Any) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            dm.dm_url + "/v1/reports",
            data=json.dumps(doc).encode(),
            headers={**bearer(token), "Content-Type": "application/json"},
        ) as r,
    ):
        return r.status, await r.json(content_type=None)


def _assert_declared(status: int, body: Any, allowed: set[int]) -> None:
    assert status in allowed and status < 500, (status, body)
    if status >= 400:
        assert isinstance(body, dict) and set(body["error"]) >= {"code", "message"}, body


B64 = st.sampled_from(["", "AAAA"]) | st.binary(max_size=40).map(b64url_encode)
SEALED_KEYS = [
    "client_message_id",
    "sender",
    "ts_ms",
    "commitment",
    "countersignature",
    "franking_key",
    "media_id",
    "grant",
    "text",
]


@HTTP
@given(data=st.data())
async def test_any_report_body_is_a_declared_answer(open_dm: DmStack, data: st.DataObject) -> None:
    dm = open_dm
    reporter = await dm.user()
    other = await dm.user()
    plain = await reporter.create_conversation([other.uid])
    sealed = await reporter.create_conversation([other.uid], mode="sealed")
    sent = await other.send(plain["id"], text="x")
    doc = data.draw(
        JSON
        | st.fixed_dictionaries(
            {},
            optional={
                "conversation_id": st.sampled_from([plain["id"], sealed["id"]]) | JSON,
                "message_id": st.just(sent["id"]) | JSON,
                "reason": JSON,
                "sealed": JSON
                | st.fixed_dictionaries(
                    {
                        "client_message_id": st.just("s_1") | JSON,
                        "sender": st.just(other.uid) | JSON,
                        "ts_ms": st.integers(-1, 2**64) | JSON,
                        "commitment": B64 | JSON,
                        "countersignature": B64 | JSON,
                        "franking_key": B64 | JSON,
                    },
                    optional={k: JSON for k in SEALED_KEYS[6:]},
                ),
            },
        )
    )
    assert reporter.session_token is not None
    status, body = await _post_json(dm, reporter.session_token, doc)
    _assert_declared(status, body, declared(REPORT_ROUTES, "POST", "/v1/reports"))


@HTTP
@given(data=st.data())
async def test_any_json_body_on_any_route_is_a_declared_answer(
    open_dm: DmStack, data: st.DataObject
) -> None:
    """Every JSON route of dm and the edge, with its own field names and any values."""
    dm = open_dm
    from cdn_auth.web_grants import ROUTES as GRANT_ROUTES
    from dm.web_conversations import ROUTES as CONV_ROUTES
    from dm.web_messages import ROUTES as MSG_ROUTES
    from dm.web_users import ROUTES as USER_ROUTES

    alice, bob = await dm.user(roles=["moderator"]), await dm.user()
    conv = await alice.create_conversation(
        [bob.uid], mode=data.draw(st.sampled_from(["plain", "sealed"]))
    )
    edge_url = str(dm.edge.client.make_url("")).rstrip("/")
    routes = [
        (dm.dm_url, USER_ROUTES, "/v1/users", "/v1/users", ["age", "region", "roles", "ttl_s"]),
        (dm.dm_url, CONV_ROUTES, "/v1/conversations", "/v1/conversations", ["members", "mode"]),
        (
            dm.dm_url,
            MSG_ROUTES,
            "/v1/conversations/{cid}/messages",
            f"/v1/conversations/{conv['id']}/messages",
            ["text", "media_id", "client_message_id", "franking_commitment", "envelopes", "grant_id"],
        ),
        (
            edge_url,
            GRANT_ROUTES,
            "/v1/grants",
            "/v1/grants",
            ["media_id", "redeemers", "via_grant", "ttl_s"],
        ),
        (edge_url, MEDIA_ROUTES, "/v1/takedowns", "/v1/takedowns", ["media_id", "reason"]),
        (edge_url, MEDIA_ROUTES, "/v1/media", "/v1/media", sorted(META_FIELDS)),
    ]
    base, table, template, path, fields = data.draw(st.sampled_from(routes))
    doc = data.draw(JSON | st.dictionaries(st.sampled_from(fields), JSON, max_size=4))
    assert alice.session_token is not None
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            base + path,
            data=json.dumps(doc).encode(),
            headers={**bearer(alice.session_token), "Content-Type": "application/json"},
        ) as r,
    ):
        status, body = r.status, await r.json(content_type=None)
    _assert_declared(status, body, declared(table, "POST", template))


META_FIELDS = {
    "content_type",
    "visibility",
    "allow_reshare",
    "min_age",
    "allowed_regions",
    "blocked_regions",
    "owner",
    "origin_path",
}
META = st.fixed_dictionaries(
    {},
    optional={
        "content_type": st.sampled_from(["video/mp4", "image/svg+xml", "text/html"]) | JSON,
        "visibility": st.sampled_from(["public", "private"]) | JSON,
        "allow_reshare": JSON,
        "min_age": JSON,
        "allowed_regions": JSON,
        "blocked_regions": JSON,
        "owner": JSON,
        "origin_path": JSON,
    },
)


@HTTP
@given(
    parts=st.lists(
        st.tuples(
            st.sampled_from(["metadata", "file", "other", ""]),
            META.map(lambda d: json.dumps(d).encode()) | st.binary(max_size=64),
            st.sampled_from(["application/json", "video/mp4", None]),
        ),
        max_size=3,
    ),
    raw=st.none() | st.binary(max_size=300),
    boundary=st.sampled_from(["b0undary", "x", "--", ""]),
)
async def test_any_multipart_upload_is_a_declared_answer(
    open_edge: Edge,
    issuer: DevIssuer,
    parts: list[tuple[str, bytes, str | None]],
    raw: bytes | None,
    boundary: str,
) -> None:
    edge = open_edge
    session = issuer.mint("u_uploader", age="adult", region="GB")
    headers = {**bearer(session), "Content-Type": f"multipart/form-data; boundary={boundary}"}
    body = raw if raw is not None else _multipart(parts, boundary)
    async with edge.client.post("/v1/media", data=body, headers=headers) as r:
        status, doc = r.status, await r.json(content_type=None)
    _assert_declared(status, doc, declared(MEDIA_ROUTES, "POST", "/v1/media"))


def _multipart(parts: list[tuple[str, bytes, str | None]], boundary: str) -> bytes:
    out = b""
    for name, content, ctype in parts:
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n'
        if ctype:
            head += f"Content-Type: {ctype}\r\n"
        out += head.encode() + b"\r\n" + content + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()
