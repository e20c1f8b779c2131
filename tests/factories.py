"""Builders for test data in the service's public formats (generated, never committed)."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from ticker_core.records import Aggregator, KinesisUserRecord, lambda_event_record

IST_OFFSET = timedelta(hours=5, minutes=30)


def tick_record(
    token: int,
    price: float,
    ts: datetime,
    *,
    underlying: str = "NIFTY",
    mode: str = "full",
    volume: int = 1000,
    oi: int = 500,
) -> dict[str, Any]:
    """A valid ``tick/1`` record (full mode carries the exchange timestamp)."""
    record: dict[str, Any] = {
        "schema": "tick/1",
        "instrument_token": token,
        "underlying": underlying,
        "mode": mode,
        "tradable": True,
        "last_price": price,
        "received_at": (ts + timedelta(milliseconds=3)).isoformat(),
    }
    if mode in ("quote", "full"):
        record.update(
            last_traded_quantity=25,
            average_traded_price=price,
            volume_traded=volume,
            total_buy_quantity=100,
            total_sell_quantity=120,
            ohlc={"open": price, "high": price, "low": price, "close": price},
            change=0.0,
        )
    if mode == "full":
        level = {"price": price, "quantity": 50, "orders": 2}
        record.update(
            last_trade_time=ts.isoformat(),
            oi=oi,
            oi_day_high=oi,
            oi_day_low=oi,
            exchange_timestamp=ts.isoformat(),
            depth={"buy": [level] * 5, "sell": [level] * 5},
        )
    return record


def tick_stream(
    count: int, *, seed: int = 7, start: datetime | None = None, tokens: int = 20
) -> Iterator[KinesisUserRecord]:
    """``count`` ticks on one shard as de-aggregated user records, in stream order."""
    rng = random.Random(seed)
    start = start or datetime(2026, 11, 27, 4, 0, tzinfo=UTC)  # 09:30 IST
    prices = {10_000 + t: 100.0 + t for t in range(tokens)}
    volumes = dict.fromkeys(prices, 0)
    for n in range(count):
        token = rng.choice(list(prices))
        prices[token] = round(prices[token] * (1 + rng.gauss(0, 0.001)), 2)
        volumes[token] += rng.randint(1, 100)
        ts = start + timedelta(seconds=n // 10)  # 1 s resolution, ties like the exchange's
        record = tick_record(token, prices[token], ts, volume=volumes[token], oi=n)
        yield user_record(json.dumps(record).encode(), str(49_000_000_000_000_000 + n))


def user_record(
    data: bytes,
    sequence_number: str,
    sub_sequence_number: int = 0,
    *,
    shard_id: str = "shardId-000000000000",
    partition_key: str = "NIFTY",
) -> KinesisUserRecord:
    """A user record as a Lambda would see it after de-aggregation."""
    return KinesisUserRecord(
        shard_id=shard_id,
        sequence_number=sequence_number,
        sub_sequence_number=sub_sequence_number,
        partition_key=partition_key,
        data=data,
        approximate_arrival_timestamp=1_795_000_000.0,
        aggregated=sub_sequence_number > 0,
    )


def kinesis_event(
    records: list[tuple[str, list[bytes]]],
    *,
    shard_id: str = "shardId-000000000000",
    first_sequence: int = 49_600_000_000_000_000_000,
    stream_arn: str = "arn:aws:kinesis:ap-south-1:123456789012:stream/ticks",
) -> dict[str, Any]:
    """A Lambda Kinesis event: one KPL-aggregated Kinesis record per (partition key, data list)."""
    entries = []
    for offset, (partition_key, datas) in enumerate(records):
        aggregator = Aggregator()
        for data in datas:
            if not aggregator.try_add(partition_key, data):
                raise ValueError("test aggregate too large")
        sequence = str(first_sequence + offset)
        entries.append(
            lambda_event_record(
                aggregator.build(),
                partition_key=partition_key,
                sequence_number=sequence,
                shard_id=shard_id,
                stream_arn=stream_arn,
                arrival=1_795_000_000.0 + offset,
            )
        )
    return {"Records": entries}
