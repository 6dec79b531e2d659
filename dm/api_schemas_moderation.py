"""dm's API contract for reports, moderation, audit and lawful access (see
:mod:`dm.api_schemas` for what these modules promise)."""

from __future__ import annotations

from service_kernel.openapi import Answer, Api, Param, Schema, obj

from .api_schemas import (
    CID,
    CURSOR,
    ID,
)
from .settings import DmSettings

# -- reports and moderation -------------------------------------------------------------------

_REPORTED = obj(
    {
        "report_id": {"type": ["string", "null"]},
        "conversation_id": ID,
        "sender": {"type": "string"},
        "media_id": {"type": ["string", "null"]},
        "verified": {"type": "boolean"},
        "evidence": {"type": "string"},
        "duplicate": {"type": "boolean"},
    },
    ("report_id", "conversation_id", "verified", "duplicate"),
)
REPORT = Api(
    body=obj(
        {
            "conversation_id": ID,
            "message_id": CURSOR,
            "reason": {"type": "string", "maxLength": 2000},
            # A plain conversation's report ignores ``sealed`` whatever it holds, so the
            # document cannot constrain it; its shape is the SealedReport component.
            "sealed": {
                "description": "sealed conversations: a SealedReport "
                "(#/components/schemas/SealedReport; 400 when "
                "malformed); ignored in a plain conversation"
            },
        },
        ("conversation_id",),
        anyOf=[{"required": ["message_id"]}, {"required": ["sealed"]}],
        description="plain conversations: message_id; sealed: sealed{...} (400 for the other form)",
    ),
    ok={
        201: Answer(_REPORTED),
        200: Answer(_REPORTED, "a repeat of this reporter's report: the first report's id"),
    },
)

_ANY_OBJECT: Schema = {"type": "object"}
QUEUE_CURSOR: Schema = {
    "type": "string",
    "pattern": "^[qh]-[0-9]{1,15}-[0-9]{1,10}$",
    "description": "the previous page's next_cursor (400 bad_cursor for any other)",
}
QUEUE = Api(
    params=(
        Param("status", "query", {"enum": ["open", "closed", "all"], "default": "open"}),
        Param("limit", "query", {"type": "integer", "minimum": 0, "maximum": 500, "default": 50}),
        Param("cursor", "query", QUEUE_CURSOR, "items older than this one"),
    ),
    ok={
        200: Answer(
            obj(
                {
                    "items": {"type": "array", "items": _ANY_OBJECT},
                    "next_cursor": {
                        **QUEUE_CURSOR,
                        "type": ["string", "null"],
                        "description": "the last item this page examined (returned or "
                        "skipped as not of the asked status); pass as cursor",
                    },
                    "more": {
                        "type": "boolean",
                        "description": "older items remain; a page may hold fewer than "
                        "limit items (even none) and still say more: keep following",
                    },
                },
                ("items", "next_cursor", "more"),
            )
        )
    },
)


def _context(s: DmSettings) -> Schema:
    return {
        "type": "integer",
        "minimum": 0,
        "maximum": s.moderation_context_max,
        "default": s.moderation_context,
    }


ITEM_ID: Schema = {
    "type": "string",
    "pattern": "^[qh]-[0-9]{1,15}-[0-9]{1,10}$",
    "description": "a review item id from the queue (404 for any other)",
}
OPEN_ITEM = Api(
    params=(
        Param("item_id", "path", ITEM_ID, required=True),
        Param("context", "query", _context, "messages either side (plain)"),
    ),
    ok={200: Answer(_ANY_OBJECT)},
)


def _act_body(_: DmSettings) -> Schema:
    from .moderation import ACTIONS  # moderation imports the handlers, which import this

    return obj(
        {"action": {"enum": list(ACTIONS)}, "reason": {"type": "string", "maxLength": 1000}}, ("action",)
    )


ACT = Api(
    params=(Param("item_id", "path", ITEM_ID, required=True),),
    body=_act_body,
    ok={
        200: Answer(
            obj(
                {"item_id": {"type": "string"}, "action": {"type": "string"}},
                ("item_id", "action"),
                closed=False,
            )
        )
    },
)
OPEN_MESSAGE = Api(
    params=(
        CID,
        Param("message_id", "path", CURSOR, required=True),
        Param(
            "justification",
            "query",
            {"type": "string", "maxLength": 64},
            "a review item or legal request id",
        ),
        Param("context", "query", _context, "messages either side"),
    ),
    ok={200: Answer(_ANY_OBJECT)},
)
AUDIT = Api(
    params=(
        Param("after", "query", CURSOR, "last entry id seen"),
        Param("limit", "query", {"type": "integer", "minimum": 0, "maximum": 1000, "default": 100}),
    ),
    ok={200: Answer(obj({"entries": {"type": "array", "items": _ANY_OBJECT}}, ("entries",)))},
)


def _legal_body(s: DmSettings) -> Schema:
    return obj(
        {
            "reference": {"type": "string", "minLength": 1, "maxLength": 200},
            "conversation_id": {"type": "string"},
            "from_ms": {"type": "integer"},
            "to_ms": {"type": "integer"},
        },
        ("reference", "conversation_id", "from_ms", "to_ms"),
        description=f"to_ms - from_ms must be 0..{s.legal_max_span_s * 1000} (400)",
    )


LEGAL_REQUEST = Api(body=_legal_body, ok={201: Answer(_ANY_OBJECT)})
LEGAL_EXPORT = Api(
    params=(Param("request_id", "path", ID, required=True),),
    ok={200: Answer(_ANY_OBJECT)},
    errors={400: None},
)
