"""Nearest-neighbour lookup of 256-bit PDQ hashes by Hamming distance (multi-index hashing).

A PDQ hash is 256 bits; two images match when at most ``threshold`` bits
differ (31 is PDQ's customary "confident match" threshold, the one
ThreatExchange and HMA use).  Comparing a query with every hash of a 10^6
bank costs ~32 MB of memory traffic per lookup; multi-index hashing (Norouzi
et al., the scheme PDQ's own C++ ``mih-query`` uses) avoids it:

* the 256 bits are cut into ``bands`` bands of 16 bits;
* by the pigeonhole principle, two hashes within distance ``t`` agree to
  within ``t // bands`` bits on at least one band;
* so the candidates are the bank entries whose band value lies within that
  radius of the query's, on some band: a handful of buckets per band, read
  from a CSR table (per band: entry numbers sorted by band value, and the
  offset of each of the 65,536 values) with numpy, no Python loop per entry;
* every candidate is then verified with the exact 256-bit distance.

The search is exact (no false negatives) for any threshold.  Memory per
indexed hash: 32 bytes of hash + 4 bytes per band of entry numbers (64 with
16 bands), plus a fixed 16 x 65,537 x 4 bytes of offsets.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

from .pdq_hex import BITS, DEFAULT_THRESHOLD

__all__ = ["BITS", "DEFAULT_THRESHOLD", "PdqIndex", "distances", "to_words"]

BAND_BITS = 16
BANDS = BITS // BAND_BITS

U64 = npt.NDArray[np.uint64]


def to_words(hashes: Sequence[bytes]) -> U64:
    """Hashes (32 bytes each) as an (n, 4) array of big-endian 64-bit words."""
    if not hashes:
        return np.zeros((0, 4), dtype=np.uint64)
    buf = np.frombuffer(b"".join(hashes), dtype=">u8").reshape(len(hashes), 4)
    return buf.astype(np.uint64)


def distances(words: U64, query: U64) -> npt.NDArray[np.int64]:
    """Hamming distance of each row of ``words`` to the one row ``query``."""
    counts: npt.NDArray[np.int64] = np.bitwise_count(np.bitwise_xor(words, query)).sum(
        axis=1, dtype=np.int64
    )
    return counts


def _bands(words: U64) -> npt.NDArray[np.int64]:
    """(n, 16) band values: band b is bits [16b, 16b+16) counted from the first byte."""
    shifts = np.array([48, 32, 16, 0], dtype=np.uint64)
    parts = (words[:, :, None] >> shifts[None, None, :]) & np.uint64(0xFFFF)
    return parts.reshape(len(words), BANDS).astype(np.int64)


def _flip_masks(radius: int) -> npt.NDArray[np.int64]:
    """Every 16-bit mask of at most ``radius`` set bits (the probes around a band value)."""
    masks = [0]
    for r in range(1, radius + 1):
        masks += [sum(1 << b for b in combo) for combo in itertools.combinations(range(16), r)]
    return np.array(masks, dtype=np.int64)


class PdqIndex:
    """An immutable index over a list of PDQ hashes; ``search`` returns (position, distance)."""

    def __init__(self, hashes: Sequence[bytes], threshold: int = DEFAULT_THRESHOLD) -> None:
        if not 0 <= threshold < BITS:
            raise ValueError("threshold must be 0..255")
        self.threshold = threshold
        self.words = to_words(hashes)
        self._masks = _flip_masks(threshold // BANDS)
        n = len(self.words)
        bands = _bands(self.words)
        # CSR per band, laid end to end: entries sorted by band value (band b's run is
        # order[b*n:(b+1)*n]), and where each value's run starts in that flat array.
        self._order = np.empty(BANDS * n, dtype=np.uint32)
        self._offsets = np.empty((BANDS, (1 << BAND_BITS) + 1), dtype=np.int64)
        for b in range(BANDS):
            col = bands[:, b]
            self._order[b * n : (b + 1) * n] = np.argsort(col, kind="stable").astype(np.uint32)
            counts = np.bincount(col, minlength=1 << BAND_BITS)
            self._offsets[b, 0] = b * n
            np.cumsum(counts, out=self._offsets[b, 1:])
            self._offsets[b, 1:] += b * n
        self._band_rows = np.arange(BANDS, dtype=np.int64)[:, None]

    def __len__(self) -> int:
        return len(self.words)

    @property
    def nbytes(self) -> int:
        """Memory held by the index's arrays."""
        return int(self.words.nbytes + self._order.nbytes + self._offsets.nbytes)

    def search(self, query: bytes) -> list[tuple[int, int]]:
        """Positions (in construction order) within ``threshold`` of ``query``, with distances."""
        if not len(self.words):
            return []
        q = to_words([query])
        keys = _bands(q)[0][:, None] ^ self._masks[None, :]  # (bands, probes)
        starts = self._offsets[self._band_rows, keys].ravel()
        ends = self._offsets[self._band_rows, keys + 1].ravel()
        lengths = ends - starts
        total = int(lengths.sum())
        if total == 0:
            return []
        # Each run's slots: its start, plus a running index minus the run's place in the output.
        flat = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths) + np.arange(total)
        candidates = self._order[flat]
        d = distances(self.words[candidates], q)
        hit = d <= self.threshold
        # A hash close on several bands is a candidate several times; report it once.
        return sorted({int(i): int(x) for i, x in zip(candidates[hit], d[hit], strict=True)}.items())

    def search_many(self, queries: Iterable[bytes]) -> list[tuple[int, int]]:
        """The best distance per matched position over several queries (a video's frames)."""
        best: dict[int, int] = {}
        for q in queries:
            for pos, d in self.search(q):
                if d < best.get(pos, BITS + 1):
                    best[pos] = d
        return sorted(best.items())
