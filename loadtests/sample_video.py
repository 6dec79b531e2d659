"""A real, playable sample video made with ffmpeg: H.264/AAC MP4, or VP9/Opus WebM.

The browser tests and the web demo need media a ``<video>`` element really
decodes (the other demos use stand-in bytes).  A noise filter keeps the
bitrate near its target, so the file is large enough that a player fetches it
in several Range requests instead of one.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Literal

Container = Literal["mp4", "webm"]
CONTENT_TYPES: dict[str, str] = {"mp4": "video/mp4", "webm": "video/webm"}


class FfmpegUnavailable(RuntimeError):
    pass


def find_ffmpeg() -> str:
    path = shutil.which("ffmpeg")
    if path is None:
        raise FfmpegUnavailable("ffmpeg is not installed (Debian: apt-get install ffmpeg)")
    return path


def make_video(
    path: Path,
    *,
    seconds: int = 20,
    kbps: int = 1500,
    size: str = "640x360",
    container: Container = "mp4",
    timeout_s: float = 120.0,
) -> Path:
    """Write a ``seconds``-long test pattern with a tone to ``path`` and return it."""
    codecs = {
        "mp4": [
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-profile:v",
            "baseline",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-b:a",
            "64k",
            "-movflags",
            "+faststart",
        ],
        "webm": [
            "-c:v",
            "libvpx-vp9",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "libopus",
            "-b:a",
            "64k",
        ],
    }[container]
    args = [
        find_ffmpeg(),
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostdin",
        "-y",
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size={size}:rate=25",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        str(seconds),
        "-vf",
        "noise=alls=25:allf=t",
        "-b:v",
        f"{kbps}k",
        "-maxrate",
        f"{kbps}k",
        "-bufsize",
        f"{2 * kbps}k",
        "-g",
        "50",
        *codecs,
        str(path),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(args, check=True, timeout=timeout_s, capture_output=True)
    return path
