"""The WebSocket API as deployed, on loopback, with live ticks flowing.

One stack per test module: moto's server (the service's resources, a Cognito
pool with two users), the day's instruments snapshot (kite_sim's market,
frozen on a manual clock) in S3, the functions as Lambda runs them (worker
processes): the authorizer and routes behind the local WebSocket gateway,
the Greeks function and a fan-out per stream driven by event source
mappings. A :class:`TickProducer` puts kite_sim's ticks of a NIFTY chain and
a few other instruments on the ticks stream, round after round, and remembers
the last price of each.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from infra.limits import API_GATEWAY_INTEGRATION_TIMEOUT_S
from kite_sim.clock import ManualClock
from kite_sim.config import SimConfig
from kite_sim.feed import MODE_FULL
from kite_sim.market import Market
from kite_sim.server import Simulator, default_market_start
from kite_sim.universe import UniverseConfig
from kite_sim.wire import encode_ticks
from lambdas.instruments.dal import S3SnapshotStore
from lambdas.ws.protocol import Channel
from sandbox.environments import fanout_env, greeks_env, ws_authorizer_env, ws_routes_env
from sandbox.esm import (
    EventSourceMapping,
    MappingConfig,
    MappingTarget,
    load_mapping_definitions,
)
from sandbox.lambda_runtime import LambdaFunction
from sandbox.moto_server import AwsEndpoint, MotoServer
from sandbox.provision import (
    PoolUser,
    Resources,
    UserPool,
    client,
    create_user,
    create_user_pool,
    provision,
)
from sandbox.websocket_api import (
    AUTHORIZER,
    FANOUTS,
    ROUTES,
    start_websocket_api,
)
from sandbox.ws_gateway import LocalWebSocketGateway
from testkit.factories import publish_snapshot
from ticker_core.calendar import NseCalendar
from ticker_core.instruments import Instrument
from ticker_core.kite_wire import parse_ticks
from ticker_core.records import RecordBatcher, encode_tick

MAPPINGS = {d.name: d.config for d in load_mapping_definitions()}
"""The deployed mappings' settings (``lambdas/event_source_mappings.toml``)."""
MAX_CONNECTIONS_PER_USER = 3


def frozen_market() -> tuple[Market, ManualClock]:
    """kite_sim's market at 10:00 IST on a trading day, moving only when told."""
    calendar = NseCalendar.load()
    clock = ManualClock()
    opening = default_market_start(calendar, date(2026, 11, 26))
    config = SimConfig(
        seed=11,
        market_start=opening.replace(hour=10, minute=0),
        universe=UniverseConfig(stocks=4, nifty_weeklies=1, monthlies=1, option_monthlies=1,
                                index_strikes=6, stock_strikes=2, currency=False),
    )  # fmt: skip
    return Simulator(config, clock=clock, calendar=calendar).market, clock


class TickProducer:
    """Puts a round of ticks on the stream every ``interval`` seconds (a background thread)."""

    def __init__(
        self, kinesis: Any, stream: str, market: Market, clock: ManualClock, tokens: list[int]
    ) -> None:
        self._kinesis = kinesis
        self._stream = stream
        self._market = market
        self._clock = clock
        self._idx = np.array([market.token_index[t] for t in tokens], dtype=np.int64)
        self._modes = np.full(self._idx.size, MODE_FULL, dtype=np.int8)
        self._running = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.rounds = 0
        self.last: dict[int, float] = {}
        self.errors: list[BaseException] = []

    def start(self, interval: float = 0.3) -> None:
        self._running.set()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def pause(self) -> int:
        """Stop producing (after the round in progress); the rounds produced so far."""
        with self._lock:
            self._running.clear()
            return self.rounds

    def resume(self) -> None:
        self._running.set()

    def close(self) -> None:
        self._stop.set()
        self._running.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            if not self._running.wait(timeout=interval):
                continue
            with self._lock:
                if not self._running.is_set():
                    continue
                try:
                    self._round()
                except BaseException as exc:  # a test reads it and fails
                    self.errors.append(exc)
                    return

    def _round(self) -> None:
        market = self._market
        self._clock.advance(1.0)
        market.advance()
        market.tick(self._idx)
        received = market.clock.now().astimezone(UTC)
        by_key: dict[str, list[bytes]] = {}
        last: dict[int, float] = {}
        for tick in parse_ticks(encode_ticks(market, self._idx, self._modes)):
            instrument = market.universe.instruments[market.token_index[tick["instrument_token"]]]
            data = encode_tick(
                tick,
                underlying=instrument.underlying,
                received_at=received,
                exchange=instrument.exchange,
                tradingsymbol=instrument.tradingsymbol,
            )
            by_key.setdefault(instrument.underlying, []).append(data)
            last[tick["instrument_token"]] = tick["last_price"]
        batcher = RecordBatcher(linger=0.0)
        for key, datas in by_key.items():
            batcher.add_many(key, datas, 0.0)
        entries = [e for batch in batcher.flush() for e in batch.request_entries()]
        response = self._kinesis.put_records(StreamName=self._stream, Records=entries)
        assert response["FailedRecordCount"] == 0
        self.last.update(last)
        self.rounds += 1


