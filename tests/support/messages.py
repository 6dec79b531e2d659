"""Reading typed SDK messages in tests."""

from __future__ import annotations

from dm.sdk_types import MediaRef, Message


def media_of(message: Message) -> MediaRef:
    """A plain message's media; fails the test if it carries none."""
    media = message.get("media")
    assert media is not None, f"message {message['id']} carries no media"
    return media
