"""From user records to acknowledged PutRecords: lanes, memory budget, spill, breaker.

A :class:`SendLane` owns a fixed share of the partition keys (``lane_of``), a
:class:`~ticker_core.records.RecordBatcher` (the accumulator: aggregation,
linger, request limits) and one sender task with **at most one PutRecords
call in flight**. So per partition key, a later request is never sent while
an earlier one is unacknowledged; lanes overlap their round trips.

Batches close when the sender can take them
-------------------------------------------
Linger closes a batch only while the lane's sender is idle. While a call is in
flight (or batches wait for it), new records keep filling the open aggregates
and the next batch up to Kinesis' request limits, and that batch closes the
moment the call returns (as a Kafka producer's accumulator drains only for a
free connection). A batch closed on the linger clock while the sender was busy
would wait anyway, and a lane sending fixed-size batches can carry no more
than one batch per round trip: when round trips slowed, such a lane fell
behind for good. Sized by the backlog, a request carries what arrived during
the previous round trip, so throughput follows the round trip instead of
collapsing with it, and no record waits longer than it would have queued.
Memory still rules: once a busy lane holds more than ``high`` bytes (an
outage), what has lingered is closed on the linger clock again and goes to
the spill, as below.

Ordering and duplicates
-----------------------
* Partial failure: only the failed entries are resent (``batch.subset``),
  after a backoff, before anything newer of the lane. Kinesis may accept an
  entry of a request and refuse an earlier entry of the same key (throttling
  is per shard and per second, so both usually fail together); the resent
  entry then lands after the later one. This is counted
  (``feed_kinesis_reordered_records_total``), never hidden. Every record
  carries ``received_at`` (strictly increasing per process) for consumers
  that need strict order.
* Unknown outcome (read timeout, connection lost mid-call, HTTP 5xx):
  Kinesis may have written the records. Dropping them could lose ticks, so
  the whole request is resent and its user records are counted in
  ``feed_kinesis_ambiguous_total``: they may appear twice, with different
  sequence numbers. Duplicates are identifiable by content: (account,
  instrument_token, received_at) is unique per tick. Long timeouts (10 s by
  default, for calls that take milliseconds) keep this rare.

Backpressure (never stop reading Kite: it does not buffer for us)
----------------------------------------------------------------
Memory holds complete batches up to ``high`` bytes per lane. A batch that
would go past it, and every batch after it while the spill holds unread
entries (order!), is appended to the lane's disk spill instead. When the
queue falls to ``low``, spilled batches are read back, oldest first.

When the disk refuses (a write fails: ``ENOSPC``, a failing disk; or the
budget or the free space is used up), the batch waits in memory *behind* the
spill, in an overflow queue, so order still holds: queue, then spill, then
overflow. Every later batch joins the overflow until the disk takes writes
again (each new batch first retries writing the overflow out), or until the
spill is read to its end, when the overflow is next in line and moves to the
queue. The failures are counted (``feed_spill_write_errors_total{error}``)
and logged with their reason. Only past ``max_bytes`` of memory in all is a
batch dropped: counted in ``feed_dropped_records_total`` and logged at
ERROR, which is the alarm.

Circuit breaker: after ``failures`` consecutive failed calls (any lane) the
breaker opens and no lane calls Kinesis for ``open_seconds`` (doubling up to
a cap while trial calls keep failing); one trial call decides whether it
closes. While it is open, data flows to memory and then to disk.

Failures: a call that fails for any reason is a failed call (counted by
outcome, breaker, retry), never the end of the lane: a credential refresh
that fails is ``outcome="credentials"``, an exception the writer did not
type (a bug) is ``outcome="error"`` and treated as an unknown outcome. The
lane's two tasks run under the :class:`~feed_container.supervision.Supervisor`
besides, so even a fault in the lane's own code is logged, counted and
restarted, and shutdown never sees an exception from them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from feed_container.kinesis import KinesisError, KinesisWriter, PutResult
from feed_container.logs import LogLimiter
from feed_container.metrics import Metrics
from feed_container.spill import SpillStore, SpillWriteError
from feed_container.supervision import Supervisor
from ticker_core.records import PutRecordsBatch, RecordBatcher

log = logging.getLogger("feed_container.sender")

Clock = Callable[[], float]
Sleep = Callable[[float], "asyncio.Future[None] | asyncio.Task[None] | object"]


def lane_of(partition_key: str, lanes: int) -> int:
    """The lane that owns ``partition_key`` (stable across processes and restarts)."""
    return zlib.crc32(partition_key.encode("utf-8")) % lanes


class DrainTimeoutError(TimeoutError):
    """Shutdown could not hand everything to Kinesis in time (the rest went to disk)."""


class CircuitBreaker:
    """Closed -> open after ``failures`` consecutive failures -> one trial -> closed or open."""

    def __init__(
        self,
        failures: int,
        open_seconds: float,
        max_open_seconds: float,
        *,
        clock: Clock = time.monotonic,
        metrics: Metrics | None = None,
    ) -> None:
        self._threshold = failures
        self._base_open = open_seconds
        self._max_open = max_open_seconds
        self._clock = clock
        self._metrics = metrics
        self._failures = 0
        self._open_for = open_seconds
        self._open_until: float | None = None
        self._trial = False
        self._changed = asyncio.Event()

    @property
    def is_open(self) -> bool:
        """Whether calls are being held back."""
        return self._open_until is not None

    async def wait_ready(self) -> None:
        """Return when this caller may call Kinesis (at once while closed)."""
        while self._open_until is not None:
            wait = self._open_until - self._clock()
            if wait > 0 or self._trial:
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), max(wait, 0.05))
                continue
            self._trial = True  # this caller makes the trial call
            return

    def success(self) -> None:
        """A call returned results."""
        self._failures = 0
        self._open_for = self._base_open
        if self._open_until is not None:
            log.info("kinesis circuit breaker closed")
        self._open_until = None
        self._trial = False
        self._publish()

    def failure(self) -> None:
        """A call failed as a whole."""
        self._failures += 1
        if self._trial:
            self._trial = False
            self._open_for = min(self._open_for * 2, self._max_open)
            self._open_until = self._clock() + self._open_for
        elif self._open_until is None and self._failures >= self._threshold:
            self._open_until = self._clock() + self._open_for
            log.warning("kinesis circuit breaker open", extra={"open_seconds": self._open_for})
        self._publish()

    def _publish(self) -> None:
        if self._metrics is not None:
            self._metrics.set("feed_breaker_open", 1.0 if self.is_open else 0.0)
        self._changed.set()


@dataclass
class _Item:
    batch: PutRecordsBatch
    segment: int | None = None  # where it lives in the spill, if it came from there
    entry: int = 0
    queued_at: float = 0.0  # when it joined the memory queue (the lane's clock)
    sent_at: float | None = None  # when its first call started


class SendLane:
    """One lane: accumulator, memory queue, disk spill and one sender task."""

    def __init__(
        self,
        index: int,
        *,
        writer: KinesisWriter,
        breaker: CircuitBreaker,
        spill: SpillStore,
        metrics: Metrics,
        batcher: RecordBatcher,
        high_bytes: int,
        low_bytes: int,
        retry_delays: Callable[[], Iterator[float]],
        clock: Clock = time.monotonic,
        supervisor: Supervisor | None = None,
        max_bytes: int | None = None,
    ) -> None:
        """``max_bytes``: memory in all (queue, overflow, batcher) before a batch the disk
        refuses is dropped (default ``2 * high_bytes``)."""
        self.index = index
        self.batcher = batcher
        self.spill = spill
        self._writer = writer
        self._breaker = breaker
        self._metrics = metrics
        self._high = high_bytes
        self._low = low_bytes
        self._retry_delays = retry_delays
        self._clock = clock
        self._max = max_bytes if max_bytes is not None else 2 * high_bytes
        self._queue: deque[_Item] = deque()
        self._queued_bytes = 0
        #: Batches the disk refused, newer than everything spilled (see the module docstring).
        self._overflow: deque[PutRecordsBatch] = deque()
        self._overflow_bytes = 0
        self._wake_accumulator = asyncio.Event()
        self._wake_sender = asyncio.Event()
        self._stopped = asyncio.Event()
        self._closing = False
        self._hard_stop = False
        self._in_flight = False
        self._tasks: list[asyncio.Task[None]] = []
        self._supervisor = supervisor or Supervisor(metrics)
        self._drop_log = LogLimiter(10.0, clock=clock)
        self._spill_log = LogLimiter(10.0, clock=clock)
        self._error_log = LogLimiter(10.0, clock=clock)
        self._refill()

    # -- producer side (the pipeline) ---------------------------------------------------

    def add(self, partition_key: str, data: bytes, now: float) -> None:
        """One user record; ``now`` is its frame's receipt time on the lane's clock."""
        self.add_many(partition_key, (data,), now)

    def add_many(self, partition_key: str, datas: Sequence[bytes], now: float) -> None:
        """User records of one key, in order (the hot path: one call per key and frame)."""
        idle = self.batcher.pending_user_records == 0
        # Wake the accumulator for a complete batch, to start the linger clock, or to
        # move what has lingered toward the spill once a busy lane is over its budget.
        if self.batcher.add_many(partition_key, datas, now) or idle or self._over_budget():
            self._wake_accumulator.set()

    def _holding(self) -> bool:
        """The sender is busy and memory allows: batches keep filling (module docstring)."""
        return bool(self._queue) and self.memory_bytes <= self._high

    def _over_budget(self) -> bool:
        return bool(self._queue) and self.memory_bytes > self._high

    @property
    def memory_bytes(self) -> int:
        """Bytes held in memory: queued and overflow batches, and what the batcher holds."""
        return self._queued_bytes + self._overflow_bytes + self.batcher.pending_user_bytes

    @property
    def queued_batches(self) -> int:
        """Batches waiting in memory (the head may be in flight)."""
        return len(self._queue)

    def is_drained(self) -> bool:
        """Nothing pending anywhere: batcher, memory queue, spill."""
        return (
            not self._queue
            and not self._overflow
            and self.batcher.pending_user_records == 0
            and not self.spill.has_unread()
        )

    def offer(self, batches: list[PutRecordsBatch]) -> None:
        """Queue complete batches in memory, or spill them (see the module docstring)."""
        for batch in batches:
            if (
                self._overflow
                or self.spill.has_unread()
                or self._queued_bytes + batch.size > self._high
            ):
                self._to_disk(batch)
            else:
                self._queue.append(_Item(batch, queued_at=self._clock()))
                self._queued_bytes += batch.size
        self._refill()
        self._wake_sender.set()

    def _to_disk(self, batch: PutRecordsBatch) -> None:
        """Spill ``batch`` after whatever the overflow holds; hold it there if the disk refuses."""
        self._write_overflow()
        if not self._overflow and self._spill(batch):
            return
        if self.memory_bytes + batch.size > self._max:
            self._drop(batch)
            return
        self._overflow.append(batch)
        self._overflow_bytes += batch.size

    def _write_overflow(self) -> None:
        """Write the overflow out to the spill, oldest first, until the disk refuses."""
        while self._overflow and self._spill(self._overflow[0]):
            self._overflow_bytes -= self._overflow.popleft().size

    def _spill(self, batch: PutRecordsBatch) -> bool:
        """Append one batch to the spill; False (counted, logged) when the disk refuses."""
        try:
            written = self.spill.append(batch)
        except SpillWriteError as exc:  # counted by the spill (feed_spill_write_errors_total)
            reason = exc.error
            detail = str(exc)
        else:
            if written:
                self._metrics.inc("feed_spilled_records_total", batch.user_records)
                return True
            reason, detail = "budget", "the spill budget is used up"
        held_back = self._spill_log.allow(reason)
        if held_back is not None:
            log.warning(
                "disk spill refused a batch: holding it in memory behind the spill",
                extra={
                    "lane": self.index,
                    "reason": reason,
                    "detail": detail,
                    "memory_bytes": self.memory_bytes,
                    "memory_max_bytes": self._max,
                    "held_back": held_back,
                },
            )
        return False

    def _drop(self, batch: PutRecordsBatch) -> None:
        self._metrics.inc("feed_dropped_records_total", batch.user_records)
        held_back = self._drop_log.allow("drop")
        if held_back is not None:
            log.error(
                "memory and disk budgets exhausted: dropping records",
                extra={
                    "lane": self.index,
                    "dropped_total": self._metrics.total("feed_dropped_records_total"),
                },
            )

    def _refill(self) -> None:
        if self._queued_bytes > self._low:
            return
        while self._queued_bytes < self._high:
            spilled = self.spill.read_next()
            if spilled is None:
                if not self._overflow:
                    break
                # The spill is read to its end: the overflow is next in order.
                batch = self._overflow.popleft()
                self._overflow_bytes -= batch.size
                self._queue.append(_Item(batch, queued_at=self._clock()))
                self._queued_bytes += batch.size
                continue
            self._queue.append(
                _Item(spilled.batch, spilled.segment, spilled.entry, queued_at=self._clock())
            )
            self._queued_bytes += spilled.batch.size
            self._metrics.inc("feed_replayed_records_total", spilled.batch.user_records)

    # -- tasks ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the accumulator and sender tasks on the running loop, supervised."""
        spawn = self._supervisor.spawn
        self._tasks = [
            spawn(f"lane-{self.index}-accumulate", self._accumulate, kind="lane-accumulate"),
            spawn(f"lane-{self.index}-send", self._send, kind="lane-send"),
        ]

    async def _accumulate(self) -> None:
        while not self._closing:
            # A busy sender (its queue holds the call in flight) wakes this task when it
            # is free; until then only complete batches move, unless memory is over its
            # budget: then what has lingered goes on, to the spill (module docstring).
            deadline = None if self._holding() else self.batcher.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - self._clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_accumulator.wait(), timeout)
            self._wake_accumulator.clear()
            if self._holding():
                batches = self.batcher.take_complete()
            else:
                batches = self.batcher.drain(self._clock())
            if batches:
                self.offer(batches)

    async def _send(self) -> None:
        while True:
            if not self._queue:
                self._refill()
            if not self._queue:
                if self._closing and self.is_drained():
                    return
                if self._hard_stop:
                    return
                self._wake_sender.clear()
                await self._wake_sender.wait()
                continue
            if self._hard_stop:
                return
            await self._deliver(self._queue[0])

    async def _deliver(self, item: _Item) -> None:
        """Send the head item until every entry is acknowledged (or a hard stop)."""
        delays: Iterator[float] | None = None
        while not self._hard_stop:
            await self._breaker.wait_ready()
            if self._hard_stop:
                return
            self._in_flight = True
            called_at = self._clock()
            if item.sent_at is None:
                item.sent_at = called_at
            try:
                result = await self._writer.put(item.batch)
            except KinesisError as exc:
                self._call_failed(item.batch, exc)
                delays = delays or self._retry_delays()
                await self._pause(next(delays))
                continue
            except Exception as exc:  # untyped: a bug; the request may have gone out
                self._call_raised(item.batch, exc)
                delays = delays or self._retry_delays()
                await self._pause(next(delays))
                continue
            finally:
                self._in_flight = False
            self._metrics.inc(
                "feed_kinesis_requests_total", outcome="ok" if not result.failed else "partial"
            )
            if len(result.failed) == len(item.batch):
                self._breaker.failure()
            else:
                self._breaker.success()
            self._acknowledge(item.batch, result)
            if not result.failed:
                self._observe_stages(item, called_at)
                self._finish(item)
                return
            # Only the failed entries stay in memory: release what was acknowledged.
            retry = item.batch.subset(result.failed)
            self._queued_bytes -= item.batch.size - retry.size
            item.batch = retry
            delays = delays or self._retry_delays()
            await self._pause(next(delays))

    def _call_failed(self, batch: PutRecordsBatch, exc: KinesisError) -> None:
        kind = type(exc).__name__.removeprefix("Kinesis").removesuffix("Error").lower()
        self._metrics.inc("feed_kinesis_requests_total", outcome=kind)
        if kind == "throttled":
            self._metrics.inc("feed_kinesis_throttled_records_total", len(batch))
        if exc.ambiguous:
            self._metrics.inc("feed_kinesis_ambiguous_total", batch.user_records)
        self._breaker.failure()
        held_back = self._error_log.allow(kind)
        if held_back is not None:
            log.warning(
                "PutRecords failed",
                extra={
                    "lane": self.index,
                    "error": kind,
                    "detail": str(exc),
                    "held_back": held_back,
                },
            )

    def _call_raised(self, batch: PutRecordsBatch, exc: Exception) -> None:
        """The writer raised something it does not promise: resent whole, like an unknown
        outcome (dropping it could lose ticks), counted and logged with its traceback."""
        self._metrics.inc("feed_kinesis_requests_total", outcome="error")
        self._metrics.inc("feed_kinesis_ambiguous_total", batch.user_records)
        self._breaker.failure()
        held_back = self._error_log.allow(type(exc).__name__)
        if held_back is not None:
            log.error(
                "PutRecords raised an unexpected error; resending",
                exc_info=exc,
                extra={"lane": self.index, "error": type(exc).__name__, "held_back": held_back},
            )

    def _acknowledge(self, batch: PutRecordsBatch, result: PutResult) -> None:
        failed = set(result.failed)
        now = self._clock()
        acked_users = 0
        failed_keys: set[str] = set()
        reordered = 0
        for i, record in enumerate(batch.records):
            if i in failed:
                failed_keys.add(record.partition_key)
                continue
            acked_users += record.user_records
            if record.partition_key in failed_keys:
                reordered += record.user_records
            if record.added_at is not None:
                self._metrics.observe_lag(now - record.added_at, record.user_records)
        self._metrics.inc("feed_kinesis_records_acked_total", acked_users)
        if reordered:
            self._metrics.inc("feed_kinesis_reordered_records_total", reordered)
        for code in result.error_codes:
            self._metrics.inc("feed_kinesis_failed_records_total", code=code)
            if code == "ProvisionedThroughputExceededException":
                self._metrics.inc("feed_kinesis_throttled_records_total")

    def _observe_stages(self, item: _Item, called_at: float) -> None:
        """Where the batch's time went: batcher, queue, its last call (for latency figures)."""
        now = self._clock()
        observe = self._metrics.observe
        added = [r.added_at for r in item.batch.records if r.added_at is not None]
        if added:
            observe("feed_batch_stage_seconds", item.queued_at - min(added), stage="batching")
        sent_at = called_at if item.sent_at is None else item.sent_at
        observe("feed_batch_stage_seconds", sent_at - item.queued_at, stage="queue")
        observe("feed_batch_stage_seconds", called_at - sent_at, stage="retries")
        observe("feed_batch_stage_seconds", now - called_at, stage="in_flight")

    def _finish(self, item: _Item) -> None:
        self._queue.popleft()
        self._queued_bytes -= item.batch.size
        if item.segment is not None:
            self.spill.ack(item.segment, item.entry)
        self._refill()
        if not self._queue:
            # Free: what filled during the call closes now if it has lingered.
            self._wake_accumulator.set()

    async def _pause(self, seconds: float) -> None:
        """Sleep, cut short by a hard stop."""
        if self._hard_stop:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), seconds)

    # -- shutdown ------------------------------------------------------------------------

    async def close(self, drain_deadline: float, final_deadline: float) -> bool:
        """Flush, try to deliver everything by ``drain_deadline``, then persist the rest.

        Returns True when everything reached Kinesis. Otherwise whatever is
        left (memory queue, partial batches) is written in front of the spill,
        in order, for the next run on the same storage to replay.
        """
        self._closing = True
        self._wake_accumulator.set()
        self.offer(self.batcher.flush())
        sender = self._tasks[1] if len(self._tasks) > 1 else None
        if sender is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.shield(sender), max(0.0, drain_deadline - self._clock())
                )
        delivered = self.is_drained()
        self._hard_stop = True
        self._stopped.set()
        self._wake_sender.set()
        if sender is not None and not sender.done():
            # The in-flight call (if any) ends by its own timeout; then the task returns.
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(sender, max(0.0, final_deadline - self._clock()))
            if not sender.done():
                sender.cancel()
        for task in self._tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if not delivered:
            leftover = [item.batch for item in self._queue]
            if self.spill.prepend(leftover):
                self.spill.ack_read()
            else:
                for batch in leftover:
                    self._drop(batch)
            self._queue.clear()
            self._queued_bytes = 0
            # The overflow is newer than the spill: it goes behind it, if the disk lets it.
            self._write_overflow()
            while self._overflow:
                batch = self._overflow.popleft()
                self._overflow_bytes -= batch.size
                self._drop(batch)
        self.spill.close()
        return delivered
