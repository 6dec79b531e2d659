"""The signed-token envelope shared by pointers and grants (format v1).

A token is ``b64url(body) "." b64url(signature)``; the body is binary::

    offset  size  field
    0       1     version       0x01
    1       1     type          0x50 'P' pointer, 0x47 'G' grant, 0x42 'B' browser playback,
                            0x43 'C' capability, 0x44 'D' derived grant
    2       1     alg           0x01 Ed25519, 0x02 HMAC-SHA256
    3       1     kid length k  1..32
    4       k     kid           ASCII [A-Za-z0-9_-]
    4+k     8     iat           unsigned big-endian seconds since the epoch
    12+k    8     exp           unsigned big-endian seconds since the epoch
    20+k    ...   fields        per type; a string is u8 length + UTF-8, an int is u16 BE

The signature covers ``b"cdn-auth/v1\\x00" + body`` (domain separation, so no
other protocol's signature can be replayed as a token).  Ed25519 gives 64
bytes, HMAC-SHA256 32.  The verifier finds the key by kid and requires the
key's own algorithm to equal the alg byte: the token never chooses the
algorithm (RFC 8725 section 3.1).  See docs/protocol.md.
"""

from __future__ import annotations

import hmac
import re
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from service_kernel.encoding import b64url_decode, b64url_encode

from .errors import (
    TokenBadSignature,
    TokenExpired,
    TokenMalformed,
    TokenNotYetValid,
    TokenUnknownKey,
    TokenWrongType,
)

VERSION = 0x01
SIGNING_CONTEXT = b"cdn-auth/v1\x00"
MAX_TOKEN_CHARS = 1024
MAX_KID_LEN = 32
#: Clock skew tolerated between the minting service and an edge.
DEFAULT_LEEWAY_S = 5
_KID_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")


class TokenType(IntEnum):
    POINTER = 0x50
    GRANT = 0x47
    PLAYBACK = 0x42  # the browser media cookie (cdn_auth.playback)
    CAPABILITY = 0x43  # 'C': a holder's share capability (cdn_auth.capability)
    DERIVED = 0x44  # 'D': a grant derived from a capability, signed by its holder


