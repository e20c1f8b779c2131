"""Stored market data in PostgreSQL: latest ticks and candles from the minute bars.

Read-only. Latest ticks are one backward index probe per instrument on
``market.ticks``' primary key (instrument, ts), bounded below so that only
recent day partitions are searched. Minute bars come back as one row per
instrument, each column packed (a month of bars is 8,250: decoding them one
value at a time cost more than the query); candles are folded from them by
:mod:`lambdas.api.candles`.
"""

from __future__ import annotations

from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import asyncpg
import numpy as np
import numpy.typing as npt

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
MINUTE_BARS = """
select string_agg(
    float8send(extract(epoch from minute)::float8) || float8send(open) || float8send(high)
    || float8send(low) || float8send(close)
    || float8send(coalesce(cum_volume_open::float8, 'NaN'))
    || float8send(coalesce(cum_volume_close::float8, 'NaN'))
    || float8send(coalesce(oi::float8, 'NaN'))
    || float8send(extract(epoch from close_ts)::float8),
    '' order by minute
) as bars
from market.bars_1m
where instrument_token = $1 and minute >= $2 and minute < $3
"""
"""One instrument's minute bars packed in one value: per bar, in time order, the big-endian
float8s of :data:`BAR_COLUMNS` (NULL as NaN), read straight into numpy with no per-value
decoding."""


FloatArray = npt.NDArray[np.float64]
BAR_COLUMNS = (
    "minute", "open", "high", "low", "close", "cum_volume_open", "cum_volume_close", "oi",
    "close_ts",
)  # fmt: skip


@dataclass(frozen=True, repr=False)
class MinuteSeries:
    """One instrument's minute bars, oldest first, as float columns (NaN: NULL).

    ``minute`` and ``close_ts`` are epoch seconds; ``cum_volume_*`` are Kite's
    cumulative day volume at the bar's first and last tick.
    """

    minute: FloatArray
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    cum_volume_open: FloatArray
    cum_volume_close: FloatArray
    oi: FloatArray
    close_ts: FloatArray

    def __len__(self) -> int:
        return len(self.minute)

    def __repr__(self) -> str:
        # Short on purpose: asyncio.Runner formats the previous run's result (this) when it
        # swaps its SIGINT handler, and 9 x 8,250 floats cost milliseconds to print.
        return f"MinuteSeries({len(self)} bars)"

    @classmethod
    def empty(cls) -> MinuteSeries:
        """No bars."""
        return cls(*(np.empty(0) for _ in BAR_COLUMNS))

    def take(self, keep: npt.NDArray[np.bool_]) -> MinuteSeries:
        """The bars where ``keep``."""
        return MinuteSeries(*(getattr(self, name)[keep] for name in BAR_COLUMNS))


def unpack_bars(packed: bytes | None) -> MinuteSeries:
    """The series :data:`MINUTE_BARS` packed (None: no bars)."""
    if not packed:
        return MinuteSeries.empty()
    table = np.frombuffer(packed, dtype=">f8").astype(np.float64).reshape(-1, len(BAR_COLUMNS))
    return MinuteSeries(*(np.ascontiguousarray(table[:, n]) for n in range(len(BAR_COLUMNS))))


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

    def minute_bars(
        self, tokens: Sequence[int], start: datetime, end: datetime
    ) -> list[MinuteSeries]:
        """Per token, its minute bars of ``[start, end)`` as columns."""

        async def every() -> list[MinuteSeries]:
            out = []
            for token in tokens:
                (row,) = await self._fetch(MINUTE_BARS, token, start, end)
                out.append(unpack_bars(row["bars"]))
            return out

        return self._run(every())
