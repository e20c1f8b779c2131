"""One event loop per Lambda execution environment.

A handler must not call ``asyncio.run`` per invocation: that creates and
closes a loop each time, killing pooled database connections with it. The
handler module creates one :class:`LoopRunner` at import (the execution
environment's init phase) and runs each invocation's coroutine on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class LoopRunner:
    """Runs coroutines on one loop that outlives each call."""

    def __init__(self) -> None:
        self._runner = asyncio.Runner()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` to completion on the shared loop."""
        return self._runner.run(coro)

    def close(self) -> None:
        """Close the loop (tests; Lambda simply freezes the environment)."""
        self._runner.close()


class Lazy(Generic[T]):
    """An async resource created on first use and re-created after ``reset``.

    Holds e.g. a connection pool across invocations; the factory runs inside
    the loop that will use the resource.
    """

    def __init__(self, factory: Callable[[], Awaitable[T]]) -> None:
        self._factory = factory
        self._value: T | None = None
        self._lock: asyncio.Lock | None = None

    async def get(self) -> T:
        """The resource, creating it if needed (once, even under concurrency)."""
        if self._value is not None:
            return self._value
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._value is None:
                self._value = await self._factory()
        return self._value

    def reset(self) -> T | None:
        """Forget the resource (the caller closes what is returned)."""
        value, self._value = self._value, None
        return value
