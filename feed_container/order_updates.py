"""Kite's WebSocket order messages, forwarded to the order-updates SQS queue.

Kite tells each of an account's WebSocket connections about every change of
its orders (``{"type": "order", "data": {...}}``: the order, as its postback
carries it). The order lifecycle store uses them beside the postbacks
(README, "Order updates"): the feed sends each to the SQS queue
``ORDER_UPDATES_QUEUE_URL`` as ``{"account_id": ..., "order": {...}}``, and
the ``api-order-updates`` function stores it, once whichever way and however
often it arrives. Two layers, as the rest of the feed:

* :class:`OrderUpdateQueue` (pure, no clock, no I/O): a bounded queue of
  messages; batches of what one SendMessageBatch takes (10 entries, 256 KiB);
  a call's result settled per entry: sent, retried (back to the front, in
  order), or given up, as an injected pure decision says
  (:func:`retry_unless_sender_fault` by default: every failed call and every
  entry SQS did not refuse as the sender's fault is retried).
* :class:`OrderUpdateForwarder` (asyncio): :meth:`~OrderUpdateForwarder.submit`
  is what the pipeline calls for each order message, on the loop that reads
  Kite: it appends and returns, never waits, never raises. One supervised
  task sends, one call in flight (what arrives meanwhile makes the next
  batch), backing off between failed calls with the injected delays
  (``ticker_adapters.retry``). :meth:`~OrderUpdateForwarder.close` flushes
  within the stop budget.

What can be lost, each counted in ``feed_order_updates_dropped_total{reason}``
with a rate-limited WARNING: ``queue_full`` (SQS unreachable long enough for
``FEED_ORDER_UPDATES_BUFFER`` messages to pile up), ``too_large`` (a message
SQS can never take), ``refused`` (an entry SQS refused as the sender's fault),
``stopped`` (still unsent when the stop budget ran out). Each SQS message
also carries the update's identity (:attr:`ticker_core.kite_wire.OrderUpdate.update_key`)
in the ``kite_update_key`` attribute: a de-duplication hint for consumers
and for tracing; the store's own identity makes duplicates harmless.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from feed_container.logs import LogLimiter
from feed_container.metrics import Metrics
from feed_container.sqs import (
    MAX_BATCH_BYTES,
    MAX_BATCH_ENTRIES,
    BatchEntry,
    EntryFailure,
    SqsError,
)
from feed_container.supervision import Supervisor
from ticker_adapters.retry import Delays
from ticker_core.kite_wire import OrderUpdate

log = logging.getLogger("feed_container.order_updates")

#: The message attribute holding the update's identity (a de-duplication hint).
UPDATE_KEY_ATTRIBUTE = "kite_update_key"

#: Not a loss: the same update already queued from another of the account's connections.
DUPLICATE = "duplicate"
DROP_QUEUE_FULL = "queue_full"
DROP_TOO_LARGE = "too_large"
DROP_REFUSED = "refused"
DROP_STOPPED = "stopped"

RetryDecision = Callable[[EntryFailure], bool]
"""Pure: whether a failed message is sent again (True) or given up (False)."""


def retry_unless_sender_fault(failure: EntryFailure) -> bool:
    """Retry every failed call, and every entry SQS did not refuse as the sender's fault.

    A whole call that failed (SQS unreachable, throttled, access denied while
    a role propagates) says nothing about the messages: they wait, in order,
    in the bounded queue. An entry SQS refuses with ``SenderFault`` (its
    content is invalid) would be refused forever: it is given up, counted.
    """
    return failure.whole_call or not failure.sender_fault


def message_body(account: str, update: OrderUpdate) -> str:
    """The SQS message body the order-updates function reads."""
    return json.dumps({"account_id": account, "order": update.data}, separators=(",", ":"))


@dataclass(slots=True)
class PendingUpdate:
    """One order message on its way to SQS."""

    entry: BatchEntry
    account: str
    #: Calls it was part of that did not deliver it.
    failures: int = 0


@dataclass
class Settled:
    """What one call's result meant for its messages."""

    sent: int = 0
    retried: list[tuple[PendingUpdate, EntryFailure]] = field(default_factory=list)
    given_up: list[tuple[PendingUpdate, EntryFailure]] = field(default_factory=list)


