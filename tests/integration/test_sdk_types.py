"""The SDK's typed results (``dm.sdk_types``) say exactly which keys the running dm answers.

Each result is checked against its ``TypedDict``, nested ones included: every required
key is there and no key is undeclared.  Plain messages and stream events are also checked
against what their ``kind`` / ``type`` says they carry.
"""

from __future__ import annotations

import asyncio
import types
import typing
from typing import Any, Literal, get_args, get_origin, get_type_hints, is_typeddict

from dm.sdk_types import (
    STREAM_EVENT_KEYS,
    Conversation,
    Message,
    MessagePage,
    StreamEvent,
    Unsent,
    UserSession,
)

from ..support.services import DmStack


def check_shape(value: object, hint: Any, where: str = "$") -> None:
    """``value`` has the keys ``hint`` declares, recursing into nested TypedDicts."""
    origin = get_origin(hint)
    if is_typeddict(hint):
        assert isinstance(value, dict), f"{where}: {value!r} is no object"
        required: frozenset[str] = hint.__required_keys__
        optional: frozenset[str] = hint.__optional_keys__
        keys = set(value)
        assert required <= keys, f"{where}: missing {sorted(required - keys)}"
        assert keys <= required | optional, f"{where}: undeclared {sorted(keys - required - optional)}"
        hints = get_type_hints(hint)
        for key in keys:
            check_shape(value[key], hints[key], f"{where}.{key}")
    elif origin in (typing.Union, types.UnionType):
        if value is None:
            assert type(None) in get_args(hint), f"{where}: None not allowed"
        else:
            for arg in get_args(hint):
                if is_typeddict(arg) or get_origin(arg) is list:
                    check_shape(value, arg, where)
    elif origin is list:
        assert isinstance(value, list), f"{where}: {value!r} is no list"
        for i, item in enumerate(value):
            check_shape(item, get_args(hint)[0], f"{where}[{i}]")
    elif origin is Literal:
        assert value in get_args(hint), f"{where}: {value!r} not in {get_args(hint)}"


def _declared(td: Any) -> frozenset[str]:
    return frozenset(td.__required_keys__ | td.__optional_keys__)


def check_event(event: StreamEvent, kind: str) -> None:
    check_shape(event, StreamEvent)
    assert event["type"] == kind
    assert set(event) == StreamEvent.__required_keys__ | STREAM_EVENT_KEYS[kind]


def check_plain(message: Message, *, pointer: bool) -> None:
    check_shape(message, Message)
    assert message["kind"] == "plain"
    assert set(message) == Message.__required_keys__ | {"text", "media"}
    media = message["media"]
    assert media is not None
    if pointer:  # a reader's copy: its own pointer and the URL carrying it
        assert set(media) == {"id", "pointer", "expires_at", "url"}
    else:  # the sender's copy a send answers: the id only
        assert set(media) == {"id"}


def test_the_declared_keys_cover_the_service_schemas() -> None:
    from dm import api_schemas as api

    assert _declared(Message) == set(api.MESSAGE["properties"])
    assert Message.__required_keys__ == set(api.MESSAGE["required"])
    assert _declared(Conversation) == set(api.CONVERSATION["properties"])
    assert set(StreamEvent.__optional_keys__) == set().union(*STREAM_EVENT_KEYS.values())


async def test_typed_results_match_the_running_service(dm: DmStack) -> None:
    alice, bob = await dm.user(), dm.client()
    await bob.__aenter__()  # closed with the stack, as dm.user()'s clients are
    check_shape(await bob.create_user(), UserSession)
    media, _ = await dm.edge.add_media(owner=alice.uid)

    conv = await alice.create_conversation([bob.uid])
    check_shape(conv, Conversation)
    check_shape(await bob.conversation(conv["id"]), Conversation)

    events = bob.stream(cursor="0-0", reconnect=False)
    try:
        async with asyncio.timeout(5):
            check_event(await events.__anext__(), "joined")
        sent = await alice.send(conv["id"], media_id=media.id, text="typed")
        check_plain(sent, pointer=False)
        async with asyncio.timeout(5):
            pushed = await events.__anext__()
        check_event(pushed, "message")
        check_plain(pushed["message"], pointer=True)

        page = await bob.read(conv["id"])
        check_shape(page, MessagePage)
        [read] = page["messages"]
        check_plain(read, pointer=True)
        text_only = await alice.send(conv["id"], text="no media")
        check_shape(text_only, Message)
        assert text_only["media"] is None

        gone = await alice.unsend(conv["id"], sent["id"])
        check_shape(gone, Unsent)
        async with asyncio.timeout(5):
            check_event(await events.__anext__(), "message")  # text_only
            check_event(await events.__anext__(), "unsent")
    finally:
        await events.aclose()
