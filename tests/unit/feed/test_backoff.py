"""Reconnect delays: random first, exponential to a cap, fresh per factory call."""

from __future__ import annotations

from itertools import islice

import pytest

from feed_container.backoff import backoff_factory, exponential_backoff


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


def test_a_factory_starts_every_sequence_afresh() -> None:
    make = backoff_factory(1.0, 2.0, 4.0)
    first, second = make(), make()
    list(islice(first, 5))
    assert next(second) <= 1.0


@pytest.mark.parametrize(("initial", "factor", "cap"), [(0, 2, 1), (1, 0.5, 2), (2, 2, 1)])
def test_nonsense_parameters_are_refused(initial: float, factor: float, cap: float) -> None:
    with pytest.raises(ValueError, match="initial"):
        next(exponential_backoff(initial, factor, cap))
