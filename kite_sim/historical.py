"""Historical candles (sans-I/O): ``/instruments/historical/:token/:interval``.

Candles are generated, not recorded: daily closes follow a seeded random walk
per instrument that ends at the instrument's current previous close, and each
trading day's minutes are a seeded Brownian bridge from the previous close to
that day's close, so the same request always returns the same candles and
intervals aggregate consistently (five 1-minute candles make one 5-minute
candle). Days are NSE trading days; times are in the 09:15-15:30 IST session.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

import numpy as np

from kite_sim.errors import InputError
from ticker_core.calendar import NseCalendar
from ticker_core.tz import IST

INTERVALS = {
    "minute": 1,
    "3minute": 3,
    "5minute": 5,
    "10minute": 10,
    "15minute": 15,
    "30minute": 30,
    "60minute": 60,
    "day": 375,
}
MAX_DAYS = {
    "minute": 60,
    "3minute": 100,
    "5minute": 100,
    "10minute": 100,
    "15minute": 200,
    "30minute": 200,
    "60minute": 400,
    "day": 2000,
}
SESSION_MINUTES = 375
OPEN = time(9, 15)
EPOCH = date(2015, 1, 1)


def parse_when(text: str) -> datetime:
    """``YYYY-MM-DD`` or ``YYYY-MM-DD HH:MM:SS`` (IST) as an aware datetime."""
    text = text.strip()
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=IST)
        except ValueError:
            continue
    raise InputError(f"Invalid date `{text}`.")


def candle_time(when: datetime) -> str:
    """Kite's candle timestamp: ``2024-06-03T09:15:00+0530``."""
    return when.astimezone(IST).strftime("%Y-%m-%dT%H:%M:%S%z")


class CandleGenerator:
    """Deterministic candles for a universe, anchored to each instrument's close."""

    def __init__(self, seed: int, calendar: NseCalendar) -> None:
        self.seed = seed
        self.calendar = calendar

    def _daily_closes(
        self, token: int, anchor: float, today: date, vol: float, until: date
    ) -> dict[date, float]:
        days = []
        day = EPOCH
        end = max(today, until)
        while day <= end:
            if self.calendar.is_trading_day(day):
                days.append(day)
            day += timedelta(days=1)
        rng = np.random.default_rng([self.seed, 11, token])
        steps = rng.standard_normal(len(days)) * vol / np.sqrt(252.0)
        walk = np.cumsum(steps)
        # Anchor: the last trading day before ``today`` closes at ``anchor``.
        before = [k for k, d in enumerate(days) if d < today]
        ref = walk[before[-1]] if before else 0.0
        closes = anchor * np.exp(walk - ref)
        return {d: float(c) for d, c in zip(days, closes, strict=True)}

    def candles(
        self,
        token: int,
        interval: str,
        start: datetime,
        end: datetime,
        *,
        anchor: float,
        today: date,
        tick: float,
        vol: float,
        lot: int,
        oi: bool,
    ) -> list[list[object]]:
        """Candles ``[time, open, high, low, close, volume(, oi)]`` in ``[start, end]``."""
        if interval not in INTERVALS:
            raise InputError(f"Invalid interval `{interval}`.")
        if end < start:
            raise InputError("`from` should be before `to`.")
        if (end.date() - start.date()).days > MAX_DAYS[interval]:
            raise InputError(f"interval exceeds max limit: {MAX_DAYS[interval]} days")
        anchor = anchor if anchor > 0 else 100.0
        closes = self._daily_closes(token, anchor, today, vol, end.date())
        ordered = sorted(closes)
        out: list[list[object]] = []
        tick = tick or 0.05
        minutes = INTERVALS[interval]
        for pos, day in enumerate(ordered):
            if day < start.date() or day > end.date() or day >= today + timedelta(days=1):
                continue
            prev = closes[ordered[pos - 1]] if pos else closes[day]
            path, volumes, ois = self._day(token, day, prev, closes[day], vol, lot)
            if interval == "day":
                stamp = datetime.combine(day, time(0, 0), IST)
                if start <= stamp + timedelta(hours=23, minutes=59) and stamp <= end:
                    out.append(self._candle(stamp, path, volumes, ois, tick, oi))
                continue
            for first in range(0, SESSION_MINUTES, minutes):
                stamp = datetime.combine(day, OPEN, IST) + timedelta(minutes=first)
                if stamp < start or stamp > end:
                    continue
                last = min(first + minutes, SESSION_MINUTES)
                out.append(
                    self._candle(
                        stamp,
                        path[first : last + 1],
                        volumes[first:last],
                        ois[first:last],
                        tick,
                        oi,
                    )
                )
        return out

    def _day(
        self, token: int, day: date, prev: float, close: float, vol: float, lot: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, 12, token, day.toordinal()])
        n = SESSION_MINUTES
        sigma = vol / np.sqrt(252.0 * n)
        steps = rng.standard_normal(n) * sigma
        walk = np.concatenate([[0.0], np.cumsum(steps)])
        target = np.log(close / prev)
        bridge = walk - np.linspace(0.0, 1.0, n + 1) * (walk[-1] - target)
        path = prev * np.exp(bridge)
        volumes = rng.integers(1, 200, size=n) * max(lot, 1)
        ois = np.cumsum(rng.integers(-5, 6, size=n)) * max(lot, 1) + 10_000 * max(lot, 1)
        return path, volumes, np.maximum(ois, 0)

    @staticmethod
    def _candle(
        stamp: datetime,
        path: np.ndarray,
        volumes: np.ndarray,
        ois: np.ndarray,
        tick: float,
        oi: bool,
    ) -> list[object]:
        def r(x: float) -> float:
            return round(round(x / tick) * tick, 4)

        row: list[object] = [
            candle_time(stamp),
            r(float(path[0])),
            r(float(path.max())),
            r(float(path.min())),
            r(float(path[-1])),
            int(volumes.sum()),
        ]
        if oi:
            row.append(int(ois[-1]) if len(ois) else 0)
        return row
