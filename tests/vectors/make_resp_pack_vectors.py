"""Regenerate tests/vectors/resp_pack.json (run from the repo root).

Each vector is a command's arguments and the RESP bytes redis-py's own (Python) packer
makes of them: the bytes :class:`service_kernel.redis_connection.LeanConnection`, which
packs with hiredis, must match exactly.  Arguments are tagged by type, since JSON has no
bytes and no infinity: ``{"s": str}``, ``{"b": base64}``, ``{"i": int}``, ``{"f": repr}``.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from redis.asyncio.connection import Connection

OUT = Path(__file__).with_name("resp_pack.json")

COMMANDS: list[tuple[Any, ...]] = [
    ("GET", "k"),
    ("SET", "k", "v", "EX", 30),
    ("SCRIPT LOAD", "return 1"),  # a name with a space is two words, as redis-py splits it
    (b"CLIENT SETNAME", b"dm"),
    (
        "EVALSHA",
        "a" * 40,
        2,
        "dm:notify",
        "dm:inbox:{bob}",
        '{"type":"message","to":"bob"}',
        1_700_000_000_000,
    ),
    ("HSET", "media:{m_1}", "owner", "alice", "state", "ready"),
    ("SET", "", ""),  # empty arguments
    ("SET", "unicode", "caf\u00e9 \u2603 \U0001f600"),
    ("SET", b"bin\r\n\x00", b"\xff\xfe\r\n*3\r\n"),  # bytes that look like protocol
    ("ZRANGE", "inbox", 1_700_000_000_000, "+inf", "BYSCORE"),
    ("INCRBY", "n", -5),
    ("SET", "big", 2**70),
    ("SET", "f", 0.1),
    ("SET", "f", 1e20),
    ("SET", "f", 1e-07),
    ("SET", "f", 1 / 3),
    ("SET", "f", float("inf")),
    ("SET", "f", float("-inf")),
    ("SET", "f", -0.0),
    ("SET", "long", "x" * 10_000),  # past redis-py's buffer cutoff (6000): it sends it in pieces
]


def tag(v: Any) -> dict[str, Any]:
    if isinstance(v, bytes):
        return {"b": base64.b64encode(v).decode()}
    if isinstance(v, float):
        return {"f": repr(v)}
    if isinstance(v, int):
        return {"i": v}
    return {"s": v}


def main() -> None:
    conn = Connection()  # redis-py's packer: never connects
    vectors = [
        {
            "args": [tag(a) for a in cmd],
            "packed_b64": base64.b64encode(b"".join(conn.pack_command(*cmd))).decode(),
        }
        for cmd in COMMANDS
    ]
    lines = ",\n  ".join(json.dumps(v) for v in vectors)
    OUT.write_text(f'{{"source": "redis-py\'s Python RESP packer",\n "vectors": [\n  {lines}\n ]}}\n')


if __name__ == "__main__":
    main()
