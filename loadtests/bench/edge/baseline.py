"""The unauthorized reference servers the edge benchmark compares against
(``python -m loadtests.bench.edge.baseline --kind bytes|fileresponse``).

``--kind bytes`` (the ``baseline`` path) answers exactly as the edge's ``GET /m/{id}``
does once a request is allowed: the same app shell (the edge's error middleware) and the
edge's own :func:`cdn_auth.web_edge.serve_bytes` (Range/conditional plan, origin open and
size check per request, sendfile, the same response headers).  The representation's
validators (content-hash ETag, Last-Modified) are computed once at start-up, as a registry
record would carry them, so the route does only per-request work.  ``--kind
fileresponse`` is aiohttp's ``web.FileResponse``.  Neither authorizes or logs access.
"""

from __future__ import annotations

import argparse
import email.utils
import hashlib
import sys
from pathlib import Path

from aiohttp import web

from cdn_auth.web_edge import serve_bytes
from loadtests.bench.harness import HOST
from service_kernel.web_errors import error_middleware

from .bed import BASELINES


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench.edge.baseline")
    p.add_argument("--kind", choices=sorted(set(BASELINES.values())), default="bytes")
    p.add_argument("--file", type=Path, required=True)
    p.add_argument("--port", type=int, required=True)
    a = p.parse_args(argv)
    file: Path = a.file.resolve()
    size = file.stat().st_size
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    etag = f'"{digest[:32]}"'  # as Media.etag
    last_modified = email.utils.formatdate(int(file.stat().st_mtime), usegmt=True)

    async def fileresponse(_: web.Request) -> web.StreamResponse:
        return web.FileResponse(file)

    async def edge_bytes(request: web.Request) -> web.StreamResponse:
        return serve_bytes(
            request,
            lambda: file,
            size=size,
            etag=etag,
            last_modified=last_modified,
            content_type="video/mp4",
        )

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    if a.kind == "bytes":
        app = web.Application(middlewares=[error_middleware()], client_max_size=1024 * 1024)
        app.router.add_get("/m/{media_id}", edge_bytes)
    else:
        app = web.Application()
        app.router.add_get("/m/{media_id}", fileresponse)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host=HOST, port=a.port, access_log=None, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
