"""The delay relay: a userspace stand-in for netem on a host's link to Redis, and the
partition switch (``python -m loadtests.bench.hosts.relay``; SIGUSR1 cuts, SIGUSR2
heals)."""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import signal
import sys


class DelayRelay:
    """Forward TCP to ``target``, each direction delayed ``delay_s``, order kept.

    ``cut()`` black-holes every byte (connections stay open, nothing arrives: a
    partition as TCP sees it); ``heal()`` resets the connections that lived through
    it and forwards again, so clients reconnect as after a real outage.
    """

    def __init__(self, listen: tuple[str, int], target: tuple[str, int], delay_s: float) -> None:
        self.listen, self.target, self.delay_s = listen, target, delay_s
        self.cut_now = False
        self._conns: set[asyncio.StreamWriter] = set()

    def cut(self) -> None:
        self.cut_now = True

    def heal(self) -> None:
        for w in list(self._conns):
            w.transport.abort()
        self._conns.clear()
        self.cut_now = False

    async def serve(self) -> None:
        server = await asyncio.start_server(self._handle, *self.listen, reuse_address=True)
        async with server:
            await server.serve_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._conns |= {writer, up_w}
        try:
            await asyncio.gather(self._pipe(reader, up_w), self._pipe(up_r, writer))
        finally:
            for w in (writer, up_w):
                self._conns.discard(w)
                w.close()

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        queue: collections.deque[tuple[float, bytes]] = collections.deque()
        ready = asyncio.Event()
        loop = asyncio.get_running_loop()

        async def pump() -> None:
            while True:
                await ready.wait()
                while queue:
                    due, data = queue[0]
                    wait = due - loop.time()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    queue.popleft()
                    if not self.cut_now:
                        dst.write(data)
                ready.clear()

        task = asyncio.create_task(pump())
        try:
            while data := await src.read(65536):
                if self.cut_now:
                    continue  # the partition eats it
                queue.append((loop.time() + self.delay_s, data))
                ready.set()
            await asyncio.sleep(self.delay_s + 0.01)  # let the last bytes leave
        except (ConnectionError, OSError):
            pass
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                await task
            dst.close()


def main(argv: list[str] | None = None) -> int:
    """Relay ``--listen`` to ``--target`` with ``--delay-ms`` each way until interrupted."""
    p = argparse.ArgumentParser(prog="python -m loadtests.bench.hosts.relay")
    p.add_argument("--listen", required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--delay-ms", type=float, default=0.0)
    a = p.parse_args(argv)
    lh, lp = a.listen.rsplit(":", 1)
    th, tp = a.target.rsplit(":", 1)
    relay = DelayRelay((lh, int(lp)), (th, int(tp)), a.delay_ms / 1000)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, relay.cut)
        loop.add_signal_handler(signal.SIGUSR2, relay.heal)
        await relay.serve()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
