"""The media API's upload form."""

from __future__ import annotations

import json
from typing import Any

import aiohttp


def upload_form(meta: dict[str, Any] | None, data: bytes) -> aiohttp.FormData:
    """A ``POST /v1/media`` body: the metadata part (default: just the content type), then the file."""
    meta = {"content_type": "video/mp4"} if meta is None else meta
    form = aiohttp.FormData()
    form.add_field("metadata", json.dumps(meta), content_type="application/json")
    form.add_field("file", data, filename="v.mp4", content_type="video/mp4")
    return form
