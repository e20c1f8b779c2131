"""An SQS -> Lambda event source mapping, as Lambda runs one, on loopback.

:mod:`sandbox.esm` emulates the Kinesis mappings; an SQS queue is read by
different rules, emulated here for a standard queue:

- **Batches.** Pollers long-poll ``ReceiveMessage`` and invoke the function
  with up to ``BatchSize`` messages, waiting up to
  ``MaximumBatchingWindowInSeconds`` for more (0: as soon as one receive
  returned something).
- **Visibility.** A received batch is hidden for the queue's visibility
  timeout while the function runs; Lambda never changes it.
- **Success** deletes the batch's messages (``DeleteMessageBatch``).
- **Function error** (an exception, a crash, a timeout) deletes nothing: the
  messages reappear when their visibility timeout ends and are received again.
- **Partial batch responses** (``ReportBatchItemFailures``): the messages
  named in ``batchItemFailures`` (by ``itemIdentifier`` = ``messageId``) are
  kept for redelivery, the rest deleted. No response, no list, or an empty
  or null list is complete success; a list that is not one, or an item
  without a string identifier of this batch, fails the whole batch. Without
  the setting, a returned list is ignored.
- **Redrive.** Once a message has been received ``maxReceiveCount`` times,
  SQS itself moves it to the dead-letter queue (the queue's
  ``RedrivePolicy``; moto does it as SQS does, on the next receive), not the
  mapping.

:class:`SqsMappingConfig`, :func:`sqs_event_record` and :func:`settle` are
pure and unit-tested; :class:`SqsEventSourceMapping` runs the pollers.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sandbox.esm import (
    Invoker,
    InvokeResult,
    MappingConfigError,
    PartialResponseError,
    join_threads,
)

MAX_RECEIVE = 10  # ReceiveMessage returns at most ten messages per call
LONG_POLL_S = 1  # a poller's wait when the queue is empty (short: stopping stays prompt)


@dataclass(frozen=True)
class SqsMappingConfig:
    """The settings Lambda has for an SQS mapping (same names, same meaning)."""

    batch_size: int = 10
    maximum_batching_window_s: int = 0
    report_batch_item_failures: bool = False
    #: Not a Lambda setting: concurrent pollers (Lambda starts five and scales with the
    #: backlog, up to the mapping's MaximumConcurrency).
    pollers: int = 1

    def __post_init__(self) -> None:
        # Lambda takes up to 10,000 with a batching window; the emulator's batches are
        # one or more receives of ten, and no deployment here asks for more than ten.
        if not 1 <= self.batch_size <= MAX_RECEIVE:
            raise MappingConfigError(f"batch_size must be in 1..{MAX_RECEIVE} in the emulator")
        if not 0 <= self.maximum_batching_window_s <= 300:
            raise MappingConfigError("maximum_batching_window_s must be in 0..300")
        if self.pollers < 1:
            raise MappingConfigError("pollers must be at least 1")


def sqs_event_record(message: Mapping[str, Any], *, queue_arn: str, region: str) -> dict[str, Any]:
    """One ``Records[]`` entry of a Lambda SQS event, from a ``ReceiveMessage`` message."""
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": dict(message.get("Attributes") or {}),
        "messageAttributes": {
            name: {
                "stringValue": value.get("StringValue"),
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": value["DataType"],
            }
            for name, value in (message.get("MessageAttributes") or {}).items()
        },
        "md5OfBody": message.get("MD5OfBody", ""),
        **(
            {"md5OfMessageAttributes": message["MD5OfMessageAttributes"]}
            if "MD5OfMessageAttributes" in message
            else {}
        ),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }


def failed_message_ids(payload: Any, message_ids: Sequence[str]) -> set[str]:
    """The messages a partial batch response names; raises :class:`PartialResponseError`
    when Lambda would read the response as a failure of the whole batch."""
    if not isinstance(payload, Mapping):
        return set()
    failures = payload.get("batchItemFailures")
    if failures is None:
        return set()
    if not isinstance(failures, list):
        raise PartialResponseError("batchItemFailures is not a list")
    batch = set(message_ids)
    failed = set()
    for item in failures:
        identifier = item.get("itemIdentifier") if isinstance(item, Mapping) else None
        if not isinstance(identifier, str) or not identifier:
            raise PartialResponseError(f"bad itemIdentifier in {item!r}")
        if identifier not in batch:
            raise PartialResponseError(f"itemIdentifier {identifier} is not in the batch")
        failed.add(identifier)
    return failed


@dataclass(frozen=True)
class Settlement:
    """What an invocation's result means for its batch."""

    #: Messages to delete (done with).
    delete: tuple[str, ...]
    #: Messages left on the queue, to reappear after their visibility timeout.
    keep: tuple[str, ...]
    #: Why the whole batch failed (a function error or an invalid response), if it did.
    error: str | None = None


def settle(
    message_ids: Sequence[str], result: InvokeResult, config: SqsMappingConfig
) -> Settlement:
    """Lambda's reading of ``result`` for a batch of ``message_ids`` (in batch order)."""
    if result.failed:
        return Settlement((), tuple(message_ids), result.error_type or "Unhandled")
    if not config.report_batch_item_failures:
        return Settlement(tuple(message_ids), ())
    try:
        failed = failed_message_ids(result.payload, message_ids)
    except PartialResponseError as exc:
        return Settlement((), tuple(message_ids), f"InvalidResponse: {exc}")
    return Settlement(
        tuple(m for m in message_ids if m not in failed),
        tuple(m for m in message_ids if m in failed),
    )


