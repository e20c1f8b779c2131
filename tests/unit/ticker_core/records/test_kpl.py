"""KPL aggregated records: our aggregator and de-aggregator, checked against aws-kinesis-agg."""

from __future__ import annotations

import base64
import hashlib

import pytest

# The aggregator module puts its folder on sys.path, which its generated
# messages_pb2 needs to import config_pb2: take messages_pb2 from it.
from aws_kinesis_agg.aggregator import AggRecord, messages_pb2
from aws_kinesis_agg.deaggregator import deaggregate_records
from hypothesis import given
from hypothesis import strategies as st

from ticker_core.records import (
    MAGIC,
    MAX_RECORD_BYTES,
    Aggregator,
    DeaggregationError,
    DigestMismatchError,
    InvalidKeyError,
    UserRecord,
    deaggregate,
    is_aggregated,
)

partition_keys = st.text(min_size=1, max_size=8)
ascii_keys = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ&-", min_size=1, max_size=12)
hash_keys = st.integers(min_value=0, max_value=2**128 - 1).map(str)
payloads = st.binary(max_size=300)


def wrap(body: bytes) -> bytes:
    """An aggregated record around an arbitrary protobuf body, with a correct digest."""
    return MAGIC + body + hashlib.md5(body).digest()


def lambda_record(data: bytes, partition_key: str = "NIFTY") -> dict[str, object]:
    # aws-kinesis-agg silently yields nothing for a record lacking
    # approximateArrivalTimestamp, so every record here has one.
    return {
        "eventID": "shardId-000000000000:1",
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": partition_key,
            "sequenceNumber": "1",
            "approximateArrivalTimestamp": 1764300000.0,
            "data": base64.b64encode(data).decode(),
        },
    }


def aggregate(records: list[tuple[str, bytes, str | None]]) -> Aggregator:
    agg = Aggregator()
    for pk, data, ehk in records:
        assert agg.try_add(pk, data, ehk)
    return agg


@given(st.lists(st.tuples(partition_keys, payloads, st.none() | hash_keys), max_size=40))
def test_round_trip_preserves_keys_data_and_order(
    records: list[tuple[str, bytes, str | None]],
) -> None:
    # Given any user records, with any mix of partition and explicit hash keys
    agg = aggregate(records)
    # When the aggregate is built and read back
    out = deaggregate(agg.build())
    # Then every user record comes back, in order, with its own keys
    assert out == [UserRecord(pk, data, ehk) for pk, data, ehk in records]


@given(st.lists(st.tuples(partition_keys, payloads, st.none() | hash_keys), min_size=1))
def test_size_is_known_exactly_before_each_add(
    records: list[tuple[str, bytes, str | None]],
) -> None:
    # Given an aggregate being filled record by record
    agg = Aggregator()
    for pk, data, ehk in records:
        # When the size is asked for before adding
        predicted = agg.size_with(pk, data, ehk)
        assert agg.try_add(pk, data, ehk)
        # Then it is the size after adding, which is exactly what Kinesis counts:
        # the data blob plus the partition key it travels under (the first one)
        assert agg.size == predicted
        first_key = records[0][0].encode()
        assert agg.size == len(agg.build()) + len(first_key)
    assert agg.partition_key == records[0][0]
    assert agg.explicit_hash_key == records[0][2]
    assert len(agg) == len(records)
    assert agg.payload_bytes == sum(len(d) for _, d, _ in records)


@given(st.lists(st.tuples(ascii_keys, payloads), min_size=1, max_size=30))
def test_bytes_equal_aws_kinesis_agg_output(records: list[tuple[str, bytes]]) -> None:
    # Given the same user records fed to our aggregator and to aws-kinesis-agg's
    theirs = AggRecord()
    for pk, data in records:
        assert theirs.add_user_record(pk, data)
    ours = aggregate([(pk, data, None) for pk, data in records])
    # When both are serialised, Then the bytes are identical (tables first, same digest)
    partition_key, _, blob = theirs.get_contents()
    assert ours.build() == blob
    assert ours.partition_key == partition_key


