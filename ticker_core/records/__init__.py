"""The Kinesis record codec: KPL aggregation.

Every error raised on bad data derives from :class:`RecordError`.
"""

from ticker_core.records.errors import (
    DeaggregationError,
    DigestMismatchError,
    EventRecordError,
    InvalidKeyError,
    RecordDecodeError,
    RecordEncodeError,
    RecordError,
    RecordTooLargeError,
)
from ticker_core.records.kpl import (
    MAGIC,
    Aggregator,
    UserRecord,
    deaggregate,
    is_aggregated,
)
from ticker_core.records.limits import (
    DEFAULT_AGGREGATE_BYTES,
    MAX_PARTITION_KEY_CHARS,
    MAX_RECORD_BYTES,
    MAX_REQUEST_BYTES,
    MAX_REQUEST_RECORDS,
)

__all__ = [
    "DEFAULT_AGGREGATE_BYTES",
    "MAGIC",
    "MAX_PARTITION_KEY_CHARS",
    "MAX_RECORD_BYTES",
    "MAX_REQUEST_BYTES",
    "MAX_REQUEST_RECORDS",
    "Aggregator",
    "DeaggregationError",
    "DigestMismatchError",
    "EventRecordError",
    "InvalidKeyError",
    "RecordDecodeError",
    "RecordEncodeError",
    "RecordError",
    "RecordTooLargeError",
    "UserRecord",
    "deaggregate",
    "is_aggregated",
]
