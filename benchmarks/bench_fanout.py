"""WebSocket fan-out: one message per client per batch, against one post per tick per client.

100 clients each subscribe to the same 200-instrument option chain (kite_sim's
NIFTY chain, full-mode ticks through the real wire encoding and ``tick/1``
records). 10,000 ticks arrive as 20 Lambda batches of 500 (KPL-aggregated, as
the feed writes them; a batch is what one invocation of the mapping gets).

- **fan-out** (:class:`lambdas.ws.fanout.Fanout`): per batch, the latest
  record of each instrument to each subscribed client, one post per client.
- **anchor, one post per tick per client**: the same de-aggregation and bulk
  subscriber lookup, then every tick posted to every subscriber on its own,
  the way a naive fan-out forwards a stream.

Both post to an in-process counter (so the function time is the function's
own work: decode, look up, group, build messages), and the same subscriber
lookup (a dict, standing in for the bulk DynamoDB read both would make per
batch). Freshness is checked, not assumed: after every batch, each client's
latest value per instrument must be the same under both. What a post costs
on the wire is measured separately: ``PostToConnection`` through boto3 to the
local WebSocket gateway over loopback, one at a time and on 16 threads (the
fan-out's post pool), with a client reading; the projected post time per
10,000 ticks multiplies it out.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
import time
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date
from typing import Any

import numpy as np
import orjson

from kite_sim.clock import ManualClock
from kite_sim.config import SimConfig
from kite_sim.feed import MODE_FULL
from kite_sim.server import Simulator, default_market_start
from kite_sim.universe import UniverseConfig
from kite_sim.wire import encode_ticks
from lambdas.ws.dal.management import ConnectionPoster, PostOutcome, management_client
from lambdas.ws.fanout import Fanout
from lambdas.ws.protocol import SUBPROTOCOL, Channel, data_messages
from sandbox.esm import InvokeResult
from sandbox.ws_client import StreamClient
from sandbox.ws_gateway import LocalWebSocketGateway
from ticker_core.calendar import NseCalendar
from ticker_core.kite_wire import parse_ticks
from ticker_core.records import (
    RecordBatcher,
    deaggregate_event,
    encode_tick,
    lambda_event_record,
)
from tools.benchmarking import Comparison, Figure, Result, benchmark, interleaved_rates

CLIENTS = 100
INSTRUMENTS = 200
TICKS = 10_000
BATCH_TICKS = 500
TARGET_FEWER_POSTS = 20.0
WIRE_POSTS = 2_000
POST_THREADS = 16
STREAM_ARN = "arn:aws:kinesis:ap-south-1:123456789012:stream/ticks"


def _chain_ticks() -> list[tuple[int, bytes]]:
    """``TICKS`` ticks of a 200-option NIFTY chain: (token, ``tick/1`` record), in stream order."""
    calendar = NseCalendar.load()
    clock = ManualClock()
    opening = default_market_start(calendar, date(2026, 11, 26))
    config = SimConfig(
        seed=7,
        market_start=opening.replace(hour=10, minute=0),
        universe=UniverseConfig(stocks=1, nifty_weeklies=1, monthlies=1, option_monthlies=1,
                                index_strikes=50, stock_strikes=1, currency=False),
    )  # fmt: skip
    market = Simulator(config, clock=clock, calendar=calendar).market
    instruments = market.universe.instruments
    expiry = min(
        i.expiry
        for i in instruments
        if i.underlying == "NIFTY" and i.is_option and i.expiry is not None
    )
    chain = [
        i for i in instruments if i.underlying == "NIFTY" and i.is_option and i.expiry == expiry
    ]
    chain = chain[:INSTRUMENTS]
    idx = np.array([market.token_index[i.instrument_token] for i in chain], dtype=np.int64)
    modes = np.full(idx.size, MODE_FULL, dtype=np.int8)
    rng = np.random.default_rng(7)
    out: list[tuple[int, bytes]] = []
    while len(out) < TICKS:
        clock.advance(0.2)
        market.advance()
        moving = idx[rng.random(idx.size) < 0.5]  # about half the chain ticks each step
        if moving.size == 0:
            continue
        market.tick(moving)
        received = market.clock.now().astimezone(UTC)
        for tick in parse_ticks(encode_ticks(market, moving, modes[: moving.size])):
            instrument = instruments[market.token_index[tick["instrument_token"]]]
            record = encode_tick(tick, underlying="NIFTY", received_at=received,
                                 exchange=instrument.exchange,
                                 tradingsymbol=instrument.tradingsymbol)  # fmt: skip
            out.append((tick["instrument_token"], record))
    return out[:TICKS]


def _events(ticks: list[tuple[int, bytes]]) -> list[dict[str, Any]]:
    """Lambda events of ``BATCH_TICKS`` ticks each, KPL-aggregated as the feed writes them."""
    events = []
    sequence = 10**20
    for start in range(0, len(ticks), BATCH_TICKS):
        batcher = RecordBatcher(linger=0.0)
        batcher.add_many("NIFTY", [data for _, data in ticks[start : start + BATCH_TICKS]], 0.0)
        entries = []
        for batch in batcher.flush():
            for record in batch.records:
                sequence += 1
                entries.append(
                    lambda_event_record(
                        record.data,
                        partition_key="NIFTY",
                        sequence_number=str(sequence),
                        shard_id="shardId-000000000000",
                        stream_arn=STREAM_ARN,
                        arrival=1_795_000_000.0,
                    )
                )
        events.append({"Records": entries})
    return events


class Subscribers:
    """Every client on every instrument of the chain (the bulk lookup, in memory)."""

    def __init__(self, tokens: Collection[int]) -> None:
        clients = frozenset(f"client-{n:03d}" for n in range(CLIENTS))
        self._by_token = dict.fromkeys(tokens, clients)

    def lookup(self, tokens: Collection[int], channel: Channel) -> dict[int, frozenset[str]]:
        return {t: self._by_token[t] for t in tokens if t in self._by_token}


class CountingPoster:
    """Counts posts and bytes; remembers each client's latest value per instrument."""

    def __init__(self, *, track: bool) -> None:
        self.posts = 0
        self.bytes = 0
        self._track = track
        self.latest: dict[str, dict[int, float]] = {}

    def post(self, connection_id: str, data: bytes) -> PostOutcome:
        self.posts += 1
        self.bytes += len(data)
        if self._track:
            seen = self.latest.setdefault(connection_id, {})
            for record in orjson.loads(data)["data"]:
                seen[record["instrument_token"]] = record["last_price"]
        return PostOutcome.DELIVERED


