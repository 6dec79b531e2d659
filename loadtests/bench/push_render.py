"""Push render benchmark: the dm's CPU to render one sealed group message for every device.

A sealed message carries one envelope per member device.  When it is pushed,
each device's WebSocket renders the message and picks its own envelope: the
dm used to parse the whole envelope map once *per device* (G members x D
devices parses of a G x D-entry map), and now parses it once per message
(``dm.delivery.envelopes_of``).  This measures both in one process, in
interleaved rounds, as CPU time per message (render + the frame's JSON, as
``dm.web_stream`` does for each socket):

``per_device``  the map parsed for every device (the cache cleared before each
                render: exactly the former ``json.loads`` per render)
``per_message`` the map parsed once per message (the shipped code path)

Envelopes are real (HPKE, ``--suite``), so their sizes are the real ones.
Each message's map is distinct, so every message's first render misses the
cache, as a new message does in production.
"""

from __future__ import annotations

import functools
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from dm import delivery, envelope
from loadtests.bench.harness import bench_parser
from service_kernel.encoding import b64url_encode


def build_messages(
    members: int, devices: int, suite: str, count: int
) -> tuple[list[dict[str, str]], list[tuple[str, str]]]:
    """``count`` distinct sealed messages, each with one real envelope per member device."""
    payload = envelope.Payload("m_bench", "g_bench", "look at this", envelope.new_franking_key())
    sockets = [(f"u_{m}", f"d_{d}") for m in range(members) for d in range(devices)]
    sealed = {}
    for user, dev in sockets:
        key = envelope.DeviceKey.generate(suite)
        binding = envelope.Binding("c_bench", "u_0", "s_bench", user, dev)
        sealed[f"{user}/{dev}"] = b64url_encode(
            envelope.seal(suite, key.public_bytes(), binding, payload)
        )
    messages = []
    for i in range(count):
        env = dict(sealed)
        env[f"u_0/d_{i}"] = f"x{i}"  # a distinct map per message: its first render misses
        messages.append(
            {
                "sender": "u_0",
                "kind": "sealed",
                "client_message_id": f"cm_{i}",
                "commitment": "c" * 43,
                "countersignature": "s" * 43,
                "ts_ms": "1700000000000",
                "envelopes": json.dumps(env),
            }
        )
    return messages, sockets


def push_one(fields: dict[str, str], sockets: list[tuple[str, str]], *, cached: bool) -> None:
    for reader, device in sockets:
        if not cached:
            delivery.envelopes_of.cache_clear()
        out = {
            "type": "message",
            "cursor": "1700000000000-0",
            "conversation_id": "c_bench",
            "message": delivery.render(None, "c_bench", "1700000000000-0", fields, reader, device),
        }
        json.dumps(out)


def cpu_us_per_message(fn: Callable[[dict[str, str]], None], messages: list[dict[str, str]]) -> float:
    t = time.process_time()
    for m in messages:
        fn(m)
    return (time.process_time() - t) / len(messages) * 1e6


def run(members: int, devices: int, suite: str, rounds: int, count: int) -> dict[str, Any]:
    messages, sockets = build_messages(members, devices, suite, count)
    results: dict[str, list[float]] = {"per_device": [], "per_message": []}
    for r in range(rounds):
        order = list(results) if r % 2 == 0 else list(reversed(results))
        for name in order:
            delivery.envelopes_of.cache_clear()
            results[name].append(
                cpu_us_per_message(
                    functools.partial(push_one, sockets=sockets, cached=name == "per_message"), messages
                )
            )
    med = {k: statistics.median(v) for k, v in results.items()}
    return {
        "benchmark": "push-render",
        "members": members,
        "devices": devices,
        "suite": suite,
        "sockets": len(sockets),
        "messages_per_round": count,
        "rounds": rounds,
        "envelope_map_bytes": len(messages[0]["envelopes"]),
        "cpu_us_per_message": {k: round(v, 1) for k, v in med.items()},
        "cpu_us_per_message_rounds": {k: [round(x, 1) for x in v] for k, v in results.items()},
        "ratio_per_message_vs_per_device": round(med["per_message"] / med["per_device"], 3),
        "statistic": "median of interleaved rounds, CPU time",
    }


def main(argv: list[str] | None = None) -> int:
    p = bench_parser("push-render", __doc__)
    p.add_argument("--members", type=int, default=16, help="group members (16)")
    p.add_argument("--devices", type=int, default=2, help="devices per member (2)")
    p.add_argument("--suite", choices=sorted(envelope.SUITES), default="x25519")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (5)")
    p.add_argument("--messages", type=int, default=40, help="messages per round (40)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    a = p.parse_args(argv)
    if min(a.members, a.devices, a.rounds, a.messages) < 1:
        p.error("--members, --devices, --rounds, --messages must be >= 1")
    doc = run(a.members, a.devices, a.suite, a.rounds, a.messages)
    if a.json:
        print(json.dumps(doc, indent=1))
        return 0
    c = doc["cpu_us_per_message"]
    print(
        f"sealed message to {doc['members']} members x {doc['devices']} devices "
        f"({doc['sockets']} sockets, envelope map {doc['envelope_map_bytes']} bytes, "
        f"{doc['suite']}); CPU per message, median of {doc['rounds']} interleaved rounds:"
    )
    print(f"  map parsed per device : {c['per_device']:10.1f} us")
    print(
        f"  map parsed per message: {c['per_message']:10.1f} us  "
        f"(x{doc['ratio_per_message_vs_per_device']:.3f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
