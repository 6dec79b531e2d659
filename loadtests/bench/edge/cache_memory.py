"""Memory per cached pointer decision at the edge (``cache_bytes_per_entry``).

Runs the edge's real verification-and-cache path (:meth:`Authorizer.pointer`)
over ``n`` distinct pointers shaped like production traffic (claims repeat
across pointers as they do: a reader has many, a video is shared many times,
and tokens minted over a pointer lifetime spread their ``iat``), and divides
the Python heap growth measured by :mod:`tracemalloc` by ``n``.  Only the
tokens' cache entries stay alive, as in the server (the token strings are
dropped after each lookup, as a finished request drops them).

Measured in-process rather than as the server's RSS: RSS moves in allocator
arenas and with everything else the process does, so on a shared machine it
cannot resolve a few hundred bytes per entry.
"""

from __future__ import annotations

import gc
import tempfile
import time
import tracemalloc
from pathlib import Path

from cdn_auth import pointer
from cdn_auth.authorizer import Authorizer, AuthorizerConfig
from cdn_auth.keyring import VERIFY_JWKS_FILE, KeyRing
from cdn_auth.keyset import KeySet
from cdn_auth.metrics import Metrics
from cdn_auth.redemption import Redemptions
from cdn_auth.registry import MediaRegistry
from cdn_auth.revocation_view import RevocationTailer, RevocationView
from cdn_auth.session import JwksSource, SessionVerifier
from cdn_auth.token_format import Alg, SigningKey
from dm.identity import JWKS_FILE, DevIssuer
from service_kernel.redis_client import connect

#: Distinct readers, videos and conversations among the pointers, and the seconds their
#: minting spreads over (the default pointer lifetime).
READERS, VIDEOS, CONVERSATIONS, SPREAD_S = 2_000, 500, 5_000, 300


def cache_bytes_per_entry(n: int = 50_000) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        ring = KeyRing.create(Path(tmp) / "ring", Alg.ED25519)
        signer = ring.signer()
        sessions_dir = Path(tmp) / "sessions"
        DevIssuer.load_or_create(sessions_dir)
        # Never connected: the pointer path touches no Redis (only the constructors ask).
        idle = connect("redis://127.0.0.1:9/0")
        authorizer = Authorizer(
            AuthorizerConfig(3600, 5, 5.0, 30.0, n + 1),
            sessions=SessionVerifier(
                JwksSource(str(sessions_dir / JWKS_FILE)), issuer="x", audience="x"
            ),
            keys=KeySet(ring.path / VERIFY_JWKS_FILE),
            registry=MediaRegistry(idle),
            tailer=RevocationTailer(idle, RevocationView(3600)),
            metrics=Metrics(),
            redemptions=Redemptions(idle, 5),
        )
        now = time.time()
        authorizer.pointer(_mint(signer, 0, now))  # key set loaded, caches created
        # Minted before tracing starts, so minting's own allocations stay out of the figure.
        tokens = [_mint(signer, i, now) for i in range(n, 0, -1)]
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            while tokens:
                # A fresh copy, as each request parses its own: counted if the cache keeps it.
                authorizer.pointer(tokens.pop().encode().decode())
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert len(authorizer.pointer_cache) == n + 1
        return grown / n


def _mint(signer: SigningKey, i: int, now: float) -> str:
    iat = now - (i * 7919) % SPREAD_S
    return pointer.mint(
        signer,
        media_id=f"m_{(i * 31) % VIDEOS:020x}",
        sub=f"u_{i % READERS:020x}",
        conversation_id=f"c_{(i * 17) % CONVERSATIONS:020x}",
        message_id=f"{int(iat * 1000)}-{i % 7}",
        now=iat,
        ttl_s=SPREAD_S + 600,
    )


if __name__ == "__main__":
    print(f"cache_bytes_per_entry {cache_bytes_per_entry():.0f}")