def _fanout(
    events: list[dict[str, Any]], subscribers: Subscribers, poster: CountingPoster
) -> Callable[[], None]:
    fanout = Fanout(Channel.TICKS, subscribers, poster, lambda *_: None, workers=1)

    def run() -> None:
        for event in events:
            fanout.run(event)

    return run


def _per_tick(
    events: list[dict[str, Any]], subscribers: Subscribers, poster: CountingPoster
) -> Callable[[], None]:
    def run() -> None:
        for event in events:
            ticks = [
                (orjson.loads(u.data)["instrument_token"], u.data) for u in deaggregate_event(event)
            ]
            found = subscribers.lookup({t for t, _ in ticks}, Channel.TICKS)
            for token, data in ticks:
                (message,) = data_messages(Channel.TICKS, [data])
                for client in found.get(token, ()):
                    poster.post(client, message)

    return run


def _same_freshness(events: list[dict[str, Any]], subscribers: Subscribers) -> bool:
    """After every batch, each client holds the same latest value per instrument either way."""
    ours, naive = CountingPoster(track=True), CountingPoster(track=True)
    fanout = Fanout(Channel.TICKS, subscribers, ours, lambda *_: None, workers=1)
    for event in events:
        fanout.run(event)
        _per_tick([event], subscribers, naive)()
        if ours.latest != naive.latest:
            return False
    return len(ours.latest) == CLIENTS


def _wire_post_seconds() -> tuple[float, float]:
    """Seconds per PostToConnection through the local gateway: one at a time, and on 16 threads."""

    def allow(event: dict[str, Any]) -> InvokeResult:
        statement = {"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": "*"}
        return InvokeResult({"principalId": "bench", "policyDocument": {"Statement": [statement]},
                             "context": {"sub": "bench"}})  # fmt: skip

    def integrate(event: dict[str, Any]) -> InvokeResult:
        return InvokeResult({"statusCode": 200, "headers": {"Sec-WebSocket-Protocol": SUBPROTOCOL}})

    message = next(
        iter(data_messages(Channel.TICKS, [b'{"instrument_token":1,"last_price":1.0}'] * 150))
    )
    received = threading.Event()
    connected = threading.Event()
    done = threading.Event()

    async def reader(url: str) -> None:
        async with StreamClient(url, "bench-token", on_data=lambda c, r: received.set()) as client:
            connected.set()
            while not done.is_set():
                try:
                    async with asyncio.timeout(0.2):
                        await client.closed()
                    return
                except TimeoutError:
                    pass

    with LocalWebSocketGateway(authorizer=allow, integration=integrate) as gateway:
        thread = threading.Thread(target=lambda: asyncio.run(reader(gateway.url)), daemon=True)
        thread.start()
        if not connected.wait(30):
            raise RuntimeError("the bench client did not connect")
        (connection_id,) = gateway.connection_ids()
        # Generated credentials: the SDK signs, the local gateway checks only that it did.
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "AKID" + secrets.token_hex(8).upper())
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", secrets.token_hex(20))
        os.environ.setdefault("AWS_DEFAULT_REGION", "ap-south-1")
        poster = ConnectionPoster(
            management_client(gateway.management_url, max_connections=POST_THREADS)
        )
        for _ in range(50):  # warm the connection pool
            poster.post(connection_id, message)
        started = time.perf_counter()
        for _ in range(WIRE_POSTS):
            if poster.post(connection_id, message) is not PostOutcome.DELIVERED:
                raise RuntimeError("a bench post was not delivered")
        serial = (time.perf_counter() - started) / WIRE_POSTS
        with ThreadPoolExecutor(POST_THREADS) as pool:
            started = time.perf_counter()
            outcomes = list(
                pool.map(lambda _: poster.post(connection_id, message), range(WIRE_POSTS))
            )
            parallel = (time.perf_counter() - started) / WIRE_POSTS
        done.set()
        thread.join(timeout=10)
        if any(o is not PostOutcome.DELIVERED for o in outcomes) or not received.is_set():
            raise RuntimeError("bench posts were not delivered")
    return serial, parallel


