"""Pointers: signed, short-lived, recipient-bound references to one media item.

Fields after the common header (see :mod:`cdn_auth.token_format`), in order:
``media_id``, ``sub`` (the recipient user), ``conversation_id``,
``message_id``; each a u8-length-prefixed UTF-8 string.
"""

from __future__ import annotations

from typing import NamedTuple

from service_kernel.cache import shared, shared_int

from . import token_format as tf
from .token_format import SigningKey, TokenType, VerifyKey

DEFAULT_POINTER_TTL_S = 300


class Pointer(NamedTuple):
    """Verified pointer claims (immutable; a NamedTuple is cheap to build per cache miss)."""

    media_id: str
    sub: str
    conversation_id: str
    message_id: str
    iat: int
    exp: int
    kid: str


def mint(
    key: SigningKey,
    *,
    media_id: str,
    sub: str,
    conversation_id: str,
    message_id: str,
    now: float,
    ttl_s: int = DEFAULT_POINTER_TTL_S,
) -> str:
    """Mint a pointer for ``sub`` to fetch ``media_id``, valid for ``ttl_s`` seconds."""
    iat = int(now)
    fields = b"".join(tf.pack_string(v) for v in (media_id, sub, conversation_id, message_id))
    return tf.encode(TokenType.POINTER, key, iat, iat + ttl_s, fields)


def verify(
    token: str,
    keys: dict[str, VerifyKey],
    now: float,
    *,
    max_lifetime_s: int,
    leeway_s: int = tf.DEFAULT_LEEWAY_S,
) -> Pointer:
    """Verify signature, kid and times; return the pointer's claims.

    Binding checks (media id, recipient, revocation) are the caller's,
    in :mod:`cdn_auth.rights`, because they need the request context.
    """
    env = tf.verify(
        token, TokenType.POINTER, keys, now, leeway_s=leeway_s, max_lifetime_s=max_lifetime_s
    )
    r = tf.FieldReader(env.fields)
    media_id, sub, conversation_id, message_id = r.string(), r.string(), r.string(), r.string()
    r.end()
    # Interned: a cache of 10^5 pointers repeats these few values (memory per entry).
    return Pointer(
        shared(media_id),
        shared(sub),
        shared(conversation_id),
        message_id,
        shared_int(env.iat),
        shared_int(env.exp),
        shared(env.kid),
    )
