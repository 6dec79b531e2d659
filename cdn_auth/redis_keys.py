"""Every Redis key cdn_auth touches, and every TTL, in one place.

Keys that a single operation touches together share a hash tag (the part
in braces) so the layout works unchanged on Redis Cluster.  Ids that go
into keys are validated by :mod:`service_kernel.ids` first, so they never hold
braces themselves.
"""

from __future__ import annotations

PREFIX = "cdn"

#: The revocation stream.  One key, so it lives in one slot on a cluster.
REVOCATION_STREAM = f"{PREFIX}:revocations"

#: How long a revocation stream entry is kept (trimmed with MINID on write).
#: Must exceed the longest token lifetime plus clock skew (settings cap that
#: at 12 h) and the longest capability lifetime plus skew and margin (capped at 23 h);
#: a starting edge loads the longer of those windows of it.
REVOCATION_STREAM_RETENTION_S = 24 * 3600


def media_key(media_id: str) -> str:
    """Hash holding one media record."""
    return f"{PREFIX}:media:{{{media_id}}}"


#: Hash: user id -> JSON {by, item, at_ms} of each user a moderator suspended (written by
#: dm's suspend action): they register no media (cdn_auth.suspension).
SUSPENDED_USERS = f"{PREFIX}:suspended"


def pending_takedown(media_id: str) -> str:
    """Hash {reason, by}: a bank sweep's takedown of an id whose record is not written yet
    (an upload between its hash index write and its registration); beside the record-to-be
    (same hash tag), so registering applies it atomically.  Expires: see below."""
    return f"{PREFIX}:media:{{{media_id}}}:pending_takedown"


#: How long a pending takedown waits for its registration.  An upload is registered within
#: seconds of its index write (one bank match in between); one left by an upload that was
#: refused or failed meanwhile is dropped after this.
PENDING_TAKEDOWN_TTL_S = 3600


def grant_key(grant_id: str) -> str:
    """Set of the users bound to one grant (encrypted-pointer mode); expires with the grant."""
    return f"{PREFIX}:grant:{{{grant_id}}}:redeemers"


def grant_meta_key(grant_id: str) -> str:
    """Hash: who minted the grant (so only they, or a moderator, revoke it).  No media id:
    which media a sealed message carries is kept out of Redis."""
    return f"{PREFIX}:grant:{{{grant_id}}}:meta"


# -- share capabilities (cdn_auth.capability) --------------------------------------------
# One capability's keys share the hash tag {<cap_id>}, so the binding script (the grant set
# and the derived grant's redeemers) runs on one slot.


def capability_meta_key(cap_id: str) -> str:
    """Hash: ``holder`` and the media's ``owner`` (who may revoke it), and for a re-share
    the immediate ``source`` (the grant id it was issued on) and ``source_exp``; expires with
    it.  No media id, as for grants."""
    return f"{PREFIX}:cap:{{{cap_id}}}:meta"


def capability_denied_key(source_id: str) -> str:
    """Set of the holders whose capability re-shared through ``source_id`` (the grant or
    derived grant it was issued on) was revoked by the owner or a moderator: they get no new
    capability on that proof.  Expires with the source (its ``exp`` + leeway)."""
    return f"{PREFIX}:cap:denied:{{{source_id}}}"


def capability_issued_key(source_id: str, holder: str) -> str:
    """Set of the capability ids issued to ``holder`` on the proof ``source_id`` (the grant
    or derived grant a re-share was issued on): what a revocation by the owner or a moderator
    ends with it.  Beside the denied set (same hash tag), so one transaction records an issue
    and checks the denial, or denies and reads the issued ids; expires with the source."""
    return f"{PREFIX}:cap:issued:{{{source_id}}}:{holder}"


def held_tokens_key(user: str) -> str:
    """Sorted set of the share capabilities (``c_...``) and minted grants (``g_...``) issued
    to ``user``, scored by their expiry (s) plus HELD_SLACK_S: what a suspension of the user
    revokes (cdn_auth.suspension).  Entries past their score are pruned at each issue; the
    key expires with the latest score."""
    return f"{PREFIX}:held:{{{user}}}"


#: Added to a held token's expiry in ``held_tokens_key``: its score and the key's expiry are
#: the issuing edge's clock, and a suspension reads the list by dm's, while every other
#: edge honours the token by its own; clocks apart by up to this much still revoke it.
HELD_SLACK_S = 300


def capability_grants_key(cap_id: str) -> str:
    """Set of the derived grant ids redeemed under a capability (at most ``max_grants``)."""
    return f"{PREFIX}:cap:{{{cap_id}}}:grants"


def derived_redeemers_key(cap_id: str, grant_id: str) -> str:
    """Set of the users bound to one derived grant; expires with the grant."""
    return f"{PREFIX}:cap:{{{cap_id}}}:grant:{grant_id}:redeemers"


# -- known-bad media (hash banks) ------------------------------------------------------------

#: Hash of registered media id -> its PDQ hashes (comma-separated hex): what a newly banked
#: perceptual hash is compared with, so every registered match is taken down.
MEDIA_PDQ_INDEX = f"{PREFIX}:fp:pdq"

#: Media registered with status "held" by a bank match, for the review queue.
MEDIA_HOLDS_STREAM = f"{PREFIX}:holds"

#: The moderation audit log (``cdn_auth.audit``), dm's ``dm:audit`` stream: dm writes its
#: moderator views and actions there and the edge its moderators' takedowns, so one log
#: holds them all (dm.redis_keys.AUDIT_STREAM is this key).
AUDIT_STREAM = "dm:audit"


def bank_signals(bank: str) -> str:
    """List of "<kind>,<hex>" added to a bank at run time (append-only; every process
    reads the tail it has not seen before matching)."""
    return f"{PREFIX}:bank:{{{bank}}}:signals"


def media_fingerprint(media_id: str) -> str:
    """Hash: md5, sha256, pdq (comma-separated hex) of one registered media item; beside its
    record (same hash tag)."""
    return f"{PREFIX}:media:{{{media_id}}}:fp"


def exact_hash_index(kind: str, digest: str) -> str:
    """Set of media ids whose file has this md5/sha256 digest."""
    return f"{PREFIX}:fp:{kind}:{{{digest}}}"
