"""A client generated from the contract alone runs the core flow against both services.

The proof that a backend team in any language can start from ``/openapi.json``:
openapi-python-client (a standard generator, run offline as a subprocess, no
post-hooks) turns each service's document into a package, and the test uses
nothing else: create users, open a conversation, register media by upload, send
it, read it (the reader's pointer), fetch the bytes from the edge with that
pointer, unsend, and see the edge refuse the pointer.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ..support.services import DmStack, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("redis_server", ["single"], indirect=True)]

GENERATOR = Path(sys.executable).parent / "openapi-python-client"
#: No formatter post-hooks (ruff or black may be absent; the code is only imported); the
#: edge answers with the media's own type, which the generator reads as bytes.
CONFIG = """post_hooks: []
content_type_overrides:
  video/*: application/octet-stream
  audio/*: application/octet-stream
  image/*: application/octet-stream
"""


async def _generate(url: str, package: str, tmp: Path) -> Any:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/openapi.json") as r:
        assert r.status == 200
        (tmp / f"{package}.json").write_bytes(await r.read())
    (tmp / "generator.yml").write_text(CONFIG)
    proc = await asyncio.create_subprocess_exec(
        str(GENERATOR),
        "generate",
        "--path",
        str(tmp / f"{package}.json"),
        "--meta",
        "none",
        "--config",
        str(tmp / "generator.yml"),
        "--output-path",
        str(tmp / package),
        "--fail-on-warning",
        cwd=tmp,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()[-4000:]
    _import_unset(tmp / package)
    return importlib.import_module(package)


def _import_unset(package: Path) -> None:
    """Work around a generator bug (0.29): an operation with several request media types
    (POST /v1/media: JSON or multipart) gets ``body: ... | Unset = UNSET`` in its signature
    although its body is required, and ``Unset`` is not imported.  The fix is one import;
    nothing else of the generated code is touched."""
    for module in (package / "api").rglob("*.py"):
        text = module.read_text()
        if "| Unset = UNSET" in text and "import Response, UNSET\n" in text:
            module.write_text(
                text.replace("import Response, UNSET\n", "import Response, UNSET, Unset\n", 1)
            )


@pytest.fixture
def generated_path(tmp_path: Path) -> Iterator[Path]:
    if not GENERATOR.exists():
        pytest.skip("openapi-python-client is not installed (pip install -e '.[test]')")
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))
    for name in [m for m in sys.modules if m.split(".")[0] in ("pdm_dm_api", "pdm_edge_api")]:
        del sys.modules[name]


def _mod(name: str) -> Any:
    return importlib.import_module(name)


async def test_generated_clients_run_the_core_flow(dm: DmStack, generated_path: Path) -> None:
    edge_url = str(dm.edge.client.make_url("")).rstrip("/")
    await _generate(dm.dm_url, "pdm_dm_api", generated_path)
    await _generate(edge_url, "pdm_edge_api", generated_path)
    d, e = "pdm_dm_api", "pdm_edge_api"
    async with contextlib.AsyncExitStack() as clients:
        await _flow(dm, clients, d, e)


async def _flow(dm: DmStack, clients: contextlib.AsyncExitStack, d: str, e: str) -> None:
    edge_url = str(dm.edge.client.make_url("")).rstrip("/")
    dm_models, edge_models = _mod(f"{d}.models"), _mod(f"{e}.models")
    create_user = _mod(f"{d}.api.identity.post_v1_users")
    open_conv = _mod(f"{d}.api.conversations.post_v1_conversations")
    send = _mod(f"{d}.api.messages.post_v1_conversations_cid_messages")
    read = _mod(f"{d}.api.messages.get_v1_conversations_cid_messages")
    unsend = _mod(f"{d}.api.messages.delete_v1_conversations_cid_messages_message_id")
    register = _mod(f"{e}.api.media.post_v1_media")
    get_media = _mod(f"{e}.api.media.get_v1_media_media_id")
    fetch = _mod(f"{e}.api.edge.get_m_media_id")

    async def client(package: str, url: str, token: str | None = None) -> Any:
        made = (
            _mod(package).Client(base_url=url)
            if token is None
            else _mod(package).AuthenticatedClient(base_url=url, token=token)
        )
        return await clients.enter_async_context(made)  # closes its httpx client

    anonymous = await client(d, dm.dm_url)
    alice = await create_user.asyncio(client=anonymous, body=dm_models.PostV1UsersBody())
    bob = await create_user.asyncio(client=anonymous, body=dm_models.PostV1UsersBody(region="FR"))
    assert isinstance(alice, dm_models.PostV1UsersResponse201), alice
    alice_dm = await client(d, dm.dm_url, alice.session_token)
    bob_dm = await client(d, dm.dm_url, bob.session_token)
    alice_edge = await client(e, edge_url, alice.session_token)
    bob_edge = await client(e, edge_url, bob.session_token)

    conv = await open_conv.asyncio(
        client=alice_dm,
        body=dm_models.PostV1ConversationsBody(
            members=[bob.user_id], mode=dm_models.PostV1ConversationsBodyMode.PLAIN
        ),
    )
    assert isinstance(conv, dm_models.Conversation), conv
    assert sorted(conv.members) == sorted([alice.user_id, bob.user_id])

    video = bytes(range(256)) * 64
    upload = edge_models.PostV1MediaFilesBody(
        metadata=edge_models.PostV1MediaFilesBodyMetadata(content_type="video/mp4"),
        file=_mod(f"{e}.types").File(
            payload=io.BytesIO(video), file_name="clip.mp4", mime_type="video/mp4"
        ),
    )
    media = await register.asyncio(client=alice_edge, body=upload)
    assert isinstance(media, edge_models.MediaRecord), media
    assert media.size == len(video) and media.owner == alice.user_id
    record = await get_media.asyncio(media.id, client=alice_edge)
    assert isinstance(record, edge_models.MediaRecord) and record.id == media.id

    sent = await send.asyncio_detailed(
        conv.id,
        client=alice_dm,
        body=dm_models.PostV1ConversationsCidMessagesPlainSend(text="look", media_id=media.id),
    )
    assert sent.status_code == 201, sent.content
    assert isinstance(sent.parsed, dm_models.Message) and sent.parsed.text == "look"

    page = await read.asyncio(conv.id, client=bob_dm)
    assert isinstance(page, dm_models.GetV1ConversationsCidMessagesResponse200), page
    [message] = page.messages
    assert message.id == sent.parsed.id and message.media.id == media.id
    pointer = message.media.pointer

    got = await fetch.asyncio_detailed(media.id, client=bob_edge, pointer=pointer)
    assert got.status_code == 200 and got.content == video
    part = await fetch.asyncio_detailed(media.id, client=bob_edge, pointer=pointer, range_="bytes=0-99")
    assert part.status_code == 206 and part.content == video[:100]

    gone = await unsend.asyncio(conv.id, message.id, client=alice_dm)
    assert gone.unsent is True

    async def refused() -> bool:
        r = await fetch.asyncio_detailed(media.id, client=bob_edge, pointer=pointer)
        return int(r.status_code) == 410

    await wait_until(refused, 10)
