"""Kite's REST rate limits (sans-I/O).

Kite throttles per API key and per endpoint category: quote 1/s, historical
3/s, order placement/modification/cancellation 10/s (and per-minute and
per-day caps), everything else 10/s. Over a limit, the call fails with HTTP
429. Each limit here is a sliding window: at most ``count`` calls in any
``window`` seconds, so a burst is refused however it straddles a second.
"""

from __future__ import annotations

from collections import deque

from kite_sim.clock import MonotonicClock
from ticker_core.kite import REST_RATE_LIMITS, RateCategory, RateLimit


def scaled_limits(factor: float) -> dict[RateCategory, tuple[RateLimit, ...]]:
    """Kite's limits with every count multiplied by ``factor`` (>= 1 per window)."""
    return {
        cat: tuple(RateLimit(max(1, int(lim.count * factor)), lim.window) for lim in limits)
        for cat, limits in REST_RATE_LIMITS.items()
    }


def category_for(method: str, path: str) -> RateCategory:
    """The limit category of a REST call."""
    if path.startswith("/quote"):
        return RateCategory.QUOTE
    if path.startswith("/instruments/historical"):
        return RateCategory.HISTORICAL
    if path.startswith("/orders/") and method in ("POST", "PUT", "DELETE"):
        return RateCategory.ORDERS
    return RateCategory.OTHER


class RateLimiter:
    """Sliding-window limits per (key, category)."""

    def __init__(
        self,
        clock: MonotonicClock,
        limits: dict[RateCategory, tuple[RateLimit, ...]] | None = None,
        *,
        enabled: bool = True,
    ) -> None:
        self._clock = clock
        self._limits = dict(REST_RATE_LIMITS if limits is None else limits)
        self._calls: dict[tuple[str, RateCategory, float], deque[float]] = {}
        self.enabled = enabled
        self.refused = 0

    def limits(self, category: RateCategory) -> tuple[RateLimit, ...]:
        """The limits in force for ``category``."""
        return self._limits.get(category, ())

    def recent(self, key: str, category: RateCategory) -> int:
        """Calls of ``key`` in ``category`` still inside the category's shortest window."""
        limits = self._limits.get(category, ())
        if not limits:
            return 0
        window = min(limit.window for limit in limits)
        now = self._clock.monotonic()
        calls = self._calls.get((key, category, window), deque())
        return sum(1 for at in calls if at > now - window)

    def allow(self, key: str, category: RateCategory) -> bool:
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
