"""Candles folded from stored minute bars (pure, numpy).

A bar's traded volume is its closing cumulative day volume minus the
previous bar's of the same IST day, or its own opening cumulative volume for
the day's first bar (``market.bars_1m_view``'s definition). A candle of N
minutes is then: the first bar's open, the highest high, the lowest low, the
last bar's close, OI and last-tick instant, and the sum of the bars'
volumes. Buckets are aligned to the NSE open (09:15 IST) for intraday
intervals and to IST midnight for days, as Kite's own candles are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lambdas.api.dal.market import MinuteSeries

FloatArray = npt.NDArray[np.float64]
IST_OFFSET_SECONDS = 5 * 3600 + 30 * 60
DAY_SECONDS = 86_400


@dataclass(frozen=True)
class CandleColumns:
    """Candles as columns, oldest first (epoch seconds; NaN: none)."""

    start: FloatArray
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    volume: FloatArray
    oi: FloatArray
    close_ts: FloatArray
    """The instant of each candle's last tick (its close's)."""

    def __len__(self) -> int:
        return len(self.start)


def ist_days(epoch: FloatArray) -> FloatArray:
    """The IST day number of each instant."""
    result: FloatArray = np.floor((epoch + IST_OFFSET_SECONDS) / DAY_SECONDS)
    return result


def minute_volumes(bars: MinuteSeries) -> FloatArray:
    """Each bar's traded volume (NaN where the cumulative volumes are)."""
    n = len(bars)
    if n == 0:
        return np.empty(0)
    day = ist_days(bars.minute)
    first_of_day = np.ones(n, dtype=bool)
    first_of_day[1:] = day[1:] != day[:-1]
    previous_close = np.concatenate(([np.nan], bars.cum_volume_close[:-1]))
    volumes: FloatArray = bars.cum_volume_close - np.where(
        first_of_day, bars.cum_volume_open, previous_close
    )
    return volumes


def bucket_starts(epoch: FloatArray, bucket_seconds: float, origin: float) -> FloatArray:
    """The start of the candle each instant falls in."""
    result: FloatArray = origin + np.floor((epoch - origin) / bucket_seconds) * bucket_seconds
    return result


def fold(
    bars: MinuteSeries, start: float, bucket_seconds: float | None, origin: float
) -> CandleColumns:
    """Candles of the bars from ``start`` on (earlier bars only give the first volume)."""
    volume = minute_volumes(bars)
    keep = bars.minute >= start
    bars, volume = bars.take(keep), volume[keep]
    if bucket_seconds is None or len(bars) == 0:
        return CandleColumns(
            bars.minute, bars.open, bars.high, bars.low, bars.close, volume, bars.oi,
            bars.close_ts,
        )  # fmt: skip
    buckets = bucket_starts(bars.minute, bucket_seconds, origin)
    firsts = np.flatnonzero(np.concatenate(([True], buckets[1:] != buckets[:-1])))
    lasts = np.concatenate((firsts[1:], [len(bars)])) - 1
    known = ~np.isnan(volume)
    sums = np.add.reduceat(np.where(known, volume, 0.0), firsts)
    counted = np.add.reduceat(known.astype(np.int64), firsts) > 0
    return CandleColumns(
        start=buckets[firsts],
        open=bars.open[firsts],
        high=np.maximum.reduceat(bars.high, firsts),
        low=np.minimum.reduceat(bars.low, firsts),
        close=bars.close[lasts],
        volume=np.where(counted, sums, np.nan),
        oi=bars.oi[lasts],
        close_ts=bars.close_ts[lasts],
    )


def stored_boundary(
    first_minute: float | None, end: float, bucket_seconds: float | None, origin: float
) -> float:
    """Where stored candles take over from Kite's: the first whole candle with stored bars.

    A candle whose first stored minute is not its own first minute may lack
    the ticks from before the feed started: it comes from Kite entirely.
    """
    if first_minute is None:
        return end
    if bucket_seconds is None:
        return first_minute
    start = float(bucket_starts(np.array([first_minute]), bucket_seconds, origin)[0])
    return first_minute if start == first_minute else min(end, start + bucket_seconds)


def aligned(starts: FloatArray, other: CandleColumns, values: FloatArray) -> FloatArray:
    """``values`` of ``other``'s candles at each of ``starts`` (NaN where it has none)."""
    if len(other) == 0:
        return np.full(len(starts), np.nan)
    index = np.minimum(np.searchsorted(other.start, starts), len(other) - 1)
    result: FloatArray = np.where(other.start[index] == starts, values[index], np.nan)
    return result


def ist_timestamps(epoch: FloatArray) -> list[str]:
    """Kite's candle timestamps (``2026-11-27T09:15:00+05:30``), vectorised."""
    local = (epoch + IST_OFFSET_SECONDS).astype("datetime64[s]")
    return [f"{text}+05:30" for text in np.datetime_as_string(local, unit="s").tolist()]


def whole_numbers(values: FloatArray) -> list[int | None]:
    """Volumes and OI as JSON integers (None where NaN)."""
    return [None if v != v else int(v) for v in values.tolist()]  # v != v: NaN
