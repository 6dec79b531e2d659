"""An edge with the real nginx front before it (deploy/nginx/edge.conf.template rendered by
cdn_auth/front_config.py, started by loadtests.stack.nginx.NginxFront), the edge feeding
the front's decision cache; used by test_nginx_front and the rights state machine."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from cdn_auth.app import FRONT_FEED
from cdn_auth.front_feed import FrontFeed
from loadtests.stack.nginx import NginxFront, NginxUnavailable, check_lua_module, find_nginx
from service_kernel.redis_process import free_port

from .services import Edge, EdgeFactory, wait_until


@dataclass
class Fronted:
    nginx: NginxFront
    edge: Edge

    @property
    def url(self) -> str:
        return self.nginx.url

    @property
    def feed(self) -> FrontFeed:
        return self.edge.app[FRONT_FEED]

    async def stats(self) -> dict[str, Any]:
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"http://127.0.0.1:{self.nginx.control_port}/_front/stats",
                headers={"X-Front-Secret": self.nginx.control_secret},
            ) as r,
        ):
            assert r.status == 200
            doc: dict[str, Any] = await r.json()
            return doc

    async def delivered(self, timeout_s: float) -> None:
        """Wait until every revocation the edge has applied so far is in nginx's memory.

        The edge stamps each revocation into the feed as it applies it (in the same loop
        turn as its tail's position moves); pushes go one at a time and a failed one is
        retried first.  So once nothing is queued, the next successful push to finish
        (the one in flight, or a later one) has delivered every stamp up to that point.
        """
        feed = self.feed
        await wait_until(lambda: feed.queued == 0, timeout_s)
        done = feed.pushes
        await wait_until(lambda: feed.pushes > done, timeout_s)


def nginx_missing() -> str | None:
    """Why the front cannot run here (nginx or its Lua module absent), or None."""
    try:
        find_nginx()
        check_lua_module()
    except NginxUnavailable as exc:
        return str(exc)
    return None


@contextlib.asynccontextmanager
async def fronted(
    make_edge: EdgeFactory,
    prefix: Path,
    *,
    auth_cache_s: int,
    edge_secret: str | None = None,
    **edge_overrides: Any,
) -> AsyncIterator[Fronted]:
    """An edge (``make_edge`` with ``edge_overrides``) and nginx before it.  ``edge_secret``
    other than the front's: the edge's pushes are refused (the purge path is down)."""
    control_port, secret = free_port(), secrets.token_urlsafe(24)
    edge = await make_edge(
        front_control_url=f"http://127.0.0.1:{control_port}/_front/revocations",
        front_control_secret=edge_secret or secret,
        **edge_overrides,
    )
    with NginxFront(
        prefix,
        port=free_port(),
        authorizer=f"127.0.0.1:{edge.client.port}",
        origin=edge.state.origin.root,
        auth_cache_s=auth_cache_s,
        control_port=control_port,
        control_secret=secret,
    ) as nginx:
        yield Fronted(nginx, edge)
