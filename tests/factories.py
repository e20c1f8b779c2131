"""Builders for test data in the service's public formats (generated, never committed)."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from lambdas.persist.logic import SourceId

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
) -> Iterator[tuple[bytes, SourceId]]:
    """``count`` encoded ticks on one shard, in stream order, spanning a few minutes."""
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
        yield (
            json.dumps(record).encode(),
            SourceId("shardId-000000000000", str(49_000_000_000_000_000 + n), 0),
        )
