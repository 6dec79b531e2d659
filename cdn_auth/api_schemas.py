"""cdn_auth's API contract: request and response schemas, parameters and links of every route.

Each ``Route`` in the ``web_*`` modules names one :class:`~service_kernel.openapi.Api`
from here, so the route table stays the one source of ``/openapi.json``.  The
schemas say what the handlers do (limits from :class:`~cdn_auth.settings.EdgeSettings`
where an operator may change them; ``additionalProperties: false`` where a
handler refuses unknown fields).
"""

from __future__ import annotations

from typing import Any

from service_kernel.openapi import Answer, Api, Param, Schema, obj, operation_id, ref

from .capability import MAX_GRANTS
from .grant import MAX_REDEEMERS
from .matching import MAX_SIGNALS_PER_ADD
from .media import MAX_AGE_RULE, MAX_REGIONS, MEDIA_TOP_TYPES
from .playback import COOKIE_NAME, COOKIE_PATH
from .settings import EdgeSettings

ID: Schema = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$", "minLength": 1, "maxLength": 64}
_REGION: Schema = {
    "type": "string",
    "pattern": "^[A-Za-z]{2}$",
    "description": "ISO 3166-1 alpha-2 (either case)",
}
_REGIONS: Schema = {
    "anyOf": [{"type": "array", "items": _REGION, "maxItems": MAX_REGIONS}, {"type": "null"}]
}
_CONTENT_TYPE: Schema = {
    "type": "string",
    "default": "video/mp4",
    "pattern": f"^({'|'.join(MEDIA_TOP_TYPES)})/[a-z0-9][a-z0-9.+-]{{0,62}}$",
    "not": {"const": "image/svg+xml"},
    "description": "a video, audio or image type (never svg: it could run script)",
}


MEDIA_RECORD: Schema = obj(
    {
        "id": ID,
        "owner": {"type": "string"},
        "visibility": {"enum": ["public", "private"]},
        "allow_reshare": {"type": "boolean"},
        "audience": obj(
            {
                "min_age": {"type": "integer"},
                "allowed_regions": {"type": "array", "items": {"type": "string"}},
                "blocked_regions": {"type": "array", "items": {"type": "string"}},
            },
            ("min_age", "allowed_regions", "blocked_regions"),
        ),
        "status": {"enum": ["active", "taken_down", "held"]},
        "content_type": {"type": "string"},
        "size": {"type": "integer", "minimum": 0},
        "sha256": {"type": "string"},
        "created_at": {"type": "integer"},
    },
    (
        "id",
        "owner",
        "visibility",
        "allow_reshare",
        "audience",
        "status",
        "content_type",
        "size",
        "sha256",
        "created_at",
    ),
)
COMPONENTS: dict[str, Schema] = {"MediaRecord": MEDIA_RECORD}

# -- the edge --------------------------------------------------------------------------------

