"""dm's API contract: request and response schemas, parameters and links of every route.

Each ``Route`` in the ``web_*`` modules names one :class:`~service_kernel.openapi.Api`
from here, so the route table stays the one source of the document.  The schemas
say what the handlers do: a limit the code enforces is the schema's limit
(read from :class:`~dm.settings.DmSettings` where an operator may change it),
and ``additionalProperties: false`` wherever the handler refuses unknown fields.
What a schema cannot say (a sealed conversation takes envelopes, a plain one
text; text is limited in UTF-8 bytes) is in the descriptions.
"""

from __future__ import annotations

from typing import Any

from service_kernel.openapi import Answer, Api, Param, Schema, obj, operation_id, ref

from . import envelope
from .settings import DmSettings

# -- shared pieces ---------------------------------------------------------------------------

#: Our own ids (conversations, media, grants, review items...): service_kernel.ids.check_id.
ID: Schema = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$", "minLength": 1, "maxLength": 64}
#: Ids from the identity provider: no whitespace (as Python's str.isspace), no "," "/" "{" "}"
#: and no control character (service_kernel.ids.is_user_id).
USER_ID: Schema = {
    "type": "string",
    "minLength": 1,
    "maxLength": 255,
    "pattern": "^[^\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029"
    "\\u202f\\u205f\\u3000,/{}\\u0000-\\u001f\\u007f]{1,255}$",
}
#: A message id or stream cursor (dm.web_messages.check_cursor).
CURSOR: Schema = {"type": "string", "pattern": "^[0-9]{1,15}-[0-9]{1,10}$"}
B64URL: Schema = {"type": "string", "pattern": "^[A-Za-z0-9_-]*$"}
#: Canonical unpadded base64url of exactly 32 bytes (the last character carries 2 zero bits).
B64URL_32: Schema = {"type": "string", "pattern": "^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$"}
_X_WING_KEY: Schema = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1621}[AQgw]$"}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def page_limit(default: int) -> Any:
    def schema(s: DmSettings) -> Schema:
        return {"type": "integer", "minimum": 1, "maximum": s.page_limit_max, "default": default}

    return schema


def op(method: str, path: str) -> str:
    return operation_id(method, path)


CONV_PATH = "/v1/conversations/{cid}"
MSGS_PATH = "/v1/conversations/{cid}/messages"
CID = Param("cid", "path", ID, "conversation id", required=True)

# -- components: the shapes a client codes against -------------------------------------------

MEDIA_REF: Schema = obj(
    {
        "id": ID,
        "pointer": {"type": "string", "description": "this reader's pointer token"},
        "expires_at": {"type": "integer", "description": "the pointer's expiry (Unix seconds)"},
        "url": {"type": "string", "description": "the edge URL carrying the pointer"},
    },
    ("id",),
    closed=False,
    description="Media in a message; a read carries a pointer minted "
    "for the reader (the sender's own copy only the id)",
)
FRANKING: Schema = obj(
    {
        "commitment": {"type": ["string", "null"]},
        "countersignature": {"type": ["string", "null"]},
        "ts_ms": {"type": "integer"},
    },
    ("commitment", "countersignature", "ts_ms"),
)
MESSAGE: Schema = obj(
    {
        "id": CURSOR,
        "conversation_id": ID,
        "sender": {"type": "string"},
        "sent_at_ms": {"type": "integer"},
        "kind": {"enum": ["plain", "sealed"]},
        "text": {"type": ["string", "null"]},
        "media": nullable(ref("MediaRef")),
        "client_message_id": {"type": ["string", "null"]},
        "envelope": {"type": ["string", "null"], "description": "this device's envelope (sealed)"},
        "franking": ref("Franking"),
        "held": {"type": "boolean", "description": "held for review (202): not delivered yet"},
    },
    ("id", "conversation_id", "sender", "sent_at_ms", "kind"),
    description="A message as one reader's device receives it (plain: text and media; "
    "sealed: this device's envelope and the franking values)",
)
CONVERSATION: Schema = obj(
    {
        "id": ID,
        "mode": {"enum": ["plain", "sealed"]},
        "created_by": {"type": "string"},
        "created_at_ms": {"type": "integer"},
        "members": {"type": "array", "items": {"type": "string"}},
    },
    ("id", "mode", "created_by", "created_at_ms", "members"),
)
DEVICE_KEY: Schema = obj(
    {
        "device_id": {"type": "string"},
        "suite": {"enum": sorted(envelope.SUITES)},
        "public_key": B64URL,
        "fingerprint": {"type": "string"},
        "updated_at_ms": {"type": "integer"},
    },
    ("device_id", "suite", "public_key", "fingerprint", "updated_at_ms"),
)
DEVICE_MISMATCH: Schema = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "missing_devices": {"type": "array", "items": {"type": "string"}},
                "extra_devices": {"type": "array", "items": {"type": "string"}},
            },
        }
    },
    "description": "409 device_mismatch (sealed send): the devices to add and to drop, as "
    "'user/device'; idempotency_conflict carries only code and message",
}

