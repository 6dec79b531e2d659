"""Delivery: when does the recipient's device see a message?  Its WebSocket, stamped on arrival.

Each share user keeps its recipient's ``/v1/stream`` socket open, with a
reader greenlet that stamps every pushed message with ``perf_counter()``
the moment it arrives, so delivery is measured from the start of the send
to the push, even when the push lands before the send's HTTP answer.
Runs under Locust's gevent (the sockets are cooperative there); uses the
``websocket-client`` package, and falls back to polling the read endpoint
every few milliseconds if that package is missing (delivery then includes
up to one poll interval).
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any, Protocol

import gevent  # type: ignore[import-untyped]
from gevent.event import Event  # type: ignore[import-untyped]

from loadtests.load import seed

try:
    import websocket
except ImportError:  # pragma: no cover - exercised only where the package is absent
    websocket = None  # type: ignore[assignment]

POLL_INTERVAL_S = 0.005
#: Arrivals nobody asked for within this long are dropped (a failed flow's message).
KEEP_S = 120.0


class Watcher(Protocol):
    kind: str

    def wait_for(self, message_id: str, timeout_s: float) -> tuple[float, dict[str, Any]] | None:
        """(arrival perf_counter, the message as pushed) or ``None`` on timeout."""

    def close(self) -> None: ...


class PushWatcher:
    """The recipient's WebSocket; reconnects with its last cursor (the server replays)."""

    kind = "websocket"

    def __init__(self, dm_url: str, token: str, *, connect_timeout_s: float = 10.0) -> None:
        if websocket is None:
            raise RuntimeError("websocket-client is not installed")
        self._url = dm_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + "/v1/stream"
        self._token = token
        self._timeout = connect_timeout_s
        self._arrived: dict[str, tuple[float, dict[str, Any]]] = {}
        self._event = Event()
        self._cursor: str | None = None
        self._closed = False
        self._ws = self._connect()
        self._reader = gevent.spawn(self._read_forever)

    def _connect(self) -> Any:
        url = self._url + (f"?cursor={self._cursor}" if self._cursor else "")
        assert websocket is not None
        ws = websocket.create_connection(
            url,
            header=[f"Authorization: Bearer {self._token}"],
            timeout=self._timeout,
            enable_multithread=False,
        )
        ws.settimeout(None)  # the reader blocks (cooperatively) until a frame comes
        return ws

    def _read_forever(self) -> None:
        while not self._closed:
            try:
                raw = self._ws.recv()
            except Exception:  # the socket broke: reconnect and let the server replay
                if self._closed:
                    return
                gevent.sleep(0.05)
                with contextlib.suppress(Exception):
                    self._ws = self._connect()
                continue
            now = time.perf_counter()
            if not raw:
                continue
            event = json.loads(raw)
            self._cursor = event.get("cursor", self._cursor)
            if event.get("type") == "message":
                self._arrived[event["message"]["id"]] = (now, event["message"])
                self._event.set()

    def wait_for(self, message_id: str, timeout_s: float) -> tuple[float, dict[str, Any]] | None:
        deadline = time.perf_counter() + timeout_s
        while message_id not in self._arrived:
            left = deadline - time.perf_counter()
            if left <= 0:
                return None
            self._event.clear()
            if message_id in self._arrived:
                break
            self._event.wait(left)
        got = self._arrived.pop(message_id)
        self._prune()
        return got

    def _prune(self) -> None:
        old = time.perf_counter() - KEEP_S
        for mid in [m for m, (t, _) in self._arrived.items() if t < old]:
            del self._arrived[mid]

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(Exception):
            self._ws.close()
        self._reader.kill(block=False)


class PollWatcher:
    """Fallback without websocket-client: poll the conversation for the message."""

    kind = "poll"

    def __init__(self, dm_url: str, token: str, conversation_id: str) -> None:
        self._url = f"{dm_url}/v1/conversations/{conversation_id}/messages"
        self._token = token
        self._after = self._last_id()

    def _last_id(self) -> str | None:
        after, last = None, None
        while True:
            page = seed.call(
                "GET",
                self._url + (f"?limit=200&after={after}" if after else "?limit=200"),
                token=self._token,
            )
            if page["messages"]:
                last = page["messages"][-1]["id"]
            if not page["more"]:
                return last
            after = page["next_cursor"]

    def wait_for(self, message_id: str, timeout_s: float) -> tuple[float, dict[str, Any]] | None:
        deadline = time.perf_counter() + timeout_s
        while time.perf_counter() < deadline:
            query = f"?limit=50&after={self._after}" if self._after else "?limit=50"
            page = seed.call("GET", self._url + query, token=self._token)
            now = time.perf_counter()
            for m in page["messages"]:
                self._after = m["id"]
                if m["id"] == message_id:
                    return now, m
            gevent.sleep(POLL_INTERVAL_S)
        return None

    def close(self) -> None:
        return None


def websocket_available() -> bool:
    return websocket is not None


def watcher(dm_url: str, token: str, conversation_id: str) -> Watcher:
    if websocket is not None:
        return PushWatcher(dm_url, token)
    return PollWatcher(dm_url, token, conversation_id)