@dataclass
class WsStack:
    """Everything a test talks to."""

    aws: AwsEndpoint
    resources: Resources
    pool: UserPool
    alice: PoolUser
    bob: PoolUser
    gateway: LocalWebSocketGateway
    producer: TickProducer
    functions: dict[str, LambdaFunction]
    mappings: dict[str, EventSourceMapping]
    chain: dict[str, str]
    chain_tokens: set[int]
    option_tokens: set[int]
    instruments: dict[int, Instrument]
    others: dict[str, int] = field(default_factory=dict)
    """Streamed instruments outside the chain: NSE:INFY, NSE:TCS and the NIFTY future."""

    def fanout_invocations(self, channel: Channel) -> int:
        return self.functions[FANOUTS[channel]].stats().invocations

    def dynamodb(self) -> Any:
        return client(self.aws, "dynamodb")


def _mapping(
    name: str,
    stream: str,
    arn: str,
    function: LambdaFunction,
    config: MappingConfig,
    resources: Resources,
    aws: AwsEndpoint,
) -> EventSourceMapping:
    target = MappingTarget(
        function_name=function.name,
        function_arn=function.arn,
        stream_name=stream,
        stream_arn=arn,
        role_arn=resources.role_arn(function.name),
    )
    mapping = EventSourceMapping(
        name, config, target, function, lambda service: client(aws, service), poll_interval_s=0.2
    )
    mapping.start()
    return mapping


@pytest.fixture(scope="module")
def ws_stack(moto_server: MotoServer) -> Iterator[WsStack]:
    moto_server.reset()
    aws = moto_server.endpoint
    resources = provision(aws, shards=1)
    names = resources.names
    market, clock = frozen_market()
    day = market.clock.now().date()
    store = S3SnapshotStore(client(aws, "s3"), names.instruments_bucket, "instruments/")
    publish_snapshot(store, market.instruments_csv().encode(), day)
    instruments = {i.instrument_token: i for i in market.universe.instruments}
    expiry = min(i.expiry for i in instruments.values() if i.underlying == "NIFTY" and i.is_option)
    chain_tokens = {
        t
        for t, i in instruments.items()
        if i.underlying == "NIFTY" and i.is_option and i.expiry == expiry
    }
    others = {
        "NSE:INFY": next(t for t, i in instruments.items() if i.tradingsymbol == "INFY"),
        "NSE:TCS": next(t for t, i in instruments.items() if i.tradingsymbol == "TCS"),
        "NIFTY-FUT": next(
            t for t, i in instruments.items() if i.underlying == "NIFTY" and i.is_future
        ),
    }
    pool = create_user_pool(aws, names.user_pool)
    alice = create_user(aws, pool, "alice")
    bob = create_user(aws, pool, "bob")
    functions: dict[str, LambdaFunction] = {}
    mappings: dict[str, EventSourceMapping] = {}
    gateway: LocalWebSocketGateway | None = None
    producer: TickProducer | None = None
    with tempfile.TemporaryDirectory() as logs:

        def function(name: str, env: dict[str, str], **kw: Any) -> LambdaFunction:
            made = LambdaFunction.declared(name, env=env, log_dir=Path(logs), **kw)
            functions[name] = made
            return made

        try:
            authorizer = function(AUTHORIZER, ws_authorizer_env(pool), timeout_s=10)
            limit = {"WS_MAX_CONNECTIONS_PER_USER": str(MAX_CONNECTIONS_PER_USER)}
            routes = function(
                ROUTES,
                {**ws_routes_env(aws, resources), **limit},
                timeout_s=API_GATEWAY_INTEGRATION_TIMEOUT_S,
            )
            gateway = start_websocket_api(
                authorizer=authorizer.invoke, integration=routes.invoke, region=aws.region
            )
            for channel, name in FANOUTS.items():
                env = fanout_env(aws, resources, channel, gateway.management_url)
                function(name, env, timeout_s=60, max_concurrency=1)
            greeks = function("greeks", greeks_env(aws, resources), timeout_s=60, max_concurrency=1)
            ticks_arn, greeks_arn = resources.ticks_stream_arn, resources.greeks_stream_arn
            for name, stream, arn, target, config in (
                ("ticks->greeks", names.ticks_stream, ticks_arn, greeks, MAPPINGS["ticks-greeks"]),
                ("ticks->fanout", names.ticks_stream, ticks_arn,
                 functions[FANOUTS[Channel.TICKS]], MAPPINGS["ticks-fanout"]),
                ("greeks->fanout", names.greeks_stream, greeks_arn,
                 functions[FANOUTS[Channel.GREEKS]], MAPPINGS["greeks-fanout"]),
            ):  # fmt: skip
                mappings[name] = _mapping(name, stream, arn, target, config, resources, aws)
            producer = TickProducer(
                client(aws, "kinesis"),
                names.ticks_stream,
                market,
                clock,
                sorted(chain_tokens | set(others.values())),
            )
            producer.start()
            yield WsStack(
                aws=aws,
                resources=resources,
                pool=pool,
                alice=alice,
                bob=bob,
                gateway=gateway,
                producer=producer,
                functions=functions,
                mappings=mappings,
                chain={"underlying": "NIFTY", "expiry": expiry.isoformat()},
                chain_tokens=chain_tokens,
                option_tokens={t for t, i in instruments.items() if i.is_option},
                instruments=instruments,
                others=others,
            )
        finally:
            if producer is not None:
                producer.close()
            if gateway is not None:
                gateway.stop()
            for mapping in mappings.values():
                mapping.stop()
            for made in functions.values():
                made.kill_all()
