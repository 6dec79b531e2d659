"""The deterministic stand-in videos local runs serve: what matters to the edge is bytes and
ranges, so a hash chain (the same bytes every run, for a given seed) stands in for an MP4.

The load-test stack writes its video (:data:`VIDEO_BYTES` at :data:`ORIGIN_RELPATH` under
the edge's ingest root) before the services start; the load test's scenarios, the seeder,
the benchmarks' beds and the demo make theirs with :func:`clip_bytes` too.
"""

from __future__ import annotations

import hashlib

#: The load-test stack's video: its size, and its path under the edge's ingest root (the
#: ``origin_path`` the seeder registers).
VIDEO_BYTES = 1024 * 1024
ORIGIN_RELPATH = "loadtest/clip.mp4"


def clip_bytes(size: int = VIDEO_BYTES, seed: bytes = b"loadtests") -> bytes:
    """``size`` bytes of the chain that starts at ``sha256(seed)``."""
    out, block = bytearray(), hashlib.sha256(seed).digest()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:size])
