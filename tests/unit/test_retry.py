"""Retry delays: full jitter, and reconnect delays (random first, exponential to a cap)."""

from __future__ import annotations

from itertools import islice

import pytest

from ticker_adapters.retry import (
    Delays,
    exponential_backoff,
    exponential_backoff_delays,
    full_jitter,
    full_jitter_delays,
)


def test_first_delay_is_random_then_exponential_to_the_cap() -> None:
    # Given a deterministic "random" source returning the middle of each range
    def mid(low: float, high: float) -> float:
        return (low + high) / 2

    # When delays are drawn
    delays = list(islice(exponential_backoff(1.0, 2.0, 10.0, uniform=mid), 7))
    # Then the first is within [0, initial], then 1, 2, 4, 8, capped at 10
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_jitter_never_passes_the_cap() -> None:
    delays = list(islice(exponential_backoff(0.1, 3.0, 1.0), 50))
    assert 0 <= delays[0] <= 0.1
    assert all(0.09 <= d <= 1.0 for d in delays[1:])


@pytest.mark.parametrize(
    "make", [exponential_backoff_delays(1.0, 2.0, 4.0), full_jitter_delays(1.0, 4.0)]
)
def test_a_factory_starts_every_sequence_afresh(make: Delays) -> None:
    # Given two sequences from one factory, When the first has grown to its cap
    first, second = make(), make()
    list(islice(first, 5))
    # Then the second still starts below the initial delay
    assert next(second) <= 1.0


def test_full_jitter_is_below_a_growing_capped_bound() -> None:
    # Given a "random" source at the top of its range, When delays are drawn
    delays = list(islice(full_jitter(0.1, 0.5, rng=lambda: 0.999), 5))
    # Then each is just under base * 2**n, capped
    assert delays == pytest.approx([0.0999, 0.1998, 0.3996, 0.4995, 0.4995])


@pytest.mark.parametrize(("initial", "factor", "cap"), [(0, 2, 1), (1, 0.5, 2), (2, 2, 1)])
def test_nonsense_parameters_are_refused(initial: float, factor: float, cap: float) -> None:
    with pytest.raises(ValueError, match="initial"):
        next(exponential_backoff(initial, factor, cap))
    with pytest.raises(ValueError, match="initial"):
        exponential_backoff_delays(initial, factor, cap)
