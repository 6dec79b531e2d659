"""Talking to a test edge about capabilities: issue one, derive grants, fetch with them,
revoke; and a derived grant built byte by byte (for forgeries the SDK refuses to make)."""

from __future__ import annotations

import os
import struct
import time
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cdn_auth import capability as cap_mod
from cdn_auth import token_format as tf
from dm.client import DmClient, DmClientError
from service_kernel.encoding import b64url_encode

from .services import Edge, bearer


async def call(
    edge: Edge, method: str, path: str, session: str, body: dict[str, Any] | None = None, **headers: str
) -> tuple[int, Any]:
    async with edge.client.request(method, path, json=body, headers={**bearer(session), **headers}) as r:
        return r.status, await r.json()


async def issue(
    edge: Edge, session: str, media_id: str, holder: Ed25519PrivateKey, **body: Any
) -> tuple[int, Any]:
    """``POST /v1/capabilities`` for ``holder``'s public key."""
    key = b64url_encode(holder.public_key().public_bytes_raw())
    return await call(
        edge, "POST", "/v1/capabilities", session, {"media_id": media_id, "holder_key": key, **body}
    )


async def issued(
    edge: Edge, session: str, media_id: str, holder: Ed25519PrivateKey, **body: Any
) -> dict[str, Any]:
    status, doc = await issue(edge, session, media_id, holder, **body)
    assert status == 201, doc
    return dict(doc)


def derive(
    holder: Ed25519PrivateKey, cap: dict[str, Any], n: int = 1, ttl_s: int = 600
) -> tuple[str, str]:
    return cap_mod.derive(holder, cap["capability"], max_redeemers=n, now=time.time(), ttl_s=ttl_s)


def forge_derived(
    signer: Ed25519PrivateKey,
    capability: str,
    *,
    n: int,
    iat: int | None = None,
    exp: int | None = None,
    nonce: bytes | None = None,
) -> str:
    """A derived grant with any N, times and signer, none of derive()'s checks."""
    env = tf.parse_unverified(capability)
    iat = int(time.time()) if iat is None else iat
    exp = iat + 300 if exp is None else exp
    cap_body = env.signed[len(tf.SIGNING_CONTEXT) :]
    body = (
        struct.pack(">BBBB", 1, 0x44, 1, 1)
        + b"h"
        + struct.pack(">QQ", iat, exp)
        + struct.pack(">H", len(cap_body))
        + cap_body
        + tf.pack_bytes(env.signature)
        + tf.pack_bytes(nonce or os.urandom(16))
        + struct.pack(">H", n)
    )
    return b64url_encode(body) + "." + b64url_encode(signer.sign(cap_mod.HOLDER_CONTEXT + body))


async def fetch(edge: Edge, media_id: str, session: str, grant: str) -> tuple[int, str]:
    """A first-range fetch with ``X-Grant``: the status and the error code (or "")."""
    async with edge.client.get(
        f"/m/{media_id}", headers={**bearer(session), "X-Grant": grant, "Range": "bytes=0-9"}
    ) as r:
        if r.content_type == "application/json":
            return r.status, (await r.json())["error"]["code"]
        await r.read()
        return r.status, ""


async def revoked_at_edge(edge: Edge, revocation_id: str) -> bool:
    """Whether the edge's tail has applied the stream entry ``revocation_id``."""
    last = edge.state.authorizer.tailer.stream.last_id or "0-0"
    return tuple(map(int, last.split("-"))) >= tuple(map(int, revocation_id.split("-")))


async def last_message(c: DmClient, cid: str) -> dict[str, Any]:
    return dict((await c.read(cid))["messages"][-1])


async def fetch_code(c: DmClient, url: str, grant: str) -> tuple[int, str]:
    """A client's first-range fetch with a grant: (status, error code or "")."""
    try:
        r = await c.fetch_media(url, grant=grant, range_=(0, 9))
    except DmClientError as err:
        return err.status, err.code
    return r.status, ""


async def redis_values(redis: Any, key: str) -> Any:
    """Everything one key holds, whatever its type (None if it expired meanwhile)."""
    kind = await redis.type(key)
    readers = {"string": redis.get, "hash": redis.hgetall, "set": redis.smembers, "stream": redis.xrange}
    if kind == "none":
        return None
    if kind == "list":
        return await redis.lrange(key, 0, -1)
    if kind == "zset":
        return await redis.zrange(key, 0, -1, withscores=True)
    return await readers[kind](key)
