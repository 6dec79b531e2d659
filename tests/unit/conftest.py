"""Unit tests: pure code, no Redis, no servers, no processes; they run in seconds anywhere.

A test here that asks for a running service is refused at collection, so the split stays
true: such a test belongs in ``tests/integration/``.
"""

from __future__ import annotations

import pytest

SERVICE_FIXTURES = frozenset({"redis_server", "redis", "make_edge", "edge", "make_dm", "dm"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        used = SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if used and "tests/unit/" in item.nodeid:
            raise pytest.UsageError(
                f"{item.nodeid} is a unit test but uses {sorted(used)}: move it to tests/integration/"
            )
