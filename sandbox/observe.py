"""Reading the running pipeline: the feed's /metrics, and one dashboard sample of everything."""

from __future__ import annotations

import contextlib
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sandbox.dashboard import Sample, parse_prometheus, total

if TYPE_CHECKING:
    from sandbox.chaos import ChaosSchedule
    from sandbox.stack import RunNotes, Stack

Metrics = dict[str, dict[Any, float]]


def read_feed_metrics(port: int) -> Metrics | None:
    """The feed's /metrics on 127.0.0.1:``port``, parsed (None when it does not answer)."""
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # nosec B310 # loopback
            return parse_prometheus(response.read().decode())
    except (urllib.error.URLError, OSError, ValueError):
        return None


class Observer:
    """Samples of the whole pipeline for the dashboard, and the drain's progress counters."""

    def __init__(
        self, stack: Stack, notes: RunNotes, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.stack = stack
        self.notes = notes
        self.chaos: ChaosSchedule | None = None
        self._clock = clock
        self._started_at = clock()
        self._last_feed_metrics: Metrics = {}

    def elapsed(self) -> float:
        """Seconds since the run began."""
        return self._clock() - self._started_at

    def sample(self, phase: str) -> Sample:
        """Everything the dashboard shows, now."""
        stack = self.stack
        sample = Sample(elapsed_s=self.elapsed(), phase=phase)
        if stack.sim is not None:
            with contextlib.suppress(Exception):
                counters = stack.sim.counters(per_instrument=False)["feed"]
                sample.sim_sent = int(counters["packets_sent"])
                by_key = {a.api_key: a.user_id for a in stack.accounts}
                for conn in counters["connections"].values():
                    user = by_key.get(conn["api_key"], conn["api_key"])
                    sample.sim_connections[user] = sample.sim_connections.get(user, 0) + 1
                for account in stack.accounts:
                    sample.sim_connections.setdefault(account.user_id, 0)
        metrics = stack.feed_metrics()
        if metrics is not None:
            self._last_feed_metrics = metrics  # once the feed has stopped, its last word stands
        sample.feed = self._last_feed_metrics
        sample.mappings = {name: m.view() for name, m in stack.mappings.items()}
        sample.functions = {name: f.stats() for name, f in stack.functions.items()}
        sample.on_failure = int(sum(view.on_failure_sent for view in sample.mappings.values()))
        sample.chaos = self.chaos.lines() if self.chaos else []
        sample.notes = list(self.notes.lines)
        return sample

    def progress(self) -> tuple[float, ...]:
        """Counters that move while the pipeline still works through a backlog."""
        metrics = self.stack.feed_metrics() or {}
        moving = [
            total(metrics, "feed_ticks_received_total"),
            total(metrics, "feed_kinesis_records_acked_total"),
        ]
        for mapping in self.stack.mappings.values():
            view = mapping.view()
            moving += [view.total("invocations"), view.total("records_succeeded")]
        if self.stack.order_updates_mapping is not None:
            stats = self.stack.order_updates_mapping.stats()
            moving += [stats.invocations, stats.messages_deleted]
        return tuple(moving)
