"""``python -m loadtests web``: a local stack for the web client; prints its URL and waits.

Starts a private Redis, the edge and dm as their production entry points
(loadtests.stack.processes, ``web=True``: dev issuer on, browser playback on,
CORS for dm's origin), writes a sample MP4 to upload if ffmpeg is installed,
and runs until interrupted.  Open the URL in two windows that do not share
cookies (a normal and a private window, or two browser profiles): one edge
media cookie stands for one user per browser profile.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from loadtests.sample_video import FfmpegUnavailable, make_video
from loadtests.stack.children import StackError
from loadtests.stack.processes import interrupt_on_signal, process_stack


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m loadtests web",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dir", type=Path, default=Path("var/web"), help="working directory")
    p.add_argument(
        "--exit-after-s",
        type=float,
        default=None,
        help="stop after this many seconds (for scripted checks)",
    )
    a = p.parse_args(argv)
    signal.signal(signal.SIGTERM, interrupt_on_signal)
    sample = a.dir.resolve() / "sample.mp4"
    try:
        with process_stack(a.dir, web=True) as st:
            print(f"Web client:  {st.dm_url}/app/", flush=True)
            print(f"Edge:        {st.edge_url}   (logs: {st.root}/edge-0.log)", flush=True)
            try:
                if not sample.exists():
                    make_video(sample)
                print(f"Sample clip to upload: {sample}", flush=True)
            except (FfmpegUnavailable, OSError) as exc:
                print(f"(no sample clip: {exc}; upload any MP4)", flush=True)
            print(
                "Open the URL in two windows that do not share cookies (e.g. a normal and a "
                "private window); create a user in each. Ctrl-C stops.",
                flush=True,
            )
            deadline = None if a.exit_after_s is None else time.monotonic() + a.exit_after_s
            while deadline is None or time.monotonic() < deadline:
                st.check_alive()
                time.sleep(0.5)
    except KeyboardInterrupt:
        return 0
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
