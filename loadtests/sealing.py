"""Client-side sealed-mode crypto, synchronous: what dm.client's send_sealed/open_message do.

The SDK is asyncio; Locust runs on gevent, and the two do not mix in one
process.  The crypto itself (dm.envelope) is synchronous, so this module
repeats only the SDK's small assembly steps around it, byte for byte the
same request body and the same checks, with no I/O of its own (so the
load test can time the crypto apart from the HTTP calls).
"""

from __future__ import annotations

import uuid
from typing import Any

from cdn_auth.encoding import b64url_decode, b64url_encode
from dm import envelope


def new_client_message_id() -> str:
    return "s_" + uuid.uuid4().hex


def new_payload(media_id: str | None, grant: str | None, text: str | None) -> envelope.Payload:
    return envelope.Payload(media_id, grant, text, envelope.new_franking_key())


def seal_body(cid: str, sender: str, sender_device: str, cmid: str, payload: envelope.Payload,
              devices: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """One envelope per device of every member but the sending device, and the commitment.

    ``devices`` maps user id to its published device keys (as
    ``GET /v1/users/{id}/devices`` returns them), the sender included.
    """
    envelopes = []
    for user, devs in devices.items():
        for d in devs:
            if user == sender and d["device_id"] == sender_device:
                continue
            binding = envelope.Binding(cid, sender, cmid, user, d["device_id"])
            ct = envelope.seal(d["suite"], b64url_decode(d["public_key"]), binding, payload)
            envelopes.append({"user_id": user, "device_id": d["device_id"], "suite": d["suite"],
                              "ciphertext": b64url_encode(ct)})
    commitment = envelope.commit(payload, cid, sender, cmid)
    return {"client_message_id": cmid, "envelopes": envelopes,
            "franking_commitment": b64url_encode(commitment)}


def open_message(key: envelope.DeviceKey, user_id: str, device_id: str,
                 message: dict[str, Any]) -> envelope.Payload:
    """Open this device's envelope and check the franking commitment; raise if either fails."""
    if not message.get("envelope"):
        raise envelope.EnvelopeError("no envelope for this device")
    binding = envelope.Binding(message["conversation_id"], message["sender"],
                               message["client_message_id"], user_id, device_id)
    payload = envelope.open_envelope(key, binding, b64url_decode(message["envelope"]))
    envelope.check_commitment(b64url_decode(message["franking"]["commitment"]), payload,
                              message["conversation_id"], message["sender"],
                              message["client_message_id"])
    return payload
