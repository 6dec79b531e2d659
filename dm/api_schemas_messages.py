"""dm's API contract for messages: send (plain and sealed), read, unsend and the stream
(see :mod:`dm.api_schemas` for what these modules promise)."""

from __future__ import annotations

from service_kernel.openapi import Answer, Api, Param, Schema, obj, ref

from . import envelope
from .api_schemas import (
    B64URL,
    B64URL_32,
    CID,
    CURSOR,
    ID,
    MSGS_PATH,
    nullable,
    op,
    page_limit,
)
from .settings import DmSettings

# -- messages --------------------------------------------------------------------------------


def _plain_send(s: DmSettings) -> Schema:
    return obj(
        {
            "text": {
                "type": "string",
                "maxLength": s.max_text_bytes,
                "description": f"at most {s.max_text_bytes} UTF-8 bytes (413 beyond)",
            },
            "media_id": ID,
        },
        title="PlainSend",
        minProperties=1,
        description="text, media_id or both",
    )


_ENVELOPE: Schema = obj(
    {
        "user_id": {"type": "string", "minLength": 1, "maxLength": 255},
        "device_id": {"type": "string", "minLength": 1, "maxLength": 255},
        "suite": {"enum": sorted(envelope.SUITES)},
        "ciphertext": {
            **B64URL,
            "maxLength": envelope.MAX_ENVELOPE_BYTES * 4 // 3 + 4,
            "description": "an HPKE envelope for this device, base64url",
        },
    },
    ("user_id", "device_id", "suite", "ciphertext"),
)


def _sealed_send(s: DmSettings) -> Schema:
    return obj(
        {
            "client_message_id": ID,
            "franking_commitment": B64URL_32,
            "grant_id": {**ID, "description": "a grant this sender minted (revoked on unsend)"},
            "envelopes": {
                "type": "array",
                "items": _ENVELOPE,
                "description": "exactly one per current device of every member but the "
                "sending device (409 device_mismatch otherwise)",
            },
        },
        ("client_message_id", "franking_commitment", "envelopes"),
        title="SealedSend",
    )


def _send_body(s: DmSettings) -> Schema:
    return {
        "oneOf": [_plain_send(s), _sealed_send(s)],
        "description": "plain conversations take text and/or media_id; sealed ones take "
        "envelopes only (400 for the other form)",
    }


_SENT_LINKS = {
    "UnsendMessage": {
        "operationId": op("DELETE", "/v1/conversations/{cid}/messages/{message_id}"),
        "parameters": {"cid": "$request.path.cid", "message_id": "$response.body#/id"},
    },
    "ReadMessages": {"operationId": op("GET", MSGS_PATH), "parameters": {"cid": "$request.path.cid"}},
    "ReportMessage": {
        "operationId": op("POST", "/v1/reports"),
        "requestBody": {"conversation_id": "$request.path.cid", "message_id": "$response.body#/id"},
    },
}
SEND = Api(
    params=(
        CID,
        Param(
            "Idempotency-Key",
            "header",
            ID,
            "retry-safe key: a retry with the same key and body answers 200 with the first message",
        ),
    ),
    body=_send_body,
    ok={
        201: Answer(ref("Message"), links=_SENT_LINKS),
        202: Answer(ref("Message"), "Accepted but held for review (not delivered)"),
        200: Answer(
            ref("Message"),
            "A replay of an Idempotency-Key",
            headers={"Idempotent-Replayed": {"schema": {"const": "true"}}},
        ),
    },
    errors={409: Answer(ref("DeviceMismatch"), "device_mismatch or idempotency_conflict")},
)
READ = Api(
    params=(
        CID,
        Param("after", "query", CURSOR, "cursor: the last message id seen"),
        Param("limit", "query", page_limit(50), "page size"),
    ),
    ok={
        200: Answer(
            obj(
                {
                    "messages": {"type": "array", "items": ref("Message")},
                    "next_cursor": nullable(CURSOR),
                    "more": {"type": "boolean"},
                },
                ("messages", "next_cursor", "more"),
            )
        )
    },
)
UNSEND = Api(
    params=(CID, Param("message_id", "path", CURSOR, required=True)),
    ok={
        200: Answer(
            obj(
                {"conversation_id": ID, "message_id": CURSOR, "unsent": {"const": True}},
                ("conversation_id", "message_id", "unsent"),
            )
        )
    },
    errors={400: None},
)
STREAM = Api(
    params=(
        Param("cursor", "query", CURSOR, "resume after this cursor"),
        Param(
            "Sec-WebSocket-Protocol",
            "header",
            {"type": "string"},
            "browsers: 'pointer-dm.v1, bearer.<session JWT>' (answered 'pointer-dm.v1')",
        ),
    ),
    security=[{"bearer": []}, {"websocketProtocol": []}],
    ok={
        101: Answer(
            description="WebSocket: JSON frames {type: message | unsent | member_left | "
            "joined, cursor, conversation_id, ...}"
        )
    },
    description="A WebSocket upgrade (a plain GET is 400). Authenticate with Authorization: "
    "Bearer or, from a browser, the subprotocols 'pointer-dm.v1' and "
    "'bearer.<session JWT>' (the server answers 'pointer-dm.v1'); never a query "
    "parameter. 429 too_many_streams: close one of yours.",
)
