"""A Kinesis -> Lambda event source mapping, as Lambda runs one, on loopback.

Two layers:

- :class:`ShardState` is the pure state machine that decides what Lambda would
  invoke next on one shard and what a result means: batching (``BatchSize``,
  ``MaximumBatchingWindowInSeconds``, the 6 MB payload cap), partial batch
  responses (``ReportBatchItemFailures``: the checkpoint moves to just before
  the lowest failed sequence number and delivery resumes there), bisection
  (``BisectBatchOnFunctionError``: a failed batch is split in halves, which
  does not consume retries), ``MaximumRetryAttempts`` and
  ``MaximumRecordAgeInSeconds`` (then the batch's metadata goes to the
  on-failure destination and the shard moves on), and the iterator age. It
  owns no clock and no I/O, so every rule is unit-tested.
- :class:`EventSourceMapping` polls each shard with GetShardIterator/GetRecords
  (one thread per shard: Lambda processes a shard strictly in order, one batch
  at a time), builds events of exactly Lambda's shape, invokes the function and
  sends discarded batches' metadata to an SQS queue in Lambda's on-failure
  record format.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from infra.definitions import MAPPINGS_FILE, DefinitionError, load_mappings
from ticker_core.records import lambda_event_record

MAX_EVENT_BYTES = 6 * 1024 * 1024  # Lambda's synchronous invocation payload limit
RECORD_ENVELOPE_BYTES = 420  # the JSON around one record's base64 data, ARNs included
GET_RECORDS_LIMIT = 10_000
MIN_POLL_SPACING_S = 0.2  # Kinesis allows 5 GetRecords per second per shard

CONDITION_RETRIES_EXHAUSTED = "RetryAttemptsExhausted"
CONDITION_RECORD_AGE = "RecordAgeExceeded"


class MappingConfigError(ValueError):
    """An event source mapping setting is outside what Lambda accepts."""


@dataclass(frozen=True)
class MappingConfig:
    """The event source mapping settings Lambda has for Kinesis (same names, same defaults)."""

    batch_size: int = 100
    maximum_batching_window_s: float = 0.0
    maximum_retry_attempts: int = -1  # -1: until the record expires
    bisect_batch_on_function_error: bool = False
    report_batch_item_failures: bool = False
    maximum_record_age_s: float = -1  # -1: never discard for age
    # Not Lambda settings: how long to wait before retrying a failed batch.
    retry_base_delay_s: float = 0.25
    retry_max_delay_s: float = 4.0
    max_event_bytes: int = MAX_EVENT_BYTES

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= 10_000:
            raise MappingConfigError("batch_size must be in 1..10000")
        if not 0 <= self.maximum_batching_window_s <= 300:
            raise MappingConfigError("maximum_batching_window_s must be in 0..300")
        if not -1 <= self.maximum_retry_attempts <= 10_000:
            raise MappingConfigError("maximum_retry_attempts must be -1 or in 0..10000")
        if self.maximum_record_age_s != -1 and self.maximum_record_age_s <= 0:
            raise MappingConfigError("maximum_record_age_s must be -1 or positive")
        if self.retry_base_delay_s < 0 or self.retry_max_delay_s < self.retry_base_delay_s:
            raise MappingConfigError("retry delays must satisfy 0 <= base <= max")


@dataclass(frozen=True)
class MappingDefinition:
    """One deployed mapping as the emulator runs it: which stream feeds which function."""

    name: str
    stream: str
    function: str
    on_failure: str | None
    """The function whose on-failure queue gets a discarded batch (None: dropped)."""
    config: MappingConfig


def load_mapping_definitions(path: Path = MAPPINGS_FILE) -> list[MappingDefinition]:
    """The mappings the stack deploys (``lambdas/event_source_mappings.toml``), for the emulator.

    The emulator reads every shard in order from TRIM_HORIZON, one batch per shard at
    a time, by polling (an enhanced fan-out consumer differs only in latency and
    throughput), so a definition asking for anything else is refused rather than
    silently emulated differently.
    """
    try:
        deployed = load_mappings(path)
    except DefinitionError as exc:
        raise MappingConfigError(str(exc)) from exc
    definitions = []
    for name, entry in deployed.items():
        if entry.parallelization_factor != 1:
            raise MappingConfigError(f"mapping {name}: the emulator runs one batch per shard")
        if entry.starting_position != "TRIM_HORIZON":
            raise MappingConfigError(f"mapping {name}: the emulator starts at TRIM_HORIZON")
        config = MappingConfig(
            batch_size=entry.batch_size,
            maximum_batching_window_s=entry.maximum_batching_window_seconds,
            maximum_retry_attempts=entry.maximum_retry_attempts,
            bisect_batch_on_function_error=entry.bisect_batch_on_function_error,
            report_batch_item_failures=entry.report_batch_item_failures,
            maximum_record_age_s=entry.maximum_record_age_seconds,
        )
        definitions.append(
            MappingDefinition(name, entry.stream, entry.function, entry.on_failure, config)
        )
    return definitions


@dataclass(frozen=True, slots=True)
class StreamRecord:
    """One Kinesis record as GetRecords returns it (data decoded)."""

    sequence_number: str
    partition_key: str
    data: bytes
    arrival: float  # ApproximateArrivalTimestamp, seconds since the epoch

    @property
    def event_bytes(self) -> int:
        """About how many bytes this record adds to an invocation payload."""
        return (len(self.data) + 2) // 3 * 4 + len(self.partition_key) + RECORD_ENVELOPE_BYTES


@dataclass(frozen=True)
class Batch:
    """Consecutive records of one shard, delivered in one invocation."""

    records: tuple[StreamRecord, ...]
    retries: int = 0  # retries already spent on these records

    @property
    def first(self) -> StreamRecord:
        return self.records[0]

    @property
    def last(self) -> StreamRecord:
        return self.records[-1]

    def __len__(self) -> int:
        return len(self.records)


@dataclass(frozen=True)
class InvokeResult:
    """What an invocation returned: a payload, or a function error."""

    payload: Any = None
    error_type: str | None = None
    error_message: str | None = None

    @property
    def failed(self) -> bool:
        """Whether the function errored (exception, crash, timeout)."""
        return self.error_type is not None

    @classmethod
    def error(cls, error_type: str, message: str = "") -> InvokeResult:
        return cls(None, error_type, message)


@dataclass(frozen=True)
class DiscardedBatch:
    """Records Lambda gave up on; their metadata goes to the on-failure destination."""

    records: tuple[StreamRecord, ...]
    condition: str
    invoke_count: int
    function_error: str | None


class PartialResponseError(ValueError):
    """A partial batch response Lambda reads as a failure of the whole batch."""


def first_failed_index(payload: Any, batch: Batch) -> int | None:
    """Index in ``batch`` of the lowest reported failure; None when all succeeded.

    Lambda's rules: no response, a response without ``batchItemFailures``, or
    an empty or null list is complete success. An item whose
    ``itemIdentifier`` is missing, null, empty, not a string, or not a
    sequence number of this batch makes the whole batch a failure
    (:class:`PartialResponseError`): Lambda never skips records it cannot place.
    """
    if not isinstance(payload, Mapping):
        return None
    failures = payload.get("batchItemFailures")
    if failures is None:
        return None
    if not isinstance(failures, list):
        raise PartialResponseError("batchItemFailures is not a list")
    if not failures:
        return None
    positions = {record.sequence_number: n for n, record in enumerate(batch.records)}
    lowest: int | None = None
    for item in failures:
        identifier = item.get("itemIdentifier") if isinstance(item, Mapping) else None
        if not isinstance(identifier, str) or not identifier:
            raise PartialResponseError(f"bad itemIdentifier in {item!r}")
        if identifier not in positions:
            raise PartialResponseError(f"itemIdentifier {identifier} is not in the batch")
        n = positions[identifier]
        lowest = n if lowest is None else min(lowest, n)
    return lowest


@dataclass
class ShardStats:
    """Counters of one shard's mapping (what CloudWatch would show for it)."""

    invocations: int = 0
    function_errors: int = 0
    partial_failures: int = 0
    bisections: int = 0
    retries: int = 0
    records_delivered: int = 0  # records in invocations, counting re-deliveries
    records_succeeded: int = 0  # records checkpointed after a successful invocation
    records_discarded: int = 0
    batches_discarded: int = 0
    iterator_age_ms: float = 0.0  # of the last record of the last batch, when it was invoked
    max_iterator_age_ms: float = 0.0


