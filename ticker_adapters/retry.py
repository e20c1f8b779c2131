"""Retry delays as injectable generators (tests pass zeros; production jitters)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

Delays = Callable[[], Iterator[float]]
"""A factory of delay sequences: one fresh iterator per operation being retried."""


def full_jitter(
    base: float, cap: float, *, rng: Callable[[], float] = random.random
) -> Iterator[float]:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**n)).

    Spreads the retries of many clients (Lambda environments on one stream)
    instead of having them retry in lock step. Endless: the caller bounds
    the attempts.
    """
    attempt = 0
    while True:
        yield rng() * min(cap, base * 2**attempt)
        attempt += 1


def no_delays() -> Iterator[float]:
    """Zero delays, for tests."""
    while True:
        yield 0.0
