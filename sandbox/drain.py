"""The drain: after the run, let everything in flight reach PostgreSQL, or say what did not.

The simulator's market closes (no new ticks); the feed is waited for until it
has received everything the simulator sent and Kinesis acknowledged all of
it, then stopped (it flushes on SIGTERM); then each event source mapping,
``ticks`` first, until every shard is processed; then the order-updates
queue, until the feed's last order messages are consumed.

Two decisions, both pure and tested on their own:

- :func:`feed_step`: has the feed delivered everything, or has it settled
  short of that (nothing moved for ``FEED_SETTLE_S``: lost or extra ticks
  never make the counts meet; the report then says what)?
- :func:`wait_while_moving`: a big backlog drains slowly but surely, so a
  wait gives up only when the pipeline's counters stop moving for the
  drain timeout.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from sandbox.dashboard import Dashboard, total
from sandbox.esm import EventSourceMapping
from sandbox.observe import Metrics, Observer
from sandbox.provision import queue_depth
from sandbox.stack import RunNotes, SandboxError, Stack, need

FEED_SETTLE_S = 15.0  # nothing moving at the feed for this long means nothing more will come
DRAIN_POLL_S = 0.5


class DrainSkippedError(SandboxError):
    """The user asked to skip the drain (a second Ctrl-C)."""


@dataclass(frozen=True)
class FeedCounts:
    """What the simulator sent against what the feed received and Kinesis acknowledged."""

    sent: int
    received: float
    accepted: float
    acked: float
    buffered: float

    @classmethod
    def read(cls, sent: int, metrics: Metrics) -> FeedCounts:
        """The counts from the simulator's ``sent`` and the feed's /metrics."""
        return cls(
            sent=sent,
            received=total(metrics, "feed_ticks_received_total"),
            accepted=total(metrics, "feed_ticks_accepted_total"),
            acked=total(metrics, "feed_kinesis_records_acked_total"),
            buffered=total(metrics, "feed_buffer_bytes") + total(metrics, "feed_spill_bytes"),
        )

    @property
    def delivered(self) -> bool:
        """Everything sent was received, and Kinesis acknowledged all that was accepted.

        (What the feed still buffers beyond that is flushed when it is stopped.)
        """
        return self.received >= self.sent and self.acked >= self.accepted

    def describe(self) -> str:
        """One line for the run's notes."""
        return (
            f"simulator sent {self.sent:,}, feed received {self.received:,.0f}, "
            f"accepted {self.accepted:,.0f}, Kinesis acknowledged {self.acked:,.0f}, "
            f"{self.buffered:,.0f} bytes buffered"
        )


class Stall:
    """Watches one observed state; stalled once it has not changed for ``limit_s`` seconds."""

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self._state: Hashable = object()
        self._since = 0.0

    def stalled(self, state: Hashable, now: float) -> bool:
        """Record ``state`` seen at ``now``; whether it has stood still for the limit."""
        if state != self._state:
            self._state, self._since = state, now
            return False
        return now - self._since >= self.limit_s


class FeedStep(enum.Enum):
    """Where the feed's part of the drain stands."""

    WAITING = "waiting"
    DELIVERED = "delivered"
    SETTLED = "settled short"


def feed_step(counts: FeedCounts | None, stall: Stall, now: float) -> FeedStep:
    """Whether the feed is done: everything delivered, settled short of it, or still moving.

    ``counts`` is None while the feed does not answer: keep waiting (the
    drain's own timeout bounds that).
    """
    if counts is None:
        return FeedStep.WAITING
    if counts.delivered:
        return FeedStep.DELIVERED
    if stall.stalled(counts, now):
        return FeedStep.SETTLED
    return FeedStep.WAITING


def wait_while_moving(
    done: Callable[[], bool],
    progress: Callable[[], Hashable],
    *,
    timeout_s: float,
    skipped: Callable[[], bool],
    between: Callable[[], object],
    clock: Callable[[], float] = time.monotonic,
    pause: Callable[[float], None] = time.sleep,
) -> bool:
    """Wait for ``done``; True once it holds, False if ``progress`` stood still for ``timeout_s``.

    Raises :class:`DrainSkippedError` as soon as ``skipped`` says so. ``between``
    runs after each unsuccessful look (the dashboard's refresh).
    """
    stall = Stall(timeout_s)
    stall.stalled(progress(), clock())
    while not done():
        if skipped():
            raise DrainSkippedError("drain skipped")
        if stall.stalled(progress(), clock()):
            return False
        between()
        pause(DRAIN_POLL_S)
    return True


