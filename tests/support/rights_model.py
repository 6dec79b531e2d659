"""The reference model of rights: who may fetch which media, through which path.

This is the executable statement of ``docs/threat-model.md``: pure Python over
a history of actions, no I/O, no shortcuts taken from the implementation.  The
stateful test (``tests/integration/test_rights_stateful.py``) applies the same actions to
the real dm and edge and checks every answer against :meth:`Rights.fetch`,
:meth:`Rights.send_plain`, :meth:`Rights.mint_grant`, :meth:`Rights.obtain_capability`
and :meth:`Rights.deliverable`.

A verdict is ``ALLOW`` or a denial ``(status, reason)``; the status is what
the edge or dm must answer (the reason names the rule, for failure messages).
Where two rules refuse at once, the model follows the order in which the
edge documents its checks (``docs/threat-model.md`` section 4).
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: The longest re-share chain a capability names (then re-sharing by capability stops).
MAX_SOURCES = 8
#: The lowest age each session claim allows (the dev issuer's "adult" and "minor").
AGE_OF = {"adult": 18, "minor": 13}


@dataclass(frozen=True)
class Verdict:
    status: int  # 200 = allowed; else the HTTP status the service must answer
    reason: str = ""

    @property
    def allowed(self) -> bool:
        return self.status < 400


ALLOW = Verdict(200)


def deny(status: int, reason: str) -> Verdict:
    return Verdict(status, reason)


@dataclass
class User:
    age: str  # "adult" | "minor"
    region: str


@dataclass
class MediaRec:
    owner: str
    public: bool
    allow_reshare: bool
    min_age: int = 0
    allowed_regions: frozenset[str] = frozenset()
    blocked_regions: frozenset[str] = frozenset()
    active: bool = True


@dataclass
class Conv:
    mode: str  # "plain" | "sealed"
    creator: str
    members: set[str]  # current members; there is no route that adds anyone later
    departed: set[str] = field(default_factory=set)  # left or removed: never back


@dataclass
class Message:
    cid: str
    sender: str
    media: str | None
    to: frozenset[str]  # the members when it was stored: the only ones it is delivered to
    grant: str | None = None
    unsent: bool = False


@dataclass
class GrantRec:
    media: str
    sharer: str
    n: int
    redeemers: list[str] = field(default_factory=list)  # bound users, first come first bound
    revoked: bool = False
    cap: str | None = None  # a derived grant: the capability it was made from


@dataclass
class CapRec:
    """A share capability (docs/protocol.md, section 14): its holder derives grants."""

    media: str
    holder: str
    max_grants: int
    sources: tuple[str, ...]  # the re-share chain: grant and capability ids
    grants: set[str] = field(default_factory=set)  # derived grants redeemed at least once
    revoked: bool = False


@dataclass
class Pointer:
    """What a plain pointer names (the model never needs its signature)."""

    sub: str
    media: str
    cid: str
    mid: str


class Rights:
    def __init__(self) -> None:
        self.users: dict[str, User] = {}
        self.media: dict[str, MediaRec] = {}
        self.convs: dict[str, Conv] = {}
        self.messages: dict[str, Message] = {}
        self.grants: dict[str, GrantRec] = {}
        self.caps: dict[str, CapRec] = {}
        self.blocks: set[tuple[str, str]] = set()  # (blocker, blocked)

    # -- rules ------------------------------------------------------------------------------
    def audience(self, uid: str, mid: str) -> Verdict:
        """Age and region gates, from the session's claims (the IdP is trusted)."""
        u, m = self.users[uid], self.media[mid]
        if m.min_age > AGE_OF[u.age]:
            return deny(403, "age_restricted")
        if u.region in m.blocked_regions or (m.allowed_regions and u.region not in m.allowed_regions):
            return deny(403, "region_restricted")
        return ALLOW

    def is_member(self, uid: str, cid: str) -> bool:
        return uid in self.convs[cid].members

    def deliverable(self, uid: str, msg_id: str) -> bool:
        """dm shows message ``msg_id`` to ``uid`` (HTTP read, live push, replay from any
        cursor), and so mints a pointer for it, only while: ``uid`` is a current member,
        was a member when it was stored, the message is not unsent, and ``uid`` has not
        blocked its sender."""
        m = self.messages[msg_id]
        return (
            self.is_member(uid, m.cid)
            and uid in m.to
            and not m.unsent
            and (uid, m.sender) not in self.blocks
        )

    def holds_plain(self, uid: str, mid: str) -> bool:
        """``uid`` currently holds ``mid`` in plain mode: a plain message carrying it, not
        unsent, delivered to them in a conversation they are still in (blocks do not
        matter).  A sealed message does not count: dm never learns what it carried, so a
        sealed recipient re-shares with ``via_grant``, in sealed mode."""
        return any(
            m.media == mid
            and not m.unsent
            and m.sender != uid
            and uid in m.to
            and self.convs[m.cid].mode == "plain"
            and self.is_member(uid, m.cid)
            for m in self.messages.values()
        )

    def share_right(self, uid: str, mid: str, *, holds: bool) -> Verdict:
        """Who may share ``mid``: anyone it is public to; the owner; a recipient who holds
        it now, if the owner allowed re-sharing.  The sharer must pass the audience rules
        (even the owner: a share is a view), and the media must be active."""
        m = self.media[mid]
        aud = self.audience(uid, mid)
        if not aud.allowed:
            return aud
        if not m.active:
            return deny(410, "media_taken_down")
        if m.public or m.owner == uid or (m.allow_reshare and holds):
            return ALLOW
        return deny(403, "share_not_allowed")

    def fetch(
        self, uid: str, mid: str, *, pointer: Pointer | None = None, grant: str | None = None
    ) -> Verdict:
        """May ``uid`` fetch ``mid`` with this token (or none)?  A session is always needed.

        Public media and the owner's own need no token (any given is ignored): allowed
        while active (the owner without audience rules).  Otherwise a pointer is honoured
        iff it names this user and media, the user is still a member of its conversation,
        its message is not unsent, the media is active and the audience rules hold; a
        grant iff it is for this media, not revoked, the media is active, the audience
        rules hold and the user is (or can become) one of its first N distinct redeemers.
        """
        m = self.media[mid]
        if m.public or m.owner == uid:
            if not m.active:
                return deny(410, "media_taken_down")
            return ALLOW if m.owner == uid else self.audience(uid, mid)
        if pointer is None and grant is None:
            return deny(403, "pointer_required")
        if pointer is not None:
            if pointer.media != mid:
                return deny(403, "pointer_media_mismatch")
            if pointer.sub != uid:
                return deny(403, "pointer_wrong_recipient")
            if not m.active:
                return deny(410, "media_taken_down")
            msg = self.messages[pointer.mid]
            if msg.unsent:
                return deny(410, "message_unsent")
            if not self.is_member(uid, pointer.cid):
                return deny(403, "not_a_member")
            return self.audience(uid, mid)
        assert grant is not None
        g = self.grants[grant]
        if g.media != mid:
            return deny(403, "grant_media_mismatch")
        live = self.live(grant)
        if not live.allowed:
            return live
        if not m.active:
            return deny(410, "media_taken_down")
        aud = self.audience(uid, mid)
        if not aud.allowed:
            return aud
        cap = self.caps[g.cap] if g.cap else None
        if (
            cap is not None
            and uid not in g.redeemers
            and grant not in cap.grants
            and len(cap.grants) >= cap.max_grants
        ):
            return deny(403, "capability_exhausted")
        if uid not in g.redeemers and len(g.redeemers) >= g.n:
            return deny(403, "grant_exhausted")
        return ALLOW

    def is_revoked(self, token_id: str) -> bool:
        """A grant or a capability (a re-share chain names both) that was revoked."""
        if token_id in self.caps:
            return self.caps[token_id].revoked
        return self.grants[token_id].revoked

    def live(self, grant: str) -> Verdict:
        """What can change about a grant after it was made: it is not revoked; a derived
        one's capability is not revoked, nor anything in that capability's re-share chain,
        and its holder may still share (the owner, or a re-sharer while re-sharing is on)."""
        g = self.grants[grant]
        if g.revoked:
            return deny(410, "grant_revoked")
        if g.cap is None:
            return ALLOW
        cap = self.caps[g.cap]
        if cap.revoked:
            return deny(410, "capability_revoked")
        if any(self.is_revoked(s) for s in cap.sources):
            return deny(410, "capability_source_revoked")
        m = self.media[g.media]
        if not (m.public or m.owner == cap.holder or (cap.sources and m.allow_reshare)):
            return deny(403, "share_not_allowed")
        return ALLOW

    # -- actions: each returns the verdict the service must give, and applies it ---------
    def add_user(self, uid: str, *, age: str, region: str) -> None:
        self.users[uid] = User(age, region)

    def add_media(self, mid: str, rec: MediaRec) -> None:
        self.media[mid] = rec

    def create_conversation(self, cid: str, creator: str, others: list[str], mode: str) -> Verdict:
        """No conversation can be opened with someone who blocked you (a group neither:
        else a blocked user could reach the blocker by adding a third person)."""
        if any((o, creator) in self.blocks for o in others):
            return deny(403, "blocked")
        self.convs[cid] = Conv(mode, creator, {creator, *others})
        return ALLOW

    def _may_write(self, uid: str, cid: str) -> Verdict:
        """Members write; in a conversation of two current members, not if the other
        blocked them."""
        c = self.convs[cid]
        if uid not in c.members:
            return deny(403, "not_a_member")
        others = c.members - {uid}
        if len(c.members) == 2 and (next(iter(others)), uid) in self.blocks:
            return deny(403, "blocked")
        return ALLOW

    def send_plain(self, msg_id: str, uid: str, cid: str, mid: str | None) -> Verdict:
        """A plain send; re-sharing in plain mode is proven by plain holdings (dm cannot
        see grants: in sealed mode it never learns which media was shared)."""
        v = self._may_write(uid, cid)
        if v.allowed and mid is not None:
            v = self.share_right(uid, mid, holds=self.holds_plain(uid, mid))
        if v.allowed:
            self.messages[msg_id] = Message(cid, uid, mid, frozenset(self.convs[cid].members))
        return v

    def mint_grant(self, gid: str, uid: str, mid: str, n: int, via: str | None) -> Verdict:
        """``POST /v1/grants``; a re-share must name (``via``) a minted grant for the same
        media that ``uid`` redeemed and that is :meth:`live` (not revoked); a derived grant
        is refused (re-shared through a capability instead)."""
        g = self.grants.get(via) if via else None
        holds = g is not None and g.media == mid and uid in g.redeemers and self.live(via or "").allowed
        m = self.media[mid]
        if g is not None and g.media != mid and not (m.public or m.owner == uid):
            return deny(403, "grant_media_mismatch")
        if g is not None and g.cap is not None and not (m.public or m.owner == uid):
            # a derived grant is re-shared through a capability (which keeps the chain),
            # never a minted grant; a revoked one is answered 410 first
            live = self.live(via or "")
            return live if not live.allowed else deny(403, "share_not_allowed")
        v = self.share_right(uid, mid, holds=holds)
        if v.allowed:
            self.grants[gid] = GrantRec(mid, uid, n)
        return v

    def obtain_capability(
        self, cap_id: str, uid: str, mid: str, via: str | None, *, max_grants: int = 1000
    ) -> Verdict:
        """``POST /v1/capabilities``: the checks of :meth:`mint_grant`, where the proof of
        receipt may also be a derived grant, counted only while it is :meth:`live`.  A
        re-sharer's capability names the chain it came through."""
        g = self.grants.get(via) if via else None
        holds = g is not None and g.media == mid and uid in g.redeemers and self.live(via or "").allowed
        m = self.media[mid]
        if g is not None and g.media != mid and not (m.public or m.owner == uid):
            return deny(403, "grant_media_mismatch")
        sources: tuple[str, ...] = ()
        if g is not None and holds and not (m.public or m.owner == uid):
            assert via is not None
            sources = (via,) if g.cap is None else (via, g.cap, *self.caps[g.cap].sources)
            if len(sources) > MAX_SOURCES:  # the chain a capability can carry
                holds = False
        v = self.share_right(uid, mid, holds=holds)
        if v.allowed:
            self.caps[cap_id] = CapRec(mid, uid, max_grants, sources if holds else ())
        return v

    def derive(self, gid: str, cap_id: str, n: int) -> None:
        """A grant made on the holder's device: no service is asked, nothing is refused."""
        cap = self.caps[cap_id]
        self.grants[gid] = GrantRec(cap.media, cap.holder, n, cap=cap_id)

    def revoke_capability(self, uid: str, cap_id: str) -> Verdict:
        """Its holder, the media's owner (or a moderator) revokes a capability."""
        cap = self.caps[cap_id]
        if uid not in (cap.holder, self.media[cap.media].owner):
            return deny(403, "forbidden")
        cap.revoked = True
        return ALLOW

    def send_sealed(self, msg_id: str, uid: str, cid: str, grant: str | None) -> Verdict:
        """A sealed send; it must be sealed to someone (alone in the conversation: 409)."""
        v = self._may_write(uid, cid)
        if v.allowed and not self.convs[cid].members - {uid}:
            v = deny(409, "device_mismatch")
        if v.allowed:
            media = self.grants[grant].media if grant else None
            self.messages[msg_id] = Message(cid, uid, media, frozenset(self.convs[cid].members), grant)
        return v

    def redeem(self, uid: str, mid: str, grant: str) -> Verdict:
        """A fetch with a grant; an allowed one binds ``uid`` (a refusal uses no slot)."""
        v = self.fetch(uid, mid, grant=grant)
        m, g = self.media[mid], self.grants[grant]
        if v.allowed and not (m.public or m.owner == uid) and uid not in g.redeemers:
            g.redeemers.append(uid)
            if g.cap is not None:
                self.caps[g.cap].grants.add(grant)
        return v

    def unsend(self, uid: str, msg_id: str) -> Verdict:
        """Only the sender, while a member; it revokes the message's grant too (dm a minted
        one, the sender's client a derived one)."""
        m = self.messages[msg_id]
        if not self.is_member(uid, m.cid):
            return deny(403, "not_a_member")
        if m.sender != uid:
            return deny(403, "forbidden")
        m.unsent = True
        if m.grant:
            self.grants[m.grant].revoked = True
        return ALLOW

    def remove(self, uid: str, cid: str, target: str) -> Verdict:
        """Leave (``target == uid``) or the creator removes another member; for good.  A
        repeat of a finished leave or removal (a retry) answers 200 and changes nothing."""
        c = self.convs[cid]
        if uid in c.members:
            if target != uid and uid != c.creator:
                return deny(403, "forbidden")
        elif target != uid:
            return deny(403, "not_a_member")
        if target in c.members:
            c.members.discard(target)
            c.departed.add(target)
            return ALLOW
        return ALLOW if target in c.departed else deny(403, "not_a_member")

    def block(self, uid: str, other: str) -> None:
        """Blocks stop writing in one-to-one conversations and hide the blocked sender's
        messages from the blocker; they never change fetch rights."""
        self.blocks.add((uid, other))

    def takedown(self, mid: str) -> None:
        self.media[mid].active = False

    def revoke_grant(self, uid: str, grant: str) -> Verdict:
        """Only the grant's sharer (a derived grant's: its capability's holder), or a
        moderator, revokes it."""
        g = self.grants[grant]
        if g.sharer != uid:
            return deny(403, "forbidden")
        g.revoked = True
        return ALLOW
