"""``python -m sandbox.moto_app``: moto's server with Kinesis calls serialised.

moto's Kinesis shard assigns a sequence number by reading the last one and
then inserting ("not safe for concurrency", says its source), and its
GetRecords iterates the same dict a PutRecords appends to. Its server is
threaded, so two producers putting at once (the feed's parallel PutRecords,
several Greeks environments) can be handed the same sequence number, and one
record silently replaces the other; a reader racing a writer fails with
"dictionary changed size during iteration". Real Kinesis does neither, and the
sandbox's whole point is counting records exactly, so every Kinesis call runs
under one lock here. Other services stay concurrent (an SQS long poll must not
block the stream).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

KINESIS_TARGET_PREFIX = "Kinesis_20131202."

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class KinesisSerializer:
    """WSGI middleware: Kinesis requests one at a time, everything else untouched."""

    def __init__(self, app: WsgiApp) -> None:
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if not target.startswith(KINESIS_TARGET_PREFIX):
            return self._app(environ, start_response)
        with self._lock:
            # Materialise the body inside the lock: moto builds it eagerly anyway.
            return list(self._app(environ, start_response))


def _stop(signum: int, frame: Any) -> None:
    sys.exit(0)


def main(argv: list[str] | None = None) -> None:
    """Serve moto on ``--host``/``--port`` until SIGTERM/SIGINT."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import run_simple

    parser = argparse.ArgumentParser(prog="python -m sandbox.moto_app")
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(args.port))
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    app = KinesisSerializer(DomainDispatcherApplication(create_backend_app))
    run_simple(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
