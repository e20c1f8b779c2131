"""The greeks function end to end: kite_sim's market -> ticks -> handler -> the greeks stream.

kite_sim prices options with Black-76 on its forward and a known smile, so
the implied vols the function recovers must be the simulator's own vols:
exactly (to solver precision) from the model prices, and within the
rounding of a tick-size grid from the prices the feed actually sends.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, time
from importlib import resources
from typing import Any

import boto3
import numpy as np
import pytest
from botocore.exceptions import ClientError
from jsonschema import Draft202012Validator, FormatChecker

from kite_sim.clock import ManualClock
from kite_sim.config import SimConfig
from kite_sim.feed import MODE_FULL
from kite_sim.market import KIND_CALL, KIND_FUT, KIND_PUT, Market
from kite_sim.server import Simulator
from kite_sim.universe import UniverseConfig
from kite_sim.wire import encode_ticks
from lambdas.common.runtime import LambdaHandler
from lambdas.greeks.handler import Dependencies, make_handler
from lambdas.greeks.settings import GreeksEnvironment, GreeksSettings
from lambdas.instruments.dal import S3SnapshotStore
from sandbox.kinesis_proxy import KinesisFaultProxy
from sandbox.moto_server import AwsEndpoint
from testkit.factories import kinesis_event, publish_snapshot
from tests.conftest import INSTRUMENTS_BUCKET
from ticker_adapters.instrument_snapshots import SnapshotUnavailableError
from ticker_adapters.settings import GreeksStreamSettings, SnapshotSettings
from ticker_core.calendar import NseCalendar
from ticker_core.expiry_arrays import year_fractions
from ticker_core.kite_wire import parse_ticks
from ticker_core.records import deaggregate, decode_greeks, encode_tick
from ticker_core.tz import IST

pytestmark = pytest.mark.integration

STREAM = "greeks"
SCHEMA = json.loads(resources.files("ticker_core.schemas").joinpath("greeks.v1.json").read_text())
VALIDATOR = Draft202012Validator(SCHEMA, format_checker=FormatChecker())
TICKS_PER_RECORD = 40


@pytest.fixture(scope="module")
def market() -> Market:
    """kite_sim's market at 10:00 IST on a trading day, frozen (manual clock, no server)."""
    calendar = NseCalendar.load()
    day = datetime(2026, 11, 26, tzinfo=IST).date()
    while not calendar.is_trading_day(day):
        day = day.replace(day=day.day + 1)
    config = SimConfig(
        seed=3,
        market_start=datetime.combine(day, time(10, 0), IST),
        universe=UniverseConfig(stocks=3, nifty_weeklies=2, monthlies=2, index_strikes=12,
                                stock_strikes=6),
    )  # fmt: skip
    return Simulator(config, clock=ManualClock(), calendar=calendar).market


def kite_ticks(market: Market, *, model_prices: bool) -> list[tuple[str, bytes]]:
    """Every instrument's tick as the feed would put it on Kinesis: (partition key, record).

    The feed path is real (kite_sim's wire encoder, ticker_core's decoder and
    record encoder); with ``model_prices`` each last_price is replaced by the
    unrounded model price, so only solver precision separates the vols.
    """
    idx = np.arange(market.size, dtype=np.int64)
    frame = encode_ticks(market, idx, np.full(idx.size, MODE_FULL, dtype=np.int8))
    theo = market.theoretical(idx)
    received = market.clock.now().astimezone(UTC)
    out = []
    for tick in parse_ticks(frame):
        k = market.token_index[tick["instrument_token"]]
        inst = market.universe.instruments[k]
        if model_prices:
            tick = {**tick, "last_price": float(theo[k])}
        data = encode_tick(tick, underlying=inst.underlying, received_at=received,
                           exchange=inst.exchange, tradingsymbol=inst.tradingsymbol)  # fmt: skip
        out.append((inst.underlying, data))
    return out


def event_of(ticks: list[tuple[str, bytes]], shard: str, first_sequence: int) -> dict[str, Any]:
    by_key: dict[str, list[bytes]] = {}
    for key, data in ticks:
        by_key.setdefault(key, []).append(data)
    chunks = [
        (key, datas[i : i + TICKS_PER_RECORD])
        for key, datas in by_key.items()
        for i in range(0, len(datas), TICKS_PER_RECORD)
    ]
    return kinesis_event(chunks, shard_id=shard, first_sequence=first_sequence)


def model_vols(market: Market) -> dict[int, tuple[float, float]]:
    """token -> (the smile's vol, the model forward) for every live option."""
    idx = np.flatnonzero((market.kind == KIND_CALL) | (market.kind == KIND_PUT))
    t = year_fractions(market.clock.epoch(), market.expiry_epoch[idx])
    idx, t = idx[t > 0], t[t > 0]
    forward = market.forward(idx, t)
    sigma = market.implied_vol(idx, forward, t)
    return {
        int(market.tokens[k]): (float(s), float(f))
        for k, s, f in zip(idx, sigma, forward, strict=True)
    }


