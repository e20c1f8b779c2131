"""One-minute bars folded from a batch's new ticks (pure, numpy).

A batch's bars are partial: the database merges them into what earlier
batches left (see ``UPSERT_BARS`` in the dal). Open and close are the prices
at the earliest and latest tick of the minute, ordered by (ts, stream order),
and travel with those instants, so merging two partial bars of one minute is
exact in either order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MINUTE_US = 60_000_000


@dataclass(frozen=True)
class MinuteBars:
    """Partial bars, one per (instrument, minute), as columns (µs since the Unix epoch)."""

    instrument_token: np.ndarray
    minute_us: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    open_ts_us: np.ndarray
    close_ts_us: np.ndarray
    cum_volume_open: list[int | None]
    cum_volume_close: list[int | None]
    oi: list[int | None]
    tick_count: np.ndarray

    def __len__(self) -> int:
        return len(self.instrument_token)


def _nullable(values: np.ndarray, nulls: np.ndarray) -> list[int | None]:
    return [
        None if null else value for value, null in zip(values.tolist(), nulls.tolist(), strict=True)
    ]


def fold_minute_bars(
    token: np.ndarray,
    ts: np.ndarray,
    price: np.ndarray,
    volumes: tuple[np.ndarray, np.ndarray],
    open_interest: tuple[np.ndarray, np.ndarray],
) -> MinuteBars:
    """Bars of ticks given as numpy columns (instants as Unix µs), in stream order.

    ``volumes`` and ``open_interest`` are (values, NULL mask) pairs.
    """
    n = len(token)
    (volume, volume_null), (oi, oi_null) = volumes, open_interest
    minute = ts // MINUTE_US * MINUTE_US
    # The last key sorts first: instrument, minute, instant, then stream order for ties.
    order = np.lexsort((np.arange(n), ts, minute, token))
    token, minute, ts, price = token[order], minute[order], ts[order], price[order]
    volume, volume_null, oi, oi_null = (a[order] for a in (volume, volume_null, oi, oi_null))
    boundary = np.ones(n, bool)
    boundary[1:] = (token[1:] != token[:-1]) | (minute[1:] != minute[:-1])
    first = np.flatnonzero(boundary)
    last = np.append(first[1:], n)[: len(first)] - 1
    return MinuteBars(
        instrument_token=token[first],
        minute_us=minute[first],
        open=price[first],
        high=np.maximum.reduceat(price, first) if n else price,
        low=np.minimum.reduceat(price, first) if n else price,  # reduceat refuses no indices
        close=price[last],
        open_ts_us=ts[first],
        close_ts_us=ts[last],
        cum_volume_open=_nullable(volume[first], volume_null[first]),
        cum_volume_close=_nullable(volume[last], volume_null[last]),
        oi=_nullable(oi[last], oi_null[last]),
        tick_count=last - first + 1,
    )
