"""Structured JSON logs, and an access log that never records a query string or header.

Pointers travel in query strings and sessions in headers; aiohttp's default
access log would write both to disk.  This one logs method, path, status,
size and time only.

Formatting and writing happen off the event loop: :func:`configure` puts a
:class:`~logging.handlers.QueueHandler` on the root logger, and a
:class:`~logging.handlers.QueueListener` thread turns records into JSON and
writes them.  The loop only builds the record and enqueues it (about 10 us
instead of 25 us for an access line), and a slow disk or pipe can no longer
stall it.  The GIL still serialises the writer's Python work with the loop's,
so the writer is built to cost as little as possible in total: it wakes at
most every :data:`BATCH_S`, takes everything queued, and writes the batch
with one ``write(2)`` (a thread woken per record, writing per record, costs
more CPU than formatting in line did).
"""

from __future__ import annotations

import atexit
import collections
import json
import logging
import queue
import sys
import time
from logging.handlers import QueueHandler, QueueListener
from typing import IO, Any

from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web import BaseRequest, RequestPayloadError, StreamResponse

_STD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


_JSON = json.JSONEncoder(default=str)  # as json.dumps(..., default=str), built once


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update({k: v for k, v in record.__dict__.items() if k not in _STD})
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:  # rendered before the record crossed to the writer thread
            doc["exc"] = record.exc_text
        return _JSON.encode(doc)


class _Handoff(QueueHandler):
    """Enqueue a record for the writer thread, capturing only what could change meanwhile.

    The stdlib ``QueueHandler.prepare`` formats every record on the calling thread (the
    cost this exists to move) and then drops the traceback.  Here the writer gets a
    shallow copy (handlers that run after this one, e.g. pytest's caplog, may add
    attributes to the original while the writer reads it), with ``%`` arguments merged
    now (they may be mutable) and an exception rendered now (a traceback pins live
    frames).  Extras are read later, on the writer thread: pass immutable values.
    """

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        out = record.__class__.__new__(record.__class__)
        out.__dict__ = record.__dict__.copy()
        if out.args:
            out.msg, out.args = out.getMessage(), None
        if out.exc_info:
            out.exc_text = _EXC_FORMATTER.formatException(out.exc_info)
            out.exc_info = None
        return out


#: The writer thread's longest sleep between batches (so also the longest a line waits).
BATCH_S = 0.01


class _BatchWriter(logging.Handler):
    """Formats records into a buffer; :meth:`flush` writes the buffer with one write."""

    def __init__(self, stream: IO[str]) -> None:
        super().__init__()
        self.stream = stream
        self._lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._lines.append(self.format(record))
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        if not self._lines:
            return
        text = "\n".join(self._lines) + "\n"
        self._lines.clear()
        try:
            self.stream.write(text)
            self.stream.flush()
        except Exception:  # as StreamHandler: report on stderr, never raise into the app
            self.handleError(logging.makeLogRecord({"msg": "log write failed"}))


class _BatchingListener(QueueListener):
    """A QueueListener that takes the queue a batch at a time (see the module docstring)."""

    def __init__(self, q: queue.SimpleQueue[Any], writer: _BatchWriter) -> None:
        super().__init__(q, writer)
        self._q = q
        self._writer = writer
        self._batch: collections.deque[Any] = collections.deque()

    def dequeue(self, block: bool) -> Any:
        batch = self._batch
        if not batch:
            self._writer.flush()  # the previous batch, in one write
            first = self._q.get(block)
            if first is not None:  # None: QueueListener's stop sentinel
                time.sleep(BATCH_S)  # let the batch gather: one wake-up for many records
            batch.append(first)
            try:
                while True:
                    batch.append(self._q.get_nowait())
            except queue.Empty:
                pass
        return batch.popleft()

    def stop(self) -> None:
        super().stop()  # the thread has handled everything up to the sentinel
        self._writer.flush()


_EXC_FORMATTER = logging.Formatter()
_listener: _BatchingListener | None = None


def configure(level: str = "INFO", stream: IO[str] | None = None) -> None:
    """JSON lines on ``stream`` (default: stderr), written by a background thread.

    Calling it again replaces the previous configuration (its queue is drained first).
    """
    global _listener
    shutdown()
    writer = _BatchWriter(sys.stderr if stream is None else stream)
    writer.setFormatter(JsonFormatter())
    q: queue.SimpleQueue[Any] = queue.SimpleQueue()
    root = logging.getLogger()
    root.handlers[:] = [_Handoff(q)]
    root.setLevel(level.upper())
    _listener = _BatchingListener(q, writer)
    _listener.start()


def shutdown() -> None:
    """Write out everything queued, stop the writer thread, and log synchronously from then on
    (so a record logged later, e.g. during interpreter exit, is still written).  Run at exit."""
    global _listener
    listener, _listener = _listener, None
    if listener is None:
        return
    direct = logging.StreamHandler(listener._writer.stream)
    direct.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, _Handoff)] + [direct]
    listener.stop()


atexit.register(shutdown)


class AccessLogger(AbstractAccessLogger):
    def log(self, request: BaseRequest, response: StreamResponse, time_s: float) -> None:
        self.logger.info(
            "access",
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status,
                "bytes": response.body_length,
                "ms": round(time_s * 1000, 3),
                "at": round(time.time(), 3),
            },
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


class RedactBadRequests(logging.Filter):
    """Keep the bytes of unparseable requests out of the log.

    aiohttp logs a request it cannot parse (a request line over 8 KiB, a bad
    header) at ERROR with the parser's exception, whose message quotes the first
    ~100 bytes of the offending line: the start of a URL whose query string can
    hold a pointer or an ``access_token``.  This filter rewrites such a record to
    the exception's class name and the peer address, at WARNING, with no
    traceback: the client learnt its own mistake from the 400; the operator needs
    to know it happened, not what it said.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        # RequestPayloadError: aiohttp drains a body the handler could not decode after
        # the 400 went out, meets the same error and logs it as "Unhandled exception".
        if isinstance(exc, HttpProcessingError | RequestPayloadError):
            peer = record.args[0] if isinstance(record.args, tuple) and record.args else ""
            record.msg, record.args = "unparseable request from %s: %s", (peer, type(exc).__name__)
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


_REDACTOR = RedactBadRequests()


def redact_bad_requests() -> None:
    """Install :class:`RedactBadRequests` on aiohttp's server logger (idempotent)."""
    server = logging.getLogger("aiohttp.server")
    if _REDACTOR not in server.filters:
        server.addFilter(_REDACTOR)
