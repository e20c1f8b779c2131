"""Partial minute bars folded on the client, against a plain-Python reading of the rules."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from lambdas.persist.bars import MinuteBars, fold_minute_bars
from lambdas.persist.pgcopy import numbers, timestamp_us

START = datetime(2026, 11, 27, 3, 45, tzinfo=UTC)


def fold(ticks: list[tuple[int, datetime, float, int | None, int | None]]) -> MinuteBars:
    """Fold ticks given as rows, converted to columns as the COPY encoder converts them."""
    tokens, instants, prices, volumes, open_interest = (list(c) for c in zip(*ticks, strict=True))
    return fold_minute_bars(
        np.array(tokens, dtype=np.int64),
        timestamp_us(instants)[0],
        np.array(prices, dtype=np.float64),
        numbers(volumes, np.int64),
        numbers(open_interest, np.int64),
    )


def reference(ticks: list[tuple[int, datetime, float, int | None, int | None]]) -> dict[Any, Any]:
    """Open/close at the earliest/latest (instant, stream position); extremes; counts."""
    groups: dict[tuple[int, datetime], list[tuple[datetime, int, float, Any, Any]]] = {}
    for position, (token, ts, price, volume, oi) in enumerate(ticks):
        minute = ts.replace(second=0, microsecond=0)
        groups.setdefault((token, minute), []).append((ts, position, price, volume, oi))
    bars = {}
    for key, members in groups.items():
        members.sort(key=lambda m: (m[0], m[1]))
        first, last = members[0], members[-1]
        bars[key] = (
            first[2], max(m[2] for m in members), min(m[2] for m in members), last[2],
            first[0], last[0], first[3], last[3], last[4], len(members),
        )  # fmt: skip
    return bars


def test_bars_follow_instants_then_stream_order_with_nulls_kept() -> None:
    # Given ticks out of time order, tied to the second, some without volume or OI
    rng = random.Random(21)
    ticks = []
    for _ in range(3_000):
        ts = START + timedelta(seconds=rng.randrange(0, 300), microseconds=rng.choice([0, 500]))
        volume = None if rng.random() < 0.2 else rng.randrange(10**6)
        oi = None if rng.random() < 0.3 else rng.randrange(10**5)
        ticks.append((rng.randrange(5), ts, round(rng.uniform(90, 110), 2), volume, oi))
    # When folded column-wise
    bars = fold(ticks)
    # Then each (instrument, minute) bar is the reference's
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    at = lambda us: epoch + timedelta(microseconds=us)  # noqa: E731
    folded = {
        (token, at(minute)): (o, h, lo, c, at(ot), at(ct), vo, vc, oi, n)
        for token, minute, o, h, lo, c, ot, ct, vo, vc, oi, n in zip(
            bars.instrument_token.tolist(), bars.minute_us.tolist(), bars.open.tolist(),
            bars.high.tolist(), bars.low.tolist(), bars.close.tolist(),
            bars.open_ts_us.tolist(), bars.close_ts_us.tolist(), bars.cum_volume_open,
            bars.cum_volume_close, bars.oi, bars.tick_count.tolist(), strict=True,
        )
    }  # fmt: skip
    assert folded == reference(ticks)
    assert len(bars) == len(folded)


def test_no_ticks_fold_to_no_bars() -> None:
    empty = np.empty(0, np.int64)
    assert (
        len(
            fold_minute_bars(
                empty,
                empty,
                empty.astype(float),
                (empty, empty.astype(bool)),
                (empty, empty.astype(bool)),
            )
        )
        == 0
    )
