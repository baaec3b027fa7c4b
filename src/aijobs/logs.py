"""Structured logs: one JSON object per line, carrying the job, feature, target and attempt in hand.

The fields come from a context variable the worker and the Router set (:func:`bind`), so a log call
anywhere below them is tagged without passing ids around. Every message and exception text goes
through :func:`aijobs.errors.scrub`'s patterns, so a key that slipped into an error never reaches a log.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

from aijobs.errors import scrub

_context: ContextVar[dict[str, Any] | None] = ContextVar("aijobs_log_context", default=None)
MAX_MESSAGE_CHARS = 8_000


@contextlib.contextmanager
def bind(**fields: Any) -> Iterator[None]:
    """Tag every log record made inside the block with ``fields`` (added to any already bound)."""
    token = _context.set({**(_context.get() or {}), **fields})
    try:
        yield
    finally:
        _context.reset(token)


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", ...bound fields, "exc"}`` with secrets redacted."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": scrub(record.getMessage(), MAX_MESSAGE_CHARS),
        }
        entry.update(_context.get() or {})
        if record.exc_info:
            entry["exc"] = scrub(self.formatException(record.exc_info), MAX_MESSAGE_CHARS)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """Human-readable lines for a terminal, with the bound fields appended and secrets redacted."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = " ".join(f"{k}={v}" for k, v in (_context.get() or {}).items())
        return scrub(f"{text} [{fields}]" if fields else text, MAX_MESSAGE_CHARS)


def configure(level: str, fmt: str) -> None:
    """Send the root logger's records to stderr as ``fmt`` (``json`` or ``text``)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
