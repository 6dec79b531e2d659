"""The media record and its validation (pure; storage is in :mod:`cdn_auth.registry`)."""

from __future__ import annotations

import email.utils
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service_kernel.errors import InvalidField

if TYPE_CHECKING:
    from .origin import Origin

VISIBILITIES = ("public", "private")
#: "held": a hash bank matched at registration; no edge serves it until a moderator decides.
STATUSES = ("active", "taken_down", "held")
MAX_REGIONS = 250
MAX_AGE_RULE = 21
_CONTENT_TYPE_RE = re.compile(r"[a-z0-9][a-z0-9.+-]{0,62}/[a-z0-9][a-z0-9.+-]{0,62}")
_REGION_RE = re.compile(r"[A-Z]{2}")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class AudienceRules:
    min_age: int = 0
    allowed_regions: frozenset[str] = field(default_factory=frozenset)  # empty: everywhere
    blocked_regions: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True, slots=True)
class Media:
    id: str
    owner: str
    visibility: str
    allow_reshare: bool
    audience: AudienceRules
    status: str
    content_type: str
    size: int
    sha256: str
    origin: str  # path relative to the origin directory
    created_at: int
    # Derived values, computed at most once per record and kept on it: the edge needs them
    # on every request, and a cached record serves many.  Not part of the record: not in
    # the constructor, equality, hash, repr or public view; ``replace`` starts them afresh.
    _etag: str | None = field(default=None, init=False, repr=False, compare=False)
    _last_modified: str | None = field(default=None, init=False, repr=False, compare=False)
    _origin_file: tuple[Path, Path] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def is_public(self) -> bool:
        return self.visibility == "public"

    @property
    def etag(self) -> str:
        """Strong ETag from the content hash: the same on every edge and origin copy."""
        etag = self._etag
        if etag is None:
            etag = f'"{self.sha256[:32]}"'
            object.__setattr__(self, "_etag", etag)
        return etag

    @property
    def last_modified(self) -> str:
        """``created_at`` as an HTTP-date (the representation's Last-Modified)."""
        value = self._last_modified
        if value is None:
            value = email.utils.formatdate(self.created_at, usegmt=True)
            object.__setattr__(self, "_last_modified", value)
        return value

    def origin_file(self, origin: Origin) -> Path:
        """The absolute path of the bytes under ``origin``: :meth:`Origin.path_of` (with its
        containment check) once per record and origin root; a refusal is not remembered."""
        memo = self._origin_file
        if memo is not None and memo[0] is origin.root:
            return memo[1]
        path = origin.path_of(self.origin)
        object.__setattr__(self, "_origin_file", (origin.root, path))
        return path

    def taken_down(self) -> Media:
        return replace(self, status="taken_down")

    def public_view(self) -> dict[str, Any]:
        d = asdict(self)
        d["audience"] = {
            "min_age": self.audience.min_age,
            "allowed_regions": sorted(self.audience.allowed_regions),
            "blocked_regions": sorted(self.audience.blocked_regions),
        }
        for name in ("origin", *_DERIVED):
            del d[name]
        return d


_DERIVED = ("_etag", "_last_modified", "_origin_file")


def parse_regions(value: object, name: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    if not isinstance(value, list) or len(value) > MAX_REGIONS:
        raise InvalidField(f"{name} must be a list of ISO 3166-1 alpha-2 codes")
    out = set()
    for v in value:
        # isascii first: "ß".upper() is "SS", which would pass as a region.
        if not isinstance(v, str) or not v.isascii() or _REGION_RE.fullmatch(v.upper()) is None:
            raise InvalidField(f"{name} must be a list of ISO 3166-1 alpha-2 codes")
        out.add(v.upper())
    return frozenset(out)


def parse_rules(doc: dict[str, Any]) -> tuple[str, bool, AudienceRules]:
    """Validate visibility and audience fields of a registration request."""
    visibility = doc.get("visibility", "private")
    if visibility not in VISIBILITIES:
        raise InvalidField("visibility must be 'public' or 'private'")
    allow_reshare = doc.get("allow_reshare", False)
    if not isinstance(allow_reshare, bool):
        raise InvalidField("allow_reshare must be a boolean")
    min_age = doc.get("min_age", 0)
    if not isinstance(min_age, int) or isinstance(min_age, bool) or not 0 <= min_age <= MAX_AGE_RULE:
        raise InvalidField(f"min_age must be an integer 0..{MAX_AGE_RULE}")
    rules = AudienceRules(
        min_age,
        parse_regions(doc.get("allowed_regions"), "allowed_regions"),
        parse_regions(doc.get("blocked_regions"), "blocked_regions"),
    )
    return visibility, allow_reshare, rules


#: Top-level types the edge serves.  Anything else (text/html, application/javascript,
#: image/svg+xml...) could run script in the edge's origin if a browser sniffed or
#: rendered it, so it is refused at registration (and the edge sends nosniff).
MEDIA_TOP_TYPES = ("video", "audio", "image")
_SCRIPTABLE = frozenset({"image/svg+xml"})


def check_content_type(value: object) -> str:
    if not isinstance(value, str) or _CONTENT_TYPE_RE.fullmatch(value) is None:
        raise InvalidField("content_type must be a MIME type such as video/mp4")
    if value.split("/", 1)[0] not in MEDIA_TOP_TYPES or value in _SCRIPTABLE:
        raise InvalidField("content_type must be a video, audio or image type (not svg)")
    return value


def to_redis(m: Media) -> dict[str, str]:
    return {
        "id": m.id,
        "owner": m.owner,
        "visibility": m.visibility,
        "allow_reshare": "1" if m.allow_reshare else "0",
        "min_age": str(m.audience.min_age),
        "allowed_regions": ",".join(sorted(m.audience.allowed_regions)),
        "blocked_regions": ",".join(sorted(m.audience.blocked_regions)),
        "status": m.status,
        "content_type": m.content_type,
        "size": str(m.size),
        "sha256": m.sha256,
        "origin": m.origin,
        "created_at": str(m.created_at),
    }


def from_redis(h: dict[str, str]) -> Media:
    def regions(s: str) -> frozenset[str]:
        return frozenset(x for x in s.split(",") if x)

    return Media(
        id=h["id"],
        owner=h["owner"],
        visibility=h["visibility"],
        allow_reshare=h["allow_reshare"] == "1",
        audience=AudienceRules(
            int(h["min_age"]), regions(h["allowed_regions"]), regions(h["blocked_regions"])
        ),
        status=h["status"],
        content_type=h["content_type"],
        size=int(h["size"]),
        sha256=h["sha256"],
        origin=h["origin"],
        created_at=int(h["created_at"]),
    )
