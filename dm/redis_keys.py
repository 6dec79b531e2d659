"""Every Redis key dm touches, and every TTL, in one place.

A conversation's keys share the hash tag ``{c_...}`` so the send script
(idempotency check, membership, rate limit and append in one round trip)
runs on one Redis Cluster slot.  Per-user keys share ``{u_...}``.
"""

from __future__ import annotations

from cdn_auth import redis_keys as cdn_keys

PREFIX = "dm"

#: Every new message, unsend and membership change, for push delivery; the
#: entry id is the WebSocket cursor.  Trimmed by time on each write.
NOTIFY_STREAM = f"{PREFIX}:notify"
NOTIFY_RETENTION_S = 24 * 3600
#: ``XREAD BLOCK`` time of every process's notify tail; DM_STALENESS_BOUND_S must exceed it.
NOTIFY_BLOCK_MS = 1000


def user_inbox(uid: str) -> str:
    """Sorted set of the notify event ids addressed to ``uid`` (score: the id's ms), so a
    WebSocket resumed by cursor reads only its user's events instead of scanning everyone's.
    Hash-tagged with the notify stream's own name (``{dm:notify}`` hashes like the key
    ``dm:notify``), so the stream and every inbox share one Cluster slot and one script
    appends the event and indexes it atomically.  Kept as long as the stream, and at most
    INBOX_MAX ids per user."""
    return f"{{{NOTIFY_STREAM}}}:inbox:{uid}"


def notify_once(cid: str, message_id: str) -> str:
    """String: the notify event id a send's announce published, written by the same script
    as the event (``NOTIFY`` with a marker), so publishing a message's event again (an
    idempotent retry, a script re-run after a broken connection) returns the first event
    instead of pushing the message twice.  Same slot as the stream (see :func:`user_inbox`).
    Written only for sends with an idempotency key (only those are retried), and kept as
    long as their idempotency record (``DM_IDEMPOTENCY_TTL_S``)."""
    return f"{{{NOTIFY_STREAM}}}:sent:{cid}:{message_id}"


#: A reconnecting client is replayed at most this many of its latest events.
INBOX_MAX = 2000

#: Reports waiting for a moderator.
REPORTS_STREAM = f"{PREFIX}:reports"


def conv_meta(cid: str) -> str:
    return f"{PREFIX}:conv:{{{cid}}}:meta"


def conv_members(cid: str) -> str:
    """Hash: user id -> joined-at (ms)."""
    return f"{PREFIX}:conv:{{{cid}}}:members"


def conv_messages(cid: str) -> str:
    """Stream of the conversation's messages; the entry id is the message id."""
    return f"{PREFIX}:conv:{{{cid}}}:msgs"


def conv_unsent(cid: str) -> str:
    """Hash: unsent message id -> "<grant id or empty>|<sender>" (tombstones: unsend is
    idempotent, for its sender only; a value without "|" is an older tombstone), and
    "<message id>:announced" -> "1" once the unsend's revocations went out."""
    return f"{PREFIX}:conv:{{{cid}}}:unsent"


def conv_left(cid: str) -> str:
    """Hash: user id -> "0" (removed, events not all published yet) or "1" (published).
    A retried leave or removal finishes what a failed one left undone.  At most one field
    per user who was ever a member (there is no re-add), so bounded by the group size."""
    return f"{PREFIX}:conv:{{{cid}}}:left"


def conv_idempotency(cid: str, sender: str, key: str) -> str:
    return f"{PREFIX}:conv:{{{cid}}}:idem:{sender}:{key}"


def conv_rate(cid: str, sender: str) -> str:
    return f"{PREFIX}:conv:{{{cid}}}:rate:{sender}"


def user_conversations(uid: str) -> str:
    """Sorted set (all scores 0, so ordered by id) of the user's conversations: paged by
    ``GET /v1/conversations?after=``."""
    return f"{PREFIX}:user:{{{uid}}}:convs"


def user_blocks(uid: str) -> str:
    """Set of users this user has blocked."""
    return f"{PREFIX}:user:{{{uid}}}:blocks"


