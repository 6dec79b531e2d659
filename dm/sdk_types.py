"""Typed shapes of what the SDK returns (``docs/protocol.md``).

``TypedDict``\\ s: the JSON the media API (:class:`dm.edge_client.EdgeClient`) and the dm
service (:class:`dm.client.DmClient`) answer, still plain dicts at run time (``msg["id"]``
keeps working), with keys and types a type checker knows.  They follow the response
schemas in :mod:`dm.api_schemas` (the ``/openapi.json`` document) and the handlers in
``dm/web_*.py``; ``NotRequired`` marks a key only some answers carry.

Messages come in two kinds, told apart by ``kind``: a ``"plain"`` message carries
``text`` and ``media`` (with a reader's pointer and ``url`` on reads and pushes; only the
``id`` in the sender's copy a send answers), a ``"sealed"`` one ``client_message_id``,
``envelope`` (this device's) and ``franking``.  Stream events likewise say by ``type``
which keys they carry (:data:`STREAM_EVENT_KEYS`).
"""

# No ``from __future__ import annotations`` here: on Python 3.11 a TypedDict sees its
# ``NotRequired`` keys (``__optional_keys__``) only when its annotations are evaluated.
from typing import Literal, NotRequired, TypedDict


class Audience(TypedDict):
    min_age: int
    allowed_regions: list[str]
    blocked_regions: list[str]


class MediaRecord(TypedDict):
    """``POST /v1/media`` and ``GET /v1/media/{id}`` (where the bytes live is not shown)."""

    id: str
    owner: str
    visibility: str  # "private" | "public"
    allow_reshare: bool
    audience: Audience
    status: str  # "active" | "taken_down"
    content_type: str
    size: int
    sha256: str
    created_at: int


class Grant(TypedDict):
    """``POST /v1/grants``: a sealed message's capability to fetch one media, N redeemers."""

    grant: str
    grant_id: str
    media_id: str
    max_redeemers: int
    expires_at: int


class Capability(TypedDict):
    """``POST /v1/capabilities``: lets its holder derive grants for one media offline."""

    capability: str
    cap_id: str
    media_id: str
    holder: str
    max_redeemers: int
    max_grants: int
    sources: list[str]
    expires_at: int
    max_grant_ttl_s: int


# -- dm: identity, conversations, devices ------------------------------------------------------


class UserSession(TypedDict):
    """``POST /v1/users`` (dev issuer): the new user, its first device and their session."""

    user_id: str
    device_id: str
    session_token: str
    expires_in: int  # the session's lifetime, seconds
    sign_in_key: str  # a secret: ``POST /v1/dev/sessions`` with it signs in as this user again


class Conversation(TypedDict):
    """``POST /v1/conversations`` and ``GET /v1/conversations/{cid}``."""

    id: str
    mode: Literal["plain", "sealed"]
    created_by: str
    created_at_ms: int
    members: list[str]  # sorted, the creator included


class MemberRemoved(TypedDict):
    """``DELETE /v1/conversations/{cid}/members/{user_id}``: a leave or a removal."""

    conversation_id: str
    removed: str  # the user id


class BlockState(TypedDict):
    """``POST``/``DELETE /v1/blocks/{user_id}``."""

    user_id: str
    blocked: bool


class DeviceKeyRecord(TypedDict):
    """One device's published HPKE key (``GET /v1/users/{user_id}/devices`` lists them)."""

    device_id: str
    suite: str  # one of dm.envelope.SUITES
    public_key: str  # base64url
    fingerprint: str
    updated_at_ms: int


class PublishedKey(DeviceKeyRecord):
    """``PUT /v1/devices/{device_id}/key``: the key as published, with its user."""

    user_id: str


# -- dm: messages ---------------------------------------------------------------------------------


class MediaRef(TypedDict):
    """Media in a plain message: on reads and pushes a pointer minted for the reader and the
    edge URL carrying it; in the sender's copy a send answers, only the ``id``."""

    id: str
    pointer: NotRequired[str]
    expires_at: NotRequired[int]  # the pointer's expiry, Unix seconds
    url: NotRequired[str]


class Franking(TypedDict):
    """A sealed message's franking values (what a report of it must carry)."""

    commitment: str | None
    countersignature: str | None
    ts_ms: int


class Message(TypedDict):
    """A message as one reader's device receives it (send, read, push).

    ``kind == "plain"``: ``text`` and ``media`` (each None when absent).  ``kind ==
    "sealed"``: ``client_message_id``, ``envelope`` (this device's; None for the sending
    device and devices linked after the send) and ``franking``.  ``held`` only in a send's
    answer (202), for a message held for review.
    """

    id: str
    conversation_id: str
    sender: str
    sent_at_ms: int
    kind: Literal["plain", "sealed"]
    text: NotRequired[str | None]
    media: NotRequired[MediaRef | None]
    client_message_id: NotRequired[str | None]
    envelope: NotRequired[str | None]
    franking: NotRequired[Franking]
    held: NotRequired[bool]


class MessagePage(TypedDict):
    """``GET /v1/conversations/{cid}/messages``: a page, oldest first."""

    messages: list[Message]
    next_cursor: str | None  # pass as ``after`` for the next page
    more: bool


class Unsent(TypedDict):
    """``DELETE /v1/conversations/{cid}/messages/{message_id}``."""

    conversation_id: str
    message_id: str
    unsent: Literal[True]


class Reported(TypedDict):
    """``POST /v1/reports``; a repeat of this reporter's report is ``duplicate`` with the
    first report's id."""

    report_id: str | None
    conversation_id: str
    sender: str
    media_id: str | None
    verified: bool
    evidence: str  # "server_copy" (plain) | "franking_verified" (sealed)
    duplicate: bool


# -- dm: the stream -------------------------------------------------------------------------------


class StreamEvent(TypedDict):
    """One frame of ``GET /v1/stream``; ``type`` says which keys it carries besides
    ``cursor`` and ``conversation_id``:

    * ``"message"``: ``message``, a new message for this reader (a :class:`Message`,
      plain ones with this reader's pointer);
    * ``"unsent"``: ``message_id``, the message unsent;
    * ``"member_left"``: ``user_id``, the member who left or was removed;
    * ``"joined"``: nothing more (this user is in a new conversation).
    """

    type: Literal["message", "unsent", "member_left", "joined"]
    cursor: str
    conversation_id: str
    message: NotRequired[Message]
    message_id: NotRequired[str]
    user_id: NotRequired[str]


#: The keys each ``StreamEvent`` ``type`` carries beyond the required ones.
STREAM_EVENT_KEYS: dict[str, frozenset[str]] = {
    "message": frozenset({"message"}),
    "unsent": frozenset({"message_id"}),
    "member_left": frozenset({"user_id"}),
    "joined": frozenset(),
}
