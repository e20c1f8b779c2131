"""Stored market data in PostgreSQL: latest ticks and candles from the minute bars.

Read-only. Latest ticks are one backward index probe per instrument on
``market.ticks``' primary key (instrument, ts), bounded below so that only
recent day partitions are searched. Candles fold ``market.bars_1m``: a
bar's traded volume is its closing cumulative day volume minus the previous
bar's of the same IST day (or its own opening one for the day's first bar),
as ``market.bars_1m_view`` defines it; buckets are aligned to the NSE session
(09:15 IST) for intraday intervals and to the IST day for ``1d``, as Kite's
own candles are.
"""

from __future__ import annotations

from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import asyncpg

from lambdas.common.runtime import Lazy, LoopRunner

T = TypeVar("T")

LATEST_TICKS = """
select t.* from unnest($1::bigint[]) as q(token)
cross join lateral (
    select instrument_token, ts, mode, last_price, last_traded_quantity, average_traded_price,
           volume_traded, total_buy_quantity, total_sell_quantity, open, high, low, close, change,
           last_trade_time, oi, oi_day_high, oi_day_low, depth
    from market.ticks k
    where k.instrument_token = q.token and k.ts >= $2
    order by k.ts desc limit 1
) t
"""
LATEST_PRICES = """
select t.* from unnest($1::bigint[]) as q(token)
cross join lateral (
    select instrument_token, ts, last_price, oi, volume_traded from market.ticks k
    where k.instrument_token = q.token and k.ts >= $2
    order by k.ts desc limit 1
) t
"""
# Per-minute volume needs the previous bar of the same IST day: the inner query starts at the
# IST midnight before the range ($2); the outer keeps the range ($3 <= minute < $4).
_BARS = """
with bars as (
    select minute, open, high, low, close, close_ts, oi,
           cum_volume_close - coalesce(
               lag(cum_volume_close) over (
                   partition by ((minute at time zone 'UTC') + interval '5:30')::date
                   order by minute
               ),
               cum_volume_open
           ) as volume
    from market.bars_1m
    where instrument_token = $1 and minute >= $2 and minute < $4
)
"""
MINUTE_CANDLES = (
    _BARS
    + """
select minute as bucket, open, high, low, close, volume, oi, close_ts
from bars where minute >= $3 order by minute
"""
)
BUCKET_CANDLES = (
    _BARS
    + """
select date_bin($5::interval, minute, $6::timestamptz) as bucket,
       (array_agg(open order by minute))[1] as open,
       max(high) as high,
       min(low) as low,
       (array_agg(close order by minute desc))[1] as close,
       sum(volume)::bigint as volume,
       (array_agg(oi order by minute desc))[1] as oi,
       max(close_ts) as close_ts
from bars where minute >= $3
group by 1 order by 1
"""
)
FIRST_BAR = """
select min(minute) from market.bars_1m where instrument_token = $1 and minute >= $2 and minute < $3
"""
IST_OFFSET = timedelta(hours=5, minutes=30)


@dataclass(frozen=True)
class StoredCandle:
    """One candle folded from minute bars."""

    bucket: datetime
    open: float
    high: float
    low: float
    close: float
    volume: int | None
    oi: int | None
    close_ts: datetime
    """The instant of the candle's last tick (its close price's)."""


def ist_midnight_before(instant: datetime) -> datetime:
    """The IST midnight at or before ``instant`` (as an aware UTC instant)."""
    local = instant + IST_OFFSET
    return local.replace(hour=0, minute=0, second=0, microsecond=0) - IST_OFFSET


class PostgresMarket:
    """Reads for the market-data routes (synchronous on the environment's one loop)."""

    def __init__(self, pool: Lazy[asyncpg.Pool], runner: LoopRunner) -> None:
        self._pool = pool
        self._runner = runner

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(coro)

    async def _fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        pool = await self._pool.get()
        async with pool.acquire() as conn:
            return list(await conn.fetch(query, *args))

    def latest_ticks(self, tokens: Sequence[int], since: datetime) -> dict[int, asyncpg.Record]:
        """The latest tick (every column a quote shows) of each token at or after ``since``."""
        rows = self._run(self._fetch(LATEST_TICKS, list(tokens), since))
        return {int(r["instrument_token"]): r for r in rows}

    def latest_prices(self, tokens: Sequence[int], since: datetime) -> dict[int, asyncpg.Record]:
        """Each token's latest price, OI, volume and instant (what a chain needs)."""
        rows = self._run(self._fetch(LATEST_PRICES, list(tokens), since))
        return {int(r["instrument_token"]): r for r in rows}

    def candles(
        self,
        tokens: Sequence[int],
        start: datetime,
        end: datetime,
        bucket: timedelta | None,
        origin: datetime,
    ) -> list[list[StoredCandle]]:
        """Per token, the candles of ``[start, end)`` (``bucket`` None: the minute bars)."""

        async def one(token: int) -> list[StoredCandle]:
            context = ist_midnight_before(start)
            if bucket is None:
                rows = await self._fetch(MINUTE_CANDLES, token, context, start, end)
            else:
                rows = await self._fetch(BUCKET_CANDLES, token, context, start, end, bucket, origin)
            return [
                StoredCandle(
                    r["bucket"],
                    r["open"],
                    r["high"],
                    r["low"],
                    r["close"],
                    r["volume"],
                    r["oi"],
                    r["close_ts"],
                )
                for r in rows
            ]

        async def every() -> list[list[StoredCandle]]:
            return [await one(token) for token in tokens]

        return self._run(every())

    def first_bar(self, token: int, start: datetime, end: datetime) -> datetime | None:
        """The first stored minute of ``token`` in ``[start, end)``."""
        rows = self._run(self._fetch(FIRST_BAR, token, start, end))
        value = rows[0][0] if rows else None
        return value if isinstance(value, datetime) else None
