"""The running dm and edge as the rights state machine drives them
(tests/integration/test_rights_stateful.py): the tokens users obtained, the people with
their WebSockets, and every access path as one call each, run on the services' own loop."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import aiohttp

from cdn_auth import redis_keys as cdn_keys
from dm import envelope
from dm.client import DmClient, DmClientError
from dm.notify import id_key
from service_kernel.stream_tail import decode_entry

from .front import Fronted
from .rights_model import Pointer
from .services import DmStack, wait_until

T = TypeVar("T")
STEP_TIMEOUT_S = 30.0


def pick(items: list[T], i: int) -> T:
    return items[i % len(items)]


@dataclass
class Tok:
    """A token some user obtained, with what it names (for the model)."""

    holder: str
    media: str
    url: str  # the edge URL (with the pointer in its query for pointers)
    pointer: Pointer | None = None
    grant: str | None = None  # grant id (the model's key)
    grant_token: str | None = None


@dataclass
class Person:
    client: DmClient
    frames: list[dict[str, Any]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    cursors: list[str] = field(default_factory=lambda: ["0-0"])


class Services:
    """The running stack, driven from hypothesis' thread through the services' own loop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        dm: DmStack,
        redis: Any,
        ring_path: Any,
        front: Fronted | None = None,
    ) -> None:
        self.loop, self.dm, self.redis, self.ring_path = loop, dm, redis, ring_path
        self.front = front  # nginx before the edge, where nginx is installed
        self.edge_url = str(dm.edge.client.make_url("")).rstrip("/")
        self.http: aiohttp.ClientSession | None = None
        self.people: dict[str, Person] = {}
        self.probe: DmClient | None = None
        self.probe_convs: dict[str, str] = {}  # user -> the probe's conversation with them
        self.syncs = 0

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(STEP_TIMEOUT_S * 4)

    # -- per example -------------------------------------------------------------------
    async def reset(self) -> None:
        await self.close_people()
        await self.redis.flushall()
        self.http = aiohttp.ClientSession()
        self.probe = await self._client(age="adult", region="GB")
        self.moderator = await self._client(age="adult", region="GB", roles=["moderator"])
        self.people, self.probe_convs, self.syncs = {}, {}, 0

    async def close_people(self) -> None:
        for p in self.people.values():
            if p.task is not None:
                p.task.cancel()
                await asyncio.gather(p.task, return_exceptions=True)
        if self.http is not None:
            await self.http.close()
            self.http = None

    async def _client(self, **kw: Any) -> DmClient:
        c = DmClient(self.dm.dm_url, http=self.http)
        await c.create_user(**kw)
        return c

    async def add_user(self, age: str, region: str) -> str:
        c = await self._client(age=age, region=region)
        c.use_device_key(envelope.DeviceKey.generate("x25519"))
        await c.publish_key()
        assert self.probe is not None
        conv = await self.probe.create_conversation([c.uid])
        self.probe_convs[c.uid] = conv["id"]
        person = Person(c)
        person.task = asyncio.create_task(self._listen(person))
        self.people[c.uid] = person
        await self.sync([c.uid])
        return c.uid

    async def _listen(self, person: Person) -> None:
        assert self.http is not None
        async with self.http.ws_connect(
            self.dm.dm_url + "/v1/stream", headers=bearer_of(person.client)
        ) as ws:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    return
                person.frames.append(json.loads(msg.data))

    async def sync(self, users: list[str]) -> None:
        """Wait until the edge has read every revocation (and, with nginx, pushed it to the
        front's decision cache) and each user's live socket has every event stored so far:
        a probe message sent now must arrive last."""
        newest = await self.redis.xrevrange(cdn_keys.REVOCATION_STREAM, count=1)
        if newest:
            target = id_key(decode_entry(*newest[0])[0])
            tailer = self.dm.edge.state.authorizer.tailer.stream
            await wait_until(
                lambda: tailer.last_id is not None and id_key(tailer.last_id) >= target, STEP_TIMEOUT_S
            )
            if self.front is not None:
                await self.front.delivered(STEP_TIMEOUT_S)
        marks = {}
        assert self.probe is not None
        for u in users:
            self.syncs += 1
            marks[u] = f"sync-{self.syncs}"
            await self.probe.send(self.probe_convs[u], text=marks[u])
        for u in users:
            frames = self.people[u].frames
            await wait_until(
                lambda f=frames, m=marks[u]: any(  # type: ignore[misc]
                    x.get("message", {}).get("text") == m for x in f
                ),
                STEP_TIMEOUT_S,
            )

    async def replay(self, uid: str, cursor: str) -> list[dict[str, Any]]:
        """Connect at ``cursor``; collect frames until a probe message sent after connecting."""
        assert self.http is not None and self.probe is not None
        person = self.people[uid]
        out: list[dict[str, Any]] = []
        async with self.http.ws_connect(
            self.dm.dm_url + "/v1/stream", params={"cursor": cursor}, headers=bearer_of(person.client)
        ) as ws:
            self.syncs += 1
            mark = f"sync-{self.syncs}"
            await self.probe.send(self.probe_convs[uid], text=mark)

            async def collect() -> None:
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        raise AssertionError(f"replay for {uid} closed early: {msg.type}")
                    frame = json.loads(msg.data)
                    if frame.get("message", {}).get("text") == mark:
                        return
                    out.append(frame)

            await asyncio.wait_for(collect(), STEP_TIMEOUT_S)
        return out

    async def status(self, call: Coroutine[Any, Any, Any]) -> tuple[int, Any]:
        try:
            return 200, await call
        except DmClientError as err:
            return err.status, None

    async def fetch(self, uid: str, tok: Tok, how: str) -> int:
        """One fetch with ``uid``'s session, by one of :data:`PATHS`: ``get`` (a 1-byte
        Range), ``head``, ``auth`` (the edge's answer to nginx), ``x-pointer`` (``get`` with
        the pointer in the ``X-Pointer`` header, not the query); ``front`` and
        ``front-x-pointer``: ``get`` and ``x-pointer`` through nginx (needs :attr:`front`)."""
        assert self.http is not None
        h = bearer_of(self.people[uid].client)
        if tok.grant_token:
            h["X-Grant"] = tok.grant_token
        url = urlsplit(tok.url)
        path = f"{url.path}?{url.query}" if url.query else url.path
        if how.endswith("x-pointer"):
            h["X-Pointer"] = parse_qs(url.query)["pointer"][0]
            path = url.path
        if how == "auth":
            h["X-Original-URI"] = path
            target, method = self.edge_url + "/auth", "GET"
        elif how.startswith("front"):
            assert self.front is not None, "no nginx front here"
            h["Range"] = "bytes=0-0"
            target, method = self.front.url + path, "GET"
        else:
            h["Range"] = "bytes=0-0"
            target, method = self.edge_url + path, how.upper() if how == "head" else "GET"
        async with self.http.request(method, target, headers=h) as resp:
            await resp.read()
            return resp.status


#: Every way a client presents a token (:meth:`Services.fetch`).
PATHS = ("get", "head", "auth", "x-pointer", "front", "front-x-pointer")
#: What nginx answers itself for a refusal (any other authorizer answer becomes 503).
FRONT_REFUSALS = frozenset({400, 401, 403, 404, 410})


def bearer_of(c: DmClient) -> dict[str, str]:
    return {"Authorization": f"Bearer {c.session_token}"}
