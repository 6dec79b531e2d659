"""The floor of the sealed overhead, from primitives measured in the same run.

Sealing a share adds, at the very least, what no design can avoid on the
critical path: the sender's seal, the recipient's open, the edge's check of
the derived grant on the first
fetch (the holder's signature: the capability's own ring signature is
checked once and cached), and the binding of the first redeemer (one Redis
round trip).  Measured at the start of a run, in-process, on the same
machine and under the same conditions as the load, their sum is the floor
the measured overhead (sealed minus plain, p50) is compared with: a
multiple far above 1 says the cost is design or measurement, not
cryptography.  The sender's device derives the share's grant from its
capability (one Ed25519 signature, protocol section 14) ahead of the share,
as a spare (dm.capabilities): that cost is measured and shown, but it is
not on the critical path and not in the sum.

Crypto and token costs are CPU time per call (the median of a few repeats
of a few dozen calls: the scheduler's pauses on a shared machine do not
count; well under a second in all); the binding round trip is wall-clock (it is a network round trip),
the median of ``BIND_CALLS`` calls of the edge's own binding script on
fresh grant keys in the run's Redis.  A remote target's Redis cannot be
reached: its floor leaves the round trip out and says so.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cdn_auth import capability as cap_mod
from cdn_auth import redis_keys
from cdn_auth.capability_gate import BIND_DERIVED
from cdn_auth.keyring import KeyRing
from cdn_auth.keyset import keys_from_jwks
from cdn_auth.token_format import Alg
from dm import envelope
from loadtests.bench.tokens import TEXT, TOKEN_TTL_S, Tokens
from loadtests.load.scenarios import SUITE_OF
from service_kernel.ids import new_id

FILE = "floor.json"
BIND_CALLS = 200
REPEATS = 5
#: Calls per repeat: enough to rise far above the CPU clock's resolution, few enough that
#: the whole floor takes well under a second of CPU before the load starts.
CALLS = 40
#: The cold floor: each primitive timed once after the process slept this long, the median
#: of COLD_SAMPLES such calls (about 2 s in all).  In a load test no client step runs in a
#: warm loop: each runs once, between waits on the network, after the other processes
#: sharing the cores have run; on a virtual machine whose idle vCPUs halt, such a call
#: costs several times a warm loop's (docs/benchmarks.md, 7.5.4).  The warm floor is what
#: the primitives cost; the cold one is what this machine charges for them one at a time.
COLD_GAP_S = 0.02
COLD_SAMPLES = 15


def cpu_us(fn: Callable[[], object], repeats: int = REPEATS, calls: int = CALLS) -> float:
    """Median over ``repeats`` of the per-call CPU time (µs) of ``calls`` calls."""
    fn()  # warm caches and lazy imports outside the timing
    out = []
    for _ in range(repeats):
        t = time.process_time()
        for _ in range(calls):
            fn()
        out.append((time.process_time() - t) / calls * 1e6)
    return round(statistics.median(out), 1)


def cold_us(fn: Callable[[], object], samples: int = COLD_SAMPLES, gap_s: float = COLD_GAP_S) -> float:
    """Median CPU µs of one call made after the process sat idle ``gap_s`` (see COLD_GAP_S)."""
    fn()
    out = []
    for _ in range(samples):
        time.sleep(gap_s)
        t = time.process_time()
        fn()
        out.append((time.process_time() - t) * 1e6)
    return round(statistics.median(out), 1)


Timer = Callable[[Callable[[], object]], float]


def crypto_us(suite: str, payload: envelope.Payload, timer: Timer) -> tuple[float, float]:
    """Seal to one device and open it (µs of CPU each), as the sealed benchmark's micro costs do."""
    key = envelope.DeviceKey.generate(suite)
    public = key.public_bytes()
    binding = envelope.Binding("c_floor", "u_alice", "s_floor", "u_bob", "d_bob")
    sealed = envelope.seal(suite, public, binding, payload)
    return (
        timer(lambda: envelope.seal(suite, public, binding, payload)),
        timer(lambda: envelope.open_envelope(key, binding, sealed)),
    )


class DerivedGrantCosts:
    """The device deriving a grant from its capability, and the edge's first check of it
    beyond the capability (whose ring signature it verified once, on the capability's
    first use, and caches: the check is given the cached claims, as the edge's gate is)."""

    def __init__(self, tokens: Tokens) -> None:
        holder = Ed25519PrivateKey.generate()
        self.now = now = time.time()
        cap = cap_mod.mint(
            tokens.signer,
            cap_id=new_id("c"),
            media_id=tokens.media_id,
            holder="u_alice",
            holder_key=holder.public_key().public_bytes_raw(),
            max_redeemers=1,
            max_grants=cap_mod.MAX_GRANTS,
            now=now,
            ttl_s=TOKEN_TTL_S,
        )
        self.derivation = cap_mod.Derivation(holder, cap)  # as a wallet holds it
        #: A derived grant: what a share carries.
        self.derived = self.derive()
        claims = cap_mod.verify(cap, tokens.keys, now, max_lifetime_s=TOKEN_TTL_S)
        self._cached: Callable[[str], cap_mod.Capability] = lambda _token: claims
        self._keys = tokens.keys

    def derive(self) -> str:
        return self.derivation.derive(max_redeemers=1, now=self.now, ttl_s=TOKEN_TTL_S)[0]

    def check(self) -> cap_mod.Derived:
        return cap_mod.verify_derived(
            self.derived,
            self._keys,
            self.now,
            max_lifetime_s=TOKEN_TTL_S,
            max_capability_lifetime_s=TOKEN_TTL_S,
            verified_capability=self._cached,
        )


