"""The tests' one polling helper: returns what it saw, or fails naming the last value."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.waiting import ConditionTimeoutError, wait_until, wait_until_async


def counter(start: int = 0) -> Callable[[], int]:
    seen = iter(range(start, 10**6))
    return lambda: next(seen)


def test_the_value_that_met_the_condition_is_returned() -> None:
    # Given a value that grows at every look
    # When waited for until it reaches 3, Then 3 is returned
    assert wait_until(counter(), lambda n: n >= 3, every=0) == 3
    # And by default the condition is the value's truth
    assert wait_until(counter(), every=0) == 1


def test_a_timeout_names_what_was_awaited_and_the_last_value_seen() -> None:
    # Given a value that never meets the condition
    with pytest.raises(ConditionTimeoutError) as failure:
        wait_until(lambda: [1, 2], lambda v: len(v) == 3, within=0.05, what="three items")
    # Then the failure says what and what was last seen, and is a test failure
    assert "three items" in str(failure.value)
    assert "last seen: [1, 2]" in str(failure.value)
    assert failure.value.last == [1, 2]
    assert isinstance(failure.value, AssertionError)


async def test_the_async_form_awaits_what_the_observer_returns() -> None:
    # Given an observer that is a query (it returns an awaitable)
    values = counter(5)

    async def query() -> int:
        return values()

    # When waited for, Then the awaited value is tested and returned
    assert await wait_until_async(query, lambda n: n == 7, every=0) == 7
    # And a plain value works as well
    assert await wait_until_async(counter(), lambda n: n == 2, every=0) == 2


async def test_the_async_form_times_out_with_the_last_value() -> None:
    with pytest.raises(ConditionTimeoutError, match="last seen: False"):
        await wait_until_async(lambda: False, within=0.05, what="never")
