"""The floor under a send: the dm's serving stack doing nothing but a send's round trips.

``python -m loadtests.bench.dm.floor --port P --redis-url URL --round-trips R`` serves
``POST /v1/conversations/{cid}/messages`` on the same pieces as ``python -m dm serve``
(aiohttp's server and its access-log class, the same event loop, GC tuning and
redis-py client from :func:`service_kernel.redis_client.connect`) and, per request: reads
the body, parses the JSON, makes ``R`` sequential Redis round trips (a one-line script on
a key in the conversation's slot, as the send's own scripts are), and answers 201 with a
JSON body of a send's size.  No session check, no rights, no product logic.

``bench dm`` runs the same wrk request file against two of these, with 0 round trips
(what aiohttp costs per request) and with as many as a media send makes, and divides:
the dm's CPU per send as a multiple of the floor says how much of it is ours and how
much the stack's, on this machine, in the same run (docs/benchmarks.md, section 5).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from aiohttp import web

from loadtests.stack.children import HOST, child_process, wait_ready
from loadtests.stack.servers import Server
from service_kernel import logs
from service_kernel.redis_client import connect
from service_kernel.redis_process import free_port
from service_kernel.serving import new_event_loop, tune_gc

#: Counted as ``dm_sends_total{replayed="false"}`` so the send measurement reads it as the dm's.
METRIC = 'dm_sends_total{mode="floor",replayed="false"}'
_SCRIPT = "return redis.call('INCR', KEYS[1])"
MAX_BODY = 64 * 1024


def build(redis_url: str, round_trips: int) -> web.Application:
    redis = connect(redis_url)
    script = redis.register_script(_SCRIPT)
    accepted = 0

    async def send(request: web.Request) -> web.Response:
        nonlocal accepted
        cid = request.match_info["cid"]
        doc = json.loads(await request.content.read(MAX_BODY))
        n = 0
        for _ in range(round_trips):
            n = int(await script(keys=[f"floor:{{{cid}}}"], args=[]))
        accepted += 1
        body = {
            "id": f"{n}-0",
            "conversation_id": cid,
            "sender": "u_floor",
            "kind": "plain",
            "text": doc.get("text"),
            "media_id": doc.get("media_id"),
        }
        return web.json_response(body, status=201)

    async def ready(_: web.Request) -> web.Response:
        await redis.ping()
        return web.json_response({"ready": True})

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=f"{METRIC} {accepted}\n")

    async def close(_: web.Application) -> None:
        await redis.aclose()

    app = web.Application()
    app.router.add_post("/v1/conversations/{cid}/messages", send)
    app.router.add_get("/readyz", ready)
    app.router.add_get("/metrics", metrics)
    app.on_cleanup.append(close)
    return app


def start_floor(
    stack: contextlib.ExitStack, root: Path, dm: Server, round_trips: int, event_loop: str
) -> Server:
    """A floor server on the dm's own Redis (its keys are ``floor:{cid}``) and the dm's
    event loop, stopped with ``stack``; its CPU and its Redis's are read as the dm's are."""
    port, log = free_port(), root / f"floor-{round_trips}.log"
    cmd = [sys.executable, "-m", "loadtests.bench.dm.floor", "--host", HOST, "--port", str(port)]
    cmd += ["--redis-url", dm.redis_url, "--round-trips", str(round_trips)]
    cmd += ["--event-loop", event_loop]
    proc = stack.enter_context(child_process(cmd, log))
    wait_ready(f"floor-{round_trips}", proc, port, "/readyz", log)
    return Server(f"floor-{round_trips}", port, proc, log, dm.redis_url, dm.redis_pid)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench.dm.floor", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--redis-url", required=True)
    p.add_argument("--round-trips", type=int, default=0)
    p.add_argument("--event-loop", choices=["auto", "uvloop", "asyncio"], default="asyncio")
    a = p.parse_args(argv)
    logs.configure("WARNING")
    app = build(a.redis_url, a.round_trips)
    loop = new_event_loop(a.event_loop)
    tune_gc()
    try:
        web.run_app(
            app, host=a.host, port=a.port, loop=loop, access_log_class=logs.AccessLogger, print=None
        )
    finally:
        logs.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