_MEDIA_TYPES = ("video/*", "audio/*", "image/*")
_BYTES: Schema = {"type": "string", "format": "binary", "contentMediaType": "application/octet-stream"}
_MEDIA_HEADERS = {
    "ETag": {"schema": {"type": "string"}},
    "Accept-Ranges": {"schema": {"const": "bytes"}},
    "Content-Range": {"schema": {"type": "string"}},
}
#: Empty counts as absent; the owner, and anyone for public media, needs none (and any is
#: ignored), so a token's spelling is the token checks' business (403), not the schema's.
_TOKEN: Schema = {"type": "string"}
_FETCH_PARAMS = (
    Param("media_id", "path", ID, required=True),
    Param("pointer", "query", _TOKEN, "pointer token (plain mode), as dm delivered it"),
    Param("X-Pointer", "header", _TOKEN, "pointer token, as a header"),
    Param("grant", "query", _TOKEN, "grant token (sealed mode); not with a pointer (403)"),
    Param("X-Grant", "header", _TOKEN, "grant token, as a header"),
    Param("Range", "header", {"type": "string"}, "bytes=first-last (one range; 416 outside the file)"),
    Param("If-Range", "header", {"type": "string"}),
    Param("If-None-Match", "header", {"type": "string"}),
)
_MEDIA_SECURITY: tuple[dict[str, list[str]], ...] = ({"bearer": []}, {"mediaCookie": []})
FETCH = Api(
    params=_FETCH_PARAMS,
    omit=frozenset({COOKIE_NAME}),
    security=_MEDIA_SECURITY,
    ok={
        200: Answer(_BYTES, media_type=_MEDIA_TYPES, headers=_MEDIA_HEADERS),
        206: Answer(_BYTES, media_type=_MEDIA_TYPES, headers=_MEDIA_HEADERS),
        304: Answer(description="Not modified (If-None-Match)"),
    },
    description="The owner, and anyone viewing public media, needs only a session; others "
    "present the pointer or grant they were given. 403: the token or the rights "
    "refuse; 410: unsent, revoked or taken down; 503 revocation_stale: the edge "
    "cannot vouch for revocations and fails closed.",
)
HEAD_FETCH = FETCH
AUTH = Api(
    params=(
        Param(
            "X-Original-URI",
            "header",
            {
                "type": "string",
                "maxLength": 2048,
                "pattern": "^/m/[A-Za-z0-9_-]{1,64}(\\?[^&#]*(&[^&#]*){0,15})?$",
            },
            "the original request URI: /m/<media id>, optionally with its query "
            "(pointer or grant; at most 16 fields)",
            required=True,
        ),
        Param(
            "X-Original-Method",
            "header",
            {"type": "string"},
            "the original method (the media cookie counts only for GET/HEAD)",
        ),
        Param("X-Pointer", "header", _TOKEN),
        Param("X-Grant", "header", _TOKEN),
    ),
    omit=frozenset({COOKIE_NAME}),
    security=_MEDIA_SECURITY,
    errors={413: None},
    ok={
        204: Answer(
            description="Allowed; the headers tell nginx where the bytes are",
            headers={
                "X-Origin-Path": {"schema": {"type": "string"}},
                "X-Media-ETag": {"schema": {"type": "string"}},
                "X-Media-Content-Type": {"schema": {"type": "string"}},
                "X-Auth-Deps": {"schema": {"type": "string"}},
                "X-Auth-Through": {"schema": {"type": "string"}},
                "X-Auth-Max-Age": {"schema": {"type": "string"}},
            },
        )
    },
    description="nginx auth_request: the decision GET /m/{media_id} would make, without the bytes.",
)

# -- media -----------------------------------------------------------------------------------


def _meta(*, json_route: bool) -> Schema:
    props: dict[str, Schema] = {
        "content_type": _CONTENT_TYPE,
        "visibility": {"enum": ["public", "private"], "default": "private"},
        "allow_reshare": {"type": "boolean", "default": False},
        "min_age": {"type": "integer", "minimum": 0, "maximum": MAX_AGE_RULE, "default": 0},
        "allowed_regions": _REGIONS,
        "blocked_regions": _REGIONS,
        "owner": {
            "type": "string",
            "minLength": 1,
            "maxLength": 255,
            "description": "register for another owner (publisher role; else 403)",
        },
    }
    if json_route:
        props["origin_path"] = {"type": "string", "description": "a file under the ingest directory"}
        return obj(props, ("origin_path",), description="Publisher role only (else 403)")
    return obj(props, description="The upload's metadata (no origin_path)")


_MEDIA_LINKS = {
    "GetMedia": {
        "operationId": operation_id("GET", "/v1/media/{media_id}"),
        "parameters": {"media_id": "$response.body#/id"},
    },
    "FetchMedia": {
        "operationId": operation_id("GET", "/m/{media_id}"),
        "parameters": {"media_id": "$response.body#/id"},
    },
    "CreateGrant": {
        "operationId": operation_id("POST", "/v1/grants"),
        "requestBody": {"media_id": "$response.body#/id", "redeemers": 1},
        "x-schemathesis": {"merge_body": False},
    },
    "CreateCapability": {
        "operationId": operation_id("POST", "/v1/capabilities"),
        # The holder key is the device's own; this one is RFC 8032's first test key.
        "description": "a capability for the new media (holder_key: your device's key)",
        "requestBody": {
            "media_id": "$response.body#/id",
            "holder_key": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
        },
        "x-schemathesis": {"merge_body": False},
    },
}


def _upload(s: EdgeSettings) -> Schema:
    return obj(
        {
            "metadata": _meta(json_route=False),
            "file": {**_BYTES, "description": f"the bytes, at most {s.max_upload_bytes} (413 beyond)"},
        },
        ("metadata", "file"),
        description="Parts in this order: metadata, then file",
    )


