"""The Kinesis record codec: KPL aggregation, batching, JSON user records, Lambda events.

Producer side (the feed container)::

    batcher = RecordBatcher(linger=0.2)
    data = encode_tick(tick, underlying="NIFTY", received_at=now_utc)
    if batcher.add("NIFTY", data, now=monotonic()):   # a full batch is waiting
        wake_sender()
    for batch in batcher.drain(monotonic()):          # in the sender task
        kinesis.put_records(StreamName=..., Records=batch.request_entries())

Consumer side (a Lambda)::

    for user in deaggregate_event(event):
        tick = decode_tick(user.data)                 # key writes on user.record_id

Every error raised on bad data derives from :class:`RecordError`.
"""

from ticker_core.records._jsonfmt import EARLIEST_INSTANT, LATEST_INSTANT
from ticker_core.records.batching import KinesisRecord, PutRecordsBatch, RecordBatcher
from ticker_core.records.errors import (
    DeaggregationError,
    DigestMismatchError,
    EventRecordError,
    FieldError,
    FieldRangeError,
    InvalidKeyError,
    RecordDecodeError,
    RecordEncodeError,
    RecordError,
    RecordTooLargeError,
    SchemaVersionError,
)
from ticker_core.records.greeks import GREEKS_SCHEMA, check_greeks, decode_greeks, encode_greeks
from ticker_core.records.kpl import (
    MAGIC,
    Aggregator,
    UserRecord,
    deaggregate,
    is_aggregated,
)
from ticker_core.records.lambda_event import (
    KinesisUserRecord,
    deaggregate_event,
    deaggregate_event_record,
    lambda_event_record,
)
from ticker_core.records.limits import (
    DEFAULT_AGGREGATE_BYTES,
    MAX_PARTITION_KEY_CHARS,
    MAX_RECORD_BYTES,
    MAX_REQUEST_BYTES,
    MAX_REQUEST_RECORDS,
)
from ticker_core.records.ticks import KITE_NEVER, TICK_SCHEMA, check_tick, decode_tick, encode_tick

__all__ = [
    "DEFAULT_AGGREGATE_BYTES",
    "EARLIEST_INSTANT",
    "GREEKS_SCHEMA",
    "KITE_NEVER",
    "LATEST_INSTANT",
    "MAGIC",
    "MAX_PARTITION_KEY_CHARS",
    "MAX_RECORD_BYTES",
    "MAX_REQUEST_BYTES",
    "MAX_REQUEST_RECORDS",
    "TICK_SCHEMA",
    "Aggregator",
    "DeaggregationError",
    "DigestMismatchError",
    "EventRecordError",
    "FieldError",
    "FieldRangeError",
    "InvalidKeyError",
    "KinesisRecord",
    "KinesisUserRecord",
    "PutRecordsBatch",
    "RecordBatcher",
    "RecordDecodeError",
    "RecordEncodeError",
    "RecordError",
    "RecordTooLargeError",
    "SchemaVersionError",
    "UserRecord",
    "check_greeks",
    "check_tick",
    "deaggregate",
    "deaggregate_event",
    "deaggregate_event_record",
    "decode_greeks",
    "decode_tick",
    "encode_greeks",
    "encode_tick",
    "is_aggregated",
    "lambda_event_record",
]