@benchmark("fanout")
def bench_fanout() -> Result:
    ticks = _chain_ticks()
    tokens = {t for t, _ in ticks}
    events = _events(ticks)
    subscribers = Subscribers(tokens)
    ours, naive = CountingPoster(track=False), CountingPoster(track=False)
    contenders: dict[str, Callable[[], object]] = {
        "fan-out": _fanout(events, subscribers, ours),
        "one post per tick per client": _per_tick(events, subscribers, naive),
    }
    rates, ratios = interleaved_rates(
        contenders, TICKS, "one post per tick per client", rounds=5, min_seconds=0.5
    )
    # Posts of one run (the timed posters above counted every call of every round).
    per_run_ours = CountingPoster(track=False)
    _fanout(events, subscribers, per_run_ours)()
    per_run_naive = CountingPoster(track=False)
    _per_tick(events, subscribers, per_run_naive)()
    fresh = _same_freshness(events, subscribers)
    serial, parallel = _wire_post_seconds()
    ms = {name: TICKS / rate * 1000 for name, rate in rates.items()}
    fewer = per_run_naive.posts / per_run_ours.posts
    return Result(
        name="fanout",
        title="WebSocket fan-out: posts and function time per 10,000 ticks",
        method=__doc__ or "",
        comparisons=[
            Comparison("fan-out posts", "one post per tick per client", fewer, TARGET_FEWER_POSTS),
            Comparison(
                "fan-out function time",
                "one post per tick per client",
                ratios["fan-out"],
            ),
        ],
        figures=[
            Figure("clients x instruments subscribed", CLIENTS * len(tokens), "subscriptions"),
            Figure("batches of 500 ticks", len(events), "invocations"),
            Figure("fan-out: messages posted per 10,000 ticks", per_run_ours.posts, "posts"),
            Figure(
                "one post per tick per client: posts per 10,000 ticks", per_run_naive.posts, "posts"
            ),
            Figure("fan-out: bytes posted per 10,000 ticks", per_run_ours.bytes / 1e6, "MB"),
            Figure(
                "one post per tick: bytes posted per 10,000 ticks", per_run_naive.bytes / 1e6, "MB"
            ),
            Figure("fan-out: function time per 10,000 ticks", ms["fan-out"], "ms"),
            Figure(
                "one post per tick: function time per 10,000 ticks",
                ms["one post per tick per client"],
                "ms",
            ),
            Figure(
                "PostToConnection via the local gateway, one at a time", serial * 1000, "ms/post"
            ),
            Figure(
                f"PostToConnection via the local gateway, {POST_THREADS} threads",
                parallel * 1000,
                "ms/post",
            ),
            Figure(
                "fan-out: projected post time per 10,000 ticks (16 threads)",
                per_run_ours.posts * parallel,
                "s",
            ),
            Figure(
                "one post per tick: projected post time per 10,000 ticks (16 threads)",
                per_run_naive.posts * parallel,
                "s",
            ),
        ],
        checks=[("every client holds the same latest values after every batch", fresh)],
        notes=[
            "Function time excludes the posts' network time (the posters count in process); "
            "the projected post time uses the loopback gateway's measured cost per post; in AWS "
            "each PostToConnection is an HTTPS call to the API's endpoint, and is billed.",
            "The fan-out's messages split past 128 KB: a batch carrying all 200 full-mode "
            "ticks needs two messages per client.",
        ],
    )
