"""Names shared by the Locust scenarios, the driver and the report (no Locust import here).

Every measurement is one named entry ``"<scenario>:<phase>"``: the report,
the histograms and Locust's own statistics all key on that string, so a
phase means the same thing wherever it appears.
"""

from __future__ import annotations

from loadtests.stack.clip import VIDEO_BYTES

#: The ways of sharing a video that the report compares, in report order.  ``plain+scan``
#: is plain mode sent to a dm that scans every send (lists, media hashes): the latency of
#: keeping eyes on, beside the sealed modes' latency of keeping eyes off.
MODES = ("plain", "plain+scan", "sealed", "sealed-pq")
#: Modes whose sends go to the scanning dm (Targets.scan_dm_url).
SCANNED_MODES = frozenset({"plain+scan"})
#: HPKE suite of each sealed mode (dm.envelope names).
SUITE_OF = {"sealed": "x25519", "sealed-pq": "mlkem768-x25519"}
#: Conversation mode on the dm service.
CONVERSATION_MODE = {"plain": "plain", "plain+scan": "plain", "sealed": "sealed", "sealed-pq": "sealed"}
VIEW_PREFIX = "view-"
#: Share scenarios and the matching re-open-and-play scenarios.
SCENARIOS = (*MODES, *(VIEW_PREFIX + m for m in MODES))

#: Phases of a share, in the order they happen (the report stacks them in this order).
SHARE_PHASES = ("grant", "seal", "send", "delivery", "open", "first_byte", "segment")
#: Phases of a view (reading an already shared message and playing it).
VIEW_PHASES = ("read", "open", "first_byte", "segment")
TOTAL = "total"
PHASE_LABELS = {
    "grant": "grant (derived on the device)",
    "seal": "seal (client crypto)",
    "send": "send",
    "delivery": "delivery (send until pushed)",
    "open": "open (client crypto)",
    "read": "read",
    "first_byte": "first byte",
    "segment": "segment fetch",
    TOTAL: "whole share (from intended start)",
}
#: Phases that are client-side crypto, recorded "like a request" with this request type.
CRYPTO_PHASES = frozenset({"grant", "seal", "open"})
CRYPTO_REQUEST_TYPE = "crypto"

#: The stand-in video the seeder registers (the one the load-test stack serves at
#: ORIGIN_RELPATH); the player fetches a first range then segments.
FIRST_RANGE_BYTES = 64 * 1024
SEGMENT_BYTES = 128 * 1024
SEGMENTS = 3


def key(scenario: str, phase: str) -> str:
    return f"{scenario}:{phase}"


def split_key(entry: str) -> tuple[str, str]:
    scenario, _, phase = entry.rpartition(":")
    return scenario, phase


def mode_of(scenario: str) -> str:
    """The sharing mode a scenario exercises (``view-sealed`` -> ``sealed``)."""
    return scenario.removeprefix(VIEW_PREFIX)


def is_plain(scenario: str) -> bool:
    """Whether a scenario shares in a plain conversation (pointers, no grant or crypto)."""
    return CONVERSATION_MODE[mode_of(scenario)] == "plain"


def is_view(scenario: str) -> bool:
    return scenario.startswith(VIEW_PREFIX)


def phases_of(scenario: str) -> tuple[str, ...]:
    """The phases a scenario records (plain mode has no grant, seal or open)."""
    base = VIEW_PHASES if is_view(scenario) else SHARE_PHASES
    if is_plain(scenario):
        return tuple(p for p in base if p not in ("grant", "seal", "open"))
    return base


def video_ranges() -> list[tuple[int, int]]:
    """Inclusive byte ranges a player asks for: the first range, then the segments."""
    out = [(0, FIRST_RANGE_BYTES - 1)]
    start = FIRST_RANGE_BYTES
    for _ in range(SEGMENTS):
        out.append((start, min(start + SEGMENT_BYTES, VIDEO_BYTES) - 1))
        start += SEGMENT_BYTES
    return out
