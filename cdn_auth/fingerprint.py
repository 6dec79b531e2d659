"""The hashes a hosted file is matched on: MD5 and SHA-256 (exact), PDQ (perceptual).

These are the signal types hash-sharing programmes exchange (ThreatExchange
``video_md5``, ``video_sha256``, ``pdq``).  Images get one PDQ hash; videos
get one per sampled keyframe, decoded in-process with PyAV (FFmpeg's
libraries, shipped in the ``av`` wheel) and hashed with ``pdqhash`` (Meta's
reference PDQ C++ code).  A video matches a PDQ bank entry when any sampled
keyframe does: the keyframe form of vPDQ, which compares frame hashes the
same way.  Frames of low PDQ quality (flat, near-black) are skipped, as PDQ
advises, because they match each other regardless of content.

Every file is offered to the decoder, whatever content type its uploader
declared: the type is the uploader's word, and a player plays the container
it finds (a video declared ``audio/mp4`` is still a video).  A file with no
video stream (audio, or bytes no demuxer recognises) gets no PDQ hash.

Sampling covers the whole length at a bounded cost.  The length is when the
last keyframe plays (found by seeking to the end, not read from the header,
which the uploader writes).  A video no longer than
``max_frames * frame_interval_s`` is read from the start, one keyframe per
``frame_interval_s``; a longer one is cut into ``max_frames`` equal windows
from the first keyframe to the last, and each window's first keyframe of
usable quality is hashed, reached by seeking (not by decoding what lies
before it).  Windows are visited coarse to fine
(start, middle, quarters, ...), so a file that exhausts the wall-clock budget
is still sampled across its length.  A file that cannot be decoded still
gets its exact hashes.
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


def fingerprint_file(path: Path, limits: FingerprintLimits = FingerprintLimits()) -> Fingerprint:
    """Hash a file on disk (blocking: run it in a worker thread).  The declared content type
    is deliberately not an argument: any file that decodes as frames is hashed as such."""
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            md5.update(chunk)
            sha.update(chunk)
    return Fingerprint(md5.hexdigest(), sha.hexdigest(), tuple(_pdq_frames(path, limits)))


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

    sampler = _Sampler(limits)
    try:
        span = _last_keyframe_s(path)
        with av.open(str(path)) as container:
            if not container.streams.video:
                return []
            stream = container.streams.video[0]
            stream.codec_context.skip_frame = "NONKEY"  # keyframes only: no inter-frame decoding
            if span is None or span <= limits.max_frames * limits.frame_interval_s:
                sampler.from_start(container, stream)
            else:
                sampler.spread(container, stream, span)
    except (av.FFmpegError, ValueError, OSError) as exc:
        log.info("no perceptual hash for %s: %s", path.name, exc)
    return sampler.out


class _Sampler:
    """The PDQ hashes of one file's sampled keyframes, within the limits' count and budget."""

    def __init__(self, limits: FingerprintLimits) -> None:
        self.limits = limits
        self.deadline = time.monotonic() + limits.budget_s
        self.out: list[str] = []

    def done(self) -> bool:
        return len(self.out) >= self.limits.max_frames or time.monotonic() > self.deadline

    def take(self, frame: Any) -> bool:
        """Hash ``frame``; True if it was of usable quality (kept, unless a duplicate)."""
        digest, quality = pdq_of_rgb(frame.to_ndarray(format="rgb24"))
        if quality < PDQ_MIN_QUALITY:
            return False
        if digest not in self.out:
            self.out.append(digest)
        return True

    def from_start(self, container: Any, stream: Any) -> None:
        """Short media (or of unknown length): one keyframe per interval from the start."""
        last_t: float | None = None
        for frame in container.decode(stream):
            t = float(frame.time or 0.0)
            if last_t is not None and t - last_t < self.limits.frame_interval_s:
                continue
            last_t = t
            self.take(frame)
            if self.done():
                return

    def spread(self, container: Any, stream: Any, span: float) -> None:
        """Long media: the first usable keyframe of each of ``max_frames`` equal windows, the
        first starting at 0 and the last at ``span`` (the last keyframe)."""
        n = self.limits.max_frames
        step = span / max(1, n - 1)
        tb = float(stream.time_base)
        start = float(stream.start_time or 0) * tb
        for i in _coarse_to_fine(n):
            lo, hi = i * step, (i + 1) * step
            # Backward: to the keyframe at or before the window's start, so the window's own
            # first keyframe is at most one more keyframe decode away.
            container.seek(int((start + lo) / tb), stream=stream, backward=True)
            for frame in container.decode(stream):
                t = float(frame.time or 0.0) - start
                if t >= hi or self.done():
                    break
                if t >= lo - 1e-6 and self.take(frame):
                    break
            if self.done():
                return


def _last_keyframe_s(path: Path) -> float | None:
    """When the last keyframe plays, from the stream's start: one seek to the end and one
    keyframe decode (on a container of its own, so sampling starts from a clean state).
    Read from the index players play by, not from the header's stated duration, which an
    uploader can set to anything (a 40 s video stating 5 s would otherwise be read from the
    start only).  None if there is no video, or it cannot seek: then it is read from the
    start."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return None
            stream = container.streams.video[0]
            stream.codec_context.skip_frame = "NONKEY"
            start = float((stream.start_time or 0) * (stream.time_base or 0))
            container.seek(_END, stream=stream, backward=True)
            for frame in container.decode(stream):
                return float(frame.time or 0.0) - start
    except (av.FFmpegError, ValueError, OSError):
        return None
    return None


#: A timestamp past the end of any file (in stream units): a backward seek to it lands on
#: the last keyframe.
_END = 2**62


def _coarse_to_fine(n: int) -> list[int]:
    """0..n-1 in bit-reversed order (0, n/2, n/4, 3n/4, ...): every prefix is spread evenly."""
    bits = max(1, (n - 1).bit_length())
    return sorted(range(n), key=lambda i: int(format(i, f"0{bits}b")[::-1], 2))