COMPONENTS: dict[str, Schema] = {
    "Message": MESSAGE,
    "MediaRef": MEDIA_REF,
    "Franking": FRANKING,
    "Conversation": CONVERSATION,
    "DeviceKey": DEVICE_KEY,
    "DeviceMismatch": DEVICE_MISMATCH,
}

# -- identity ------------------------------------------------------------------------------

_SESSION = obj(
    {
        "user_id": {"type": "string"},
        "device_id": {"type": "string"},
        "session_token": {"type": "string"},
        "expires_in": {"type": "integer"},
    },
    ("user_id", "device_id", "session_token"),
)
_NEW_USER = obj(
    {
        "user_id": {"type": "string"},
        "device_id": {"type": "string"},
        "session_token": {"type": "string"},
        "expires_in": {"type": "integer"},
        "sign_in_key": {
            "type": "string",
            "description": "a secret: with POST /v1/dev/sessions, signs in as this user again",
        },
    },
    ("user_id", "device_id", "session_token", "sign_in_key"),
)


def _user_body(s: DmSettings) -> Schema:
    from .web_users import ROLES  # the handler's module imports this one

    return obj(
        {
            "age": {
                "anyOf": [
                    {"enum": ["adult", "minor"]},
                    {"type": "integer", "minimum": 1900, "maximum": 2100},
                ],
                "default": "adult",
                "description": "'adult', 'minor' or a birth year",
            },
            "region": {
                "type": "string",
                "pattern": "^[A-Za-z]{2}$",
                "default": "GB",
                "description": "ISO 3166-1 alpha-2",
            },
            "roles": {
                "type": "array",
                "items": {"enum": sorted(ROLES)},
                "description": "only where DM_DEV_ISSUER_ROLES is on (else 403)",
            },
            "ttl_s": {
                "type": "integer",
                "minimum": 60,
                "maximum": s.session_max_lifetime_s,
                "default": 3600,
            },
        }
    )


CREATE_USER = Api(
    body=_user_body,
    body_required=False,
    description="Dev issuer only (404 where the deployment trusts an external identity "
    "provider). The body may be omitted.",
    ok={
        201: Answer(
            _NEW_USER,
            links={
                "OpenConversationWithUser": {
                    "operationId": op("POST", "/v1/conversations"),
                    "requestBody": {"members": ["$response.body#/user_id"], "mode": "plain"},
                    "x-schemathesis": {"merge_body": False},
                    "description": "the caller opens a plain conversation with the new user",
                },
                "UserDevices": {
                    "operationId": op("GET", "/v1/users/{user_id}/devices"),
                    "parameters": {"user_id": "$response.body#/user_id"},
                },
            },
        )
    },
)