def user_received(uid: str, media_id: str) -> str:
    """Set of ``"<cid>|<message id>"``: the plain messages that brought ``media_id`` to
    ``uid``.  Re-share rights are re-checked against these sources (still a member, message
    not unsent) at every re-share, so an unsend or a removal also ends the right to re-share.
    Expires ``RECEIVED_TTL_S`` after the last delivery."""
    return f"{PREFIX}:user:{{{uid}}}:received:{media_id}"


#: How long a user's record of having received a media item is kept after the last delivery.
RECEIVED_TTL_S = 30 * 24 * 3600
#: Sources kept per (user, media); older ones beyond this are dropped at the next check.
RECEIVED_SOURCES_MAX = 16


def user_devices(uid: str) -> str:
    """Hash: device id -> JSON {suite, public_key, fingerprint, updated_at_ms}."""
    return f"{PREFIX}:user:{{{uid}}}:devices"


def user_profile(uid: str) -> str:
    return f"{PREFIX}:user:{{{uid}}}:profile"


def user_seen(uid: str) -> str:
    """Set when dm verifies a session of this user (or the dev issuer creates them): a
    conversation may only name users who exist, and with an external identity provider
    dm learns who exists only from sessions it sees.  Refreshed per verified token."""
    return f"{PREFIX}:user:{{{uid}}}:seen"


#: How long a user counts as existing after dm last verified a session of theirs.
USER_SEEN_TTL_S = 90 * 24 * 3600


def report_dedup(reporter: str, cid: str, message_id: str) -> str:
    """The report id a reporter filed for one message: a repeat report files nothing."""
    return f"{PREFIX}:user:{{{reporter}}}:reported:{cid}:{message_id}"


#: A repeat report of the same message by the same reporter is a no-op this long.
REPORT_DEDUP_TTL_S = 30 * 24 * 3600


def conv_alerted(cid: str, message_id: str) -> str:
    """String: the review item id of the scanner's alert for one message, written once the
    alert is queued, so the send's idempotent retry queues it if (and only if) the first
    attempt failed to.  Kept as long as a report's de-duplication."""
    return f"{PREFIX}:conv:{{{cid}}}:alerted:{message_id}"


#: The moderation queue keeps at most about this many reports (XADD MAXLEN ~): with
#: per-user limits and de-duplication, reaching it means moderators are far behind.
REPORTS_MAXLEN = 1_000_000


# -- safety: review queue, audit, suspensions, legal requests ----------------------------------
# (Reports and scanner alerts share REPORTS_STREAM: one queue; "source" says which.)

#: Hash: review item id -> JSON {status, action, by, at_ms} once a moderator has acted.
REVIEW_STATE = f"{PREFIX}:review:state"
#: One queue page reads at most this many entries (both streams together) looking for
#: ``limit`` items of the asked status; a page that stops here is short and says ``more``.
REVIEW_PAGE_SCAN_MAX = 2000

#: The audit log: every moderator view and action, and every legal export (and the edge's
#: moderator takedowns: the key is the edge's, see cdn_auth.audit).  Append-only: no API
#: deletes or trims it; each dm write trims only entries older than AUDIT_RETENTION_S.
AUDIT_STREAM = cdn_keys.AUDIT_STREAM
#: Default two years (documented in docs/safety.md): an auditor's yearly review with a year
#: to spare.  DM_AUDIT_RETENTION_S may raise it; settings refuse anything under a year.
AUDIT_RETENTION_S = 2 * 365 * 24 * 3600

#: Hash: suspended user id -> JSON {by, item, at_ms}.  Suspended users cannot send.
SUSPENDED = f"{PREFIX}:suspended"


def legal_request(request_id: str) -> str:
    """Hash: reference, conversation_id, from_ms, to_ms, filed_by, at_ms."""
    return f"{PREFIX}:legal:{{{request_id}}}"


def user_stream_leases(uid: str) -> str:
    """Sorted set: socket lease id -> lease expiry (Redis server ms), one member per open
    WebSocket of ``uid`` on any dm process (dm.stream_leases).  The key itself expires
    with its latest lease (``DM_WS_LEASE_S`` after the last take or renewal)."""
    return f"{PREFIX}:user:{{{uid}}}:stream_leases"
