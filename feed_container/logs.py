"""Logs: Powertools' structured JSON on stdout, the same shape as the Lambdas', secrets redacted.

:func:`configure` builds one Powertools ``Logger`` (service ``ticker-feed``)
and puts its handler on the root logger too, so every module's plain
``logging.getLogger(__name__)`` (and websockets', botocore's, aiohttp's)
comes out as one JSON object per line: ``level``, ``location``,
``message``, ``timestamp`` (UTC), ``service``, the call's ``extra`` fields,
and ``exception``/``stack_trace`` for errors. The formatter serializes with
the shared :func:`~ticker_adapters.redaction.redacted_json`: the final line is
redacted by the same rule as every Lambda's.

Access tokens travel only in the WebSocket handshake URL, which nothing logs
(websockets and the AWS SDK log such details at DEBUG, which is kept off).

:class:`LogLimiter` is for events that repeat: at most one line per key and
interval, saying how many were held back.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Hashable
from typing import TextIO

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

from ticker_adapters.redaction import redacted_json

#: The Powertools service name. Not a prefix of any module's logger name: Powertools
#: filters its service's own child loggers out of the root handlers it finds at start.
SERVICE = "ticker-feed"
#: Libraries whose DEBUG lines carry request details (a handshake URL holds the token).
_QUIET = ("websockets", "botocore", "boto3", "urllib3", "aiohttp.access")


def configure(level: str = "INFO", stream: TextIO | None = None) -> Logger:
    """Send every logger's records, as Powertools JSON, redacted, to ``stream`` (stdout)."""
    handler = logging.StreamHandler(stream or sys.stdout)
    formatter = LambdaPowertoolsFormatter(utc=True, json_serializer=redacted_json)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    logger = Logger(
        service=SERVICE, level=level.upper(), logger_handler=handler, logger_formatter=formatter
    )
    # The service logger writes through its own handler; module loggers reach the same
    # handler on the root. Configured again (tests), Powertools keeps its first handler.
    logging.getLogger(SERVICE).propagate = False
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in _QUIET:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    return logger


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