def _dev_session_body(s: DmSettings) -> Schema:
    return obj(
        {
            "user_id": {"type": "string", "minLength": 1, "description": "made by POST /v1/users"},
            "sign_in_key": {
                "type": "string",
                "minLength": 1,
                "maxLength": 128,
                "description": "the sign_in_key POST /v1/users returned for this user",
            },
            "ttl_s": {
                "type": "integer",
                "minimum": 60,
                "maximum": s.session_max_lifetime_s,
                "default": 3600,
            },
        },
        ("user_id", "sign_in_key"),
    )


DEV_SESSION = Api(
    body=_dev_session_body,
    description="Dev issuer only (404 dev_issuer_disabled where the deployment trusts an "
    "external identity provider); 404 user_not_found for a user it never created; 403 "
    "sign_in_refused unless sign_in_key is the one its creation returned.",
    ok={201: Answer(_SESSION)},
    errors={403: None, 404: None},
)
LINK_DEVICE = Api(ok={201: Answer(_SESSION)}, errors={404: None})
JWKS = Api(
    ok={
        200: Answer(
            obj({"keys": {"type": "array", "items": {"type": "object"}}}, ("keys",), closed=False)
        )
    }
)

# -- devices -------------------------------------------------------------------------------

PUT_KEY = Api(
    params=(
        Param(
            "device_id",
            "path",
            {"type": "string", "minLength": 1},
            "this session's own device (dev claim); any other is 403",
            required=True,
        ),
    ),
    body={
        "type": "object",
        "additionalProperties": False,
        "required": ["suite", "public_key"],
        "properties": {"suite": {"enum": sorted(envelope.SUITES)}, "public_key": B64URL},
        "oneOf": [
            {"properties": {"suite": {"const": "x25519"}, "public_key": B64URL_32}},
            {"properties": {"suite": {"const": "mlkem768-x25519"}, "public_key": _X_WING_KEY}},
        ],
        "description": "public_key: canonical unpadded base64url of the suite's public key "
        "(x25519: 32 bytes; mlkem768-x25519: 1216, a valid ML-KEM-768 "
        "encapsulation key then an X25519 key: else 400)",
    },
    ok={
        200: Answer(
            obj(
                {"user_id": {"type": "string"}, **DEVICE_KEY["properties"]},
                ("user_id", *DEVICE_KEY["required"]),
            )
        )
    },
)
DELETE_KEY = Api(
    params=(
        Param("device_id", "path", {"type": "string", "minLength": 1, "maxLength": 255}, required=True),
    ),
    ok={
        200: Answer(
            obj(
                {
                    "user_id": {"type": "string"},
                    "device_id": {"type": "string"},
                    "removed": {"const": True},
                },
                ("user_id", "device_id", "removed"),
            )
        )
    },
    errors={400: None},
)
LIST_DEVICES = Api(
    params=(Param("user_id", "path", USER_ID, required=True),),
    ok={
        200: Answer(
            obj(
                {"user_id": {"type": "string"}, "devices": {"type": "array", "items": ref("DeviceKey")}},
                ("user_id", "devices"),
            )
        )
    },
    errors={400: None},
)

# -- conversations ---------------------------------------------------------------------------

_TO_CONVERSATION = {
    "GetConversation": {
        "operationId": op("GET", CONV_PATH),
        "parameters": {"cid": "$response.body#/id"},
    },
    "SendMessage": {
        "operationId": op("POST", MSGS_PATH),
        "parameters": {"cid": "$response.body#/id"},
        "requestBody": {"text": "hello"},
        "x-schemathesis": {"merge_body": False},
        "description": "a plain text message (a sealed conversation takes envelopes)",
    },
    "ReadMessages": {"operationId": op("GET", MSGS_PATH), "parameters": {"cid": "$response.body#/id"}},
}


def _create_conversation_body(s: DmSettings) -> Schema:
    return obj(
        {
            "members": {
                "type": "array",
                "items": USER_ID,
                "minItems": 1,
                "maxItems": s.max_group_size - 1,
                "description": f"the other members (known users); a conversation has "
                f"2..{s.max_group_size} members, the caller included",
            },
            "mode": {"enum": ["plain", "sealed"], "default": s.default_mode},
        },
        ("members",),
    )


