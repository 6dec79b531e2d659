"""Sealed messages: HPKE envelopes per recipient device, and message franking (format v1).

Envelope bytes (base64url in JSON)::

    offset  size  field
    0       1     version          0x01
    1       1     suite            0x01 x25519, 0x02 mlkem768-x25519
    2       ...   HPKE single-shot output (RFC 9180): enc || ciphertext

Suites (cryptography's ``hpke`` module; nothing assembled by hand):
``x25519`` = DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / ChaCha20-Poly1305;
``mlkem768-x25519`` = the ML-KEM-768 + X25519 hybrid KEM / HKDF-SHA256 /
ChaCha20-Poly1305.  The HPKE ``info`` binds everything an envelope must not
be moved across (RFC 9180 section 8.1 puts such context in ``info`` for the
single-shot API)::

    "pointer-dm/envelope/v1" 0x00 || suite || lp(conversation_id) || lp(sender)
        || lp(client_message_id) || lp(recipient_user) || lp(recipient_device)

where ``lp(x)`` is a u16 big-endian length and the UTF-8 bytes.  The
plaintext is canonical JSON ``{"fk","grant","media_id","text","v"}``.

Franking (after Facebook's message franking): the sender commits to the
content with a fresh key ``fk``; the server countersigns the commitment
with metadata it knows, so a recipient's report can be checked but not
forged, and the sender cannot deny it::

    commitment = HMAC-SHA256(fk, "pointer-dm/franking/v1" 0x00 || lp(cid) || lp(sender)
                             || lp(client_message_id) || content)
    countersig = HMAC-SHA256(server_key, "pointer-dm/countersign/v1" 0x00 || commitment
                             || lp(cid) || lp(sender) || lp(client_message_id) || u64(ts_ms))

``content`` is canonical JSON ``{"grant","media_id","text"}``.  See docs/protocol.md.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import struct
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.hpke import (
    AEAD,
    KDF,
    KEM,
    MLKEM768X25519PrivateKey,
    MLKEM768X25519PublicKey,
    Suite,
)

from service_kernel.encoding import b64url_decode, b64url_encode

from .sdk_errors import SdkError

VERSION = 0x01
INFO_LABEL = b"pointer-dm/envelope/v1\x00"
FRANKING_LABEL = b"pointer-dm/franking/v1\x00"
COUNTERSIGN_LABEL = b"pointer-dm/countersign/v1\x00"
MAX_ENVELOPE_BYTES = 16 * 1024
FK_BYTES = 32
#: ``ts_ms`` travels as an unsigned 64-bit integer; anything outside is refused, not packed.
MAX_TS_MS = 2**64 - 1

SUITES = {"x25519": 0x01, "mlkem768-x25519": 0x02}
SUITE_NAMES = {v: k for k, v in SUITES.items()}
PUBLIC_KEY_BYTES = {"x25519": 32, "mlkem768-x25519": 1184 + 32}
_HPKE = {
    "x25519": Suite(KEM.X25519, KDF.HKDF_SHA256, AEAD.CHACHA20_POLY1305),
    "mlkem768-x25519": Suite(KEM.MLKEM768_X25519, KDF.HKDF_SHA256, AEAD.CHACHA20_POLY1305),
}

_TAG_BYTES = 16  # ChaCha20-Poly1305
# The shortest plaintext: empty strings (2 bytes) are shorter than nulls (4 bytes).
_MIN_PAYLOAD = len(b'{"fk":"","grant":"","media_id":"","text":"","v":1}') + 43
_MIN_SEALED = {
    name: suite_kem.enc_length() + _TAG_BYTES + _MIN_PAYLOAD
    for name, suite_kem in (("x25519", KEM.X25519), ("mlkem768-x25519", KEM.MLKEM768_X25519))
}

PublicKey = x25519.X25519PublicKey | MLKEM768X25519PublicKey
PrivateKey = x25519.X25519PrivateKey | MLKEM768X25519PrivateKey


class EnvelopeError(SdkError, ValueError):
    """An envelope, key or franking value is malformed or does not verify (in the SDK's
    error tree, :mod:`dm.sdk_errors`)."""


def lp(value: str) -> bytes:
    raw = value.encode()
    if len(raw) > 0xFFFF:
        raise EnvelopeError("field too long")
    return struct.pack(">H", len(raw)) + raw


def canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# -- keys -----------------------------------------------------------------------------------


def parse_public_key(suite: str, raw: bytes) -> PublicKey:
    """Decode a published device key, or raise :class:`EnvelopeError` (wrong length/suite)."""
    if suite not in SUITES:
        raise EnvelopeError(f"unknown suite {suite!r}")
    if len(raw) != PUBLIC_KEY_BYTES[suite]:
        raise EnvelopeError(f"a {suite} public key is {PUBLIC_KEY_BYTES[suite]} bytes")
    try:
        if suite == "x25519":
            return x25519.X25519PublicKey.from_public_bytes(raw)
        return MLKEM768X25519PublicKey(
            mlkem.MLKEM768PublicKey.from_public_bytes(raw[:1184]),
            x25519.X25519PublicKey.from_public_bytes(raw[1184:]),
        )
    except ValueError as exc:
        raise EnvelopeError(f"bad {suite} public key") from exc


def fingerprint(suite: str, raw_public: bytes) -> str:
    """Short, human-comparable identity of a device key: 128 bits of SHA-256, hex in groups."""
    digest = hashlib.sha256(bytes([SUITES[suite]]) + raw_public).hexdigest()[:32]
    return " ".join(digest[i : i + 4] for i in range(0, 32, 4))


@dataclass(frozen=True)
class DeviceKey:
    """A device's private key (held by the SDK only, never sent)."""

    suite: str
    private: PrivateKey
    seed: bytes  # what is stored: x25519 raw (32) or ML-KEM seed (64) || x25519 raw (32)

    def __repr__(self) -> str:
        return f"DeviceKey(suite={self.suite!r})"

    @classmethod
    def generate(cls, suite: str = "x25519") -> DeviceKey:
        if suite == "x25519":
            return cls.from_seed(suite, secrets.token_bytes(32))
        if suite == "mlkem768-x25519":
            ml = mlkem.MLKEM768PrivateKey.generate()
            return cls.from_seed(suite, ml.private_bytes_raw() + secrets.token_bytes(32))
        raise EnvelopeError(f"unknown suite {suite!r}")

    @classmethod
    def from_seed(cls, suite: str, seed: bytes) -> DeviceKey:
        if suite == "x25519" and len(seed) == 32:
            return cls(suite, x25519.X25519PrivateKey.from_private_bytes(seed), seed)
        if suite == "mlkem768-x25519" and len(seed) == 96:
            private = MLKEM768X25519PrivateKey(
                mlkem.MLKEM768PrivateKey.from_seed_bytes(seed[:64]),
                x25519.X25519PrivateKey.from_private_bytes(seed[64:]),
            )
            return cls(suite, private, seed)
        raise EnvelopeError("bad device key seed")

    def public_bytes(self) -> bytes:
        if isinstance(self.private, x25519.X25519PrivateKey):
            return self.private.public_key().public_bytes_raw()
        ml = mlkem.MLKEM768PrivateKey.from_seed_bytes(self.seed[:64]).public_key()
        xk = x25519.X25519PrivateKey.from_private_bytes(self.seed[64:]).public_key()
        return ml.public_bytes_raw() + xk.public_bytes_raw()