@given(
    st.lists(st.tuples(ascii_keys, payloads), min_size=1, max_size=30),
    st.booleans(),
)
def test_aws_kinesis_agg_deaggregates_our_records(
    records: list[tuple[str, bytes]], with_hash_keys: bool
) -> None:
    # Given our aggregate, with or without explicit hash keys on every record
    hash_key = str(2**127) if with_hash_keys else None
    agg = aggregate([(pk, data, hash_key) for pk, data in records])
    # When aws-kinesis-agg de-aggregates it as a Lambda would
    out = deaggregate_records([lambda_record(agg.build(), records[0][0])])
    # Then it finds every user record, in order, with keys and sub-sequence numbers
    assert [r["kinesis"]["partitionKey"] for r in out] == [pk for pk, _ in records]
    assert [base64.b64decode(r["kinesis"]["data"]) for r in out] == [d for _, d in records]
    assert [r["kinesis"]["subSequenceNumber"] for r in out] == list(range(len(records)))
    assert all(r["kinesis"]["explicitHashKey"] == hash_key for r in out)


@given(st.lists(st.tuples(ascii_keys, payloads, st.none() | hash_keys), min_size=1, max_size=30))
def test_we_deaggregate_aws_kinesis_agg_records(
    records: list[tuple[str, bytes, str | None]],
) -> None:
    # Given an aggregate written by aws-kinesis-agg, hash keys on some records
    theirs = AggRecord()
    for pk, data, ehk in records:
        assert theirs.add_user_record(pk, data, ehk)
    _, _, blob = theirs.get_contents()
    # When we de-aggregate it, Then we get what was put in
    assert deaggregate(blob) == [UserRecord(pk, data, ehk) for pk, data, ehk in records]


def test_protobuf_written_by_the_reference_schema_is_read_with_tags_and_any_field_order() -> None:
    # Given an AggregatedRecord built with the reference .proto: tags on a
    # record, and the key table serialised after the records that index it
    message = messages_pb2.AggregatedRecord()
    first = message.records.add(partition_key_index=1, data=b"first")
    first.tags.add(key="venue", value="NSE")
    message.records.add(partition_key_index=0, explicit_hash_key_index=0, data=b"second")
    records_only = message.SerializeToString()
    tables = messages_pb2.AggregatedRecord(
        partition_key_table=["NIFTY", "BANKNIFTY"], explicit_hash_key_table=["42"]
    ).SerializeToString()
    # When it is read
    out = deaggregate(wrap(records_only + tables))
    # Then tags are skipped and the indexes resolve against tables that came later
    assert out == [UserRecord("BANKNIFTY", b"first"), UserRecord("NIFTY", b"second", "42")]


def test_non_aggregated_data_passes_through_as_one_record() -> None:
    # Given a plain JSON record
    data = b'{"schema":"tick/1"}'
    # When de-aggregated with its Kinesis partition key
    out = deaggregate(data, "NIFTY")
    # Then it is one user record, unchanged
    assert out == [UserRecord("NIFTY", data)]
    assert not is_aggregated(data)


def test_an_empty_aggregate_holds_no_records() -> None:
    assert deaggregate(Aggregator().build()) == []


def test_a_wrong_digest_is_a_typed_error() -> None:
    # Given a valid aggregate whose digest is damaged
    blob = bytearray(aggregate([("NIFTY", b"tick", None)]).build())
    blob[-1] ^= 0x01
    # When it is de-aggregated, Then the digest mismatch is reported by type
    with pytest.raises(DigestMismatchError):
        deaggregate(bytes(blob))


def test_a_damaged_body_fails_the_digest() -> None:
    blob = bytearray(aggregate([("NIFTY", b"tick", None)]).build())
    blob[len(MAGIC) + 3] ^= 0xFF
    with pytest.raises(DigestMismatchError):
        deaggregate(bytes(blob))


def test_every_truncation_is_a_typed_error() -> None:
    # Given a valid aggregate of two records
    blob = aggregate([("NIFTY", b"a" * 200, None), ("NIFTY", b"b", "7")]).build()
    # When it is cut short anywhere after the magic bytes, Then the result is
    # always a DeaggregationError, never another exception or a silent subset
    for cut in range(len(MAGIC), len(blob)):
        with pytest.raises(DeaggregationError):
            deaggregate(blob[:cut])


def test_a_truncated_body_with_a_matching_digest_is_a_typed_error() -> None:
    # Given a body cut inside a record, with a digest recomputed to match
    body = aggregate([("NIFTY", b"a" * 200, None)]).build()[len(MAGIC) : -16]
    # When read, Then the protobuf truncation itself is detected
    with pytest.raises(DeaggregationError, match="past the end"):
        deaggregate(wrap(body[:-10]))


