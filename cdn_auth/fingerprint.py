"""The hashes a hosted file is matched on: MD5 and SHA-256 (exact), PDQ (perceptual).

These are the signal types hash-sharing programmes exchange (ThreatExchange
``video_md5``, ``video_sha256``, ``pdq``).  Images get one PDQ hash; videos
get one per sampled keyframe, decoded in-process with PyAV (FFmpeg's
libraries, shipped in the ``av`` wheel) and hashed with ``pdqhash`` (Meta's
reference PDQ C++ code).  A video matches a PDQ bank entry when any sampled
keyframe does: the keyframe form of vPDQ, which compares frame hashes the
same way.  Frames of low PDQ quality (flat, near-black) are skipped, as PDQ
advises, because they match each other regardless of content.

Decoding is bounded: keyframes only, at most ``max_frames``, at most one per
``frame_interval_s`` of media time, and a wall-clock budget; a file that
cannot be decoded still gets its exact hashes.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CHUNK = 256 * 1024
#: PDQ's own advice: hashes of quality below 50 are too featureless to match on.
PDQ_MIN_QUALITY = 50


@dataclass(frozen=True, slots=True)
class Fingerprint:
    md5: str
    sha256: str
    pdq: tuple[str, ...]  # hex, one per sampled frame (none for audio or undecodable files)

    def signals(self) -> list[tuple[str, str]]:
        """As (signal_type, signal) pairs, the form banks hold."""
        return [("md5", self.md5), ("sha256", self.sha256), *(("pdq", h) for h in self.pdq)]


@dataclass(frozen=True, slots=True)
class FingerprintLimits:
    max_frames: int = 16
    frame_interval_s: float = 1.0
    budget_s: float = 10.0


def fingerprint_file(
    path: Path, content_type: str, limits: FingerprintLimits = FingerprintLimits()
) -> Fingerprint:
    """Hash a file on disk (blocking: run it in a worker thread)."""
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            md5.update(chunk)
            sha.update(chunk)
    pdq: tuple[str, ...] = ()
    if content_type.startswith(("video/", "image/")):
        pdq = tuple(_pdq_frames(path, limits))
    return Fingerprint(md5.hexdigest(), sha.hexdigest(), pdq)


def pdq_of_rgb(frame: Any) -> tuple[str, int]:
    """PDQ hash (64 hex digits) and quality of an RGB array.

    The bits are written in the order ``pdqhash`` returns them, first bit most
    significant: ThreatExchange's own hasher does the same, so our hashes and
    banks exported by ThreatExchange/HMA compare bit for bit."""
    import numpy as np
    import pdqhash  # imported on first use: see _pdq_frames

    bits, quality = pdqhash.compute(np.ascontiguousarray(frame))
    return np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes().hex(), int(quality)


def _pdq_frames(path: Path, limits: FingerprintLimits) -> list[str]:
    # PyAV loads FFmpeg's libraries (about a second on a busy machine): imported on the first
    # registration, not at process start, so edges and dm workers start (and respawn) fast.
    import av

    deadline = time.monotonic() + limits.budget_s
    out: list[str] = []
    last_t: float | None = None
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return []
            stream = container.streams.video[0]
            stream.codec_context.skip_frame = "NONKEY"
            for frame in container.decode(stream):
                t = float(frame.time or 0.0)
                if last_t is not None and t - last_t < limits.frame_interval_s:
                    continue
                last_t = t
                digest, quality = pdq_of_rgb(frame.to_ndarray(format="rgb24"))
                if quality >= PDQ_MIN_QUALITY and digest not in out:
                    out.append(digest)
                if len(out) >= limits.max_frames or time.monotonic() > deadline:
                    break
    except (av.FFmpegError, ValueError, OSError) as exc:
        log.info("no perceptual hash for %s: %s", path.name, exc)
    return out
