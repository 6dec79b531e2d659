"""The sealed benchmark's in-process costs (this process, one core; median of timeit
repeats on the process CPU clock): token mint and verify, seal and open per suite,
franking, envelope sizes."""

from __future__ import annotations

import os
import statistics
import time
import timeit
from collections.abc import Callable
from typing import Any

from cdn_auth import grant as grant_mod
from cdn_auth import pointer as pointer_mod
from dm import envelope
from loadtests.bench.tokens import TOKEN_TTL_S, Tokens, sample_payload
from service_kernel.encoding import b64url_encode

from .bed import say


def per_op_us(fn: Callable[[], object], repeats: int) -> float:
    """Median over ``repeats`` timeit repeats of the per-call CPU time, in microseconds.

    The timer is this process's CPU clock, not the wall clock: on a shared 2-core
    machine the scheduler's pauses would otherwise land in the figures.
    """
    timer = timeit.Timer(fn, timer=time.process_time)
    number, _ = timer.autorange()
    return round(statistics.median(t / number for t in timer.repeat(repeats, number)) * 1e6, 2)


def crypto_costs(suite: str, payload: envelope.Payload, repeats: int) -> dict[str, float]:
    """Seal to one device and open it, for one suite."""
    key = envelope.DeviceKey.generate(suite)
    public = key.public_bytes()
    binding = envelope.Binding("c_bench", "u_alice", "s_bench", "u_bob", "d_bob")
    sealed = envelope.seal(suite, public, binding, payload)
    return {
        "seal": per_op_us(lambda: envelope.seal(suite, public, binding, payload), repeats),
        "open": per_op_us(lambda: envelope.open_envelope(key, binding, sealed), repeats),
        "bytes": len(sealed),
        "b64_chars": len(b64url_encode(sealed)),
    }


def token_costs(tokens: Tokens, repeats: int) -> dict[str, float]:
    """Mint (the media API / the dm) and verify (the edge, on a cache miss) each token kind."""
    g, p, now = tokens.grant("g_bench"), tokens.pointer("msg_bench"), time.time()
    return {
        "grant_mint_us": per_op_us(lambda: tokens.grant("g_bench"), repeats),
        "pointer_mint_us": per_op_us(lambda: tokens.pointer("msg_bench"), repeats),
        "grant_verify_us": per_op_us(
            lambda: grant_mod.verify(g, tokens.keys, now, max_lifetime_s=TOKEN_TTL_S), repeats
        ),
        "pointer_verify_us": per_op_us(
            lambda: pointer_mod.verify(p, tokens.keys, now, max_lifetime_s=TOKEN_TTL_S), repeats
        ),
        "grant_chars": len(g),
        "pointer_chars": len(p),
    }


def franking_costs(payload: envelope.Payload, repeats: int) -> dict[str, float]:
    """The sender's commitment and the server's countersignature (HMAC-SHA256 each)."""
    server_key = os.urandom(32)
    commitment = envelope.commit(payload, "c_bench", "u_alice", "s_bench")
    return {
        "commit_us": per_op_us(
            lambda: envelope.commit(payload, "c_bench", "u_alice", "s_bench"), repeats
        ),
        "countersign_us": per_op_us(
            lambda: envelope.countersign(
                server_key, commitment, "c_bench", "u_alice", "s_bench", 1_700_000_000_000
            ),
            repeats,
        ),
    }


def micro(tokens: Tokens, repeats: int) -> dict[str, Any]:
    """Everything measured in-process, before any load runs."""
    payload = sample_payload(tokens)
    say(f"timing crypto and tokens in-process ({repeats} repeats each)")
    x, pq = crypto_costs("x25519", payload, repeats), crypto_costs("mlkem768-x25519", payload, repeats)
    return {
        **token_costs(tokens, repeats),
        **franking_costs(payload, repeats),
        "seal_us": x["seal"],
        "open_us": x["open"],
        "seal_pq_us": pq["seal"],
        "open_pq_us": pq["open"],
        "envelope_bytes": x["bytes"],
        "envelope_pq_bytes": pq["bytes"],
        "envelope_b64_chars": x["b64_chars"],
        "envelope_pq_b64_chars": pq["b64_chars"],
        "payload_bytes": len(payload.encode()),
    }