@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_raise_anything_else(data: bytes) -> None:
    # Given arbitrary data, When de-aggregated, Then: records or a typed error
    try:
        out = deaggregate(data, "K")
    except DeaggregationError:
        return
    assert isinstance(out, list)


@given(st.binary(max_size=400))
def test_arbitrary_protobuf_bodies_with_valid_digests_never_raise_anything_else(
    body: bytes,
) -> None:
    # Given any body under a correct digest, so the protobuf parser itself is exercised
    try:
        out = deaggregate(wrap(body))
    except DeaggregationError:
        return
    assert all(isinstance(r, UserRecord) for r in out)


@given(st.data())
def test_mutated_aggregates_never_raise_anything_else(data: st.DataObject) -> None:
    # Given a valid body with one byte changed and the digest recomputed
    body = bytearray(
        aggregate([("NIFTY", b"x" * 130, "5"), ("SBIN", b"", None)]).build()[len(MAGIC) : -16]
    )
    index = data.draw(st.integers(0, len(body) - 1))
    body[index] = data.draw(st.integers(0, 255))
    # When read, Then either records or a typed error come out
    try:
        out = deaggregate(wrap(bytes(body)))
    except DeaggregationError:
        return
    assert all(isinstance(r, UserRecord) for r in out)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\x1a\x02\x1a\x00", "lacks its required"),  # record without partition_key_index
        (b"\x1a\x02\x08\x00", "lacks its required"),  # record without data
        (b"\x1a\x04\x08\x00\x1a\x00", "outside the key table"),  # empty key table
        (b"\x0a\x01N\x1a\x06\x08\x00\x10\x00\x1a\x00", "outside the table"),  # no ehk table
        (b"\x08\x01", "wire type"),  # partition_key_table as a varint
        (b"\x0a\x01N\x1a\x04\x0a\x00\x1a\x00", "wire type"),  # partition_key_index as bytes
        (b"\x0a\x01N\x1a\x04\x08\x00\x18\x00", "wire type"),  # data as a varint
        (b"\x00\x00", "field number 0"),
        (b"\x0a\x01N\x1a\x02\x00\x00", "field number 0"),  # inside a record
        (b"\x0a\x02\xff\xfe", "not UTF-8"),
        (b"\x0b", "wire type 3"),  # a group
        (b"\x0e", "wire type 6"),
        (b"\x28" + b"\xff" * 10 + b"\x01", "longer than 10"),  # unknown varint field 5
        (b"\x28" + b"\xff" * 9 + b"\x7f", "overflows"),
        (b"\x31\x01\x02", "truncated fixed"),  # unknown fixed64 field 6
        (b"\x28\x80", "truncated varint"),
    ],
)
def test_malformed_protobuf_is_a_typed_error(body: bytes, message: str) -> None:
    with pytest.raises(DeaggregationError, match=message):
        deaggregate(wrap(body))


def test_unknown_fields_of_every_wire_type_are_skipped() -> None:
    # Given a record preceded and followed by fields the format does not define
    unknown = b"\x28\x96\x01" + b"\x31" + bytes(8) + b"\x3a\x02hi" + b"\x45" + bytes(4)
    record = b"\x08\x00" + unknown + b"\x1a\x01x"
    body = unknown + b"\x0a\x01N" + b"\x1a" + bytes((len(record),)) + record
    # When read, Then forward compatibility holds: they are ignored
    assert deaggregate(wrap(body)) == [UserRecord("N", b"x")]


def test_last_value_of_a_repeated_scalar_wins_as_in_protobuf() -> None:
    body = b"\x0a\x01A\x0a\x01B\x1a\x07\x08\x00\x08\x01\x1a\x01x"
    assert deaggregate(wrap(body)) == [UserRecord("B", b"x")]


def test_try_add_stops_exactly_at_max_bytes() -> None:
    # Given a record whose aggregate would be exactly N bytes
    first = Aggregator()
    size = first.size_with("NIFTY", b"x" * 1000)
    # When the aggregate's limit is N, Then it fits; at N - 1 it does not
    assert Aggregator(size).try_add("NIFTY", b"x" * 1000)
    smaller = Aggregator(size - 1)
    assert not smaller.try_add("NIFTY", b"x" * 1000)
    # And a refused record leaves the aggregate unchanged
    assert len(smaller) == 0
    assert smaller.partition_key is None


