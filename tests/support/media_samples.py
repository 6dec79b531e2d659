"""Small real videos for the known-bad-media tests, encoded with PyAV (FFmpeg in the wheel).

Frames are smooth, seeded patterns (PDQ needs structure: noise hashes to
noise).  ``variant`` re-encodes the same scenes at another quality with a
little noise and a brightness shift, as a re-upload would: different bytes
(MD5/SHA-256 differ), the same perceptual hashes within PDQ's threshold.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

W, H, FPS = 160, 120, 10


def _frame(seed: int, t: int) -> np.ndarray:
    rng = np.random.default_rng(seed * 1000 + t // FPS)  # one scene per second
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    img = np.zeros((H, W, 3))
    for c in range(3):
        fx, fy = rng.uniform(0.02, 0.12, 2).tolist()
        ph = rng.uniform(0, 6.28)
        img[:, :, c] = 127 + 100 * np.sin(fx * x + ph) * np.cos(fy * y - ph)
    for _ in range(4):  # a few solid blocks
        x0, y0 = int(rng.integers(0, W - 40)), int(rng.integers(0, H - 30))
        img[y0 : y0 + 30, x0 : x0 + 40] = rng.integers(0, 255, 3)
    return img


def make_video(path: Path, seed: int, *, seconds: int = 3, variant: bool = False) -> bytes:
    """Write an MP4 (MPEG-4 part 2, a keyframe every second) and return its bytes."""
    noise = np.random.default_rng(seed + 99)
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("mpeg4", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.gop_size = FPS
        stream.bit_rate = 150_000 if variant else 400_000
        for t in range(seconds * FPS):
            img = _frame(seed, t)
            if variant:
                img = img * 0.95 + 6 + noise.normal(0, 4, img.shape)
            frame = av.VideoFrame.from_ndarray(np.clip(img, 0, 255).astype(np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path.read_bytes()


def make_spliced_video(path: Path, scenes: list[tuple[int, int]]) -> bytes:
    """One MP4 of ``(seed, seconds)`` parts back to back: each part's frames are those
    :func:`make_video` draws for that seed (a keyframe every second)."""
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("mpeg4", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.gop_size = FPS
        stream.bit_rate = 400_000
        for seed, seconds in scenes:
            for t in range(seconds * FPS):
                img = np.clip(_frame(seed, t), 0, 255).astype(np.uint8)
                for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path.read_bytes()
