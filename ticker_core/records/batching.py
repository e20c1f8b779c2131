"""Pack user records into PutRecords requests under every Kinesis limit.

Two levels, both incremental:

1. **Aggregation per partition key.** Each partition key (the underlying:
   NIFTY, BANKNIFTY, a stock symbol) has at most one open aggregated record.
   A user record joins its key's aggregate; when it would push the aggregate
   past ``aggregate_bytes`` the aggregate is sealed and a new one opened. The
   Kinesis record carrying an aggregate has that same partition key, so every
   user record lands on the shard its own key hashes to, and one shard sees a
   whole option chain.
2. **Packing into requests.** Sealed records are appended, in the order they
   were sealed, to the request being filled; a request is complete when the
   next record would exceed ``request_records`` entries or ``request_bytes``.

Order: the user records of one partition key come out in the order they were
added, within an aggregate and across the aggregates and requests that follow
it. Send requests in the order :meth:`RecordBatcher.drain` returns them, one
at a time per stream, for Kinesis to keep that order (PutRecords itself does
not promise order once an entry fails and is retried).

Time is injected: every call that needs it takes ``now`` (seconds from a
monotonic clock), so the batcher has no clock, no I/O and no locks. It is
meant to be owned by one task, an accumulator on the caller's event loop.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ticker_core.records.errors import RecordTooLargeError
from ticker_core.records.kpl import MAGIC, Aggregator, validate_partition_key
from ticker_core.records.limits import (
    DEFAULT_AGGREGATE_BYTES,
    MAX_RECORD_BYTES,
    MAX_REQUEST_BYTES,
    MAX_REQUEST_RECORDS,
)


@dataclass(frozen=True, slots=True)
class KinesisRecord:
    """One PutRecords request entry: a Kinesis record holding one or more user records."""

    partition_key: str
    data: bytes
    user_records: int
    """How many user records ``data`` carries (1 when it is not aggregated)."""
    user_bytes: int
    """Sum of those user records' data sizes (payload before aggregation framing)."""
    explicit_hash_key: str | None = None
    added_at: float | None = field(default=None, compare=False)
    """The batcher's ``now`` when its first (oldest) user record was added, for latency
    figures; None for records built elsewhere (read back from disk, say)."""
    size: int = field(init=False)
    """What Kinesis counts against its limits: data + UTF-8 partition key."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", len(self.data) + len(self.partition_key.encode("utf-8")))

    def request_entry(self) -> dict[str, str | bytes]:
        """This record as a PutRecords ``Records`` entry (boto3 shape)."""
        entry: dict[str, str | bytes] = {"Data": self.data, "PartitionKey": self.partition_key}
        if self.explicit_hash_key is not None:
            entry["ExplicitHashKey"] = self.explicit_hash_key
        return entry


@dataclass(frozen=True, slots=True)
class PutRecordsBatch:
    """The entries of one PutRecords request, within the request limits."""

    records: tuple[KinesisRecord, ...]
    size: int = field(init=False)
    """Sum of the entries' sizes (data + partition keys)."""
    user_records: int = field(init=False)
    user_bytes: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", sum(r.size for r in self.records))
        object.__setattr__(self, "user_records", sum(r.user_records for r in self.records))
        object.__setattr__(self, "user_bytes", sum(r.user_bytes for r in self.records))

    def __len__(self) -> int:
        return len(self.records)

    def request_entries(self) -> list[dict[str, str | bytes]]:
        """The ``Records`` argument of a PutRecords call."""
        return [r.request_entry() for r in self.records]

    def subset(self, indexes: Iterable[int]) -> PutRecordsBatch:
        """The entries at ``indexes``, in request order: what to resend after a partial failure.

        PutRecords answers entry by entry; resend only the entries whose result
        has an ``ErrorCode``. A subset of a valid batch is itself within limits.
        """
        return PutRecordsBatch(tuple(self.records[i] for i in sorted(set(indexes))))


@dataclass(slots=True)
class _OpenAggregate:
    aggregator: Aggregator
    opened_at: float
    """When its first (oldest) user record was added."""


