"""What stalls the event loop: garbage-collector pauses and loop lag, measured; the GC tuned.

One thread reads every Kite socket, encodes every tick and sends every
PutRecords, so anything that stops it delays every tick in flight.

* :class:`GcWatch` times each collection (``gc.callbacks``) into
  ``feed_gc_pause_seconds{generation}``;
* :func:`watch_loop_lag` measures how late a timer fires
  (``feed_loop_lag_seconds``): the loop's responsiveness, whatever the cause;
* :func:`settle_heap` moves everything alive after start-up (the instruments
  registry, caches, imported modules: hundreds of thousands of objects that
  live for the whole day) out of the collector's sight with ``gc.freeze()``,
  so a full collection no longer walks them. Without it a full collection
  took 60 ms and more, and ran more often as the lanes' queues grew, which is
  how a run that fell behind kept falling further behind. Frozen objects are
  still freed by reference counting when nothing refers to them (a registry
  replaced by the next day's); only garbage *cycles* among them would stay,
  and the registry holds none (``tests/unit/feed/test_pauses.py`` checks).
  Settling never unfreezes: that would make the next collection walk the
  whole heap again, a pause of half a second in the middle of the stream.
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

from feed_container.metrics import Metrics


class GcWatch:
    """Times every collection into ``feed_gc_pause_seconds``; :meth:`close` stops it."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        self._metrics.observe(
            "feed_gc_pause_seconds",
            time.perf_counter() - self._started,
            generation=str(info["generation"]),
        )

    def close(self) -> None:
        """Stop timing collections."""
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)


async def watch_loop_lag(metrics: Metrics, interval: float = 0.1) -> None:
    """Until cancelled: how late a ``interval`` timer fires, into ``feed_loop_lag_seconds``."""
    while True:
        started = time.perf_counter()
        await asyncio.sleep(interval)
        metrics.observe("feed_loop_lag_seconds", max(0.0, time.perf_counter() - started - interval))


def settle_heap() -> None:
    """Collect what is not frozen yet, then freeze what is alive (see the module docstring)."""
    gc.collect()
    gc.freeze()
