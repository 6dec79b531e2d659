"""Share capabilities ('C') and the grants their holders derive offline ('D').

A **capability** lets its holder mint, on their own device and with no round
trip, per-share grants for one media item.  It uses the token envelope of
:mod:`cdn_auth.token_format` with type ``0x43`` and is signed by the media
API's key ring.  Fields after the common header::

    cap_id         string   "c_" + 128 random bits
    media_id       string
    holder         string   the user id it was issued to
    holder_key     bytes    u8 length (32) + the holder device's Ed25519 public key
    max_redeemers  u16      1..1024: the largest N of a derived grant
    max_grants     u16      1..65535: distinct grants that may ever be redeemed
    sources        u8 count (0..8), then that many strings: the re-share chain (the grant
                   the holder received the media through, and that grant's own chain);
                   empty for the owner

A **derived grant** (type ``0x44``) is also an envelope, but signed by the
holder's key, not by the ring: alg ``0x01`` (Ed25519), kid ``h`` (the key
named by the capability inside), ``iat``/``exp`` of the grant, then::

    capability     u16 length + the capability's body
    cap_signature  u8 length + the ring's signature over the capability
    nonce          u8 length (16) + 16 random bytes
    max_redeemers  u16      N, 1..the capability's

and the signature is ``Ed25519(holder_key, HOLDER_CONTEXT + body)``.  The
holder context differs from the ring's, so no holder signature is ever a
ring token (and the other way round).  Its grant id is ``d_`` + base64url of
the first 16 bytes of ``SHA-256(cap_id || nonce)``.  See docs/protocol.md,
section 14.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable
from typing import NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from service_kernel.cache import shared
from service_kernel.encoding import b64url_decode, b64url_encode

from . import grant as grant_mod
from . import token_format as tf
from .errors import (
    CapabilityBoundsExceeded,
    TokenBadSignature,
    TokenExpired,
    TokenMalformed,
    TokenNotYetValid,
    TokenWrongType,
)
from .token_format import Alg, SigningKey, TokenType, VerifyKey

HOLDER_CONTEXT = b"pointer-dm/derived-grant/v1\x00"
HOLDER_KID = "h"
NONCE_BYTES = 16
MAX_GRANTS = 65535
MAX_SOURCES = 8
DEFAULT_CAPABILITY_TTL_S = 6 * 3600
#: The largest capability body a derived grant can still carry within MAX_TOKEN_CHARS
#: (702 body bytes with an 86-character signature, minus the derived grant's own bytes
#: and a 64-byte ring signature).
MAX_CAPABILITY_BODY = 702 - (4 + 1 + 16) - 2 - (1 + 64) - (1 + NONCE_BYTES) - 2

#: The Ed25519 encodings of small-order points, libsodium's blocklist
#: (``ge25519_has_small_order`` in ed25519_ref10.c): 0 and p (order 4), 1 and p + 1 (order 1,
#: the identity), p - 1 (order 2) and the two order-8 points.  Compared with the sign bit of
#: the last byte masked, as libsodium does, so the other sign's encodings match too.  A
#: holder key of small order accepts a signature R = identity, S = 0 for many messages (the
#: verifier is cofactorless and does not refuse such keys), so anyone holding a derived
#: grant could forge others: such a key is never a holder key.
SMALL_ORDER_KEYS: tuple[bytes, ...] = (
    bytes(32),
    bytes([1]) + bytes(31),
    bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
    bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),
    bytes([0xEC]) + bytes([0xFF]) * 30 + bytes([0x7F]),
    bytes([0xED]) + bytes([0xFF]) * 30 + bytes([0x7F]),
    bytes([0xEE]) + bytes([0xFF]) * 30 + bytes([0x7F]),
)


def is_small_order(key: bytes) -> bool:
    """Whether a 32-byte Ed25519 public key encodes a small-order point (sign bit ignored)."""
    if len(key) != 32:
        return False
    masked = key[:31] + bytes([key[31] & 0x7F])
    return masked in SMALL_ORDER_KEYS


class Capability(NamedTuple):
    """Verified capability claims."""

    cap_id: str
    media_id: str
    holder: str
    holder_key: bytes
    max_redeemers: int
    max_grants: int
    sources: tuple[str, ...]
    iat: int
    exp: int
    kid: str


class Derived(NamedTuple):
    """A verified derived grant and the capability it came from."""

    grant_id: str
    capability: Capability
    nonce: bytes
    max_redeemers: int
    iat: int
    exp: int

    def as_grant(self) -> grant_mod.Grant:
        """The claims as a grant, so every grant-keyed path (revocation by grant id, the
        front's dependencies, expiry) treats a derived grant as the grant it is."""
        c = self.capability
        return grant_mod.Grant(
            self.grant_id, c.media_id, self.max_redeemers, c.holder, self.iat, self.exp, c.kid
        )


def derived_grant_id(cap_id: str, nonce: bytes) -> str:
    return "d_" + b64url_encode(hashlib.sha256(cap_id.encode() + nonce).digest()[:16])


def _capability_fields(
    cap_id: str,
    media_id: str,
    holder: str,
    holder_key: bytes,
    max_redeemers: int,
    max_grants: int,
    sources: tuple[str, ...],
) -> bytes:
    if len(holder_key) != 32:
        raise ValueError("holder_key must be a 32-byte Ed25519 public key")
    if is_small_order(holder_key):
        raise ValueError("holder_key is a small-order Ed25519 point")
    if not 1 <= max_redeemers <= grant_mod.MAX_REDEEMERS:
        raise ValueError(f"max_redeemers must be 1..{grant_mod.MAX_REDEEMERS}")
    if not 1 <= max_grants <= MAX_GRANTS:
        raise ValueError(f"max_grants must be 1..{MAX_GRANTS}")
    if len(sources) > MAX_SOURCES:
        raise ValueError(f"at most {MAX_SOURCES} sources")
    return (
        tf.pack_string(cap_id)
        + tf.pack_string(media_id)
        + tf.pack_string(holder)
        + tf.pack_bytes(holder_key)
        + tf.pack_u16(max_redeemers)
        + tf.pack_u16(max_grants)
        + bytes([len(sources)])
        + b"".join(tf.pack_string(s) for s in sources)
    )


def mint(
    key: SigningKey,
    *,
    cap_id: str,
    media_id: str,
    holder: str,
    holder_key: bytes,
    max_redeemers: int,
    max_grants: int,
    sources: tuple[str, ...] = (),
    now: float,
    ttl_s: int = DEFAULT_CAPABILITY_TTL_S,
) -> str:
    """A capability signed by the ring; ``ValueError`` if it could not carry a derived grant."""
    iat = int(now)
    fields = _capability_fields(cap_id, media_id, holder, holder_key, max_redeemers, max_grants, sources)
    token = tf.encode(TokenType.CAPABILITY, key, iat, iat + ttl_s, fields)
    if len(b64url_decode(token.partition(".")[0])) > MAX_CAPABILITY_BODY:
        raise ValueError("capability too large to carry in a derived grant; shorten the ids")
    return token


def _parse_fields(env: tf.Envelope) -> Capability:
    r = tf.FieldReader(env.fields)
    cap_id, media_id, holder, holder_key = r.string(), r.string(), r.string(), r.raw()
    max_redeemers, max_grants = r.u16(), r.u16()
    n = r.u8()
    if n > MAX_SOURCES:
        raise TokenMalformed("too many sources")
    sources = tuple(r.string() for _ in range(n))
    r.end()
    if len(holder_key) != 32:
        raise TokenMalformed("holder_key length")
    if is_small_order(holder_key):
        raise TokenMalformed("holder_key is a small-order point")
    if not 1 <= max_redeemers <= grant_mod.MAX_REDEEMERS or not 1 <= max_grants <= MAX_GRANTS:
        raise TokenMalformed("capability bounds out of range")
    return Capability(
        cap_id,
        shared(media_id),
        shared(holder),
        holder_key,
        max_redeemers,
        max_grants,
        sources,
        env.iat,
        env.exp,
        shared(env.kid),
    )


def verify(
    token: str,
    keys: dict[str, VerifyKey],
    now: float,
    *,
    max_lifetime_s: int,
    leeway_s: int = tf.DEFAULT_LEEWAY_S,
) -> Capability:
    """A capability token, verified as section 1.4 verifies any token (ring signature)."""
    env = tf.verify(
        token, TokenType.CAPABILITY, keys, now, leeway_s=leeway_s, max_lifetime_s=max_lifetime_s
    )
    return _parse_fields(env)


def is_derived(token: str) -> bool:
    """Whether a token's type byte says derived grant (unverified: only picks the verifier)."""
    try:
        head = b64url_decode(token[:4])
    except ValueError:
        return False
    return len(head) == 3 and head[1] == TokenType.DERIVED


class Derivation:
    """A held capability, parsed and checked against its holder's key once: each
    :meth:`derive` then costs one Ed25519 signature and a few packs (a device derives
    a grant per share from one capability)."""

    __slots__ = ("_head", "_holder", "cap_id", "exp", "max_redeemers")

    def __init__(self, holder: Ed25519PrivateKey, capability: str) -> None:
        env = tf.parse_unverified(capability)
        if env.type is not TokenType.CAPABILITY:
            raise ValueError("not a capability")
        cap = _parse_fields(env)
        if holder.public_key().public_bytes_raw() != cap.holder_key:
            raise ValueError("the capability names another holder key")
        cap_body = env.signed[len(tf.SIGNING_CONTEXT) :]
        kid = HOLDER_KID.encode()
        self._holder = holder
        #: The derived grant's type byte, then after iat/exp, the capability and its signature.
        self._head = (
            struct.pack(">BBBB", tf.VERSION, TokenType.DERIVED, Alg.ED25519, len(kid)) + kid,
            struct.pack(">H", len(cap_body)) + cap_body + tf.pack_bytes(env.signature),
        )
        self.cap_id, self.exp, self.max_redeemers = cap.cap_id, cap.exp, cap.max_redeemers

    def derive(
        self, *, max_redeemers: int, now: float, ttl_s: int, nonce: bytes | None = None
    ) -> tuple[str, str]:
        """See :func:`derive`."""
        if not 1 <= max_redeemers <= self.max_redeemers:
            raise ValueError(f"max_redeemers must be 1..{self.max_redeemers}")
        iat = int(now)
        exp = min(iat + ttl_s, self.exp)
        if exp <= iat:
            raise ValueError("the capability has expired")
        nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
        if len(nonce) != NONCE_BYTES:
            raise ValueError(f"nonce must be {NONCE_BYTES} bytes")
        body = (
            self._head[0]
            + struct.pack(">QQ", iat, exp)
            + self._head[1]
            + tf.pack_bytes(nonce)
            + tf.pack_u16(max_redeemers)
        )
        token = b64url_encode(body) + "." + b64url_encode(self._holder.sign(HOLDER_CONTEXT + body))
        if len(token) > tf.MAX_TOKEN_CHARS:
            raise ValueError("derived grant longer than any verifier accepts")
        return token, derived_grant_id(self.cap_id, nonce)


def derive(
    holder: Ed25519PrivateKey,
    capability: str,
    *,
    max_redeemers: int,
    now: float,
    ttl_s: int,
    nonce: bytes | None = None,
) -> tuple[str, str]:
    """A derived grant for N = ``max_redeemers`` users, made on the holder's device.

    Returns ``(token, grant_id)``.  ``exp`` is ``now + ttl_s``, cut to the capability's
    own ``exp``; ``ValueError`` if the capability is not the holder's, has expired, or
    allows fewer redeemers.  A device deriving many grants from one capability keeps a
    :class:`Derivation` instead (the capability parsed once).
    """
    return Derivation(holder, capability).derive(
        max_redeemers=max_redeemers, now=now, ttl_s=ttl_s, nonce=nonce
    )


class DerivedClaims(NamedTuple):
    """A derived grant's claims read WITHOUT verification (for its holder's own use)."""

    grant_id: str
    holder: str
    exp: int


def peek_derived(token: str) -> DerivedClaims:
    """A derived grant's id, its capability's holder and its ``exp``, signatures unchecked:
    what a holder's other device needs to revoke a grant it finds in its own sealed message
    (the edge verifies it at the revocation).  Raises a :class:`TokenError` leaf."""
    env = tf.parse_unverified(token)
    if env.type is not TokenType.DERIVED:
        raise TokenWrongType(env.type.name)
    r = tf.FieldReader(env.fields)
    cap_body, cap_sig, nonce = r.raw16(), r.raw(), r.raw()
    r.u16()
    r.end()
    cap_env = tf.parse_unverified(b64url_encode(cap_body) + "." + b64url_encode(cap_sig))
    if cap_env.type is not TokenType.CAPABILITY:
        raise TokenWrongType(cap_env.type.name)
    cap = _parse_fields(cap_env)
    return DerivedClaims(derived_grant_id(cap.cap_id, nonce), cap.holder, env.exp)


def verify_derived(
    token: str,
    keys: dict[str, VerifyKey],
    now: float,
    *,
    max_lifetime_s: int,
    max_capability_lifetime_s: int,
    leeway_s: int = tf.DEFAULT_LEEWAY_S,
    verified_capability: Callable[[str], Capability] | None = None,
) -> Derived:
    """Verify a derived grant: the capability inside (ring signature, lifetime), then the
    holder's signature with the key the capability names, then the grant's own lifetime
    and its bounds within the capability's.  Raises a :class:`TokenError` leaf.

    ``verified_capability``, given the capability's token, returns it verified as
    :func:`verify` does (an edge caches that per capability: every share derived from
    one capability carries the same bytes); by default it is verified here."""
    env = tf.parse_unverified(token)
    if env.type is not TokenType.DERIVED:
        raise TokenWrongType(env.type.name)
    if env.alg is not Alg.ED25519 or env.kid != HOLDER_KID:
        raise TokenMalformed("a derived grant is signed with Ed25519 by its holder")
    r = tf.FieldReader(env.fields)
    cap_body, cap_sig, nonce, n = r.raw16(), r.raw(), r.raw(), r.u16()
    r.end()
    if len(nonce) != NONCE_BYTES:
        raise TokenMalformed("nonce length")
    cap_token = b64url_encode(cap_body) + "." + b64url_encode(cap_sig)
    if verified_capability is None:
        cap = verify(cap_token, keys, now, max_lifetime_s=max_capability_lifetime_s, leeway_s=leeway_s)
    else:
        cap = verified_capability(cap_token)
    if len(env.signature) != 64:
        raise TokenBadSignature("holder signature length")
    try:
        Ed25519PublicKey.from_public_bytes(cap.holder_key).verify(
            env.signature, HOLDER_CONTEXT + env.signed[len(tf.SIGNING_CONTEXT) :]
        )
    except (InvalidSignature, ValueError):
        raise TokenBadSignature("holder signature") from None
    if env.exp <= env.iat or env.exp - env.iat > max_lifetime_s:
        raise TokenMalformed("lifetime out of bounds")
    if env.iat > now + leeway_s:
        raise TokenNotYetValid(f"iat {env.iat} > now {now:.0f}")
    if env.exp <= now - leeway_s:
        raise TokenExpired(f"exp {env.exp} <= now {now:.0f}")
    if not 1 <= n <= cap.max_redeemers:
        raise CapabilityBoundsExceeded(f"N {n} above the capability's {cap.max_redeemers}")
    if env.exp > cap.exp:
        raise CapabilityBoundsExceeded("the grant outlives its capability")
    return Derived(derived_grant_id(cap.cap_id, nonce), cap, nonce, n, env.iat, env.exp)
