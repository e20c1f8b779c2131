"""Lambda Kinesis events: user records out of event records, each with a unique identity."""

from __future__ import annotations

from typing import Any

import pytest
from aws_kinesis_agg.aggregator import AggRecord

from ticker_core.records import (
    DigestMismatchError,
    EventRecordError,
    KinesisUserRecord,
    RecordBatcher,
    deaggregate_event,
    deaggregate_event_record,
    lambda_event_record,
)

SHARD = "shardId-000000000003"
ARRIVAL = 1764215103.512


def event_record(data: bytes, sequence_number: str, partition_key: str = "NIFTY") -> dict[str, Any]:
    """One Records[] entry as Lambda delivers it from a Kinesis stream."""
    return lambda_event_record(
        data,
        partition_key=partition_key,
        sequence_number=sequence_number,
        shard_id=SHARD,
        stream_arn="arn:aws:kinesis:ap-south-1:123456789012:stream/ticks",
        arrival=ARRIVAL,
        function_role_arn="arn:aws:iam::123456789012:role/lambda-role",
    )


def test_a_plain_record_is_one_user_record_with_sub_sequence_zero() -> None:
    # Given a record that was not aggregated
    record = event_record(b'{"schema":"tick/1"}', "4959")
    # When de-aggregated
    (user,) = deaggregate_event_record(record)
    # Then it carries its place on the stream, sub-sequence 0
    assert user == KinesisUserRecord(
        shard_id=SHARD,
        sequence_number="4959",
        sub_sequence_number=0,
        partition_key="NIFTY",
        data=b'{"schema":"tick/1"}',
        approximate_arrival_timestamp=ARRIVAL,
        aggregated=False,
    )
    assert user.record_id == (SHARD, "4959", 0)
    assert user.source == {"shard_id": SHARD, "sequence_number": "4959", "sub_sequence_number": 0}


def test_an_aggregated_record_yields_its_user_records_numbered_in_order() -> None:
    # Given an aggregated record the batcher wrote
    batcher = RecordBatcher(linger=0)
    for i in range(4):
        batcher.add("BANKNIFTY", b"tick %d" % i, now=0.0)
    (batch,) = batcher.drain(now=0.0)
    (entry,) = batch.records
    # When Lambda delivers it
    users = deaggregate_event_record(event_record(entry.data, "777", entry.partition_key))
    # Then each user record has the carrying record's sequence number and its own sub-sequence
    assert [u.data for u in users] == [b"tick %d" % i for i in range(4)]
    assert [u.record_id for u in users] == [(SHARD, "777", i) for i in range(4)]
    assert all(u.aggregated and u.partition_key == "BANKNIFTY" for u in users)


def test_records_aggregated_by_aws_kinesis_agg_keep_their_own_keys() -> None:
    # Given a foreign aggregate mixing partition keys and an explicit hash key
    aggregate = AggRecord()
    aggregate.add_user_record("NIFTY", b"a")
    aggregate.add_user_record("SBIN", b"b", "42")
    _, _, data = aggregate.get_contents()
    # When delivered and de-aggregated
    users = deaggregate_event_record(event_record(data, "9"))
    # Then each user record keeps the keys it was written with
    assert [(u.partition_key, u.explicit_hash_key, u.data) for u in users] == [
        ("NIFTY", None, b"a"),
        ("SBIN", "42", b"b"),
    ]


def test_every_user_record_of_an_event_has_a_distinct_identity() -> None:
    # Given an event with plain and aggregated records, redelivered once
    batcher = RecordBatcher(linger=0)
    for i in range(3):
        batcher.add("NIFTY", b"%d" % i, now=0.0)
    (batch,) = batcher.drain(now=0.0)
    records = [event_record(batch.records[0].data, "100"), event_record(b"plain", "101")]
    event = {"Records": records + records}
    # When de-aggregated
    users = list(deaggregate_event(event))
    # Then identities are unique within a delivery and equal across redeliveries,
    # which is what makes downstream writes idempotent
    first, second = users[:4], users[4:]
    assert len({u.record_id for u in first}) == 4
    assert [u.record_id for u in first] == [u.record_id for u in second]


def test_a_corrupt_aggregate_is_an_event_error_naming_the_record() -> None:
    # Given an aggregated record damaged in its digest
    batcher = RecordBatcher(linger=0)
    batcher.add("NIFTY", b"a", now=0.0)
    batcher.add("NIFTY", b"b", now=0.0)
    data = bytearray(batcher.drain(now=0.0)[0].records[0].data)
    data[-1] ^= 0xFF
    # When de-aggregated, Then the error locates the record and chains the cause
    with pytest.raises(EventRecordError) as caught:
        deaggregate_event_record(event_record(bytes(data), "555"))
    assert (caught.value.shard_id, caught.value.sequence_number) == (SHARD, "555")
    assert isinstance(caught.value.__cause__, DigestMismatchError)


def malformed(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    record = event_record(b"x", "321")
    target = record
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return record


@pytest.mark.parametrize(
    ("record", "shard", "sequence"),
    [
        (malformed(("kinesis",), KeyError), SHARD, "321"),
        (malformed(("kinesis", "data"), "not base64!"), SHARD, "321"),
        (malformed(("kinesis", "data"), None), SHARD, "321"),
        (malformed(("kinesis", "partitionKey"), KeyError), SHARD, "321"),
        (malformed(("kinesis", "approximateArrivalTimestamp"), KeyError), SHARD, "321"),
        (malformed(("kinesis", "approximateArrivalTimestamp"), "soon"), SHARD, "321"),
        (malformed(("kinesis", "partitionKey"), 7), SHARD, "321"),
        (malformed(("kinesis", "sequenceNumber"), 321), SHARD, None),
        (malformed(("eventID",), KeyError), None, "321"),
        (malformed(("eventID",), "no-colon"), None, "321"),
        (malformed(("eventID",), ":321"), None, "321"),
        ("not a record", None, None),
    ],
)
def test_a_malformed_event_record_is_a_typed_error(
    record: Any, shard: str | None, sequence: str | None
) -> None:
    with pytest.raises(EventRecordError) as caught:
        deaggregate_event_record(record)
    assert (caught.value.shard_id, caught.value.sequence_number) == (shard, sequence)


def test_an_event_without_records_is_a_typed_error() -> None:
    with pytest.raises(EventRecordError, match="no Records"):
        list(deaggregate_event({"records": []}))
