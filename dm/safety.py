"""Pluggable server-side safety checks for plain-mode sends (the platform sees the content).

A check raises to refuse a send.  The default refuses media on the takedown
list; deployments add classifiers by passing their own checks to the app.
"""

from __future__ import annotations

from typing import Protocol

from cdn_auth import rights
from cdn_auth.media import Media


class SafetyCheck(Protocol):
    async def check(self, sender: str, media: Media | None, text: str) -> None: ...


class TakedownListCheck:
    """Refuse media that a moderator has taken down (410 media_taken_down)."""

    async def check(self, sender: str, media: Media | None, text: str) -> None:
        if media is not None:
            rights.check_active(media)
