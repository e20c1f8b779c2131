"""Kite's REST rate limits (sans-I/O).

Kite throttles per API key and per endpoint category: quote 1/s, historical
3/s, order placement/modification/cancellation 10/s (and per-minute and
per-day caps), everything else 10/s. Over a limit, the call fails with HTTP
429. Each limit here is a sliding window: at most ``count`` calls in any
``window`` seconds, so a burst is refused however it straddles a second.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import StrEnum

from kite_sim.clock import MonotonicClock


class Category(StrEnum):
    """The endpoint groups Kite limits separately."""

    QUOTE = "quote"
    HISTORICAL = "historical"
    ORDERS = "orders"
    OTHER = "other"


@dataclass(frozen=True)
class Limit:
    """At most ``count`` calls in any ``window`` seconds."""

    count: int
    window: float


DEFAULT_LIMITS: dict[Category, tuple[Limit, ...]] = {
    Category.QUOTE: (Limit(1, 1.0),),
    Category.HISTORICAL: (Limit(3, 1.0),),
    Category.ORDERS: (Limit(10, 1.0), Limit(200, 60.0), Limit(3000, 86400.0)),
    Category.OTHER: (Limit(10, 1.0),),
}


def scaled_limits(factor: float) -> dict[Category, tuple[Limit, ...]]:
    """Kite's limits with every count multiplied by ``factor`` (>= 1 per window)."""
    return {
        cat: tuple(Limit(max(1, int(lim.count * factor)), lim.window) for lim in limits)
        for cat, limits in DEFAULT_LIMITS.items()
    }


def category_for(method: str, path: str) -> Category:
    """The limit category of a REST call."""
    if path.startswith("/quote"):
        return Category.QUOTE
    if path.startswith("/instruments/historical"):
        return Category.HISTORICAL
    if path.startswith("/orders/") and method in ("POST", "PUT", "DELETE"):
        return Category.ORDERS
    return Category.OTHER


class RateLimiter:
    """Sliding-window limits per (key, category)."""

    def __init__(
        self,
        clock: MonotonicClock,
        limits: dict[Category, tuple[Limit, ...]] | None = None,
        *,
        enabled: bool = True,
    ) -> None:
        self._clock = clock
        self._limits = dict(DEFAULT_LIMITS if limits is None else limits)
        self._calls: dict[tuple[str, Category, float], deque[float]] = {}
        self.enabled = enabled
        self.refused = 0

    def limits(self, category: Category) -> tuple[Limit, ...]:
        """The limits in force for ``category``."""
        return self._limits.get(category, ())

    def in_window(self, key: str, category: Category) -> int:
        """How many calls of ``key`` in ``category`` the shortest window counts now."""
        limits = self._limits.get(category, ())
        if not limits:
            return 0
        window = min(limit.window for limit in limits)
        now = self._clock.monotonic()
        calls = self._calls.get((key, category, window), deque())
        return sum(1 for at in calls if at > now - window)

    def allow(self, key: str, category: Category) -> bool:
        """Record a call and say whether it is within every limit.

        A refused call is not recorded, as Kite does not count rejected calls
        against the window.
        """
        if not self.enabled:
            return True
        now = self._clock.monotonic()
        windows = []
        for limit in self._limits.get(category, ()):
            calls = self._calls.setdefault((key, category, limit.window), deque())
            while calls and calls[0] <= now - limit.window:
                calls.popleft()
            if len(calls) >= limit.count:
                self.refused += 1
                return False
            windows.append(calls)
        for calls in windows:
            calls.append(now)
        return True
