"""Regenerate tests/vectors/envelope_v1.json (run from the repo root).

HPKE encryption is randomized (a fresh ephemeral key per envelope), so these
are decryption vectors: fixed, public test keys and envelopes made once;
the test opens each and must recover the payload, and must fail to open it
under any other binding.  Franking values are deterministic and reproduced
exactly.  cryptography's single-shot HPKE API takes no AAD, so RFC 9180's
vectors (all of which use a non-empty AAD) cannot be replayed through it;
cryptography runs them in its own test suite.
"""

from __future__ import annotations

import json
from pathlib import Path

from dm import envelope
from service_kernel.encoding import b64url_encode

SEEDS = {"x25519": bytes(range(1, 33)), "mlkem768-x25519": bytes(range(1, 97))}
SERVER_KEY = bytes([7]) * 32
FK = bytes([9]) * 32


def main() -> None:
    cases = []
    for suite, seed in SEEDS.items():
        key = envelope.DeviceKey.from_seed(suite, seed)
        binding = envelope.Binding("c_vec", "u_alice", "s_vec1", "u_bob", "d_bob1")
        payload = envelope.Payload("m_vec", "grant-token", "hello, sealed", FK)
        sealed = envelope.seal(suite, key.public_bytes(), binding, payload)
        commitment = envelope.commit(payload, "c_vec", "u_alice", "s_vec1")
        cases.append(
            {
                "suite": suite,
                "device_seed": b64url_encode(seed),
                "public_key": b64url_encode(key.public_bytes()),
                "fingerprint": envelope.fingerprint(suite, key.public_bytes()),
                "binding": {
                    "conversation_id": "c_vec",
                    "sender": "u_alice",
                    "client_message_id": "s_vec1",
                    "recipient_user": "u_bob",
                    "recipient_device": "d_bob1",
                },
                "info_hex": binding.info(suite).hex(),
                "envelope": b64url_encode(sealed),
                "envelope_bytes": len(sealed),
                "payload": {
                    "media_id": "m_vec",
                    "grant": "grant-token",
                    "text": "hello, sealed",
                    "franking_key": b64url_encode(FK),
                },
                "commitment": b64url_encode(commitment),
                "countersignature": b64url_encode(
                    envelope.countersign(
                        SERVER_KEY, commitment, "c_vec", "u_alice", "s_vec1", 1_700_000_000_000
                    )
                ),
                "ts_ms": 1_700_000_000_000,
            }
        )
    doc = {
        "description": "Envelope and franking v1 vectors; see docs/protocol.md",
        "server_franking_key": b64url_encode(SERVER_KEY),
        "cases": cases,
    }
    out = Path(__file__).with_name("envelope_v1.json")
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