CREATE_MEDIA = Api(
    body=_meta(json_route=True),
    content={"multipart/form-data": _upload},
    encoding={"multipart/form-data": {"metadata": {"contentType": "application/json"}}},
    ok={
        201: Answer(
            ref("MediaRecord"), headers={"Location": {"schema": {"type": "string"}}}, links=_MEDIA_LINKS
        )
    },
    description="Register a video: upload it (multipart: metadata, then file; screened "
    "against the hash banks: 403 media_banked) or, with the publisher role, name "
    "a file already in the ingest directory (JSON origin_path). 403 user_suspended: "
    "a moderator suspended the caller. 503 "
    "storage_unavailable: the origin cannot be written.",
)
GET_MEDIA = Api(
    params=(Param("media_id", "path", ID, required=True),),
    ok={200: Answer(ref("MediaRecord"))},
    errors={400: None},
)
TAKEDOWN = Api(
    body=obj({"media_id": ID, "reason": {"type": "string", "maxLength": 1000}}, ("media_id",)),
    ok={
        200: Answer(
            obj(
                {
                    "media_id": ID,
                    "status": {"type": "string"},
                    "revocation_id": {"type": "string"},
                    "at": {"type": "integer"},
                },
                ("media_id", "status", "revocation_id", "at"),
            )
        )
    },
)

# -- grants ----------------------------------------------------------------------------------


def _grant_body(s: EdgeSettings) -> Schema:
    return obj(
        {
            "media_id": ID,
            "redeemers": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_REDEEMERS,
                "description": "how many users may redeem it",
            },
            "via_grant": {
                "type": "string",
                "description": "re-share: a (minted) grant you redeemed; a derived grant "
                "(d_...) is 403 share_not_allowed: re-share it with POST /v1/capabilities, "
                "which carries the chain",
            },
            "ttl_s": {"type": "integer", "minimum": 10, "maximum": s.max_token_lifetime_s},
        },
        ("media_id", "redeemers"),
    )


CREATE_GRANT = Api(
    body=_grant_body,
    ok={
        201: Answer(
            obj(
                {
                    "grant": {"type": "string"},
                    "grant_id": ID,
                    "media_id": ID,
                    "max_redeemers": {"type": "integer"},
                    "expires_at": {"type": "integer"},
                },
                ("grant", "grant_id", "media_id", "max_redeemers", "expires_at"),
            ),
            links={
                "RevokeGrant": {
                    "operationId": operation_id("DELETE", "/v1/grants/{grant_id}"),
                    "parameters": {"grant_id": "$response.body#/grant_id"},
                }
            },
        )
    },
    description="503 minting_disabled: this edge only verifies. 403 share_not_allowed: "
    "also for a derived grant as via_grant (a minted grant would drop its re-share chain).",
)
REVOKE_GRANT = Api(
    params=(Param("grant_id", "path", ID, required=True),),
    body=obj(
        {
            "grant": {
                **_TOKEN,
                "description": "a derived grant (d_...) itself: it shows "
                "whose it is (no record of it exists)",
            }
        }
    ),
    body_required=False,
    ok={
        200: Answer(
            obj(
                {"grant_id": ID, "revoked": {"const": True}, "revocation_id": {"type": "string"}},
                ("grant_id", "revoked", "revocation_id"),
            )
        )
    },
    errors={400: None},
)

# -- share capabilities (protocol section 14) --------------------------------------------------

#: A canonical base64url Ed25519 public key: 32 bytes in 43 characters, whose last carries
#: two zero bits (the decoder refuses any other spelling).
HOLDER_KEY: Schema = {
    "type": "string",
    "pattern": "^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$",
    "description": (
        "the holder device's Ed25519 public key (base64url); a small-order point "
        "(libsodium's blocklist, sign bit ignored) is refused: 400 invalid_field"
    ),
}


def _capability_body(s: EdgeSettings) -> Schema:
    return obj(
        {
            "media_id": ID,
            "holder_key": HOLDER_KEY,
            "max_redeemers": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_REDEEMERS,
                "description": "the largest N a derived grant may carry",
            },
            "max_grants": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_GRANTS,
                "description": "how many distinct grants may be derived",
            },
            "ttl_s": {"type": "integer", "minimum": 60, "maximum": s.max_capability_lifetime_s},
            "via_grant": {"type": "string", "description": "re-share: a grant you redeemed"},
        },
        ("media_id", "holder_key"),
    )


