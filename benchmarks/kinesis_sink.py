"""``python -m benchmarks.kinesis_sink --port N``: a Kinesis stand-in that keeps nothing.

For measuring the feed container where moto's server would be the
bottleneck: it answers every PutRecords entry with success, and counts
entries and user records exactly (each record's base64 data is decoded and
its ``{"schema":"tick/1"`` openings counted: the text cannot occur inside a
JSON string, where quotes are escaped). ``GET /count`` returns the counts.
"""

from __future__ import annotations

import argparse
import base64
import re

from aiohttp import web

_DATA = re.compile(rb'"Data":"([A-Za-z0-9+/=]*)"')
_TICK = b'{"schema":"tick/1"'
_ENTRY = b'{"SequenceNumber":"49600000000000000000000000000000000000000000000000000001","ShardId":"shardId-000000000000"}'  # noqa: E501


def build_app() -> web.Application:
    """The sink's routes and counters."""
    counts = {"requests": 0, "entries": 0, "user_records": 0, "bytes": 0}

    async def put_records(request: web.Request) -> web.Response:
        body = await request.read()
        entries = 0
        for match in _DATA.finditer(body):
            entries += 1
            counts["user_records"] += base64.b64decode(match.group(1)).count(_TICK)
        counts["requests"] += 1
        counts["entries"] += entries
        counts["bytes"] += len(body)
        answer = b'{"FailedRecordCount":0,"Records":[' + b",".join([_ENTRY] * entries) + b"]}"
        return web.Response(body=answer, content_type="application/x-amz-json-1.1")

    async def count(_: web.Request) -> web.Response:
        return web.json_response(counts)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/", put_records)
    app.router.add_get("/count", count)
    return app


def main() -> None:
    """Serve on 127.0.0.1 until killed."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(build_app(), host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
