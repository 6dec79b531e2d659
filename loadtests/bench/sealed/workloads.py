"""What each HTTP workload of the sealed benchmark sends and what a good answer is, and
the preflight that checks every one answers so before anything is measured."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from dm import envelope
from loadtests.bench.conversations import Pair, message_body, send_path
from loadtests.bench.harness import BenchError, fetch
from loadtests.bench.pool import Pool
from loadtests.bench.probes import Sample, metric_sum
from loadtests.bench.tokens import TEXT, Tokens
from loadtests.bench.wrk import WrkRun, request_line
from service_kernel.encoding import b64url_decode, b64url_encode

from .bed import PREFLIGHT_BASE, RANGE_BYTES, RANGE_HEADER, SUITES, Bed, GrantRecords, say


@dataclass
class Workload:
    """One HTTP workload: its server, its request lines, and what a good answer is."""

    name: str
    server: str  # "edge" or "dm"
    pool: Pool
    expected_status: int
    expected_len: int = -1
    extra_header: str = "-"
    min_hint: float = 3000.0
    check: Callable[[list[Sample], list[Sample], WrkRun], list[str]] | None = None
    best_rps: float = 0.0


def sealed_line(pair: Pair, suite: str, tokens: Tokens, grants: GrantRecords, i: int) -> str:
    """A sealed video share to the recipient's one device, as ``DmClient.send_sealed`` builds it.

    Each line has its own client message id (the server's idempotency key for sealed
    sends), its own grant and its own franking key, so no two requests are alike.
    """
    assert pair.recipient_key is not None
    cmid, grant_id = f"s_{suite[:2]}_{i}", f"g_bench_{suite[:2]}_{i}"
    payload = envelope.Payload(
        tokens.media_id, tokens.grant(grant_id, sharer=pair.sender), TEXT, envelope.new_franking_key()
    )
    grants.note(grant_id, pair.sender)
    binding = envelope.Binding(pair.cid, pair.sender, cmid, pair.recipient, pair.recipient_device)
    ct = envelope.seal(suite, _public(pair), binding, payload)
    body = {
        "client_message_id": cmid,
        "grant_id": grant_id,
        "franking_commitment": b64url_encode(envelope.commit(payload, pair.cid, pair.sender, cmid)),
        "envelopes": [
            {
                "user_id": pair.recipient,
                "device_id": pair.recipient_device,
                "suite": suite,
                "ciphertext": b64url_encode(ct),
            }
        ],
    }
    return request_line(
        "POST",
        send_path(pair.cid),
        auth=f"Bearer {pair.sender_token}",
        body=json.dumps(body, separators=(",", ":")),
    )


_PUBLIC: dict[str, bytes] = {}


def _public(pair: Pair) -> bytes:
    """The recipient's public key bytes (derived once: ML-KEM derivation is not free)."""
    assert pair.recipient_key is not None
    if pair.recipient_device not in _PUBLIC:
        _PUBLIC[pair.recipient_device] = pair.recipient_key.public_bytes()
    return _PUBLIC[pair.recipient_device]


def plain_line(pair: Pair, i: int) -> str:
    """The same share in plain mode: the media id and caption, with an Idempotency-Key."""
    return request_line(
        "POST",
        send_path(pair.cid),
        auth=f"Bearer {pair.sender_token}",
        key=f"plain_{i}",
        body=message_body("media", pair.media_id, TEXT),
    )


def fetch_line(media_id: str, param: str, token: str) -> str:
    return request_line("GET", f"/m/{media_id}?{param}={token}")


