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