def stream_records(kinesis: Any) -> list[tuple[str, dict[str, Any]]]:
    """Every user record on the greeks stream: (partition key, decoded record), schema-checked."""
    out = []
    for shard in kinesis.list_shards(StreamName=STREAM)["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=STREAM, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        for record in kinesis.get_records(ShardIterator=iterator, Limit=10_000)["Records"]:
            for user in deaggregate(record["Data"], record["PartitionKey"]):
                raw = json.loads(user.data)
                errors = [e.message for e in VALIDATOR.iter_errors(raw)]
                assert errors == [], errors
                out.append((user.partition_key, decode_greeks(user.data)))
    return out


def environment(stream: str = STREAM, **greeks: Any) -> GreeksEnvironment:
    """The function's settings as its environment would give them."""
    return GreeksEnvironment(
        greeks=GreeksSettings(**greeks),
        output=GreeksStreamSettings(name=stream),
        snapshot=SnapshotSettings(bucket=INSTRUMENTS_BUCKET),
    )


def dependencies(
    aws: AwsEndpoint, environment: GreeksEnvironment, *, kinesis_url: str | None = None
) -> Dependencies:
    """What the first invocation would build, against moto (Kinesis through ``kinesis_url``)."""
    kinesis_args = {**aws.client_kwargs(), **({"endpoint_url": kinesis_url} if kinesis_url else {})}
    return Dependencies.build(
        environment,
        s3=boto3.client("s3", **aws.client_kwargs()),
        kinesis=boto3.client("kinesis", **kinesis_args),
    )


def greeks_handler(aws: AwsEndpoint, environment: GreeksEnvironment) -> LambdaHandler:
    """The Lambda entry point over those dependencies."""
    deps = dependencies(aws, environment)
    return make_handler(lambda: deps)


def publish_market(aws: AwsEndpoint, s3: Any, market: Market) -> None:
    """The sim's dump published as today's snapshot, and the greeks stream made."""
    publish_snapshot(
        S3SnapshotStore(s3, INSTRUMENTS_BUCKET, "instruments/"),
        market.instruments_csv().encode(),
        market.clock.now().date(),
    )
    boto3.client("kinesis", **aws.client_kwargs()).create_stream(StreamName=STREAM, ShardCount=2)


@pytest.fixture
def handler(aws: AwsEndpoint, s3: Any, market: Market) -> LambdaHandler:
    """The handler with the sim's dump published and the stream made."""
    publish_market(aws, s3, market)
    return greeks_handler(aws, environment())


class Context:
    function_name = "greeks"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:ap-south-1:123456789012:function:greeks"
    aws_request_id = "req-1"


def test_recovered_vols_are_the_simulators_and_every_record_is_valid(
    handler: LambdaHandler, market: Market, aws: AwsEndpoint
) -> None:
    # Given a batch with a tick of every instrument at the model's prices
    ticks = kite_ticks(market, model_prices=True)
    truth = model_vols(market)
    futures_expiries = {
        (i.underlying, i.expiry)
        for i, kind in zip(market.universe.instruments, market.kind, strict=True)
        if kind == KIND_FUT
    }
    # When the function processes it
    response = handler(event_of(ticks, "shardId-000000000000", 10**20), Context())
    # Then no record failed, and every live option has one valid record keyed by its underlying
    assert response == {"batchItemFailures": []}
    records = stream_records(boto3.client("kinesis", **aws.client_kwargs()))
    assert sorted(r["instrument_token"] for _, r in records) == sorted(truth)
    assert all(key == r["underlying"] for key, r in records)
    # And the forward is the listed future where the expiry has one, else parity, and right
    for _, r in records:
        expected = "future" if (r["underlying"], r["expiry"]) in futures_expiries else "parity"
        assert r["forward_source"] == expected
        assert r["forward"] == pytest.approx(truth[r["instrument_token"]][1], rel=1e-9)
    # And the implied vols are the simulator's smile, wherever the price carries information
    informative = [r for _, r in records if 0.02 < abs(r["delta"] or 0) < 0.98]
    assert len(informative) > 0.6 * len(records)
    for r in informative:
        assert r["reason"] is None
        assert r["iv"] == pytest.approx(truth[r["instrument_token"]][0], rel=1e-10)


def test_vols_from_the_feeds_rounded_prices_are_within_the_tick_grid(
    handler: LambdaHandler, market: Market, aws: AwsEndpoint
) -> None:
    # Given the ticks as the feed sends them (last price on the 0.05 grid, bid or ask)
    ticks = kite_ticks(market, model_prices=False)
    truth = model_vols(market)
    # When the function processes them
    handler(event_of(ticks, "shardId-000000000001", 10**20), Context())
    # Then near the money the vols are the smile's to within what the price grid allows:
    # the option's price is off by up to two ticks (bid or ask around the model price), and
    # so is the future's; a parity forward averages two pairs of such prices.
    records = stream_records(boto3.client("kinesis", **aws.client_kwargs()))
    liquid = [r for _, r in records if 0.1 < abs(r["delta"] or 0) < 0.9]
    assert len(liquid) > 40
    grid = 2 * 0.05 + 0.01  # two ticks, plus rounding to paise on the wire
    for r in liquid:
        forward_error = grid if r["forward_source"] == "future" else 2.2 * grid
        price_error = grid + abs(r["delta"]) * forward_error
        vol_error = price_error / r["raw"]["vega"]
        assert abs(r["iv"] - truth[r["instrument_token"]][0]) <= vol_error


def test_a_poison_record_is_reported_and_a_replay_yields_the_same_sources(
    handler: LambdaHandler, market: Market, aws: AwsEndpoint, capsys: Any
) -> None:
    # Given a batch whose second Kinesis record is not a KPL aggregate of ticks
    ticks = kite_ticks(market, model_prices=True)
    event = event_of(ticks, "shardId-000000000000", 10**20)
    event["Records"][1]["kinesis"]["data"] = base64.b64encode(b"\xf3\x89\x9a\xc2junk").decode()
    poisoned = event["Records"][1]["kinesis"]["sequenceNumber"]
    # When the function processes it, Then exactly that record is reported
    first = handler(event, Context())
    assert first == {"batchItemFailures": [{"itemIdentifier": poisoned}]}
    kinesis = boto3.client("kinesis", **aws.client_kwargs())
    once = stream_records(kinesis)
    # When Kinesis delivers the same batch again (a retry)
    handler(event, Context())
    twice = stream_records(kinesis)
    # Then the replay's records name exactly the same source ticks as the first run's
    sources = sorted(json.dumps(r["source"], sort_keys=True) for _, r in once)
    assert len(sources) == len(set(sources)) > 0
    assert sorted(json.dumps(r["source"], sort_keys=True) for _, r in twice) == sorted(sources * 2)
    # And the metrics counted the poison and the forwards
    emf = [json.loads(x) for x in capsys.readouterr().out.splitlines() if '"_aws"' in x]
    assert [m.get("Poison_corrupt_record") for m in emf] == [[1.0], [1.0]]
    assert all(m["GreeksPublished"] == [float(len(once))] for m in emf)
    assert all("Forward_parity" in m and "Forward_future" in m for m in emf)


def test_without_a_snapshot_or_a_stream_the_batch_fails_for_kinesis_to_retry(
    aws: AwsEndpoint, s3: Any, market: Market, capsys: Any
) -> None:
    # Given a function whose bucket holds no snapshot yet and whose stream does not exist
    handler = greeks_handler(aws, environment(stream="missing"))
    event = event_of(kite_ticks(market, model_prices=True)[:10], "shardId-000000000000", 10**20)
    # When a batch arrives, Then the invocation fails (nothing can be computed)
    with pytest.raises(SnapshotUnavailableError):
        handler(event, Context())
    # When the snapshot appears but the stream is missing, Then it fails too
    publish_snapshot(
        S3SnapshotStore(s3, INSTRUMENTS_BUCKET, "instruments/"),
        market.instruments_csv().encode(),
        market.clock.now().date(),
    )
    with pytest.raises(ClientError):
        handler(event, Context())
    emf = [json.loads(x) for x in capsys.readouterr().out.splitlines() if '"_aws"' in x]
    assert [m.get("GreeksBatchFailed") for m in emf] == [[1.0], [1.0]]


def test_throttled_writes_are_retried_entry_by_entry_and_land_exactly_once(
    aws: AwsEndpoint, s3: Any, market: Market
) -> None:
    # Given the greeks stream behind a proxy that throttles writes the ways Kinesis does
    proxy = KinesisFaultProxy(aws.url)
    proxy.start()
    try:
        publish_market(aws, s3, market)
        deps = dependencies(aws, environment(put_attempts=12), kinesis_url=proxy.url)
        handler = make_handler(lambda: deps)
        ticks = kite_ticks(market, model_prices=True)
        # When a batch is processed while the stream refuses its next two writes: a whole
        # call refused, then one answered in part (counted, not timed: a loaded machine
        # can be slower than any window)
        proxy.refuse_next(2)
        assert handler(event_of(ticks, "shardId-000000000000", 10**20), Context()) == {
            "batchItemFailures": []
        }
        # Then both kinds of refusal happened, and every row is on the stream exactly once
        assert proxy.calls_refused >= 1
        assert proxy.entries_refused >= 1
        records = stream_records(boto3.client("kinesis", **aws.client_kwargs()))
        sources = [json.dumps(r["source"], sort_keys=True) for _, r in records]
        assert len(sources) == len(set(sources)) == len(model_vols(market))
    finally:
        proxy.close()