def binding_rtt_us(redis_url: str, calls: int = BIND_CALLS, gap_s: float = 0.0) -> float:
    """Median wall-clock µs of the edge's binding script for a derived grant's first
    redeemer (BIND_DERIVED: the capability's grant set and the grant's redeemer set), each
    on a fresh capability (each call after ``gap_s`` idle: the cold figure)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        bind = client.register_script(BIND_DERIVED)
        expire_at = int(time.time()) + 60

        def call() -> None:
            cap_id, grant_id = new_id("c"), new_id("d")
            keys = [
                redis_keys.capability_grants_key(cap_id),
                redis_keys.derived_redeemers_key(cap_id, grant_id),
            ]
            t = time.perf_counter()
            bind(keys=keys, args=[grant_id, "u_floor", 1, cap_mod.MAX_GRANTS, expire_at, expire_at])
            samples.append((time.perf_counter() - t) * 1e6)

        samples: list[float] = []
        call()  # loads the script
        samples.clear()
        for _ in range(calls):
            if gap_s:
                time.sleep(gap_s)
            call()
        return round(statistics.median(samples), 1)
    finally:
        client.close()


def _floor_ms(parts: dict[str, float | None]) -> float:
    return round(sum(v for v in parts.values() if v is not None) / 1000.0, 3)


def measure(redis_url: str | None, repeats: int = REPEATS) -> dict[str, Any]:
    """Per sealed mode: seal, open, grant check, binding round trip (µs) and their sum (ms),
    warm and cold, and the derivation made ahead of the share (µs, not in the sum)."""
    with tempfile.TemporaryDirectory() as tmp:
        ring = KeyRing.load_or_create(Path(tmp) / "ring", Alg.ED25519)  # as the stack's edge
        tokens = Tokens(ring.signer(), keys_from_jwks(ring.verify_jwks()), new_id("m"))
    grants = DerivedGrantCosts(tokens)

    def warm(fn: Callable[[], object]) -> float:
        return cpu_us(fn, repeats)

    derive_us, check_us, cold_check_us = warm(grants.derive), warm(grants.check), cold_us(grants.check)
    rtt = binding_rtt_us(redis_url) if redis_url else None
    cold_rtt = binding_rtt_us(redis_url, COLD_SAMPLES, COLD_GAP_S) if redis_url else None
    payload = envelope.Payload(tokens.media_id, grants.derived, TEXT, envelope.new_franking_key())
    out: dict[str, Any] = {
        "measured_at": time.time(),
        "repeats": repeats,
        "cold_gap_ms": COLD_GAP_S * 1000.0,
        "cold_samples": COLD_SAMPLES,
        "derive_us": derive_us,
        "grant_check_us": check_us,
        "binding_rtt_us": rtt,
        "note": None if rtt is not None else "binding round trip not measured (remote target's Redis)",
        "modes": {},
    }
    for mode, suite in SUITE_OF.items():
        seal_us, open_us = crypto_us(suite, payload, warm)
        cold_seal, cold_open = crypto_us(suite, payload, cold_us)
        parts = {
            "seal_us": seal_us,
            "open_us": open_us,
            "grant_check_us": check_us,
            "binding_rtt_us": rtt,
        }
        cold = {
            "seal_us": cold_seal,
            "open_us": cold_open,
            "grant_check_us": cold_check_us,
            "binding_rtt_us": cold_rtt,
        }
        out["modes"][mode] = {
            **parts,
            "floor_ms": _floor_ms(parts),
            # Made ahead of the share (a spare grant): shown, not summed.
            "derive_us": derive_us,
            "derive_ahead": True,
            "cold": {**cold, "floor_ms": _floor_ms(cold)},
        }
    return out


def save(run_dir: Path, doc: dict[str, Any]) -> None:
    (run_dir / FILE).write_text(json.dumps(doc, indent=1))


def load(run_dir: Path) -> dict[str, Any]:
    path = run_dir / FILE
    return dict(json.loads(path.read_text())) if path.exists() else {}


def against(floor: dict[str, Any], modes: dict[str, Any]) -> dict[str, Any]:
    """Each sealed mode's measured Δp50 next to its floor, as a multiple of it."""
    out = {}
    for mode, f in floor.get("modes", {}).items():
        d = (modes.get(mode) or {}).get("delta_p50_ms") or {}
        est = d.get("estimate")
        fl = float(f["floor_ms"])
        cold = (f.get("cold") or {}).get("floor_ms")
        out[mode] = {
            **f,
            "overhead_ms": est,
            "ci_low": d.get("ci_low"),
            "ci_high": d.get("ci_high"),
            "multiple": None if est is None or fl <= 0 else round(est / fl, 2),
            "cold_multiple": None if est is None or not cold else round(est / float(cold), 2),
        }
    return out
