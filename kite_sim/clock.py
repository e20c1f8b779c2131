"""Clocks: a monotonic source for limits and scheduling, and the market clock.

Every pure module takes a clock instead of reading the time itself, so tests
drive time by hand (:class:`ManualClock`) and the server runs on the wall
clock. The market clock maps that monotonic time onto simulated exchange time:
it starts at a chosen instant (say 09:15 IST on a trading day), runs at a
chosen speed, and can be set or advanced through the admin API.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Protocol

from ticker_core.tz import IST


class MonotonicClock(Protocol):
    """A source of monotonic seconds."""

    def monotonic(self) -> float:
        """Seconds since an arbitrary fixed point; never goes backwards."""
        ...


class WallClock:
    """The process's real monotonic clock."""

    def monotonic(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()


class ManualClock:
    """A clock that only moves when told to (tests)."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start

    def monotonic(self) -> float:
        """The current manual time."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move forward by ``seconds`` (must not be negative)."""
        if seconds < 0:
            raise ValueError("a monotonic clock cannot go backwards")
        self._now += seconds


class MarketClock:
    """Simulated exchange time (timezone-aware, IST) driven by a monotonic clock.

    ``now()`` = ``start + (monotonic - anchor) * speed``. Setting the time or
    the speed re-anchors, so market time never jumps when only the speed
    changes.
    """

    def __init__(self, base: MonotonicClock, start: datetime, speed: float = 1.0) -> None:
        if start.tzinfo is None:
            raise ValueError("market clock start must be timezone-aware")
        if speed < 0:
            raise ValueError("speed must be >= 0")
        self._base = base
        self._anchor_mono = base.monotonic()
        self._anchor_time = start.astimezone(IST)
        self._speed = speed

    @property
    def base(self) -> MonotonicClock:
        """The monotonic clock underneath."""
        return self._base

    @property
    def speed(self) -> float:
        """Market seconds per real second."""
        return self._speed

    def monotonic(self) -> float:
        """The underlying monotonic seconds (so a MarketClock is a MonotonicClock)."""
        return self._base.monotonic()

    def now(self) -> datetime:
        """The current market time, in IST."""
        elapsed = (self._base.monotonic() - self._anchor_mono) * self._speed
        return self._anchor_time + timedelta(seconds=elapsed)

    def epoch(self) -> float:
        """The current market time as Unix seconds."""
        return self.now().timestamp()

    def set(self, when: datetime) -> None:
        """Jump market time to ``when`` (aware)."""
        if when.tzinfo is None:
            raise ValueError("market time must be timezone-aware")
        self._anchor_mono = self._base.monotonic()
        self._anchor_time = when.astimezone(IST)

    def advance(self, seconds: float) -> None:
        """Jump market time forward by ``seconds``."""
        self.set(self.now() + timedelta(seconds=seconds))

    def set_speed(self, speed: float) -> None:
        """Change the speed from now on, keeping the current market time."""
        if speed < 0:
            raise ValueError("speed must be >= 0")
        self.set(self.now())
        self._speed = speed


def kite_timestamp(when: datetime) -> str:
    """``YYYY-MM-DD HH:MM:SS`` in IST, the format of Kite's REST timestamps."""
    return when.astimezone(IST).strftime("%Y-%m-%d %H:%M:%S")
