"""Accepting a sealed message: envelopes for exactly the conversation's current devices.

The server sees metadata only: who sends to which conversation, the
envelopes' sizes and suites, the franking commitment.  It checks the
envelope set against the device directory (409 listing missing and extra
devices, as Signal's mismatched-devices answer does) and countersigns the
commitment with the conversation, sender, client message id and time.
"""

from __future__ import annotations

import json
import time
from typing import Any

from cdn_auth.grant_store import grant_sharer
from cdn_auth.session import Session
from service_kernel.encoding import Base64Error, b64url_decode, b64url_encode
from service_kernel.errors import InvalidField
from service_kernel.ids import check_id

from . import envelope
from .errors import DeviceMismatch, NotAllowed
from .store import Conversation
from .web_state import DmState

SEALED_FIELDS = {"client_message_id", "envelopes", "franking_commitment", "grant_id"}
_ENVELOPE_FIELDS = {"user_id", "device_id", "suite", "ciphertext"}


def _b64(value: object, field: str, max_bytes: int) -> bytes:
    if not isinstance(value, str) or len(value) > max_bytes * 4 // 3 + 4:
        raise InvalidField(f"{field} must be base64url of at most {max_bytes} bytes")
    try:
        return b64url_decode(value)
    except Base64Error:
        raise InvalidField(f"{field} is not canonical base64url") from None


async def sealed_fields(
    state: DmState, me: Session, conv: Conversation, doc: dict[str, Any]
) -> dict[str, str]:
    await state.check_not_blocked(me, conv)
    cmid = check_id(doc.get("client_message_id"), "client_message_id")
    commitment = _b64(doc.get("franking_commitment"), "franking_commitment", 32)
    if len(commitment) != 32:
        raise InvalidField("franking_commitment must be 32 bytes (HMAC-SHA256)")
    grant_id = doc.get("grant_id")
    if grant_id is not None:
        # dm revokes this grant on unsend, so it must be the sender's own: otherwise a
        # recipient could attach someone else's grant and revoke it for everybody.
        sharer = await grant_sharer(state.redis, check_id(grant_id, "grant_id"))
        if sharer != me.sub:
            raise NotAllowed("grant_id names a grant this sender did not mint")
    devices = await state.store.devices_of(sorted(conv.members))
    expected = {f"{u}/{d}" for u, devs in devices.items() for d in devs} - {f"{me.sub}/{me.dev}"}
    given = _check_envelopes(
        doc.get("envelopes"), devices, limit=len(conv.members) * state.settings.max_devices_per_user
    )
    missing, extra = sorted(expected - set(given)), sorted(set(given) - expected)
    if missing or extra or not expected:
        raise DeviceMismatch(missing, extra)
    ts_ms = int(time.time() * 1000)
    sig = envelope.countersign(state.franking_key, commitment, conv.id, me.sub, cmid, ts_ms)
    fields = {
        "sender": me.sub,
        "kind": "sealed",
        "client_message_id": cmid,
        "commitment": b64url_encode(commitment),
        "countersignature": b64url_encode(sig),
        "ts_ms": str(ts_ms),
        "envelopes": json.dumps(given, sort_keys=True),
    }
    if grant_id is not None:
        fields["grant_id"] = grant_id  # so a server-side unsend can revoke it
    return fields


def _check_envelopes(
    value: object, devices: dict[str, dict[str, dict[str, Any]]], *, limit: int
) -> dict[str, str]:
    if not isinstance(value, list) or len(value) > limit:
        raise InvalidField(f"envelopes must be a list of at most {limit}")
    out: dict[str, str] = {}
    for item in value:
        if not isinstance(item, dict) or set(item) != _ENVELOPE_FIELDS:
            raise InvalidField(f"each envelope has exactly {sorted(_ENVELOPE_FIELDS)}")
        user, device, suite = item["user_id"], item["device_id"], item["suite"]
        if not all(isinstance(v, str) and 0 < len(v) <= 255 for v in (user, device, suite)):
            raise InvalidField("envelope user_id, device_id and suite are strings")
        raw = _b64(item["ciphertext"], "ciphertext", envelope.MAX_ENVELOPE_BYTES)
        try:
            claimed = envelope.envelope_suite(raw)
        except envelope.EnvelopeError as exc:
            raise InvalidField(f"ciphertext: {exc}") from None
        registered = devices.get(user, {}).get(device)
        if claimed != suite or (registered is not None and registered["suite"] != suite):
            raise InvalidField(f"envelope for {user}/{device} is not in the device's suite")
        key = f"{user}/{device}"
        if key in out:
            raise InvalidField(f"two envelopes for {key}")
        out[key] = b64url_encode(raw)
    return out