class Alg(IntEnum):
    ED25519 = 0x01
    HMAC_SHA256 = 0x02

    @property
    def jwa(self) -> str:
        return "EdDSA" if self is Alg.ED25519 else "HS256"

    @classmethod
    def from_name(cls, name: str) -> Alg:
        names = {
            "ed25519": cls.ED25519,
            "eddsa": cls.ED25519,
            "hmac": cls.HMAC_SHA256,
            "hs256": cls.HMAC_SHA256,
            "hmac-sha256": cls.HMAC_SHA256,
        }
        try:
            return names[name.lower()]
        except KeyError:
            raise ValueError(f"unknown token algorithm {name!r}") from None


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A private key (or HMAC secret) with its kid; lives only where tokens are minted."""

    kid: str
    alg: Alg
    secret: Ed25519PrivateKey | bytes

    def __repr__(self) -> str:
        return f"SigningKey(kid={self.kid!r}, alg={self.alg.name})"

    def sign(self, message: bytes) -> bytes:
        if isinstance(self.secret, Ed25519PrivateKey):
            return self.secret.sign(message)
        return hmac.digest(self.secret, message, "sha256")


@dataclass(frozen=True, slots=True)
class VerifyKey:
    """What an edge holds: an Ed25519 public key, or the HMAC secret in single-trust mode."""

    kid: str
    alg: Alg
    key: Ed25519PublicKey | bytes

    def __repr__(self) -> str:
        return f"VerifyKey(kid={self.kid!r}, alg={self.alg.name})"

    def material(self) -> bytes:
        """The key itself, comparable across reloads (a kid republished with other material
        is a retirement of the old key)."""
        if isinstance(self.key, Ed25519PublicKey):
            return self.key.public_bytes_raw()
        return self.key

    def verify(self, message: bytes, signature: bytes) -> None:
        """Raise :class:`TokenBadSignature` unless ``signature`` is valid for ``message``."""
        if isinstance(self.key, Ed25519PublicKey):
            if len(signature) != 64:
                raise TokenBadSignature("ed25519 signature length")
            try:
                self.key.verify(signature, message)
            except InvalidSignature:
                raise TokenBadSignature("ed25519") from None
            return
        expected = hmac.digest(self.key, message, "sha256")  # one-shot C path: no HMAC object
        if not hmac.compare_digest(expected, signature):
            raise TokenBadSignature("hmac")


class Envelope(NamedTuple):
    """A parsed, not yet verified, token.  (A NamedTuple: built on every cache miss, and a
    frozen dataclass's per-field ``object.__setattr__`` costs microseconds there.)"""

    type: TokenType
    alg: Alg
    kid: str
    iat: int
    exp: int
    fields: bytes  # the type-specific tail, parsed by pointer.py / grant.py
    signed: bytes  # SIGNING_CONTEXT + body
    signature: bytes


def encode(type_: TokenType, key: SigningKey, iat: int, exp: int, fields: bytes) -> str:
    if _KID_RE.fullmatch(key.kid) is None:
        raise ValueError("kid must match [A-Za-z0-9_-]{1,32}")
    kid = key.kid.encode("ascii")
    body = struct.pack(">BBBB", VERSION, type_, key.alg, len(kid)) + kid
    body += struct.pack(">QQ", iat, exp) + fields
    token = b64url_encode(body) + "." + b64url_encode(key.sign(SIGNING_CONTEXT + body))
    if len(token) > MAX_TOKEN_CHARS:
        raise ValueError("token longer than any verifier accepts; shorten the ids")
    return token


def parse_unverified(token: str) -> Envelope:
    """Split and decode a token WITHOUT checking its signature."""
    if len(token) > MAX_TOKEN_CHARS:
        raise TokenMalformed("token too long")
    body_b64, dot, sig_b64 = token.partition(".")
    if not dot or not body_b64 or not sig_b64:
        raise TokenMalformed("not body.signature")
    try:
        body = b64url_decode(body_b64)
        signature = b64url_decode(sig_b64)
    except ValueError as exc:
        raise TokenMalformed(str(exc)) from None
    if len(body) < 4 + 1 + 16:
        raise TokenMalformed("body too short")
    version, type_byte, alg_byte, kid_len = body[0], body[1], body[2], body[3]
    if version != VERSION:
        raise TokenMalformed(f"version {version}")
    try:
        type_ = TokenType(type_byte)
        alg = Alg(alg_byte)
    except ValueError:
        raise TokenMalformed("unknown type or alg") from None
    if not 1 <= kid_len <= MAX_KID_LEN or len(body) < 4 + kid_len + 16:
        raise TokenMalformed("kid length")
    kid = body[4 : 4 + kid_len].decode("latin-1")
    if _KID_RE.fullmatch(kid) is None:
        raise TokenMalformed("kid syntax")
    iat, exp = struct.unpack_from(">QQ", body, 4 + kid_len)
    return Envelope(type_, alg, kid, iat, exp, body[20 + kid_len :], SIGNING_CONTEXT + body, signature)


def verify(
    token: str,
    expected_type: TokenType,
    keys: dict[str, VerifyKey],
    now: float,
    *,
    leeway_s: int = DEFAULT_LEEWAY_S,
    max_lifetime_s: int,
) -> Envelope:
    """Parse and verify a token at time ``now``; raise a :class:`TokenError` leaf on failure.

    Order matters: nothing in the body is trusted before the signature
    checks out, and the key (found by kid) fixes the algorithm.
    """
    env = parse_unverified(token)
    key = keys.get(env.kid)
    if key is None:
        raise TokenUnknownKey(env.kid)
    if key.alg is not env.alg:
        raise TokenBadSignature(f"alg {env.alg.name} does not match key {key.alg.name}")
    key.verify(env.signed, env.signature)
    if env.type is not expected_type:
        raise TokenWrongType(env.type.name)
    if env.exp <= env.iat or env.exp - env.iat > max_lifetime_s:
        raise TokenMalformed("lifetime out of bounds")
    if env.iat > now + leeway_s:
        raise TokenNotYetValid(f"iat {env.iat} > now {now:.0f}")
    if env.exp <= now - leeway_s:
        raise TokenExpired(f"exp {env.exp} <= now {now:.0f}")
    return env


class FieldReader:
    """Reads the type-specific tail of a token, strictly: no short or trailing bytes."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def string(self) -> str:
        if self._pos >= len(self._data):
            raise TokenMalformed("truncated field")
        n = self._data[self._pos]
        start, end = self._pos + 1, self._pos + 1 + n
        if end > len(self._data):
            raise TokenMalformed("truncated field")
        self._pos = end
        try:
            return self._data[start:end].decode("utf-8")
        except UnicodeDecodeError:
            raise TokenMalformed("field not utf-8") from None

    def u16(self) -> int:
        if self._pos + 2 > len(self._data):
            raise TokenMalformed("truncated field")
        (value,) = struct.unpack_from(">H", self._data, self._pos)
        self._pos += 2
        return int(value)

    def u8(self) -> int:
        if self._pos >= len(self._data):
            raise TokenMalformed("truncated field")
        self._pos += 1
        return self._data[self._pos - 1]

    def raw(self) -> bytes:
        """A u8 length, then that many bytes, uninterpreted."""
        if self._pos >= len(self._data):
            raise TokenMalformed("truncated field")
        n = self._data[self._pos]
        start, end = self._pos + 1, self._pos + 1 + n
        if end > len(self._data):
            raise TokenMalformed("truncated field")
        self._pos = end
        return self._data[start:end]

    def raw16(self) -> bytes:
        """A u16 big-endian length, then that many bytes (an embedded token body)."""
        n = self.u16()
        if self._pos + n > len(self._data):
            raise TokenMalformed("truncated field")
        start = self._pos
        self._pos += n
        return self._data[start : self._pos]

    def end(self) -> None:
        if self._pos != len(self._data):
            raise TokenMalformed("trailing bytes")


def pack_string(value: str) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) > 255:
        raise ValueError("token field longer than 255 bytes")
    return bytes([len(raw)]) + raw


def pack_u16(value: int) -> bytes:
    return struct.pack(">H", value)


def pack_bytes(value: bytes) -> bytes:
    if len(value) > 255:
        raise ValueError("token field longer than 255 bytes")
    return bytes([len(value)]) + value