def edge_check(
    reason: str, cache: str, *, first: bool
) -> Callable[[list[Sample], list[Sample], WrkRun], list[str]]:
    """The edge's view: no denials, an allow per response, and the cache as cold/warm as meant."""

    def check(before: list[Sample], after: list[Sample], raw: WrkRun) -> list[str]:
        def delta(name: str, **labels: str) -> float:
            return metric_sum(after, name, **labels) - metric_sum(before, name, **labels)

        out = []
        denied = delta("cdn_auth_decisions_total", outcome="deny")
        allowed = delta("cdn_auth_decisions_total", outcome="allow", reason=reason)
        hits = delta("cdn_auth_cache_lookups_total", cache=cache, result="hit")
        misses = delta("cdn_auth_cache_lookups_total", cache=cache, result="miss")
        if denied:
            out.append(f"the edge denied {denied:.0f} requests")
        if allowed < raw.ok:
            out.append(f"the edge allowed {allowed:.0f} by {reason} but {raw.ok} 206s arrived")
        if first and hits:
            out.append(f"{hits:.0f} {cache} cache hits in a first-fetch run")
        if not first and misses > 0.01 * (hits + misses):
            out.append(f"{misses:.0f} {cache} cache misses in a repeat-fetch run")
        return out

    return check


def dm_check(mode: str) -> Callable[[list[Sample], list[Sample], WrkRun], list[str]]:
    """The dm's view: every 201 counted as a new send of this mode, nothing replayed."""

    def check(before: list[Sample], after: list[Sample], raw: WrkRun) -> list[str]:
        def delta(replayed: str) -> float:
            return metric_sum(after, "dm_sends_total", mode=mode, replayed=replayed) - metric_sum(
                before, "dm_sends_total", mode=mode, replayed=replayed
            )

        new, replays = delta("false"), delta("true")
        out = []
        if replays:
            out.append(f"the dm replayed {replays:.0f} sends (a request was repeated)")
        if not raw.ok <= new <= raw.sent:
            out.append(f"the dm accepted {new:.0f} {mode} sends; wrk saw {raw.ok} 201s")
        return out

    return check


def pool(label: str, make: Callable[[int], str], *, once: bool = True) -> Pool:
    return Pool(label, make, say, once)


def send_workloads(bed: Bed) -> list[Workload]:
    """Grant minting on the media API, then one send workload per mode on the dm."""
    t, plain = bed.tokens, bed.pairs["plain"]
    grant_body = json.dumps({"media_id": t.media_id, "redeemers": 1})
    out = [
        Workload(
            "grant_mint_http",
            "edge",
            pool(
                "grant mint",
                lambda i: request_line(
                    "POST", "/v1/grants", auth=f"Bearer {bed.alice}", body=grant_body
                ),
                once=False,
            ),
            201,
        ),
        Workload(
            "send_plain",
            "dm",
            pool("plain send", lambda i: plain_line(plain[i % len(plain)], i)),
            201,
            min_hint=2000,
            check=dm_check("plain"),
        ),
    ]
    for suite, name in SUITES.items():
        out.append(
            Workload(
                name,
                "dm",
                pool(f"{suite} sealed send", _sealed_maker(bed.pairs[suite], suite, t, bed.grants)),
                201,
                min_hint=1500,
                check=dm_check("sealed"),
            )
        )
    return out


def fetch_workloads(bed: Bed) -> list[Workload]:
    """The edge's first and repeat fetches, by grant and by pointer."""
    t, m = bed.tokens, bed.tokens.media_id
    fixed_grant, fixed_pointer = t.grant("g_bench_repeat"), t.pointer("msg_repeat")

    def fetches(name: str, make: Callable[[int], str], reason: str, *, first: bool) -> Workload:
        return Workload(
            name,
            "edge",
            pool(name.replace("_", " "), make, once=first),
            206,
            RANGE_BYTES,
            RANGE_HEADER,
            min_hint=4000 if first else 3000,
            check=edge_check(reason, reason, first=first),
        )

    return [
        fetches(
            "fetch_first_grant",
            lambda i: fetch_line(m, "grant", t.grant(f"g_bench_first_{i}")),
            "grant",
            first=True,
        ),
        fetches(
            "fetch_first_pointer",
            lambda i: fetch_line(m, "pointer", t.pointer(f"msg_first_{i}")),
            "pointer",
            first=True,
        ),
        fetches(
            "fetch_repeat_grant", lambda i: fetch_line(m, "grant", fixed_grant), "grant", first=False
        ),
        fetches(
            "fetch_repeat_pointer",
            lambda i: fetch_line(m, "pointer", fixed_pointer),
            "pointer",
            first=False,
        ),
    ]


def workloads(bed: Bed) -> list[Workload]:
    """The eight HTTP workloads, in their first round's order."""
    return send_workloads(bed) + fetch_workloads(bed)