CREATE_CAPABILITY = Api(
    body=_capability_body,
    ok={
        201: Answer(
            obj(
                {
                    "capability": {"type": "string"},
                    "cap_id": ID,
                    "media_id": ID,
                    "holder": ID,
                    "max_redeemers": {"type": "integer"},
                    "max_grants": {"type": "integer"},
                    "sources": {"type": "array", "items": {"type": "string"}},
                    "expires_at": {"type": "integer"},
                    "max_grant_ttl_s": {"type": "integer"},
                },
                (
                    "capability",
                    "cap_id",
                    "media_id",
                    "holder",
                    "max_redeemers",
                    "max_grants",
                    "sources",
                    "expires_at",
                    "max_grant_ttl_s",
                ),
            ),
            links={
                "RevokeCapability": {
                    "operationId": operation_id("DELETE", "/v1/capabilities/{cap_id}"),
                    "parameters": {"cap_id": "$response.body#/cap_id"},
                }
            },
        )
    },
    description="The holder derives per-share grants from it on its device (no round trip "
    "per share). 403 share_not_allowed also when the owner or a moderator revoked this "
    "holder's capability issued on the same via_grant. 503 minting_disabled: this edge only "
    "verifies.",
)
REVOKE_CAPABILITY = Api(
    params=(Param("cap_id", "path", ID, required=True),),
    ok={
        200: Answer(
            obj(
                {"cap_id": ID, "revoked": {"const": True}, "revocation_id": {"type": "string"}},
                ("cap_id", "revoked", "revocation_id"),
            )
        )
    },
    errors={400: None},
    description="By its holder, the media's owner or a moderator.  A re-sharer's capability "
    "revoked by the owner or a moderator also ends every other capability its holder was "
    "issued on the same proof (its via_grant), and none is issued to the holder on that proof "
    "again while it lives (protocol 14.5).  revocation_id is the last stream entry published.",
)

# -- banks ------------------------------------------------------------------------------------

LIST_BANKS = Api(
    ok={200: Answer(obj({"banks": {"type": "array", "items": {"type": "object"}}}, ("banks",)))}
)
ADD_SIGNALS = Api(
    params=(
        Param(
            "bank",
            "path",
            {"type": "string", "minLength": 1},
            "a bank GET /v1/banks lists (400 for another name)",
            required=True,
        ),
    ),
    body=obj(
        {
            "signals": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_SIGNALS_PER_ADD,
                "items": obj(
                    {"signal_type": {"type": "string"}, "signal": {"type": "string"}},
                    ("signal_type", "signal"),
                    closed=False,
                ),
            }
        },
        ("signals",),
    ),
    ok={
        200: Answer(
            obj(
                {
                    "bank": {"type": "string"},
                    "added": {"type": "integer"},
                    "taken_down": {"type": "array", "items": {"type": "string"}},
                },
                ("bank", "added", "taken_down"),
                closed=False,
            )
        )
    },
)

# -- browser playback and operations ---------------------------------------------------------

PLAYBACK_CREATE = Api(
    ok={
        201: Answer(
            obj(
                {
                    "user_id": {"type": "string"},
                    "expires_at": {"type": "integer"},
                    "cookie_path": {"const": COOKIE_PATH},
                },
                ("user_id", "expires_at", "cookie_path"),
            ),
            headers={
                "Set-Cookie": {
                    "schema": {"type": "string"},
                    "description": f"{COOKIE_NAME}=...; HttpOnly; Path={COOKIE_PATH}",
                }
            },
        )
    },
    description="404 playback_disabled where no playback secret is configured. Each call "
    "verifies the session and signs a cookie, so it is rate limited per user "
    "(playback_session: the web client asks once per page load and once per cookie "
    "lifetime); beyond it 429 rate_limited with Retry-After.",
)
PLAYBACK_DELETE = Api(ok={200: Answer(obj({"cleared": {"const": True}}, ("cleared",)))})
DOCUMENT: dict[str, Any] = {
    "description": "The media registry and the edge that authorizes every video fetch. "
    'Errors are {"error": {"code", "message"}}.',
    "components": COMPONENTS,
    "security_schemes": {
        "mediaCookie": {
            "type": "apiKey",
            "in": "cookie",
            "name": COOKIE_NAME,
            "description": "Browsers: the HttpOnly media cookie POST /v1/playback-session sets "
            f"(Path={COOKIE_PATH}); honoured on GET/HEAD of media only.",
        }
    },
}
