"""Typed errors of the record codec.

Every failure the codec can meet on data it did not produce (a corrupt
aggregate, a malformed Lambda event, a record that cannot fit Kinesis) is one
of these, so callers route on type (count, skip, alarm) and never on message
text. All derive from ``ValueError``: each is bad input, not a bug. Each class
names a stable ``reason`` code, what a consumer counts the record under.
"""

from __future__ import annotations

from typing import ClassVar


class RecordError(ValueError):
    """Base class of every error ``ticker_core.records`` raises on bad input."""

    reason: ClassVar[str] = "bad_record"
    """A stable code for metrics and quarantine, one per class."""


class DeaggregationError(RecordError):
    """Data starts with the KPL magic bytes but is not a valid aggregated record.

    Truncated or malformed protobuf, an index outside its key table, a missing
    required field, or a string that is not UTF-8.
    """

    reason = "corrupt_record"


class DigestMismatchError(DeaggregationError):
    """The MD5 digest at the end of an aggregated record does not match its body."""


class InvalidKeyError(RecordError):
    """A partition key or explicit hash key that Kinesis would reject."""


class RecordTooLargeError(RecordError):
    """A user record that no Kinesis record can hold.

    Raised before anything is changed, so the caller can count it, alarm and
    carry on; the record is never dropped silently.
    """

    def __init__(self, partition_key: str, size: int, limit: int) -> None:
        super().__init__(
            f"user record for partition key {partition_key!r} needs {size} bytes "
            f"in a Kinesis record; the limit is {limit}"
        )
        self.partition_key = partition_key
        self.size = size
        self.limit = limit


class RecordEncodeError(RecordError):
    """A tick or Greeks row that cannot become a schema-valid JSON user record."""


class RecordDecodeError(RecordError):
    """A user record that is not a JSON object of the expected schema version."""

    reason = "bad_json"


class SchemaVersionError(RecordDecodeError):
    """A JSON object whose ``schema`` names no version this decoder reads."""

    reason = "unknown_schema"


class FieldError(RecordDecodeError):
    """A field that breaks its schema's rule: missing, unknown, of the wrong type or value.

    ``field`` names it (dotted for nested fields, e.g. ``depth.buy``).
    """

    reason = "bad_field"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field} {message}")
        self.field = field


class FieldRangeError(FieldError):
    """A field of the right type whose value is outside the schema's bounds."""

    reason = "out_of_range"


class EventRecordError(RecordError):
    """A Lambda Kinesis event record that is malformed or holds a corrupt aggregate.

    ``shard_id`` and ``sequence_number`` locate the Kinesis record (None when
    the event itself lacks them), so the handler can log it and report or skip
    exactly that record; the underlying error is chained as ``__cause__``.
    """

    reason = "corrupt_record"

    def __init__(self, message: str, shard_id: str | None, sequence_number: str | None) -> None:
        super().__init__(f"{message} (shard {shard_id}, sequence number {sequence_number})")
        self.shard_id = shard_id
        self.sequence_number = sequence_number