def test_a_full_aggregate_refuses_and_keeps_what_it_has() -> None:
    # Given an aggregate with room for exactly two records of a key
    probe = Aggregator()
    probe.try_add("NIFTY", b"a" * 100)
    agg = Aggregator(probe.size_with("NIFTY", b"b" * 100))
    assert agg.try_add("NIFTY", b"a" * 100)
    assert agg.try_add("NIFTY", b"b" * 100)
    before = agg.build()
    # When a third arrives, Then it is refused and nothing changes
    assert not agg.try_add("NIFTY", b"c")
    assert agg.build() == before


def test_the_hot_path_and_the_general_path_agree_on_sizes_across_varint_widths() -> None:
    # Given records whose lengths cross varint size boundaries, and one past the header cache
    sizes = [0, 1, 122, 123, 124, 125, 126, 127, 128, 16379, 16380, 16383, 16384, 5000]
    agg = Aggregator()
    for n in sizes:
        predicted = agg.size_with("NIFTY", b"z" * n)
        assert agg.try_add("NIFTY", b"z" * n)
        # Then every prediction matched the real encoding
        assert agg.size == predicted == len(agg.build()) + len("NIFTY")
    assert [len(r.data) for r in deaggregate(agg.build())] == sizes


def test_the_largest_aggregate_is_one_mib_with_its_key() -> None:
    # Given a record that brings a Kinesis record to exactly 1 MiB
    agg = Aggregator()
    overhead = agg.size_with("NIFTY", b"")
    data = bytes(MAX_RECORD_BYTES - overhead)
    size = agg.size_with("NIFTY", data)
    # Then the varint widths at that size still make it exact: it fits at 1 MiB...
    if size == MAX_RECORD_BYTES:
        assert agg.try_add("NIFTY", data)
        assert len(agg.build()) + len("NIFTY") == MAX_RECORD_BYTES
    else:  # a wider length prefix took the byte(s); the next size down fits
        assert not agg.try_add("NIFTY", data)
        assert agg.try_add("NIFTY", data[: MAX_RECORD_BYTES - size])
        assert len(agg.build()) + len("NIFTY") <= MAX_RECORD_BYTES
    # ...and one byte more never does
    assert not Aggregator().try_add("NIFTY", bytes(len(agg.build())))


def test_unwrap_single_sends_a_lone_record_as_itself_unless_it_looks_aggregated() -> None:
    # Given aggregates of one record each
    plain = aggregate([("NIFTY", b'{"a":1}', None)])
    magic_like = aggregate([("NIFTY", MAGIC + b"user data", None)])
    two = aggregate([("NIFTY", b"a", None), ("NIFTY", b"b", None)])
    # When built as the KPL builds a Kinesis record, Then a lone plain record is
    # itself; one that starts with the magic bytes stays wrapped so it reads back
    assert plain.build(unwrap_single=True) == b'{"a":1}'
    wrapped = magic_like.build(unwrap_single=True)
    assert deaggregate(wrapped) == [UserRecord("NIFTY", MAGIC + b"user data")]
    assert two.build(unwrap_single=True) == two.build()


@pytest.mark.parametrize("key", ["", "K" * 257, "\ud800"])
def test_partition_keys_kinesis_rejects_are_typed_errors(key: str) -> None:
    agg = Aggregator()
    with pytest.raises(InvalidKeyError):
        agg.try_add(key, b"x")
    assert len(agg) == 0


def test_a_256_character_partition_key_is_accepted() -> None:
    assert Aggregator().try_add("K" * 256, b"x")


@pytest.mark.parametrize("key", ["", "-1", "1.5", "x", str(2**128), "١٢"])
def test_explicit_hash_keys_outside_the_hash_space_are_typed_errors(key: str) -> None:
    with pytest.raises(InvalidKeyError):
        Aggregator().try_add("NIFTY", b"x", key)


@pytest.mark.parametrize("max_bytes", [0, MAX_RECORD_BYTES + 1])
def test_aggregate_size_limit_must_be_within_kinesis_limit(max_bytes: int) -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        Aggregator(max_bytes)
    assert Aggregator().max_bytes == MAX_RECORD_BYTES


@pytest.mark.parametrize("data", ["text", bytearray(b"mutable"), memoryview(b"view")])
def test_user_record_data_must_be_bytes(data: object) -> None:
    # Given an aggregate, When anything but bytes is added, Then it is refused at once
    agg = Aggregator()
    with pytest.raises(TypeError, match="must be bytes"):
        agg.try_add("NIFTY", data)  # type: ignore[arg-type]
    assert len(agg) == 0