CREATE_CONVERSATION = Api(
    body=_create_conversation_body,
    ok={
        201: Answer(
            ref("Conversation"),
            headers={"Location": {"schema": {"type": "string"}}},
            links=_TO_CONVERSATION,
        )
    },
    description="403 blocked: a member blocked the caller; 404 user_not_found: a member is "
    "unknown to dm.",
)


LIST_CONVERSATIONS = Api(
    params=(
        Param("after", "query", ID, "cursor: the last conversation id seen"),
        Param("limit", "query", page_limit(100), "page size"),
    ),
    ok={
        200: Answer(
            obj(
                {
                    "conversations": {"type": "array", "items": ID},
                    "next_cursor": {"type": ["string", "null"]},
                    "more": {"type": "boolean"},
                },
                ("conversations", "next_cursor", "more"),
            )
        )
    },
)
GET_CONVERSATION = Api(params=(CID,), ok={200: Answer(ref("Conversation"))}, errors={400: None})
REMOVE_MEMBER = Api(
    params=(CID, Param("user_id", "path", USER_ID, required=True)),
    ok={
        200: Answer(
            obj({"conversation_id": ID, "removed": {"type": "string"}}, ("conversation_id", "removed"))
        )
    },
    errors={400: None},
)
_BLOCK = Answer(
    obj({"user_id": {"type": "string"}, "blocked": {"type": "boolean"}}, ("user_id", "blocked"))
)
BLOCK = Api(
    params=(Param("user_id", "path", USER_ID, "not yourself (400)", required=True),), ok={200: _BLOCK}
)
UNBLOCK = BLOCK

# -- reports: the sealed report is a component (dm.api_schemas_moderation uses it) -----------

SEALED_REPORT: Schema = obj(
    {
        "client_message_id": ID,
        "sender": {"type": "string"},
        "ts_ms": {"type": "integer", "minimum": 0, "maximum": envelope.MAX_TS_MS},
        "commitment": B64URL,
        "countersignature": B64URL,
        "franking_key": B64URL,
        "media_id": {"type": ["string", "null"]},
        "grant": {"type": ["string", "null"]},
        "text": {"type": ["string", "null"]},
    },
    ("client_message_id", "sender", "ts_ms", "commitment", "countersignature", "franking_key"),
    description="what the reporter's device decrypted, and the franking values it received",
)
COMPONENTS["SealedReport"] = SEALED_REPORT

# -- the web client and operations -------------------------------------------------------------

APP_REDIRECT = Api(ok={302: Answer(headers={"Location": {"schema": {"const": "/app/"}}})})
APP_INDEX = Api(ok={200: Answer({"type": "string"}, media_type="text/html")})
APP_CONFIG = Api(
    ok={
        200: Answer(
            obj(
                {"edge_url": {"type": "string"}, "dev_issuer": {"type": "boolean"}},
                ("edge_url", "dev_issuer"),
            )
        )
    }
)
APP_ASSET = Api(
    params=(Param("name", "path", {"enum": ["app.js", "app.css"]}, required=True),),
    ok={200: Answer({"type": "string"}, media_type=("text/javascript", "text/css"))},
)
DOCUMENT: dict[str, Any] = {
    "description": "Direct messages that share videos by pointer. Errors are "
    '{"error": {"code", "message"}}; limited routes answer 429 with '
    "Retry-After.",
    "components": COMPONENTS,
    "security_schemes": {
        "websocketProtocol": {
            "type": "apiKey",
            "in": "header",
            "name": "Sec-WebSocket-Protocol",
            "description": "GET /v1/stream only, for browsers that cannot set Authorization on a "
            "WebSocket: offer 'pointer-dm.v1, bearer.<session JWT>'.",
        }
    },
}
