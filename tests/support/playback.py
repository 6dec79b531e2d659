"""Browser playback: the web app's origin, and the playback cookie a session gets."""

from __future__ import annotations

from http.cookies import SimpleCookie
from typing import Any

from cdn_auth.playback import COOKIE_NAME

from .services import Edge, bearer

APP_ORIGIN = "http://app.example.test:8090"


async def cookie_for(edge: Edge, session: str) -> tuple[str, Any]:
    """POST /v1/playback-session with the bearer; the cookie's value and its attributes."""
    async with edge.client.post("/v1/playback-session", headers=bearer(session)) as r:
        assert r.status == 201, await r.text()
        body = await r.json()
        raw = r.headers.getall("Set-Cookie")
    edge.client.session.cookie_jar.clear()  # the test decides what each request carries
    assert len(raw) == 1
    morsel = SimpleCookie(raw[0])[COOKIE_NAME]
    assert morsel.value not in str(body), "the token must not be readable by page scripts"
    return morsel.value, morsel
