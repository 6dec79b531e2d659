"""Bugs found while building the rights model and the parser properties, each as a plain
named test (``test_rights_stateful.py``, ``test_parsers_property.py``, beside this file);
the docstring of each says how it was found and the minimal case.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from ..support.services import DmStack, bearer


async def _post(dm: DmStack, token: str | None, path: str, raw: str) -> tuple[int, Any]:
    assert token is not None
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            dm.dm_url + path,
            data=raw.encode(),
            headers={**bearer(token), "Content-Type": "application/json"},
        ) as r,
    ):
        return r.status, await r.json(content_type=None)


@pytest.mark.parametrize("route", ["send", "conversation", "plain_report", "sealed_report"])
async def test_lone_surrogate_in_a_json_body_is_400_not_500(dm: DmStack, route: str) -> None:
    """``"\\ud800"`` is valid JSON but not valid text: a send with it as text, a conversation
    with it as a member, a report with it as reason or sealed sender all answered 500
    (UnicodeEncodeError wherever the string was encoded).  Found by the report-body
    property; main's strict JSON parsing (``service_kernel.strict_json``) now refuses it."""
    alice, bob = await dm.user(), await dm.user()
    plain = await alice.create_conversation([bob.uid])
    sealed = await alice.create_conversation([bob.uid], mode="sealed")
    sent = await bob.send(plain["id"], text="x")
    lone = "\\ud800"  # the JSON escape, as a client would put it on the wire
    path, raw = {
        "send": (f"/v1/conversations/{plain['id']}/messages", f'{{"text": "{lone}"}}'),
        "conversation": ("/v1/conversations", f'{{"members": ["{lone}"]}}'),
        "plain_report": (
            "/v1/reports",
            json.dumps({"conversation_id": plain["id"], "message_id": sent["id"]})[:-1]
            + f', "reason": "{lone}"}}',
        ),
        "sealed_report": (
            "/v1/reports",
            json.dumps(
                {
                    "conversation_id": sealed["id"],
                    "sealed": {
                        "client_message_id": "s_1",
                        "ts_ms": 1,
                        "commitment": "",
                        "countersignature": "",
                        "franking_key": "",
                    },
                }
            )[:-2]
            + f', "sender": "{lone}"}}}}',
        ),
    }[route]
    status, body = await _post(dm, alice.session_token, path, raw)
    assert (status, body["error"]["code"]) == (400, "malformed_request")


async def test_escaped_surrogate_pair_is_still_accepted(dm: DmStack) -> None:
    """The fix must not refuse a proper pair (an emoji escaped by an ASCII-only encoder)."""
    alice, bob = await dm.user(), await dm.user()
    plain = await alice.create_conversation([bob.uid])
    status, body = await _post(
        dm,
        alice.session_token,
        f"/v1/conversations/{plain['id']}/messages",
        '{"text": "\\ud83d\\ude00"}',
    )
    assert status == 201 and body["text"] == "\U0001f600"


async def test_only_the_sender_unsends_even_an_unsent_message(dm: DmStack) -> None:
    """Alice sends in a conversation with bob and unsends; bob then "unsends" it too and
    got ``200 {"unsent": true}``: the tombstone answered "already" to any member (and,
    before main recorded finished unsends, re-published the revocations and the
    ``unsent`` push each time).  The model says only the sender unsends: ``403``; the
    sender's own retry stays idempotent.  Found while writing the model's unsend rule."""
    from dm.client import DmClientError

    alice, bob = await dm.user(), await dm.user()
    conv = await alice.create_conversation([bob.uid])
    sent = await alice.send(conv["id"], text="oops")
    await alice.unsend(conv["id"], sent["id"])
    with pytest.raises(DmClientError) as info:
        await bob.unsend(conv["id"], sent["id"])
    assert info.value.status == 403
    assert (await alice.unsend(conv["id"], sent["id"]))["unsent"] is True
