"""Background tasks that never die silently: logged, counted, restarted, shown in readiness.

Every long-lived task of the feed (the lanes' accumulators and senders, each
Kite connection, the instruments, subscriptions, accounts and EMF loops) is
started by :meth:`Supervisor.spawn`. Each loop handles the failures it
expects itself; what escapes it is a bug or an environment problem nobody
foresaw, and today it would end the loop for good with the exception kept in
a task nobody awaits. The supervisor instead:

* logs the exception with its traceback, at ERROR, naming the task;
* counts it in ``feed_task_failures_total{task=<kind>}`` (a bounded label: the
  kind of task, not one label per connection);
* restarts the loop after a delay from an injected backoff (a loop that
  fails at once again must not spin the CPU);
* reports the task in :meth:`failing` for ``window`` seconds after its last
  failure, which ``/readyz`` turns into a reason not to route traffic here.

Cancellation (shutdown) passes through untouched. A supervised task itself
never ends with an exception, so awaiting it at shutdown cannot abort the
flush of the lanes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from feed_container.metrics import Metrics

log = logging.getLogger("feed_container.supervision")

Loop = Callable[[], Coroutine[Any, Any, None]]
RestartDelays = Callable[[], Iterator[float]]


def _default_delays() -> Iterator[float]:
    delay = 0.1
    while True:
        yield delay
        delay = min(delay * 2, 10.0)


class Supervisor:
    """Starts loops as tasks and keeps them running."""

    def __init__(
        self,
        metrics: Metrics,
        *,
        restart_delays: RestartDelays = _default_delays,
        window: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._metrics = metrics
        self._restart_delays = restart_delays
        self._window = window
        self._clock = clock
        self._last_failure: dict[str, float] = {}

    def spawn(self, name: str, loop: Loop, *, kind: str | None = None) -> asyncio.Task[None]:
        """Run ``loop()`` as a task named ``name``; restarted whenever it raises.

        ``kind`` is the metric label (defaults to ``name``): pass one kind for
        tasks that exist in numbers (one per connection).
        """
        return asyncio.get_running_loop().create_task(
            self._guard(name, kind or name, loop), name=name
        )

    async def _guard(self, name: str, kind: str, loop: Loop) -> None:
        delays = self._restart_delays()
        while True:
            try:
                await loop()
                return
            except Exception:  # the loop's own handling missed it: see the module docstring
                delay = next(delays)
                self._last_failure[name] = self._clock()
                self._metrics.inc("feed_task_failures_total", task=kind)
                log.exception(
                    "background task failed; restarting",
                    extra={"task": name, "restart_in_seconds": round(delay, 3)},
                )
                await asyncio.sleep(delay)

    def failing(self) -> list[str]:
        """Tasks that failed within the last ``window`` seconds (a readiness reason)."""
        now = self._clock()
        return sorted(n for n, at in self._last_failure.items() if now - at < self._window)
