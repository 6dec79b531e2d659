"""Identity routes: the dev issuer's ``POST /v1/users`` and ``POST /v1/dev/sessions``, and
the JWKS every service trusts."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from aiohttp import web

from cdn_auth.session import region_from_claim
from service_kernel.errors import InvalidField
from service_kernel.ids import check_id, new_id
from service_kernel.openapi import Route
from service_kernel.web_errors import read_json

from . import api_schemas as api
from .errors import DevIssuerDisabled, DevIssuerRolesDisabled, SignInRefused, UnknownUser
from .web_state import STATE

ROLES = {"moderator", "publisher", "auditor", "legal"}


async def create_user(request: web.Request) -> web.Response:
    """Dev only: create a user and device and return an EdDSA session carrying age and region."""
    state = request.app[STATE]
    if state.issuer is None:
        raise DevIssuerDisabled()
    doc = (
        await read_json(request, allowed={"age", "region", "roles", "ttl_s"})
        if request.can_read_body
        else {}
    )
    age = doc.get("age", "adult")
    if not (
        age in ("adult", "minor")
        or (isinstance(age, int) and not isinstance(age, bool) and 1900 <= age <= 2100)
    ):
        raise InvalidField("age must be 'adult', 'minor' or a birth year")
    region = region_from_claim(doc.get("region", "GB"))
    if region is None:
        raise InvalidField("region must be an ISO 3166-1 alpha-2 code")
    roles = doc.get("roles", [])
    if (
        not isinstance(roles, list)
        or not all(isinstance(r, str) for r in roles)
        or not set(roles) <= ROLES
    ):
        raise InvalidField(f"roles must be a subset of {sorted(ROLES)}")
    if roles and not state.settings.dev_issuer_roles:
        raise DevIssuerRolesDisabled()
    ttl_s = _ttl_s(doc, state.settings.session_max_lifetime_s)
    user_id, device_id = new_id("u"), new_id("d")
    token = state.issuer.mint(user_id, dev=device_id, age=age, region=region, roles=roles, ttl_s=ttl_s)
    sign_in_key = secrets.token_urlsafe(32)
    await state.store.save_profile(
        user_id,
        {
            "age": str(age),
            "region": region,
            "roles": ",".join(roles),
            "sign_in_key_sha256": _digest(sign_in_key),
        },
    )
    return web.json_response(
        {
            "user_id": user_id,
            "device_id": device_id,
            "session_token": token,
            "expires_in": ttl_s,
            "sign_in_key": sign_in_key,
        },
        status=201,
    )


def _digest(sign_in_key: str) -> str:
    return hashlib.sha256(sign_in_key.encode()).hexdigest()


def _ttl_s(doc: dict[str, object], max_ttl: int) -> int:
    ttl_s = doc.get("ttl_s", 3600)
    if not isinstance(ttl_s, int) or isinstance(ttl_s, bool) or not 60 <= ttl_s <= max_ttl:
        raise InvalidField(f"ttl_s must be 60..{max_ttl}")
    return ttl_s


async def sign_in_as(request: web.Request) -> web.Response:
    """Dev only: a new device and session for a user the dev issuer created before, with the
    age and region it was created with (roles only while DM_DEV_ISSUER_ROLES is on), for
    whoever holds the ``sign_in_key`` its creation returned.  How the web client signs in
    again as a user it remembers without storing a session token."""
    state = request.app[STATE]
    if state.issuer is None:
        raise DevIssuerDisabled()
    doc = await read_json(request, allowed={"user_id", "sign_in_key", "ttl_s"})
    user_id = check_id(doc.get("user_id"), "user_id")
    key = doc.get("sign_in_key")
    if not isinstance(key, str) or not 1 <= len(key) <= 128:
        raise InvalidField("sign_in_key must be the string POST /v1/users returned")
    ttl_s = _ttl_s(doc, state.settings.session_max_lifetime_s)
    profile = await state.store.profile(user_id)
    if profile is None:
        raise UnknownUser(f"unknown user: {user_id[:64]}")
    # Knowing a user id (every conversation shows its members') is not being that user: the
    # key returned at creation is, as a password would be.  Compared as digests, in constant
    # time; a profile from before keys existed has none and signs in again never.
    if not hmac.compare_digest(profile.get("sign_in_key_sha256", ""), _digest(key)):
        raise SignInRefused()
    stored_age = profile.get("age", "")
    age: str | int | None = int(stored_age) if stored_age.isdigit() else (stored_age or None)
    roles = [r for r in profile.get("roles", "").split(",") if r in ROLES]
    device_id = new_id("d")
    token = state.issuer.mint(
        user_id,
        dev=device_id,
        age=age,
        region=profile.get("region") or "GB",
        roles=roles if state.settings.dev_issuer_roles else [],
        ttl_s=ttl_s,
    )
    return web.json_response(
        {"user_id": user_id, "device_id": device_id, "session_token": token, "expires_in": ttl_s},
        status=201,
    )


async def link_device(request: web.Request) -> web.Response:
    """Dev only: a signed-in user adds a device; it gets its own id and session."""
    state = request.app[STATE]
    if state.issuer is None:
        raise DevIssuerDisabled()
    me = await state.session(request)
    device_id = new_id("d")
    # The new device's session carries the same lowest age as the presenting one, as a
    # birth year (age_from_claim maps it back exactly), never a rounder "minor" (13) that
    # would let a 9-year-old past a 13+ gate; an unknown age stays unknown.
    age: int | None = None if me.age is None else time.gmtime(state.clock()).tm_year - me.age - 1
    token = state.issuer.mint(
        me.sub, dev=device_id, age=age, region=me.region or "GB", roles=sorted(me.roles)
    )
    return web.json_response(
        {"user_id": me.sub, "device_id": device_id, "session_token": token}, status=201
    )


async def jwks(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state.issuer is None:
        raise DevIssuerDisabled()
    return web.json_response(state.issuer.jwks(), headers={"Cache-Control": "public, max-age=300"})


ROUTES = (
    Route(
        "POST",
        "/v1/users",
        create_user,
        "Dev issuer: create a user, device and session",
        "identity",
        auth="none",
        responses=(201, 400, 403, 404),
        body="age, region, roles (only with DM_DEV_ISSUER_ROLES), ttl_s",
        limit="signup",
        api=api.CREATE_USER,
        dev_only=True,
    ),
    Route(
        "POST",
        "/v1/dev/sessions",
        sign_in_as,
        "Dev issuer: a new device and session for a user it created before",
        "identity",
        auth="none",
        responses=(201, 400, 403, 404),
        body="user_id, sign_in_key, ttl_s",
        limit="signup",
        api=api.DEV_SESSION,
        dev_only=True,
    ),
    Route(
        "POST",
        "/v1/devices",
        link_device,
        "Dev issuer: add a device to my account",
        "identity",
        responses=(201, 401, 404),
        limit="device_link",
        api=api.LINK_DEVICE,
        dev_only=True,
    ),
    Route(
        "GET",
        "/.well-known/jwks.json",
        jwks,
        "Session verification keys (JWKS)",
        "identity",
        auth="none",
        responses=(200, 404),
        api=api.JWKS,
        dev_only=True,
    ),
)
