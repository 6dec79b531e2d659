"""``ServiceSettings.event_loop``: asyncio's loop by default, uvloop only where installed."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from service_kernel.serving import new_event_loop
from service_kernel.settings_base import ServiceSettings

HAS_UVLOOP = importlib.util.find_spec("uvloop") is not None


def test_asyncio_loop_is_the_default() -> None:
    assert ServiceSettings.model_fields["event_loop"].default == "asyncio"
    loop = new_event_loop("asyncio")
    try:
        assert type(loop).__module__.startswith("asyncio")
    finally:
        loop.close()


def test_auto_falls_back_to_asyncio_without_uvloop() -> None:
    loop = new_event_loop("auto")
    try:
        assert isinstance(loop, asyncio.AbstractEventLoop)
        assert type(loop).__module__.startswith("uvloop" if HAS_UVLOOP else "asyncio")
    finally:
        loop.close()


@pytest.mark.skipif(HAS_UVLOOP, reason="uvloop is installed here")
def test_uvloop_asked_for_but_missing_fails_at_start() -> None:
    with pytest.raises(ImportError):
        new_event_loop("uvloop")