# -- envelopes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Binding:
    """What an envelope is bound to; opening it anywhere else fails."""

    conversation_id: str
    sender: str
    client_message_id: str
    recipient_user: str
    recipient_device: str

    def info(self, suite: str) -> bytes:
        return (
            INFO_LABEL
            + bytes([SUITES[suite]])
            + lp(self.conversation_id)
            + lp(self.sender)
            + lp(self.client_message_id)
            + lp(self.recipient_user)
            + lp(self.recipient_device)
        )


@dataclass(frozen=True)
class Payload:
    media_id: str | None
    grant: str | None
    text: str | None
    franking_key: bytes

    def content(self) -> bytes:
        return canonical({"grant": self.grant, "media_id": self.media_id, "text": self.text})

    def encode(self) -> bytes:
        return canonical(
            {
                "fk": b64url_encode(self.franking_key),
                "grant": self.grant,
                "media_id": self.media_id,
                "text": self.text,
                "v": 1,
            }
        )

    @classmethod
    def decode(cls, raw: bytes) -> Payload:
        try:
            doc = json.loads(raw)
            fk = b64url_decode(doc["fk"])
            if doc.get("v") != 1 or len(fk) != FK_BYTES:
                raise EnvelopeError("payload version or franking key")
            fields = (doc.get("media_id"), doc.get("grant"), doc.get("text"))
        except (ValueError, KeyError, TypeError) as exc:
            raise EnvelopeError("malformed payload") from exc
        if not all(f is None or isinstance(f, str) for f in fields):
            raise EnvelopeError("malformed payload fields")
        return cls(fields[0], fields[1], fields[2], fk)


def seal(suite: str, recipient_public: bytes, binding: Binding, payload: Payload) -> bytes:
    key = parse_public_key(suite, recipient_public)
    ct = _HPKE[suite].encrypt(payload.encode(), key, info=binding.info(suite))
    return bytes([VERSION, SUITES[suite]]) + ct