def _sealed_maker(
    pairs: list[Pair], suite: str, tokens: Tokens, grants: GrantRecords
) -> Callable[[int], str]:
    return lambda i: sealed_line(pairs[i % len(pairs)], suite, tokens, grants, i)


# -- preflight: every workload answers as it should before anything is measured -------------


def replay(
    port: int, line: str, default_auth: str, extra: str = "-"
) -> tuple[int, dict[str, str], bytes]:
    """Send one request line with http.client (setup only), as the Lua script would."""
    method, path, auth, key, body = line.split("\t", 4)
    headers = {"Authorization": auth or default_auth}
    if key:
        headers["Idempotency-Key"] = key
    if body:
        headers["Content-Type"] = "application/json"
    if extra != "-":
        name, _, value = extra.partition(":")
        headers[name] = value.strip()
    return fetch(port, method, path, headers=headers, body=body.encode() or None)


def preflight(bed: Bed, loads: list[Workload]) -> None:
    """One request per workload (not from the pools), then the end-to-end sealed checks."""
    bob = bed.bob_file.read_text().strip()
    for w in loads:
        line = w.pool.make(PREFLIGHT_BASE)
        bed.grants.flush()
        port = bed.edge.port if w.server == "edge" else bed.dm.port
        status, _, body = replay(port, line, bob, w.extra_header)
        if status != w.expected_status or (w.expected_len >= 0 and len(body) != w.expected_len):
            raise BenchError(
                f"{w.name}: expected {w.expected_status}, got {status} "
                f"({len(body)} bytes) {body[:300]!r}"
            )
    check_http_grant(bed, bob)
    for suite in SUITES:
        check_sealed_opens(bed, suite)


def check_http_grant(bed: Bed, bob: str) -> None:
    """A grant minted by ``POST /v1/grants`` opens the video for its first redeemer."""
    status, _, raw = fetch(
        bed.edge.port,
        "POST",
        "/v1/grants",
        headers={"Authorization": f"Bearer {bed.alice}", "Content-Type": "application/json"},
        body=json.dumps({"media_id": bed.tokens.media_id, "redeemers": 1}).encode(),
    )
    if status != 201:
        raise BenchError(f"POST /v1/grants answered {status}: {raw[:300]!r}")
    token = json.loads(raw)["grant"]
    status, _, body = fetch(
        bed.edge.port,
        "GET",
        f"/m/{bed.tokens.media_id}?grant={token}",
        headers={"Authorization": bob, "Range": RANGE_HEADER.split(": ")[1]},
    )
    if status != 206 or len(body) != RANGE_BYTES:
        raise BenchError(f"a grant from POST /v1/grants did not fetch: {status} {body[:200]!r}")


def check_sealed_opens(bed: Bed, suite: str) -> None:
    """The recipient reads the preflight's sealed message and opens it, franking included."""
    pair = bed.pairs[suite][PREFLIGHT_BASE % len(bed.pairs[suite])]
    assert pair.recipient_key is not None
    status, _, raw = fetch(
        bed.dm.port,
        "GET",
        send_path(pair.cid),
        headers={"Authorization": f"Bearer {pair.recipient_token}"},
    )
    messages = json.loads(raw).get("messages", []) if status == 200 else []
    if not messages:
        raise BenchError(f"{suite}: the recipient sees no sealed message ({status})")
    msg = messages[-1]
    binding = envelope.Binding(
        pair.cid, msg["sender"], msg["client_message_id"], pair.recipient, pair.recipient_device
    )
    try:
        payload = envelope.open_envelope(pair.recipient_key, binding, b64url_decode(msg["envelope"]))
        envelope.check_commitment(
            b64url_decode(msg["franking"]["commitment"]),
            payload,
            pair.cid,
            msg["sender"],
            msg["client_message_id"],
        )
    except envelope.EnvelopeError as exc:
        raise BenchError(f"{suite}: the recipient could not open the envelope: {exc}") from exc
    if payload.media_id != bed.tokens.media_id or payload.text != TEXT:
        raise BenchError(f"{suite}: the opened payload differs from what was sealed")
