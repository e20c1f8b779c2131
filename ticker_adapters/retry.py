"""Retry and reconnect delays as injectable sequences (tests pass zeros; production jitters).

A caller that retries takes a :data:`Delays` factory and calls it once per
operation (or per outage) for a fresh, endless iterator; it bounds the
attempts itself. Two policies:

* :func:`full_jitter`: uniform in ``[0, min(cap, base * 2**n))``. For many
  clients hitting one service (Lambda environments writing one stream), so
  their retries spread out instead of landing in lock step.
* :func:`exponential_backoff`: a random first delay in ``[0, initial)``, then
  ``initial * factor**n`` with +-10% jitter, capped. For reconnects: a fleet
  that lost its connections in one outage does not stampede back, and a
  connection that stayed healthy starts a new sequence, which is how the
  delay resets.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

Delays = Callable[[], Iterator[float]]
"""A factory of delay sequences: one fresh iterator per operation being retried."""


def full_jitter(
    base: float, cap: float, *, rng: Callable[[], float] = random.random
) -> Iterator[float]:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**n)). Endless."""
    attempt = 0
    while True:
        yield rng() * min(cap, base * 2**attempt)
        attempt += 1


def exponential_backoff(
    initial: float = 1.0,
    factor: float = 2.0,
    cap: float = 30.0,
    *,
    uniform: Callable[[float, float], float] = random.uniform,
) -> Iterator[float]:
    """Delays in seconds: ``uniform(0, initial)``, then ``initial * factor**n`` capped at ``cap``.

    Later delays carry +-10% jitter (never above ``cap``), so connections that
    failed together drift apart. Endless.
    """
    _check_exponential(initial, factor, cap)
    yield uniform(0.0, initial)
    delay = initial
    while True:
        yield min(cap, delay * uniform(0.9, 1.1))
        delay = min(cap, delay * factor)


def _check_exponential(initial: float, factor: float, cap: float) -> None:
    if initial <= 0 or factor < 1 or cap < initial:
        raise ValueError("need initial > 0, factor >= 1 and cap >= initial")


def full_jitter_delays(base: float, cap: float) -> Delays:
    """A :data:`Delays` factory of :func:`full_jitter` sequences."""

    def make() -> Iterator[float]:
        return full_jitter(base, cap)

    return make


def exponential_backoff_delays(initial: float, factor: float, cap: float) -> Delays:
    """A :data:`Delays` factory of :func:`exponential_backoff` sequences (checked now)."""
    _check_exponential(initial, factor, cap)

    def make() -> Iterator[float]:
        return exponential_backoff(initial, factor, cap)

    return make


def no_delays() -> Iterator[float]:
    """Zero delays, for tests."""
    while True:
        yield 0.0
