"""``python -m sandbox.moto_app``: moto's server with Kinesis and DynamoDB calls serialised.

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

DynamoDB likewise, under a lock of its own: moto's TransactWriteItems applies
its items one by one and, when one fails its condition, restores every table
it touches from a copy taken before it began, undoing whatever other requests
wrote meanwhile. DynamoDB's transactions are atomic and isolated; the
WebSocket API's subscriber index relies on it (and the API's stores on
conditional writes), so DynamoDB requests run one at a time.

moto's shard also finds its last sequence number by listing every key (per
record put) and serves GetRecords by scanning from the shard's first record:
both grow with the stream, so a sandbox run at thousands of ticks a second
slows to a crawl within a minute. :func:`speed_up_kinesis_shards` gives the
same answers in constant time and in time proportional to the records
returned, relying on moto numbering a shard's records 1, 2, 3, ...
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
DYNAMODB_TARGET_PREFIX = "DynamoDB_20120810."
SERIALISED = (KINESIS_TARGET_PREFIX, DYNAMODB_TARGET_PREFIX)

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class ServiceSerializer:
    """WSGI middleware: Kinesis requests one at a time, DynamoDB requests one at a time."""

    def __init__(self, app: WsgiApp, prefixes: Iterable[str] = SERIALISED) -> None:
        self._app = app
        self._locks = {prefix: threading.Lock() for prefix in prefixes}

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        lock = next((v for k, v in self._locks.items() if target.startswith(k)), None)
        if lock is None:
            return self._app(environ, start_response)
        with lock:
            # Materialise the body inside the lock: moto builds it eagerly anyway.
            return list(self._app(environ, start_response))


def speed_up_kinesis_shards() -> None:
    """Replace moto's O(records in the shard) Shard methods with equivalent fast ones."""
    from moto.kinesis.models import Shard

    original_get_records = Shard.get_records

    def get_max_sequence_number(self: Any) -> int:
        return int(next(reversed(self.records), 0))

    def get_min_sequence_number(self: Any) -> int:
        return int(next(iter(self.records), 0))

    def get_records(self: Any, last_sequence_id: str, limit: int | None) -> Any:
        records = self.records
        last = int(last_sequence_id)
        if not records:
            return [], last, 0
        sequence = max(last + 1, next(iter(records)))
        newest = records[next(reversed(records))]
        if sequence <= newest.sequence_number and sequence not in records:
            return original_get_records(self, last_sequence_id, limit)  # a gap: moto's way
        results: list[Any] = []
        while sequence in records and (limit is None or len(results) < limit):
            results.append(records[sequence])
            sequence += 1
        if not results:
            return results, last, 0
        behind = int((newest.created_at - results[-1].created_at) * 1000)
        return results, results[-1].sequence_number, behind

    Shard.get_max_sequence_number = get_max_sequence_number  # type: ignore[method-assign]
    Shard.get_min_sequence_number = get_min_sequence_number  # type: ignore[method-assign]
    Shard.get_records = get_records  # type: ignore[method-assign]


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
    speed_up_kinesis_shards()
    app = ServiceSerializer(DomainDispatcherApplication(create_backend_app))
    run_simple(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