class RecordBatcher:
    """Accumulates user records into aggregated records and PutRecords batches.

    Drive it from two sides:

    - the producer calls :meth:`add` per user record; it returns True when at
      least one complete batch is waiting, so the producer can wake the sender;
    - the sender calls :meth:`drain` with the current time to take complete
      batches plus anything whose oldest user record has waited ``linger``
      seconds, sends them in order, then sleeps until :meth:`next_deadline`
      or the producer's wake-up, whichever is first. :meth:`flush` takes
      everything, for shutdown.

    ``pending_user_records`` and ``pending_user_bytes`` count what has been
    added but not yet drained: the figures for backpressure water marks.

    Limits (all inclusive, all in Kinesis bytes: data + partition key):
    ``aggregate_bytes`` is the target size of one aggregated record (a user
    record too large to share one is sent on its own, up to the 1 MiB Kinesis
    limit); ``request_records`` and ``request_bytes`` bound one request.
    """

    def __init__(
        self,
        *,
        linger: float,
        aggregate_bytes: int = DEFAULT_AGGREGATE_BYTES,
        request_records: int = MAX_REQUEST_RECORDS,
        request_bytes: int = MAX_REQUEST_BYTES,
    ) -> None:
        """Validate the limits; ``linger`` is in seconds (0 sends on every drain)."""
        if not linger >= 0:
            raise ValueError(f"linger must be >= 0 seconds, got {linger}")
        if not 0 < aggregate_bytes <= MAX_RECORD_BYTES:
            raise ValueError(f"aggregate_bytes must be in (0, {MAX_RECORD_BYTES}]")
        if not 0 < request_records <= MAX_REQUEST_RECORDS:
            raise ValueError(f"request_records must be in (0, {MAX_REQUEST_RECORDS}]")
        # Any single record (up to 1 MiB) must fit a request on its own.
        if not MAX_RECORD_BYTES <= request_bytes <= MAX_REQUEST_BYTES:
            raise ValueError(f"request_bytes must be in [{MAX_RECORD_BYTES}, {MAX_REQUEST_BYTES}]")
        self._linger = linger
        self._aggregate_bytes = aggregate_bytes
        self._request_records = request_records
        self._request_bytes = request_bytes
        # Insertion order is opening order, so the first entry is the oldest:
        # drain() stops at the first aggregate that has not lingered enough.
        self._open: dict[str, _OpenAggregate] = {}
        self._filling: list[KinesisRecord] = []
        self._filling_bytes = 0
        self._filling_oldest = 0.0
        self._ready: deque[PutRecordsBatch] = deque()
        self._pending_records = 0
        self._pending_bytes = 0

    @property
    def pending_user_records(self) -> int:
        """User records added and not yet returned by :meth:`drain` or :meth:`flush`."""
        return self._pending_records

    @property
    def pending_user_bytes(self) -> int:
        """Their data bytes."""
        return self._pending_bytes

    @property
    def ready_batches(self) -> int:
        """Complete batches waiting for :meth:`drain`."""
        return len(self._ready)

    def add(self, partition_key: str, data: bytes, now: float) -> bool:
        """Append one user record under ``partition_key``; True when a complete batch is waiting.

        Raises :class:`RecordTooLargeError` when no Kinesis record can hold it
        and :class:`InvalidKeyError` for a partition key Kinesis rejects; either
        way nothing was added and nothing else changed, so the caller counts it
        and carries on.
        """
        current = self._open.get(partition_key)
        if current is None or not current.aggregator.try_add(partition_key, data):
            fresh = Aggregator(self._aggregate_bytes)
            if fresh.try_add(partition_key, data):  # validates the key before any change
                if current is not None:
                    self._seal(partition_key, current)
                self._open[partition_key] = _OpenAggregate(fresh, now)
            else:
                # Too large to share an aggregate: it travels alone, after what
                # its key already has open, so per-key order holds.
                alone = _lone_record(partition_key, data, now)
                if current is not None:
                    self._seal(partition_key, current)
                self._enqueue(alone, now)
        self._pending_records += 1
        self._pending_bytes += len(data)
        return bool(self._ready)

    def add_many(self, partition_key: str, datas: Sequence[bytes], now: float) -> bool:
        """:meth:`add` for several user records of one key, in order; much cheaper per record.

        Same result as calling :meth:`add` for each; on an error, the records
        before the failing one are added and the error is raised as :meth:`add` would.
        """
        at, count = 0, len(datas)
        while at < count:
            current = self._open.get(partition_key)
            if current is not None:
                added, payload = current.aggregator.extend(partition_key, datas, at)
                if added:
                    self._pending_records += added
                    self._pending_bytes += payload
                    at += added
                    continue
            self.add(partition_key, datas[at], now)
            at += 1
        return bool(self._ready)

    def drain(self, now: float) -> list[PutRecordsBatch]:
        """Complete batches, plus whatever holds a user record that has waited ``linger``.

        Aggregates whose first record was added at or before ``now - linger``
        are sealed; the partly filled batch is returned too if any of its
        records is that old. Returned batches are no longer pending.
        """
        cutoff = now - self._linger
        expired = []
        for key, aggregate in self._open.items():
            if aggregate.opened_at > cutoff:
                break
            expired.append((key, aggregate))
        for key, aggregate in expired:
            self._seal(key, aggregate)
        if self._filling and self._filling_oldest <= cutoff:
            self._complete_batch()
        return self._take_ready()

    def take_complete(self) -> list[PutRecordsBatch]:
        """Complete batches only (at a request limit); whatever is still filling stays open.

        For a sender that cannot take a batch yet (a call in flight): its
        records keep filling the open aggregates and the next batch.
        """
        return self._take_ready()

    def flush(self) -> list[PutRecordsBatch]:
        """Everything pending, as batches: for shutdown or an explicit flush."""
        for key, aggregate in list(self._open.items()):
            self._seal(key, aggregate)
        if self._filling:
            self._complete_batch()
        return self._take_ready()

    def next_deadline(self) -> float | None:
        """When the oldest pending user record will have waited ``linger`` (None if none pending).

        Complete batches are not counted: :meth:`add` reports them as they appear.
        """
        oldest = [self._filling_oldest] if self._filling else []
        first_open = next(iter(self._open.values()), None)  # opened first, so the oldest
        if first_open is not None:
            oldest.append(first_open.opened_at)
        return min(oldest) + self._linger if oldest else None

    def _seal(self, partition_key: str, aggregate: _OpenAggregate) -> None:
        del self._open[partition_key]
        agg = aggregate.aggregator
        data = agg.build(unwrap_single=True)
        record = KinesisRecord(
            partition_key, data, len(agg), agg.payload_bytes, added_at=aggregate.opened_at
        )
        self._enqueue(record, aggregate.opened_at)

    def _enqueue(self, record: KinesisRecord, oldest: float) -> None:
        # A batch at the record count is completed as it reaches it (below);
        # the byte limit is only known to be reached when a record does not fit.
        if self._filling and self._filling_bytes + record.size > self._request_bytes:
            self._complete_batch()
        if not self._filling:
            self._filling_oldest = oldest
        self._filling.append(record)
        self._filling_bytes += record.size
        self._filling_oldest = min(self._filling_oldest, oldest)
        if (
            len(self._filling) == self._request_records
            or self._filling_bytes == self._request_bytes
        ):
            self._complete_batch()

    def _complete_batch(self) -> None:
        self._ready.append(PutRecordsBatch(tuple(self._filling)))
        self._filling.clear()
        self._filling_bytes = 0

    def _take_ready(self) -> list[PutRecordsBatch]:
        batches = list(self._ready)
        self._ready.clear()
        for batch in batches:
            self._pending_records -= batch.user_records
            self._pending_bytes -= batch.user_bytes
        return batches


def _lone_record(partition_key: str, data: bytes, now: float) -> KinesisRecord:
    """A user record as a Kinesis record of its own, or :class:`RecordTooLargeError`."""
    key_bytes = len(validate_partition_key(partition_key))
    if not data.startswith(MAGIC):
        size = len(data) + key_bytes
        if size > MAX_RECORD_BYTES:
            raise RecordTooLargeError(partition_key, size, MAX_RECORD_BYTES)
        return KinesisRecord(partition_key, data, 1, len(data), added_at=now)
    # Sent bare, it would read as a (corrupt) aggregate: wrap it in one.
    aggregator = Aggregator(MAX_RECORD_BYTES)
    if not aggregator.try_add(partition_key, data):
        size = aggregator.size_with(partition_key, data)
        raise RecordTooLargeError(partition_key, size, MAX_RECORD_BYTES)
    return KinesisRecord(partition_key, aggregator.build(), 1, len(data), added_at=now)