class Drain:
    """One drain of the stack, reported on a dashboard and in the run's notes."""

    def __init__(
        self,
        stack: Stack,
        observer: Observer,
        notes: RunNotes,
        *,
        timeout_s: float,
        skipped: Callable[[], bool],
        clock: Callable[[], float] = time.monotonic,
        pause: Callable[[float], None] = time.sleep,
    ) -> None:
        self.stack = stack
        self.observer = observer
        self.notes = notes
        self.timeout_s = timeout_s
        self.skipped = skipped
        self._clock = clock
        self._pause = pause
        self._feed_stall = Stall(FEED_SETTLE_S)

    def run(self, dashboard: Dashboard) -> None:
        """Stop new ticks, let everything in flight reach PostgreSQL."""
        stack = self.stack
        sim = need(stack.sim, "kite_sim")
        stack.say("draining: market closed at the simulator; waiting for the pipeline to catch up")
        sim.close_market()
        if stack.feed is not None:
            self._wait("the feed to receive and deliver every tick", self._feed_done, dashboard)
            stack.stop_feed()
        sent_before = sim.counters(per_instrument=False)["feed"]["packets_sent"]
        since = time.time()
        for name in _ticks_first(stack.mappings):
            mapping = stack.mappings[name]
            self._wait(f"{name} to process every record", _caught_up(mapping, since), dashboard)
            since = time.time()
        if stack.order_updates_mapping is not None:
            self._wait(
                "the order-updates queue to be consumed", self._order_updates_done, dashboard
            )
        if sim.counters(per_instrument=False)["feed"]["packets_sent"] != sent_before:
            self.notes.add("the simulator sent ticks after the feed stopped")
        dashboard.update(self.observer.sample("drained"), force_line=True)

    def _feed_done(self) -> bool:
        metrics = self.stack.feed_metrics()
        sim = need(self.stack.sim, "kite_sim")
        counts = None
        if metrics is not None:
            sent = int(sim.counters(per_instrument=False)["feed"]["packets_sent"])
            counts = FeedCounts.read(sent, metrics)
        step = feed_step(counts, self._feed_stall, self._clock())
        if step is FeedStep.SETTLED and counts is not None:
            self.notes.add(f"feed settled: {counts.describe()}")
        return step is not FeedStep.WAITING

    def _order_updates_done(self) -> bool:
        """No message left on the queue (waiting or hidden) and none in an invocation."""
        stack = self.stack
        mapping = need(stack.order_updates_mapping, "the order-updates mapping")
        queue = need(stack.resources, "AWS").order_updates.url
        return mapping.stats().in_flight == 0 and queue_depth(need(stack.aws, "moto"), queue) == 0

    def _wait(self, what: str, done: Callable[[], bool], dashboard: Dashboard) -> None:
        arrived = wait_while_moving(
            done,
            self.observer.progress,
            timeout_s=self.timeout_s,
            skipped=self.skipped,
            between=lambda: dashboard.update(self.observer.sample(f"draining: {what}")),
            clock=self._clock,
            pause=self._pause,
        )
        if not arrived:
            self.notes.problem(f"drain timed out waiting for {what}")
            self.stack.say(
                f"drain: nothing moved for {self.timeout_s:g}s waiting for {what}; "
                "reporting what there is"
            )


def _ticks_first(mappings: dict[str, EventSourceMapping]) -> list[str]:
    """The mappings of the ticks stream, then those of the Greeks stream it feeds."""
    return [m for m in mappings if m.startswith("ticks")] + [
        m for m in mappings if m.startswith("greeks")
    ]


def _caught_up(mapping: EventSourceMapping, since: float) -> Callable[[], bool]:
    return lambda: mapping.view().caught_up_since(since)
