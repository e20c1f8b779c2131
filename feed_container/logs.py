"""Structured JSON logs on stdout, one object per line, with secrets redacted.

Fields: ``ts`` (UTC ISO), ``level``, ``logger``, ``msg``, plus whatever a
call passes in ``extra``. Access tokens only ever travel in the WebSocket
handshake URL, which nothing logs; as a second line of defence any
``access_token=...``/``api_secret=...``/``Authorization: token ...`` pattern
in a message or field is masked before it is written.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Callable, Hashable
from datetime import UTC, datetime
from typing import Any, TextIO

_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
_SECRET = re.compile(
    r"(access_token|api_secret|request_token|checksum)(=|\":\s*\"|': ')([^&\s\"',]+)"
    r"|(token\s+[^:\s]+:)(\S+)",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` with token-like values masked."""

    def mask(match: re.Match[str]) -> str:
        if match.group(1):
            return f"{match.group(1)}{match.group(2)}***"
        return f"{match.group(4)}***"

    return _SECRET.sub(mask, text)


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            doc["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(doc, default=str, separators=(",", ":"))


def configure(level: str = "INFO", stream: TextIO | None = None) -> None:
    """Send every logger's records, as JSON, to ``stream`` (stdout)."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # websockets logs handshake details (URLs carry the token) at DEBUG.
    for noisy in ("websockets", "botocore", "boto3", "urllib3", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


class LogLimiter:
    """At most one log line per key every ``interval`` seconds, for events that repeat.

    A drop that is counted on every occurrence (an unknown packet, a tick out
    of bounds, a failed call) is also worth a log line with its reason, but
    not thousands a second. ``allow(key)`` returns None while the key's line
    is held back, else how many were held back since the last one (for the
    line to say so).
    """

    def __init__(self, interval: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval
        self._clock = clock
        self._last: dict[Hashable, float] = {}
        self._held: dict[Hashable, int] = {}

    def allow(self, key: Hashable) -> int | None:
        """None to skip this line; otherwise the number skipped since the last one."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._held.pop(key, 0)
