"""Reconnect and retry delays: injectable generators, so tests see every delay.

:func:`exponential_backoff` is the production policy: a random first delay
(so a fleet reconnecting after one outage does not stampede Kite), then
exponential growth to a cap. Callers that stayed healthy for a while start a
new generator, which is how the delay resets.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

#: Makes a fresh delay sequence; connections call it again to reset.
BackoffFactory = Callable[[], Iterator[float]]


def exponential_backoff(
    initial: float = 1.0,
    factor: float = 2.0,
    cap: float = 30.0,
    *,
    uniform: Callable[[float, float], float] = random.uniform,
) -> Iterator[float]:
    """Delays in seconds: ``uniform(0, initial)``, then ``initial * factor**n`` capped at ``cap``.

    Later delays carry +-10% jitter (never above ``cap``), so connections that
    failed together drift apart. Infinite.
    """
    if initial <= 0 or factor < 1 or cap < initial:
        raise ValueError("need initial > 0, factor >= 1 and cap >= initial")
    yield uniform(0.0, initial)
    delay = initial
    while True:
        yield min(cap, delay * uniform(0.9, 1.1))
        delay = min(cap, delay * factor)


def backoff_factory(initial: float, factor: float, cap: float) -> BackoffFactory:
    """A factory of :func:`exponential_backoff` sequences with these parameters."""

    def make() -> Iterator[float]:
        return exponential_backoff(initial, factor, cap)

    return make