class OrderUpdateQueue:
    """Messages waiting for SQS, in arrival order; at most ``capacity`` (in flight included).

    Kite sends each update on every connection of the account (up to three):
    an update whose identity (:attr:`OrderUpdate.update_key`, for the same
    account) is among the last ``remembered`` queued is a duplicate, not
    queued again. The store would keep it once anyway; this saves the
    messages, the invocations and the database round trips.
    """

    def __init__(
        self,
        capacity: int,
        *,
        decide: RetryDecision = retry_unless_sender_fault,
        remembered: int = 4096,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._decide = decide
        self._waiting: deque[PendingUpdate] = deque()
        self._in_flight: list[PendingUpdate] = []
        self._next_id = 0
        self._remembered = remembered
        #: Identities queued lately, and identities lost lately (see :meth:`offer`).
        self._recent: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._lost: OrderedDict[tuple[str, str], None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._waiting) + len(self._in_flight)

    @property
    def in_flight(self) -> int:
        """Messages in the call in flight."""
        return len(self._in_flight)

    def offer(self, account: str, update: OrderUpdate) -> str | None:
        """Queue one message; None when queued, :data:`DUPLICATE`, or why it was dropped.

        A copy of an update whose earlier copy was dropped is queued if there is
        room now; if not, it is a duplicate of that loss (each update is counted
        lost once, however many connections bring it).
        """
        key = update.update_key
        # Only a key naming the order identifies an update (see OrderUpdate.update_key).
        identity = (account, key) if update.order_id is not None else None
        if identity is not None and identity in self._recent:
            self._recent.move_to_end(identity)
            return DUPLICATE
        if len(self) >= self.capacity:
            return self._lost_now(identity, DROP_QUEUE_FULL)
        entry = BatchEntry(
            str(self._next_id), message_body(account, update), {UPDATE_KEY_ATTRIBUTE: key}
        )
        if entry.size > MAX_BATCH_BYTES:
            return self._lost_now(identity, DROP_TOO_LARGE)
        self._next_id += 1
        self._waiting.append(PendingUpdate(entry, account))
        if identity is not None:
            self._lost.pop(identity, None)
            self._remember(self._recent, identity)
        return None

    def _lost_now(self, identity: tuple[str, str] | None, reason: str) -> str:
        """``reason``, or :data:`DUPLICATE` when another copy was lost already."""
        if identity is not None:
            if identity in self._lost:
                return DUPLICATE
            self._remember(self._lost, identity)
        return reason

    def _remember(
        self, keys: OrderedDict[tuple[str, str], None], identity: tuple[str, str]
    ) -> None:
        keys[identity] = None
        if len(keys) > self._remembered:
            keys.popitem(last=False)

    def take(self) -> list[PendingUpdate]:
        """The next call's messages, oldest first (empty: nothing to send, or one in flight)."""
        if self._in_flight:
            return []
        batch: list[PendingUpdate] = []
        size = 0
        while self._waiting and len(batch) < MAX_BATCH_ENTRIES:
            nxt = self._waiting[0].entry.size
            if batch and size + nxt > MAX_BATCH_BYTES:
                break
            batch.append(self._waiting.popleft())
            size += nxt
        self._in_flight = batch
        return list(batch)

    def settle(self, failures: Mapping[str, EntryFailure]) -> Settled:
        """Apply the call in flight's per-entry result (``failures`` by entry id)."""
        settled = Settled()
        retry: list[PendingUpdate] = []
        for pending in self._in_flight:
            failure = failures.get(pending.entry.entry_id)
            if failure is None:
                settled.sent += 1
                continue
            pending.failures += 1
            if self._decide(failure):
                retry.append(pending)
                settled.retried.append((pending, failure))
            else:
                settled.given_up.append((pending, failure))
        self._in_flight = []
        self._waiting.extendleft(reversed(retry))  # first in line again, in their order
        return settled

    def fail_call(self, failure: EntryFailure) -> Settled:
        """The call in flight failed as a whole: ``failure`` is every entry's."""
        return self.settle({p.entry.entry_id: failure for p in self._in_flight})

    def requeue_in_flight(self) -> int:
        """Put the call in flight's messages back in front (its task died); how many."""
        back, self._in_flight = self._in_flight, []
        self._waiting.extendleft(reversed(back))
        return len(back)

    def clear(self) -> int:
        """Forget every message (the stop budget ran out); how many there were."""
        count = len(self)
        self._waiting.clear()
        self._in_flight = []
        return count


class BatchSender(Protocol):
    """One SendMessageBatch call (:class:`feed_container.sqs.SqsBatchSender`)."""

    async def send(self, entries: Sequence[BatchEntry]) -> dict[str, EntryFailure]:
        """Failed entries by id (empty: all sent); raises ``SqsError`` if the call failed."""
        ...


class OrderUpdateForwarder:
    """Order messages from every connection to SQS, without ever holding up the ticks."""

    def __init__(
        self,
        queue: OrderUpdateQueue,
        sender: BatchSender,
        metrics: Metrics,
        *,
        retry_delays: Delays,
        clock: Callable[[], float] = time.monotonic,
        log_interval: float = 10.0,
    ) -> None:
        self._queue = queue
        self._sender = sender
        self._metrics = metrics
        self._retry_delays = retry_delays
        self._clock = clock
        self._log = LogLimiter(log_interval, clock=clock)
        self._wake = asyncio.Event()
        #: Once stopping: the last moment a call may start.
        self._stop_at: float | None = None
        self._task: asyncio.Task[None] | None = None
        metrics.gauge_callback("feed_order_updates_pending", lambda: {(): float(len(queue))})

    @property
    def pending(self) -> int:
        """Messages not yet delivered (waiting and in flight)."""
        return len(self._queue)

    def submit(self, account: str, update: OrderUpdate) -> None:
        """Queue one order message for SQS; never waits, never raises."""
        reason = DROP_STOPPED if self._stop_at is not None else self._queue.offer(account, update)
        if reason is None:
            self._wake.set()
            return
        if reason == DUPLICATE:
            self._metrics.inc("feed_order_updates_duplicates_total")
            return
        self._dropped(reason, 1, account=account, order_id=update.order_id)

    def start(self, supervisor: Supervisor) -> asyncio.Task[None]:
        """Start the sending loop under ``supervisor`` (restarted if it ever raises)."""
        self._task = supervisor.spawn("order-updates", self.run)
        return self._task

    async def run(self) -> None:
        """Send until stopped and flushed, or the stop budget's last start has passed."""
        # A loop restarted after a failure resends what the failed one had in flight.
        self._queue.requeue_in_flight()
        delays: Iterator[float] | None = None
        while True:
            if self._stop_at is not None and (not self._queue or self._clock() > self._stop_at):
                return
            batch = self._queue.take()
            if not batch:
                self._wake.clear()
                await self._wake.wait()
                continue
            if await self._send(batch):
                delays = None
                continue
            if delays is None:
                delays = self._retry_delays()
            await asyncio.sleep(next(delays))

    async def _send(self, batch: list[PendingUpdate]) -> bool:
        """One call; True when every message was delivered or given up."""
        try:
            failures = await self._sender.send([p.entry for p in batch])
        except SqsError as exc:
            settled = self._queue.fail_call(exc.failure())
            outcome = "ambiguous" if exc.ambiguous else "error"
        else:
            settled = self._queue.settle(failures)
            outcome = "partial" if failures else "ok"
        self._metrics.inc("feed_order_updates_requests_total", outcome=outcome)
        if settled.sent:
            self._metrics.inc("feed_order_updates_forwarded_total", settled.sent)
        for _, failure in (*settled.retried, *settled.given_up):
            self._metrics.inc("feed_order_updates_failed_total", error=failure.code)
        if settled.retried:
            _, failure = settled.retried[0]
            held_back = self._log.allow(("failed", failure.code))
            if held_back is not None:
                log.warning(
                    "order updates not accepted by SQS; retrying",
                    extra={
                        "error": failure.code,
                        "whole_call": failure.whole_call,
                        "messages": len(settled.retried),
                        "pending": len(self._queue),
                        "held_back": held_back,
                    },
                )
        for pending, failure in settled.given_up:
            self._dropped(
                DROP_REFUSED,
                1,
                account=pending.account,
                error=failure.code,
                update_key=pending.entry.attributes.get(UPDATE_KEY_ATTRIBUTE),
            )
        return not settled.retried

    def _dropped(self, reason: str, count: int, **fields: Any) -> None:
        self._metrics.inc("feed_order_updates_dropped_total", count, reason=reason)
        held_back = self._log.allow(("dropped", reason))
        if held_back is not None:
            log.warning(
                "order updates dropped",
                extra={"reason": reason, "dropped": count, "held_back": held_back, **fields},
            )

    async def close(self, last_start: float, final: float) -> bool:
        """Flush: send what is queued, starting no call after ``last_start`` and returning by
        ``final`` (monotonic times); True when nothing was left unsent."""
        self._stop_at = last_start
        self._wake.set()
        task = self._task
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), max(0.0, final - self._clock()))
            except TimeoutError:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        left = self._queue.clear()
        if left:
            # Past the budget (SQS down or slow): the postbacks still carry the final states.
            self._metrics.inc("feed_order_updates_dropped_total", left, reason=DROP_STOPPED)
            log.error("order updates left unsent at stop", extra={"messages": left})
        return left == 0
