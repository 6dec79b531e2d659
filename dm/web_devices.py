"""The device key directory: each device publishes one HPKE public key; senders list them."""

from __future__ import annotations

import time

from aiohttp import web

from service_kernel.encoding import Base64Error, b64url_decode, b64url_encode
from service_kernel.errors import InvalidField
from service_kernel.openapi import Route
from service_kernel.web_errors import read_json

from . import api_schemas as api
from . import envelope
from .errors import NotAllowed, NotFound
from .web_conversations import _user_id
from .web_state import STATE


async def put_key(request: web.Request) -> web.Response:
    """Publish or replace this device's key; only the device itself (session ``dev``) may."""
    state = request.app[STATE]
    me = await state.session(request)
    device_id = request.match_info["device_id"]
    if not me.dev or device_id != me.dev:
        raise NotAllowed("a device publishes only its own key")
    doc = await read_json(request, allowed={"suite", "public_key"})
    suite, encoded = doc.get("suite"), doc.get("public_key")
    if not isinstance(suite, str) or suite not in envelope.SUITES:
        raise InvalidField(f"suite must be one of {sorted(envelope.SUITES)}")
    if not isinstance(encoded, str) or len(encoded) > 4096:
        raise InvalidField("public_key must be base64url")
    try:
        raw = b64url_decode(encoded)
        envelope.parse_public_key(suite, raw)
    except (Base64Error, envelope.EnvelopeError) as exc:
        raise InvalidField(f"public_key: {exc}") from None
    record = {
        "suite": suite,
        "public_key": b64url_encode(raw),
        "fingerprint": envelope.fingerprint(suite, raw),
        "updated_at_ms": int(time.time() * 1000),
    }
    await state.store.put_device(me.sub, device_id, record, state.settings.max_devices_per_user)
    return web.json_response({"user_id": me.sub, "device_id": device_id, **record})


async def delete_key(request: web.Request) -> web.Response:
    """Withdraw a device's key (a lost or retired device): senders stop sealing to it."""
    state = request.app[STATE]
    me = await state.session(request)
    device_id = request.match_info["device_id"]
    if len(device_id) > 255:
        raise InvalidField("device_id too long")
    if not await state.store.remove_device(me.sub, device_id):
        raise NotFound(f"no key for device {device_id}")
    return web.json_response({"user_id": me.sub, "device_id": device_id, "removed": True})


async def list_devices(request: web.Request) -> web.Response:
    state = request.app[STATE]
    await state.session(request)
    user = _user_id(request.match_info["user_id"], "user_id")
    devices = (await state.store.devices_of([user]))[user]
    return web.json_response(
        {"user_id": user, "devices": [{"device_id": d, **rec} for d, rec in sorted(devices.items())]}
    )


ROUTES = (
    Route(
        "PUT",
        "/v1/devices/{device_id}/key",
        put_key,
        "Publish this device's HPKE key",
        "devices",
        responses=(200, 400, 401, 403),
        body="suite, public_key (base64url)",
        limit="device_key",
        api=api.PUT_KEY,
    ),
    Route(
        "DELETE",
        "/v1/devices/{device_id}/key",
        delete_key,
        "Withdraw one of my devices' keys",
        "devices",
        responses=(200, 401, 404),
        limit="device_key",
        api=api.DELETE_KEY,
    ),
    Route(
        "GET",
        "/v1/users/{user_id}/devices",
        list_devices,
        "A user's device keys",
        "devices",
        responses=(200, 401),
        limit="lookup",
        api=api.LIST_DEVICES,
    ),
)
