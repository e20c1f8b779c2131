"""Order-call accounting per API key (sans-I/O): what a test checks Kite's 10/s against.

Kite allows an API key 10 order calls (place, modify, cancel) per second.
The rate limiter refuses calls over the limit; this meter records every
order call that reached the simulator, refused or not, so a test can assert
that a client never *sent* more than Kite allows: the peak number of calls
in any window of ``window`` seconds, per key, over the whole run.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from kite_sim.clock import MonotonicClock


@dataclass
class _KeyRate:
    received: int = 0
    accepted: int = 0
    peak_received: int = 0
    peak_accepted: int = 0
    recent_received: deque[float] = field(default_factory=deque)
    recent_accepted: deque[float] = field(default_factory=deque)
    timestamps: deque[float] = field(default_factory=deque)


def _slide(recent: deque[float], now: float, window: float) -> int:
    """Add ``now`` and drop what left the window ``(now - window, now]``; the count in it."""
    while recent and recent[0] <= now - window:
        recent.popleft()
    recent.append(now)
    return len(recent)


class OrderRateMeter:
    """Order calls per API key: totals, the peak in any window, the latest timestamps."""

    def __init__(self, clock: MonotonicClock, *, window: float = 1.0, keep: int = 1000) -> None:
        self._clock = clock
        self.window = window
        self._keep = keep
        self._keys: dict[str, _KeyRate] = {}

    def record(self, api_key: str, *, accepted: bool) -> None:
        """One order call of ``api_key`` reached the simulator (``accepted``: within limits)."""
        now = self._clock.monotonic()
        rate = self._keys.setdefault(api_key, _KeyRate())
        rate.received += 1
        rate.peak_received = max(rate.peak_received, _slide(rate.recent_received, now, self.window))
        if accepted:
            rate.accepted += 1
            rate.peak_accepted = max(
                rate.peak_accepted, _slide(rate.recent_accepted, now, self.window)
            )
        rate.timestamps.append(now)
        if len(rate.timestamps) > self._keep:
            rate.timestamps.popleft()

    def peak(self, api_key: str) -> int:
        """The most order calls ``api_key`` sent in any window (0 if none)."""
        rate = self._keys.get(api_key)
        return rate.peak_received if rate is not None else 0

    def describe(self) -> dict[str, dict[str, Any]]:
        """Per API key, as JSON (admin counters); timestamps are monotonic seconds."""
        return {
            key: {
                "received": rate.received,
                "accepted": rate.accepted,
                "refused": rate.received - rate.accepted,
                "window_seconds": self.window,
                "max_received_in_window": rate.peak_received,
                "max_accepted_in_window": rate.peak_accepted,
                "timestamps": list(rate.timestamps),
            }
            for key, rate in self._keys.items()
        }
