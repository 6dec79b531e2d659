"""Envelope and franking format v1 against tests/vectors/envelope_v1.json."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from dm import envelope
from service_kernel.encoding import b64url_decode

from ..support.paths import VECTORS_DIR

VECTORS = json.loads((VECTORS_DIR / "envelope_v1.json").read_text())
CASES = VECTORS["cases"]
SERVER_KEY = b64url_decode(VECTORS["server_franking_key"])


def _setup(case: dict[str, Any]) -> tuple[envelope.DeviceKey, envelope.Binding, bytes]:
    key = envelope.DeviceKey.from_seed(case["suite"], b64url_decode(case["device_seed"]))
    return key, envelope.Binding(**case["binding"]), b64url_decode(case["envelope"])


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["suite"])
def test_vector_opens_to_the_payload(case: dict[str, Any]) -> None:
    key, binding, sealed = _setup(case)
    assert envelope.fingerprint(case["suite"], key.public_bytes()) == case["fingerprint"]
    assert binding.info(case["suite"]).hex() == case["info_hex"]
    payload = envelope.open_envelope(key, binding, sealed)
    p = case["payload"]
    assert (payload.media_id, payload.grant, payload.text) == (p["media_id"], p["grant"], p["text"])
    assert payload.franking_key == b64url_decode(p["franking_key"])


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["suite"])
@pytest.mark.parametrize(
    "field", ["conversation_id", "sender", "client_message_id", "recipient_user", "recipient_device"]
)
def test_vector_fails_under_any_other_binding(case: dict[str, Any], field: str) -> None:
    key, binding, sealed = _setup(case)
    moved = dataclasses.replace(binding, **{field: "elsewhere"})
    with pytest.raises(envelope.EnvelopeError):
        envelope.open_envelope(key, moved, sealed)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["suite"])
def test_vector_franking_is_reproduced(case: dict[str, Any]) -> None:
    p = case["payload"]
    payload = envelope.Payload(p["media_id"], p["grant"], p["text"], b64url_decode(p["franking_key"]))
    b = case["binding"]
    commitment = envelope.commit(payload, b["conversation_id"], b["sender"], b["client_message_id"])
    assert commitment == b64url_decode(case["commitment"])
    envelope.check_countersignature(
        SERVER_KEY,
        b64url_decode(case["countersignature"]),
        commitment,
        b["conversation_id"],
        b["sender"],
        b["client_message_id"],
        case["ts_ms"],
    )


def test_wrong_suite_key_cannot_open() -> None:
    x, pq = CASES
    key = envelope.DeviceKey.from_seed(pq["suite"], b64url_decode(pq["device_seed"]))
    with pytest.raises(envelope.EnvelopeError):
        envelope.open_envelope(key, envelope.Binding(**x["binding"]), b64url_decode(x["envelope"]))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b[:-1],
        lambda b: b[:1] + b"\x07" + b[2:],
        lambda b: b"\x02" + b[1:],
        lambda b: b[:40] + bytes(1) + b[41:],
    ],
)
def test_tampered_envelope_rejected(mutate: Any) -> None:
    key, binding, sealed = _setup(CASES[0])
    with pytest.raises(envelope.EnvelopeError):
        envelope.open_envelope(key, binding, mutate(sealed))


def test_envelope_sizes_are_as_documented() -> None:
    sizes = {c["suite"]: c["envelope_bytes"] for c in CASES}
    assert sizes["mlkem768-x25519"] - sizes["x25519"] == 1120 - 32  # the hybrid's larger enc
