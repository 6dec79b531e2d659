"""Structured JSON logs, and an access log that never records a query string or header.

Pointers travel in query strings and sessions in headers; aiohttp's default
access log would write both to disk.  This one logs method, path, status,
size and time only.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

_STD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 3), "level": record.levelname,
            "logger": record.name, "msg": record.getMessage(),
        }
        doc.update({k: v for k, v in record.__dict__.items() if k not in _STD})
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class AccessLogger(AbstractAccessLogger):
    def log(self, request: BaseRequest, response: StreamResponse, time_s: float) -> None:
        self.logger.info("access", extra={
            "method": request.method, "path": request.path, "status": response.status,
            "bytes": response.body_length, "ms": round(time_s * 1000, 3),
            "at": round(time.time(), 3),
        })

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)