def envelope_suite(envelope: bytes) -> str:
    """The suite an envelope claims, checking version and size (no decryption).

    An envelope shorter than the KEM's encapsulation plus the AEAD tag and
    the smallest payload cannot be genuine, so the server refuses it.
    """
    if len(envelope) < 2 or len(envelope) > MAX_ENVELOPE_BYTES:
        raise EnvelopeError("envelope size")
    if envelope[0] != VERSION or envelope[1] not in SUITE_NAMES:
        raise EnvelopeError("envelope version or suite")
    suite = SUITE_NAMES[envelope[1]]
    if len(envelope) < 2 + _MIN_SEALED[suite]:
        raise EnvelopeError("envelope shorter than any sealed payload")
    return suite


def open_envelope(key: DeviceKey, binding: Binding, envelope: bytes) -> Payload:
    if envelope_suite(envelope) != key.suite:
        raise EnvelopeError("envelope suite differs from the device key's")
    try:
        raw = _HPKE[key.suite].decrypt(envelope[2:], key.private, info=binding.info(key.suite))
    except (InvalidTag, ValueError) as exc:
        raise EnvelopeError("envelope does not open here (wrong key or binding)") from exc
    return Payload.decode(raw)


# -- franking ----------------------------------------------------------------------------------


def _frank_input(cid: str, sender: str, cmid: str, content: bytes) -> bytes:
    return FRANKING_LABEL + lp(cid) + lp(sender) + lp(cmid) + content


def commit(payload: Payload, cid: str, sender: str, cmid: str) -> bytes:
    return hmac.new(
        payload.franking_key, _frank_input(cid, sender, cmid, payload.content()), hashlib.sha256
    ).digest()


def check_commitment(commitment: bytes, payload: Payload, cid: str, sender: str, cmid: str) -> None:
    if not hmac.compare_digest(commit(payload, cid, sender, cmid), commitment):
        raise EnvelopeError("franking commitment does not match the content")


def countersign(
    server_key: bytes, commitment: bytes, cid: str, sender: str, cmid: str, ts_ms: int
) -> bytes:
    if not 0 <= ts_ms <= MAX_TS_MS:
        raise EnvelopeError("ts_ms out of range")
    msg = COUNTERSIGN_LABEL + commitment + lp(cid) + lp(sender) + lp(cmid) + struct.pack(">Q", ts_ms)
    return hmac.new(server_key, msg, hashlib.sha256).digest()


def check_countersignature(
    server_key: bytes, signature: bytes, commitment: bytes, cid: str, sender: str, cmid: str, ts_ms: int
) -> None:
    expected = countersign(server_key, commitment, cid, sender, cmid, ts_ms)
    if not hmac.compare_digest(expected, signature):
        raise EnvelopeError("countersignature does not verify")


def new_franking_key() -> bytes:
    return secrets.token_bytes(FK_BYTES)


# -- whole messages: what a client does around the primitives above -----------------------
# One definition for the async SDK (dm.client) and the gevent-based load test, which
# cannot share the SDK's event loop but must send byte-for-byte the same bodies.


def new_client_message_id() -> str:
    return "s_" + uuid.uuid4().hex


def new_payload(media_id: str | None, grant: str | None, text: str | None) -> Payload:
    return Payload(media_id, grant, text, new_franking_key())


def seal_body(
    cid: str,
    sender: str,
    sender_device: str,
    cmid: str,
    payload: Payload,
    devices: Mapping[str, Sequence[Mapping[str, Any]]],
) -> dict[str, Any]:
    """One envelope per device of every member but the sending device, and the commitment.

    ``devices`` maps user id to its published device keys (as
    ``GET /v1/users/{id}/devices`` returns them), the sender included.
    """
    envelopes = []
    for user, devs in devices.items():
        for d in devs:
            if user == sender and d["device_id"] == sender_device:
                continue
            binding = Binding(cid, sender, cmid, user, d["device_id"])
            ct = seal(d["suite"], b64url_decode(d["public_key"]), binding, payload)
            envelopes.append(
                {
                    "user_id": user,
                    "device_id": d["device_id"],
                    "suite": d["suite"],
                    "ciphertext": b64url_encode(ct),
                }
            )
    commitment = commit(payload, cid, sender, cmid)
    return {
        "client_message_id": cmid,
        "envelopes": envelopes,
        "franking_commitment": b64url_encode(commitment),
    }


def open_message(key: DeviceKey, user_id: str, device_id: str, message: Mapping[str, Any]) -> Payload:
    """Open this device's envelope and check the franking commitment; raise if either fails."""
    if not message.get("envelope"):
        raise EnvelopeError("no envelope for this device")
    binding = Binding(
        message["conversation_id"], message["sender"], message["client_message_id"], user_id, device_id
    )
    payload = open_envelope(key, binding, b64url_decode(message["envelope"]))
    check_commitment(
        b64url_decode(message["franking"]["commitment"]),
        payload,
        message["conversation_id"],
        message["sender"],
        message["client_message_id"],
    )
    return payload