class ShardState:
    """One shard's event source mapping state machine (no clock, no I/O).

    The poller offers records it read (in order), asks :meth:`next_batch` what
    to invoke, and reports the result with :meth:`complete`, which returns the
    batches to send to the on-failure destination. One batch is in flight at
    a time. Pending work is a stack of batches (bisected halves, retries of a
    remainder) that always precedes the records still buffered, so the shard
    is processed in order.
    """

    def __init__(self, config: MappingConfig, *, max_buffered: int | None = None) -> None:
        self.config = config
        self.max_buffered = max_buffered or max(2 * config.batch_size, GET_RECORDS_LIMIT)
        self.checkpoint: str | None = (
            None  # last sequence number done with (processed or discarded)
        )
        self.stats = ShardStats()
        self._buffer: deque[StreamRecord] = deque()
        self._buffer_since: float | None = None  # when the batching window opened
        self._stack: list[Batch] = []
        self._inflight: Batch | None = None
        self._not_before = 0.0

    # -- input -------------------------------------------------------------------

    @property
    def room(self) -> int:
        """How many more records the poller may offer now."""
        return max(0, self.max_buffered - len(self._buffer))

    def offer(self, records: Sequence[StreamRecord], now: float) -> None:
        """Records read from the shard, in order, after everything offered before."""
        if not records:
            return
        if not self._buffer:
            self._buffer_since = now
        self._buffer.extend(records)

    # -- decisions -----------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Records read but not yet done with (buffered, waiting for a retry, or in flight)."""
        queued = sum(len(b) for b in self._stack)
        return len(self._buffer) + queued + (len(self._inflight) if self._inflight else 0)

    @property
    def idle(self) -> bool:
        """Nothing buffered, nothing to retry, nothing in flight."""
        return self.pending == 0

    def next_batch(self, now: float) -> tuple[Batch | None, list[DiscardedBatch]]:
        """The batch to invoke now (or None), and batches discarded for their age."""
        discarded: list[DiscardedBatch] = []
        if self._inflight is not None or now < self._not_before:
            return None, discarded
        while True:
            batch = self._take(now)
            if batch is None:
                return None, discarded
            batch, expired = self._expire(batch, now)
            if expired is not None:
                discarded.append(expired)
                self._done(expired.records[-1])
            if batch is not None:
                self._inflight = batch
                self.stats.invocations += 1
                self.stats.records_delivered += len(batch)
                age = max(0.0, (now - batch.last.arrival) * 1000)
                self.stats.iterator_age_ms = age
                self.stats.max_iterator_age_ms = max(self.stats.max_iterator_age_ms, age)
                return batch, discarded

    def wake_at(self, now: float) -> float | None:
        """When :meth:`next_batch` may next have something to do (None: only after more input)."""
        if self._inflight is not None:
            return None
        if self._stack:
            return max(now, self._not_before)
        if not self._buffer:
            return None
        if self._batch_ready(now):
            return max(now, self._not_before)
        since = self._buffer_since if self._buffer_since is not None else now
        return max(since + self.config.maximum_batching_window_s, self._not_before)

    def _batch_ready(self, now: float) -> bool:
        if len(self._buffer) >= self.config.batch_size:
            return True
        size = sum(r.event_bytes for r in self._buffer)
        if size >= self.config.max_event_bytes:
            return True
        since = self._buffer_since if self._buffer_since is not None else now
        return now - since >= self.config.maximum_batching_window_s

    def _take(self, now: float) -> Batch | None:
        if self._stack:
            return self._stack.pop()
        if not self._buffer or not self._batch_ready(now):
            return None
        records: list[StreamRecord] = []
        size = 0
        while self._buffer and len(records) < self.config.batch_size:
            nxt = self._buffer[0].event_bytes
            if records and size + nxt > self.config.max_event_bytes:
                break
            records.append(self._buffer.popleft())
            size += nxt
        # What is left waits for a new window, opened now (as after any invocation).
        self._buffer_since = now if self._buffer else None
        return Batch(tuple(records))

    def _expire(self, batch: Batch, now: float) -> tuple[Batch | None, DiscardedBatch | None]:
        max_age = self.config.maximum_record_age_s
        if max_age < 0:
            return batch, None
        old = 0
        while old < len(batch) and now - batch.records[old].arrival > max_age:
            old += 1
        if old == 0:
            return batch, None
        expired = DiscardedBatch(batch.records[:old], CONDITION_RECORD_AGE, batch.retries, None)
        self.stats.records_discarded += old
        self.stats.batches_discarded += 1
        rest = Batch(batch.records[old:], batch.retries) if old < len(batch) else None
        return rest, expired

    # -- results ---------------------------------------------------------------------

    def complete(self, batch: Batch, result: InvokeResult, now: float) -> list[DiscardedBatch]:
        """Apply an invocation's result; returns what to send to the on-failure destination."""
        if batch is not self._inflight:
            raise ValueError("complete() must be given the batch next_batch() returned")
        self._inflight = None
        failed_from: int | None
        if result.failed:
            self.stats.function_errors += 1
            return self._function_error(batch, result, now)
        try:
            failed_from = (
                first_failed_index(result.payload, batch)
                if self.config.report_batch_item_failures
                else None
            )
        except PartialResponseError as exc:
            self.stats.function_errors += 1
            return self._function_error(batch, InvokeResult.error("InvalidResponse", str(exc)), now)
        if failed_from is None:
            self.stats.records_succeeded += len(batch)
            self._done(batch.last)
            return []
        # Partial success: everything before the lowest failure is done.
        self.stats.partial_failures += 1
        self.stats.records_succeeded += failed_from
        if failed_from:
            self._done(batch.records[failed_from - 1])
        rest = Batch(batch.records[failed_from:], batch.retries)
        return self._retry_or_discard(rest, "PartialBatchFailure", now)

    def _function_error(
        self, batch: Batch, result: InvokeResult, now: float
    ) -> list[DiscardedBatch]:
        if self.config.bisect_batch_on_function_error and len(batch) > 1:
            # Splitting does not consume the retry quota; the left half goes first.
            half = len(batch) // 2
            self.stats.bisections += 1
            self._stack.append(Batch(batch.records[half:], batch.retries))
            self._stack.append(Batch(batch.records[:half], batch.retries))
            return []
        return self._retry_or_discard(batch, result.error_type or "Unhandled", now)

    def _retry_or_discard(self, batch: Batch, error: str, now: float) -> list[DiscardedBatch]:
        limit = self.config.maximum_retry_attempts
        if 0 <= limit <= batch.retries:
            self.stats.records_discarded += len(batch)
            self.stats.batches_discarded += 1
            self._done(batch.last)
            return [
                DiscardedBatch(batch.records, CONDITION_RETRIES_EXHAUSTED, batch.retries + 1, error)
            ]
        retried = Batch(batch.records, batch.retries + 1)
        self.stats.retries += 1
        self._stack.append(retried)
        delay = self.config.retry_base_delay_s * 2 ** min(batch.retries, 16)
        self._not_before = now + min(delay, self.config.retry_max_delay_s)
        return []

    def _done(self, record: StreamRecord) -> None:
        self.checkpoint = record.sequence_number

    def caught_up(self) -> None:
        """The poller found the shard empty past what was read: the iterator age is 0."""
        if self.idle:
            self.stats.iterator_age_ms = 0.0


