"""What a Lambda execution environment keeps between invocations.

A handler must not call ``asyncio.run`` per invocation: that creates and
closes a loop each time, killing pooled database connections with it. Each
function builds one :class:`LoopRunner` with its other dependencies on the
first invocation (nothing is built at import) and runs every invocation's
coroutine on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, Protocol, TypeVar, cast

from lambdas.common.observability import Observability

T = TypeVar("T")

D = TypeVar("D")


class LambdaHandler(Protocol):
    """A Lambda entry point: ``(event, context) -> response``."""

    dependencies: Callable[[], Any]
    """What the handler builds on its first invocation (the cached builder it was given).

    Exposed so the deployment checks can build a function's dependencies from its
    template environment without invoking it (which AWS services its clients need).
    """

    def __call__(self, event: dict[str, Any], context: Any, /) -> dict[str, Any]: ...


def entry_point(
    obs: Observability,
    handle: Callable[[dict[str, Any], D], dict[str, Any]],
    dependencies: Callable[[], D],
    *,
    log_context: bool = True,
) -> LambdaHandler:
    """``handle(event, dependencies())`` as a Lambda handler.

    ``dependencies`` is called on every invocation: pass a cached builder, so
    the execution environment builds its settings and clients once, on the
    first invocation (never at import). Powertools flushes the invocation's
    metrics and, with ``log_context``, adds the Lambda context to log lines.
    """
    return context_entry_point(
        obs, lambda event, deps, context: handle(event, deps), dependencies, log_context=log_context
    )


def context_entry_point(
    obs: Observability,
    handle: Callable[[dict[str, Any], D, Any], dict[str, Any]],
    dependencies: Callable[[], D],
    *,
    log_context: bool = True,
) -> LambdaHandler:
    """As :func:`entry_point`, for a ``handle(event, dependencies, context)`` that needs the
    Lambda context (its remaining time, its request id)."""

    def invoke(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return handle(event, dependencies(), context)

    wrapped = obs.logger.inject_lambda_context(invoke) if log_context else invoke
    handler = cast(LambdaHandler, obs.metrics.log_metrics(wrapped))
    handler.dependencies = dependencies
    return handler


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

    @property
    def current(self) -> T | None:
        """The resource if it has been created, else None (never creates it)."""
        return self._value

    def reset(self) -> T | None:
        """Forget the resource (the caller closes what is returned)."""
        value, self._value = self._value, None
        return value


def close_all(runner: LoopRunner, *resources: Lazy[Any]) -> None:
    """Close each opened resource (an asyncpg pool) on ``runner``'s loop, then the loop.

    For tests and command lines; Lambda simply freezes the environment.
    """
    for resource in resources:
        opened = resource.reset()
        if opened is not None:
            runner.run(opened.close())
    runner.close()
