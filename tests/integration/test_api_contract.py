"""The OpenAPI documents both services serve: valid OpenAPI 3.1, and precise.

Precise means what a client generator or a fuzzer needs: every route has its
contract (``api_schemas``), every path parameter a pattern or a set of values,
every JSON body a schema, every error the shared envelope, and every link
names an operation that exists.  The fuzzing itself is tests/integration/test_api_fuzz.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from openapi_spec_validator import validate

from cdn_auth import app as edge_app
from dm import app as dm_app

from ..support.services import DmStack

#: The documents do not depend on the Redis topology: one server suffices.
single = pytest.mark.parametrize("redis_server", ["single"], indirect=True)


async def _documents(dm: DmStack) -> dict[str, dict[str, Any]]:
    out = {}
    async with dm.edge.client.get("/openapi.json") as r:
        out["edge"] = await r.json()
    c = dm.client()
    out["dm"] = await c.request("GET", "/openapi.json")
    return out


@single
async def test_both_documents_are_valid_openapi_31(dm: DmStack) -> None:
    for name, doc in (await _documents(dm)).items():
        assert doc["openapi"] == "3.1.0", name
        validate(doc)  # raises on any violation of the OpenAPI 3.1 schema


def test_every_route_has_its_contract() -> None:
    for r in (*dm_app.ROUTES, *edge_app.ROUTES):
        assert r.api is not None, f"{r.method} {r.path} has no api_schemas entry"


@single
async def test_documents_are_precise(dm: DmStack) -> None:
    for name, doc in (await _documents(dm)).items():
        op_ids = {op["operationId"] for item in doc["paths"].values() for op in item.values()}
        for path, item in doc["paths"].items():
            for method, op in item.items():
                where = f"{name} {method.upper()} {path}"
                for p in op.get("parameters", []):
                    if p["in"] == "path":
                        assert set(p["schema"]) & {"pattern", "enum", "minLength", "$ref"}, (
                            where,
                            p["name"],
                        )
                body = op.get("requestBody")
                if body:
                    for media in body["content"].values():
                        assert media["schema"] not in ({}, {"type": "object"}), where
                for status, answer in op["responses"].items():
                    if int(status) >= 400 and not (path == "/readyz" and status == "503"):
                        schema = answer["content"]["application/json"]["schema"]
                        assert schema["$ref"].startswith("#/components/schemas/"), where
                    for link in answer.get("links", {}).values():
                        assert link["operationId"] in op_ids, (where, link)
                if op.get("security"):
                    assert "401" in op["responses"], where


@single
async def test_document_states_the_running_limits(make_dm: Any) -> None:
    """Limits an operator sets are the document's limits (one source: the settings)."""
    dm = await make_dm(page_limit_max=7, max_group_size=5)
    doc = (await _documents(dm))["dm"]
    read = doc["paths"]["/v1/conversations/{cid}/messages"]["get"]
    limit = next(p for p in read["parameters"] if p["name"] == "limit")
    assert limit["schema"]["maximum"] == 7
    create = doc["paths"]["/v1/conversations"]["post"]
    members = create["requestBody"]["content"]["application/json"]["schema"]["properties"]["members"]
    assert members["maxItems"] == 4
