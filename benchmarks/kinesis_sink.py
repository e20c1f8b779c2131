"""``python -m benchmarks.kinesis_sink --port N``: a Kinesis stand-in that keeps nothing.

For measuring the feed container where moto's server would be the
bottleneck: it answers every PutRecords entry with success, and counts
entries and user records exactly (each record's base64 data is decoded and
its ``"received_at":"`` fields found: one per tick, and the text cannot occur
inside a JSON string, where quotes are escaped).

It also measures the exact end-to-end latency of every tick: the time the
request carrying it arrived here minus the tick's ``received_at`` (the
container's wall clock when the frame arrived; same machine, same clock).
Ticks of one frame share their ``received_at``, and the feed appends a
frame's ticks of one key together, so inside a record the stamps come in
runs: each run is found and counted with a few byte searches (C speed; a
regular expression over every tick made the stand-in the bottleneck), its
stamp parsed once, weighted by its ticks. Base64 is decoded with ``pybase64``
(SIMD), as the container encodes it: the stand-in shares the machine's two
cores with the container, and with the standard library's decoder it used
0.40-0.44 cores at 110,000 ticks/s (0.25-0.27 with pybase64), CPU taken from
the container it measures. ``GET /count`` returns the counts;
``GET /latency`` the exact percentiles since the last ``POST /latency/reset``.
"""

from __future__ import annotations

import argparse
import math
import re
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime

import pybase64
from aiohttp import web

_DATA = re.compile(rb'"Data":"([A-Za-z0-9+/=]*)"')
_STAMP = b'"received_at":"'
_EVERY_STAMP = re.compile(rb'"received_at":"([^"]+)"')
_ENTRY = b'{"SequenceNumber":"49600000000000000000000000000000000000000000000000000001","ShardId":"shardId-000000000000"}'  # noqa: E501
QUANTILES = (0.5, 0.9, 0.99, 0.999)


def stamps(data: bytes) -> Iterator[tuple[bytes, int]]:
    """(received_at, ticks) of one record's data: by runs, or tick by tick if they interleave."""
    runs = list(stamp_runs(data))
    if sum(ticks for _, ticks in runs) == data.count(_STAMP):
        return iter(runs)
    return iter(Counter(_EVERY_STAMP.findall(data)).items())


def stamp_runs(data: bytes) -> Iterator[tuple[bytes, int]]:
    """(received_at, ticks) per run of equal stamps in one record's data, in order."""
    at = data.find(_STAMP)
    while at >= 0:
        start = at + len(_STAMP)
        stamp = data[start : data.index(b'"', start)]
        marker = _STAMP + stamp + b'"'
        last = data.rfind(marker)
        ticks = data.count(marker, at, last + len(marker))
        yield stamp, ticks
        at = data.find(_STAMP, last + len(marker))


def quantiles(samples: list[tuple[float, int]]) -> dict[str, float]:
    """Exact weighted quantiles of (latency, ticks) samples, and the maximum."""
    total = sum(n for _, n in samples)
    out: dict[str, float] = {"ticks": float(total)}
    if not total:
        return out
    ordered = sorted(samples)
    for q in QUANTILES:
        target, running = q * total, 0
        for value, n in ordered:
            running += n
            if running >= target:
                out[f"p{q * 100:g}"] = value
                break
    out["max"] = ordered[-1][0]
    out["mean"] = math.fsum(v * n for v, n in ordered) / total
    return out


def build_app() -> web.Application:
    """The sink's routes and counters."""
    counts = {"requests": 0, "entries": 0, "user_records": 0, "bytes": 0}
    latency: list[tuple[float, int]] = []
    parsed: dict[bytes, float] = {}

    def epoch(stamp: bytes) -> float:
        seconds = parsed.get(stamp)
        if seconds is None:
            if len(parsed) > 100_000:
                parsed.clear()
            seconds = parsed[stamp] = datetime.fromisoformat(stamp.decode()).timestamp()
        return seconds

    async def put_records(request: web.Request) -> web.Response:
        body = await request.read()
        arrived = time.time()
        entries = 0
        received: Counter[bytes] = Counter()
        for match in _DATA.finditer(body):
            entries += 1
            for stamp, ticks in stamps(pybase64.b64decode(match.group(1), validate=True)):
                received[stamp] += ticks
        counts["requests"] += 1
        counts["entries"] += entries
        counts["user_records"] += sum(received.values())
        counts["bytes"] += len(body)
        latency.extend((arrived - epoch(stamp), n) for stamp, n in received.items())
        answer = b'{"FailedRecordCount":0,"Records":[' + b",".join([_ENTRY] * entries) + b"]}"
        return web.Response(body=answer, content_type="application/x-amz-json-1.1")

    async def count(_: web.Request) -> web.Response:
        return web.json_response(counts)

    async def latency_figures(_: web.Request) -> web.Response:
        return web.json_response(quantiles(latency))

    async def latency_reset(_: web.Request) -> web.Response:
        latency.clear()
        return web.json_response({})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/", put_records)
    app.router.add_get("/count", count)
    app.router.add_get("/latency", latency_figures)
    app.router.add_post("/latency/reset", latency_reset)
    return app


def main() -> None:
    """Serve on 127.0.0.1 until killed."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(build_app(), host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
