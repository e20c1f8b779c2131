"""User records out of a Lambda Kinesis event, each with its unique identity.

Lambda hands a function Kinesis records exactly as they sit on the stream: an
aggregated record arrives as one event record, base64 encoded, and is not
de-aggregated. These helpers de-aggregate and label every user record with
(shard id, sequence number, sub-sequence number): the sequence number of the
Kinesis record that carried it and its position inside that record (0 for a
record that was not aggregated), as KCL numbers them. The triple is unique
on a stream and stable across redeliveries, so a consumer that keys its
writes on it makes replays idempotent.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from ticker_core.records.errors import DeaggregationError, EventRecordError
from ticker_core.records.kpl import deaggregate, is_aggregated

SEQUENCE_NUMBER: Final = re.compile(r"[0-9]{1,128}")
"""A Kinesis sequence number: a decimal string of up to 128 digits."""

SHARD_ID: Final = re.compile(r"[a-zA-Z0-9_.-]{1,128}")
"""A Kinesis shard id (``shardId-000000000000``), as the Kinesis API constrains it."""


@dataclass(frozen=True, slots=True)
class KinesisUserRecord:
    """One user record delivered to a Lambda, and where it sits on the stream."""

    shard_id: str
    sequence_number: str
    """Of the Kinesis record that carried it (what Lambda's batchItemFailures names)."""
    sub_sequence_number: int
    """Its index in that record's aggregate; 0 when the record was not aggregated."""
    partition_key: str
    data: bytes
    approximate_arrival_timestamp: float
    """When Kinesis accepted the carrying record, in seconds since the epoch."""
    aggregated: bool
    """Whether it came out of a KPL aggregated record."""
    explicit_hash_key: str | None = None

    @property
    def record_id(self) -> tuple[str, str, int]:
        """(shard id, sequence number, sub-sequence number): unique per user record on a stream."""
        return (self.shard_id, self.sequence_number, self.sub_sequence_number)

    @property
    def source(self) -> dict[str, str | int]:
        """The identity as a ``source`` object of a Greeks record."""
        return {
            "shard_id": self.shard_id,
            "sequence_number": self.sequence_number,
            "sub_sequence_number": self.sub_sequence_number,
        }


def deaggregate_event_record(record: Mapping[str, Any]) -> list[KinesisUserRecord]:
    """The user records of one ``Records[]`` entry of a Lambda Kinesis event, in order.

    Raises :class:`EventRecordError` (carrying shard id and sequence number
    where the event has them) when the entry is malformed or holds a corrupt
    aggregate; the cause is chained. Nothing is retried by raising again: the
    handler should count it and report or skip that one Kinesis record.
    """
    shard_id, sequence_number = _location(record)
    try:
        kinesis = record["kinesis"]
        sequence_number = kinesis["sequenceNumber"]
        partition_key = kinesis["partitionKey"]
        arrival = float(kinesis["approximateArrivalTimestamp"])
        data = base64.b64decode(kinesis["data"], validate=True)
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        message = f"malformed Kinesis event record: {exc!r}"
        raise EventRecordError(message, shard_id, sequence_number) from exc
    if shard_id is None:
        raise EventRecordError("eventID names no shard", None, sequence_number)
    if not isinstance(sequence_number, str) or not SEQUENCE_NUMBER.fullmatch(sequence_number):
        raise EventRecordError("sequence number is not 1 to 128 digits", shard_id, None)
    if not SHARD_ID.fullmatch(shard_id):
        raise EventRecordError("eventID names no valid shard id", None, sequence_number)
    if not isinstance(partition_key, str):
        raise EventRecordError("partition key is not a string", shard_id, sequence_number)
    aggregated = is_aggregated(data)
    try:
        users = deaggregate(data, partition_key)
    except DeaggregationError as exc:
        message = f"corrupt aggregated record: {exc}"
        raise EventRecordError(message, shard_id, sequence_number) from exc
    return [
        KinesisUserRecord(
            shard_id=shard_id,
            sequence_number=sequence_number,
            sub_sequence_number=index,
            partition_key=user.partition_key,
            data=user.data,
            approximate_arrival_timestamp=arrival,
            aggregated=aggregated,
            explicit_hash_key=user.explicit_hash_key,
        )
        for index, user in enumerate(users)
    ]


def deaggregate_event(event: Mapping[str, Any]) -> Iterator[KinesisUserRecord]:
    """Every user record of a Lambda Kinesis event, in delivery order.

    Stops at the first bad record with :class:`EventRecordError`; a handler
    that wants to skip bad records calls :func:`deaggregate_event_record` per
    entry instead.
    """
    records = event.get("Records")
    if not isinstance(records, list):
        raise EventRecordError("event has no Records list", None, None)
    for record in records:
        yield from deaggregate_event_record(record)


def lambda_event_record(
    data: bytes,
    *,
    partition_key: str,
    sequence_number: str,
    shard_id: str,
    stream_arn: str,
    arrival: float,
    function_role_arn: str = "arn:aws:iam::123456789012:role/stream-consumer",
) -> dict[str, Any]:
    """One ``Records[]`` entry exactly as Lambda's event source mapping delivers it.

    The inverse of :func:`deaggregate_event_record`'s input side: ``data`` is
    the Kinesis record's bytes as stored (an aggregate stays aggregated).
    Used by the sandbox's event-source-mapping emulator, the samples in
    ``events/`` and tests, so all of them share Lambda's one shape.
    """
    region = stream_arn.split(":")[3] if stream_arn.count(":") >= 5 else ""
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": partition_key,
            "sequenceNumber": sequence_number,
            "data": base64.b64encode(data).decode(),
            "approximateArrivalTimestamp": arrival,
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{shard_id}:{sequence_number}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": function_role_arn,
        "awsRegion": region,
        "eventSourceARN": stream_arn,
    }


def _location(record: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(shard id, sequence number) as far as the record has them, for error reports."""
    event_id = record.get("eventID") if isinstance(record, Mapping) else None
    # eventID is "shardId-000000000000:<sequence number>".
    if not isinstance(event_id, str) or ":" not in event_id:
        return None, None
    shard_id, _, sequence_number = event_id.partition(":")
    return (shard_id or None), (sequence_number or None)
