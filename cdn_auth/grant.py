"""Grants: the encrypted-pointer mode's capability, checkable by an edge that never saw the DM.

A grant names a media item and how many distinct users may redeem it, not
who they are.  Fields after the common header (:mod:`cdn_auth.token_format`):
``grant_id`` (string), ``media_id`` (string), ``max_redeemers`` (u16),
``sharer`` (string: the user who asked for it).  The first ``max_redeemers``
distinct users to fetch with it are bound to it in Redis, atomically.
"""

from __future__ import annotations

from typing import NamedTuple

from service_kernel.cache import shared

from . import token_format as tf
from .errors import TokenMalformed
from .token_format import SigningKey, TokenType, VerifyKey

DEFAULT_GRANT_TTL_S = 6 * 3600
MAX_REDEEMERS = 1024


class Grant(NamedTuple):
    """Verified grant claims (immutable)."""

    grant_id: str
    media_id: str
    max_redeemers: int
    sharer: str
    iat: int
    exp: int
    kid: str


def mint(
    key: SigningKey,
    *,
    grant_id: str,
    media_id: str,
    max_redeemers: int,
    sharer: str,
    now: float,
    ttl_s: int = DEFAULT_GRANT_TTL_S,
) -> str:
    if not 1 <= max_redeemers <= MAX_REDEEMERS:
        raise ValueError(f"max_redeemers must be 1..{MAX_REDEEMERS}")
    iat = int(now)
    fields = (
        tf.pack_string(grant_id)
        + tf.pack_string(media_id)
        + tf.pack_u16(max_redeemers)
        + tf.pack_string(sharer)
    )
    return tf.encode(TokenType.GRANT, key, iat, iat + ttl_s, fields)


def verify(
    token: str,
    keys: dict[str, VerifyKey],
    now: float,
    *,
    max_lifetime_s: int,
    leeway_s: int = tf.DEFAULT_LEEWAY_S,
) -> Grant:
    env = tf.verify(token, TokenType.GRANT, keys, now, leeway_s=leeway_s, max_lifetime_s=max_lifetime_s)
    r = tf.FieldReader(env.fields)
    grant_id, media_id, max_redeemers, sharer = r.string(), r.string(), r.u16(), r.string()
    r.end()
    if not 1 <= max_redeemers <= MAX_REDEEMERS:
        raise TokenMalformed("max_redeemers out of range")
    return Grant(
        grant_id, shared(media_id), max_redeemers, shared(sharer), env.iat, env.exp, shared(env.kid)
    )
