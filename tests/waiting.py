"""Waiting in tests: look at a condition until it holds, or fail saying what was last seen.

Tests never sleep to synchronise with the code under test; they wait for the
condition they need (or for an event the code sets). This is the one polling
loop for that, in a synchronous and an asynchronous form::

    wait_until(lambda: probe.connects, lambda n: n >= 2, what="a reconnect")
    view = wait_until(mapping.view, lambda v: v.caught_up_since(t), within=60)
    await wait_until_async(lambda: feed.connected(), lambda n: n == 6, what="six connections")

``observe`` is called until ``until(value)`` is true (by default: until the
value itself is truthy), and that value is returned. On timeout the test fails
with :class:`ConditionTimeoutError`, naming ``what`` and the last value seen.
In the asynchronous form ``observe`` may also return an awaitable (a query).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")

DEFAULT_WITHIN_S = 20.0  # generous: only a failing test waits this long
DEFAULT_EVERY_S = 0.02


class ConditionTimeoutError(AssertionError):
    """A condition a test waited for did not hold in time."""

    def __init__(self, what: str, within: float, last: object) -> None:
        super().__init__(f"timed out after {within:g}s waiting for {what}; last seen: {last!r}")
        self.last = last


def _truthy(value: object) -> bool:
    return bool(value)


class _Deadline:
    """One wait's condition and deadline: says whether a value ends it, or fails the test."""

    def __init__(
        self,
        observe: Callable[..., Any],
        until: Callable[[Any], object],
        within: float,
        what: str | None,
    ) -> None:
        self.until = until
        self.within = within
        self.what = what or str(getattr(observe, "__qualname__", None) or repr(observe))
        self.deadline = time.monotonic() + within

    def met(self, value: object) -> bool:
        """Whether ``value`` meets the condition; raises once the deadline has passed."""
        if self.until(value):
            return True
        if time.monotonic() >= self.deadline:
            raise ConditionTimeoutError(self.what, self.within, value)
        return False


def wait_until(
    observe: Callable[[], T],
    until: Callable[[T], object] = _truthy,
    *,
    within: float = DEFAULT_WITHIN_S,
    every: float = DEFAULT_EVERY_S,
    what: str | None = None,
) -> T:
    """Call ``observe`` every ``every`` seconds until ``until`` accepts its value; return it."""
    deadline = _Deadline(observe, until, within, what)
    while not deadline.met(value := observe()):
        time.sleep(every)
    return value


@overload
async def wait_until_async(
    observe: Callable[[], Awaitable[T]],
    until: Callable[[T], object] = ...,
    *,
    within: float = ...,
    every: float = ...,
    what: str | None = ...,
) -> T: ...


@overload
async def wait_until_async(
    observe: Callable[[], T],
    until: Callable[[T], object] = ...,
    *,
    within: float = ...,
    every: float = ...,
    what: str | None = ...,
) -> T: ...


async def wait_until_async(
    observe: Callable[[], Any],
    until: Callable[[Any], object] = _truthy,
    *,
    within: float = DEFAULT_WITHIN_S,
    every: float = DEFAULT_EVERY_S,
    what: str | None = None,
) -> Any:
    """:func:`wait_until` on the running event loop; ``observe`` may return an awaitable."""
    deadline = _Deadline(observe, until, within, what)
    while True:
        seen = observe()
        value = await seen if inspect.isawaitable(seen) else seen
        if deadline.met(value):
            return value
        await asyncio.sleep(every)