@dataclass
class SqsMappingStats:
    """Counters of one mapping (what CloudWatch would show for it)."""

    receives: int = 0
    messages_received: int = 0  # re-deliveries included
    invocations: int = 0
    function_errors: int = 0  # whole batches failed (errors and invalid responses)
    partial_failures: int = 0
    messages_deleted: int = 0
    messages_kept: int = 0  # left for redelivery
    poll_errors: int = 0
    delete_errors: int = 0
    in_flight: int = 0  # messages received and not yet settled
    last_error: str | None = None


@dataclass(frozen=True)
class SqsMappingTarget:
    """Where a mapping reads."""

    queue_url: str
    queue_arn: str
    region: str


class SqsEventSourceMapping:
    """One (queue, function) mapping: ``config.pollers`` poller threads."""

    def __init__(
        self,
        name: str,
        config: SqsMappingConfig,
        target: SqsMappingTarget,
        invoke: Invoker,
        client_factory: Callable[[str], Any],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.config = config
        self.target = target
        self._invoke = invoke
        self._client_factory = client_factory
        self._clock = clock
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._stats = SqsMappingStats()

    def start(self) -> None:
        """Start polling."""
        for n in range(self.config.pollers):
            thread = threading.Thread(
                target=self._poll, name=f"sqs-esm-{self.name}-{n}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop polling; an invocation in flight finishes (and is settled) first."""
        self._stop.set()
        join_threads(self._threads, timeout)

    def stats(self) -> SqsMappingStats:
        """A copy of the counters."""
        with self._lock:
            return replace(self._stats)

    def _count(self, **changes: int) -> None:
        with self._lock:
            for name, delta in changes.items():
                setattr(self._stats, name, getattr(self._stats, name) + delta)

    # -- a poller ----------------------------------------------------------------------------

    def _poll(self) -> None:
        sqs = self._client_factory("sqs")
        while not self._stop.is_set():
            messages = self._gather(sqs)
            if messages:
                self._run(sqs, messages)

    def _gather(self, sqs: Any) -> list[dict[str, Any]]:
        """One batch: receive until it is full, the window has passed, or (no window) one
        receive returned something."""
        config = self.config
        window_ends = self._clock() + config.maximum_batching_window_s
        batch: list[dict[str, Any]] = []
        while not self._stop.is_set() and len(batch) < config.batch_size:
            left = window_ends - self._clock()
            if batch and left <= 0:
                break
            wait = LONG_POLL_S if not batch else min(LONG_POLL_S, math.ceil(left))
            try:
                received = sqs.receive_message(
                    QueueUrl=self.target.queue_url,
                    MaxNumberOfMessages=config.batch_size - len(batch),
                    WaitTimeSeconds=wait,
                    MessageSystemAttributeNames=["All"],
                    MessageAttributeNames=["All"],
                ).get("Messages", [])
            except Exception as exc:  # a flaky endpoint: count, back off, poll again
                with self._lock:
                    self._stats.poll_errors += 1
                    self._stats.last_error = f"ReceiveMessage: {type(exc).__name__}"
                self._stop.wait(LONG_POLL_S)
                continue
            self._count(receives=1, messages_received=len(received), in_flight=len(received))
            batch += received
            if batch and config.maximum_batching_window_s == 0:
                break
        return batch

    def _run(self, sqs: Any, messages: list[dict[str, Any]]) -> None:
        target = self.target
        event = {
            "Records": [
                sqs_event_record(m, queue_arn=target.queue_arn, region=target.region)
                for m in messages
            ]
        }
        ids = [m["MessageId"] for m in messages]
        result = self._invoke(event)
        settlement = settle(ids, result, self.config)
        receipts = {m["MessageId"]: m["ReceiptHandle"] for m in messages}
        deleted = self._delete(sqs, [(i, receipts[i]) for i in settlement.delete])
        with self._lock:
            stats = self._stats
            stats.invocations += 1
            stats.in_flight -= len(messages)
            stats.messages_deleted += deleted
            stats.messages_kept += len(settlement.keep)
            if settlement.error is not None:
                stats.function_errors += 1
                stats.last_error = settlement.error[:300]
            elif settlement.keep:
                stats.partial_failures += 1

    def _delete(self, sqs: Any, receipts: list[tuple[str, str]]) -> int:
        """Delete the done messages, ten per call; a few tries each (Lambda keeps trying
        too; a message not deleted is delivered again, which the function must bear)."""
        deleted = 0
        for start in range(0, len(receipts), MAX_RECEIVE):
            entries = [
                {"Id": str(n), "ReceiptHandle": handle}
                for n, (_, handle) in enumerate(receipts[start : start + MAX_RECEIVE])
            ]
            for attempt in range(3):
                try:
                    answer = sqs.delete_message_batch(
                        QueueUrl=self.target.queue_url, Entries=entries
                    )
                except Exception:  # a flaky endpoint: try again
                    answer = {}
                deleted += len(answer.get("Successful", []))
                failed = {f["Id"] for f in answer.get("Failed", [])}
                entries = [e for e in entries if e["Id"] in failed] if answer else entries
                if not entries:
                    break
                self._count(delete_errors=1)
                self._stop.wait(0.2 * (attempt + 1))
        return deleted