# -- Lambda's wire shapes --------------------------------------------------------------


def event_record(
    record: StreamRecord, *, shard_id: str, stream_arn: str, role_arn: str
) -> dict[str, Any]:
    """One ``Records[]`` entry of a Lambda Kinesis event (the one shape tests and events/ use)."""
    return lambda_event_record(
        record.data,
        partition_key=record.partition_key,
        sequence_number=record.sequence_number,
        shard_id=shard_id,
        stream_arn=stream_arn,
        arrival=round(record.arrival, 3),
        function_role_arn=role_arn,
    )


def _iso_millis(epoch: float) -> str:
    return (
        datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def on_failure_record(
    discarded: DiscardedBatch,
    *,
    shard_id: str,
    stream_arn: str,
    function_arn: str,
    now: float,
) -> dict[str, Any]:
    """The JSON document Lambda sends to a Kinesis mapping's on-failure destination."""
    first, last = discarded.records[0], discarded.records[-1]
    document: dict[str, Any] = {
        "requestContext": {
            "requestId": str(uuid.uuid4()),
            "functionArn": function_arn,
            "condition": discarded.condition,
            "approximateInvokeCount": discarded.invoke_count,
        },
        "version": "1.0",
        "timestamp": _iso_millis(now),
        "KinesisBatchInfo": {
            "shardId": shard_id,
            "startSequenceNumber": first.sequence_number,
            "endSequenceNumber": last.sequence_number,
            "approximateArrivalOfFirstRecord": _iso_millis(first.arrival),
            "approximateArrivalOfLastRecord": _iso_millis(last.arrival),
            "batchSize": len(discarded.records),
            "streamArn": stream_arn,
        },
    }
    if discarded.function_error is not None:
        document["responseContext"] = {
            "statusCode": 200,
            "executedVersion": "$LATEST",
            "functionError": discarded.function_error,
        }
    return document


# -- the poller ---------------------------------------------------------------------------


class Invoker(Protocol):
    """Synchronous invocation of one function (see :mod:`sandbox.lambda_runtime`)."""

    def __call__(self, event: dict[str, Any]) -> InvokeResult:
        """Run the function on ``event``; errors come back as a result, never raised."""
        ...


@dataclass(frozen=True)
class MappingTarget:
    """Where a mapping reads and what it invokes."""

    function_name: str
    function_arn: str
    stream_name: str
    stream_arn: str
    role_arn: str
    on_failure_queue_url: str | None = None


@dataclass
class ShardView:
    """A shard's state as the dashboard and the drain see it."""

    shard_id: str
    checkpoint: str | None
    pending: int
    idle: bool
    caught_up_at: float | None  # when a poll last found nothing new while idle
    stats: ShardStats


@dataclass
class MappingView:
    """The whole mapping: per-shard views plus totals."""

    name: str
    shards: list[ShardView] = field(default_factory=list)
    poll_errors: int = 0
    on_failure_sent: int = 0

    def total(self, name: str) -> float:
        """Sum of one :class:`ShardStats` counter over the shards."""
        return float(sum(getattr(s.stats, name) for s in self.shards))

    @property
    def iterator_age_ms(self) -> float:
        """The largest current iterator age over the shards."""
        return max((s.stats.iterator_age_ms for s in self.shards), default=0.0)

    def caught_up_since(self, since: float) -> bool:
        """Whether every shard was idle and found nothing new at some point after ``since``."""
        return bool(self.shards) and all(
            s.idle and s.caught_up_at is not None and s.caught_up_at >= since for s in self.shards
        )


class EventSourceMapping:
    """One (stream, function) mapping: a poller thread per shard."""

    def __init__(
        self,
        name: str,
        config: MappingConfig,
        target: MappingTarget,
        invoke: Invoker,
        client_factory: Callable[[str], Any],
        *,
        poll_interval_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.config = config
        self.target = target
        self._invoke = invoke
        self._client_factory = client_factory
        self._poll_interval_s = poll_interval_s
        self._clock = clock
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._states: dict[str, ShardState] = {}
        self._caught_up_at: dict[str, float | None] = {}
        self._poll_errors = 0
        self._on_failure_sent = 0
        self.on_failure_documents: list[dict[str, Any]] = []

    def start(self) -> None:
        """Discover the shards and start polling each from TRIM_HORIZON."""
        kinesis = self._client_factory("kinesis")
        shards = kinesis.list_shards(StreamName=self.target.stream_name)["Shards"]
        for shard in shards:
            shard_id = shard["ShardId"]
            self._states[shard_id] = ShardState(self.config)
            self._caught_up_at[shard_id] = None
            thread = threading.Thread(
                target=self._poll_shard,
                args=(shard_id,),
                name=f"esm-{self.name}-{shard_id}",
                daemon=True,
            )
            self._threads.append(thread)
            thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop polling; an invocation in flight finishes first."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def view(self) -> MappingView:
        """A consistent snapshot for the dashboard and the drain."""
        with self._lock:
            shards = [
                ShardView(
                    shard_id,
                    state.checkpoint,
                    state.pending,
                    state.idle,
                    self._caught_up_at[shard_id],
                    ShardStats(**vars(state.stats)),
                )
                for shard_id, state in sorted(self._states.items())
            ]
            return MappingView(self.name, shards, self._poll_errors, self._on_failure_sent)

    # -- per-shard loop -------------------------------------------------------------------

    def _poll_shard(self, shard_id: str) -> None:
        kinesis = self._client_factory("kinesis")
        sqs = self._client_factory("sqs") if self.target.on_failure_queue_url else None
        state = self._states[shard_id]
        iterator: str | None = None
        last_read: str | None = None
        next_poll = 0.0
        while not self._stop.is_set():
            now = self._clock()
            if now >= next_poll and state.room > 0:
                try:
                    if iterator is None:
                        iterator = self._iterator(kinesis, shard_id, last_read)
                    page = kinesis.get_records(
                        ShardIterator=iterator, Limit=min(GET_RECORDS_LIMIT, state.room)
                    )
                except Exception:  # a flaky endpoint: back off, re-open the iterator
                    with self._lock:
                        self._poll_errors += 1
                    iterator = None
                    next_poll = now + self._poll_interval_s
                else:
                    iterator = page.get("NextShardIterator")
                    records = [
                        StreamRecord(
                            r["SequenceNumber"],
                            r["PartitionKey"],
                            r["Data"],
                            r["ApproximateArrivalTimestamp"].timestamp(),
                        )
                        for r in page["Records"]
                    ]
                    if records:
                        last_read = records[-1].sequence_number
                    behind = int(page.get("MillisBehindLatest", 0) or 0)
                    more = bool(records) or behind > 0
                    next_poll = now + (MIN_POLL_SPACING_S if more else self._poll_interval_s)
                    with self._lock:
                        state.offer(records, now)
                        if not more and state.idle:
                            state.caught_up()
                            self._caught_up_at[shard_id] = now
            self._run_ready_batches(shard_id, state, sqs)
            wake = state.wake_at(self._clock())
            nap_until = next_poll if wake is None else min(next_poll, wake)
            self._stop.wait(max(0.0, min(nap_until - self._clock(), self._poll_interval_s)))

    def _iterator(self, kinesis: Any, shard_id: str, after: str | None) -> str:
        if after is None:
            kwargs: dict[str, str] = {"ShardIteratorType": "TRIM_HORIZON"}
        else:
            kwargs = {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "StartingSequenceNumber": after}
        response = kinesis.get_shard_iterator(
            StreamName=self.target.stream_name, ShardId=shard_id, **kwargs
        )
        return str(response["ShardIterator"])

    def _run_ready_batches(self, shard_id: str, state: ShardState, sqs: Any) -> None:
        while not self._stop.is_set():
            with self._lock:
                batch, discarded = state.next_batch(self._clock())
            self._send_on_failure(shard_id, discarded, sqs)
            if batch is None:
                return
            event = {
                "Records": [
                    event_record(
                        r,
                        shard_id=shard_id,
                        stream_arn=self.target.stream_arn,
                        role_arn=self.target.role_arn,
                    )
                    for r in batch.records
                ]
            }
            result = self._invoke(event)
            with self._lock:
                discarded = state.complete(batch, result, self._clock())
                self._caught_up_at[shard_id] = None
            self._send_on_failure(shard_id, discarded, sqs)

    def _send_on_failure(self, shard_id: str, discarded: list[DiscardedBatch], sqs: Any) -> None:
        for item in discarded:
            document = on_failure_record(
                item,
                shard_id=shard_id,
                stream_arn=self.target.stream_arn,
                function_arn=self.target.function_arn,
                now=self._clock(),
            )
            with self._lock:
                self.on_failure_documents.append(document)
            if sqs is None:
                continue
            # Lambda keeps trying a destination; a sandbox run is short, so a few tries do.
            for attempt in range(5):
                try:
                    sqs.send_message(
                        QueueUrl=self.target.on_failure_queue_url, MessageBody=json.dumps(document)
                    )
                except Exception:
                    self._stop.wait(0.2 * (attempt + 1))
                    continue
                with self._lock:
                    self._on_failure_sent += 1
                break
