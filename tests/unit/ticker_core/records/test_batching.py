"""RecordBatcher: per-key aggregation and PutRecords packing at the Kinesis limits."""

from __future__ import annotations

import base64
from collections import defaultdict

import pytest
from aws_kinesis_agg.deaggregator import deaggregate_records
from hypothesis import given, settings
from hypothesis import strategies as st

from ticker_core.records import (
    MAGIC,
    MAX_RECORD_BYTES,
    MAX_REQUEST_BYTES,
    MAX_REQUEST_RECORDS,
    Aggregator,
    InvalidKeyError,
    KinesisRecord,
    PutRecordsBatch,
    RecordBatcher,
    RecordTooLargeError,
    UserRecord,
    deaggregate,
)


def user_records(batches: list[PutRecordsBatch]) -> list[tuple[str, bytes]]:
    """(partition key, data) of every user record, in the order the batches carry them."""
    return [
        (user.partition_key, user.data)
        for batch in batches
        for record in batch.records
        for user in deaggregate(record.data, record.partition_key)
    ]


def test_records_of_one_key_share_an_aggregate_under_that_key() -> None:
    # Given records for two underlyings, interleaved
    batcher = RecordBatcher(linger=0.1)
    for i in range(3):
        batcher.add("NIFTY", b"n%d" % i, now=0.0)
        batcher.add("BANKNIFTY", b"b%d" % i, now=0.0)
    # When flushed
    (batch,) = batcher.flush()
    # Then each key has one Kinesis record, under its own key, holding its records in order
    assert [(r.partition_key, r.user_records) for r in batch.records] == [
        ("NIFTY", 3),
        ("BANKNIFTY", 3),
    ]
    for record in batch.records:
        users = deaggregate(record.data)
        assert {u.partition_key for u in users} == {record.partition_key}
    assert user_records([batch]) == [
        ("NIFTY", b"n0"),
        ("NIFTY", b"n1"),
        ("NIFTY", b"n2"),
        ("BANKNIFTY", b"b0"),
        ("BANKNIFTY", b"b1"),
        ("BANKNIFTY", b"b2"),
    ]


def test_a_lone_record_is_sent_unaggregated_as_the_kpl_does() -> None:
    batcher = RecordBatcher(linger=0)
    batcher.add("SBIN", b'{"x":1}', now=0.0)
    (batch,) = batcher.drain(now=0.0)
    assert batch.records == (KinesisRecord("SBIN", b'{"x":1}', 1, 7),)


def test_aws_kinesis_agg_reads_every_record_the_batcher_writes() -> None:
    # Given a batch with aggregated and lone records
    batcher = RecordBatcher(linger=0)
    for i in range(5):
        batcher.add("NIFTY", b"tick %d" % i, now=0.0)
    batcher.add("SBIN", b"lone", now=0.0)
    (batch,) = batcher.drain(now=0.0)
    # When aws-kinesis-agg de-aggregates the entries as a Lambda would
    events = [
        {
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "partitionKey": entry["PartitionKey"],
                "sequenceNumber": str(i),
                "approximateArrivalTimestamp": 1764300000.0,
                "data": base64.b64encode(entry["Data"]).decode(),
            }
        }
        for i, entry in enumerate(batch.request_entries())
    ]
    out = deaggregate_records(events)
    # Then it finds every user record, in order
    assert [base64.b64decode(r["kinesis"]["data"]) for r in out] == [
        *(b"tick %d" % i for i in range(5)),
        b"lone",
    ]


# -- the 1 MiB record limit ----------------------------------------------------


def test_a_user_record_of_exactly_one_mib_with_its_key_is_accepted() -> None:
    # Given a user record whose data + partition key is exactly 1 MiB
    batcher = RecordBatcher(linger=0)
    data = bytes(MAX_RECORD_BYTES - len("NIFTY"))
    # When added, Then it travels alone as a Kinesis record of exactly 1 MiB
    batcher.add("NIFTY", data, now=0.0)
    (batch,) = batcher.drain(now=0.0)
    assert [r.size for r in batch.records] == [MAX_RECORD_BYTES]
    assert batch.records[0].data == data


def test_a_user_record_one_byte_over_one_mib_is_a_typed_error_and_changes_nothing() -> None:
    # Given a batcher holding an open aggregate for the key
    batcher = RecordBatcher(linger=1.0)
    batcher.add("NIFTY", b"before", now=0.0)
    # When a record one byte too large for any Kinesis record is added
    with pytest.raises(RecordTooLargeError) as caught:
        batcher.add("NIFTY", bytes(MAX_RECORD_BYTES - len("NIFTY") + 1), now=0.0)
    # Then the error says how large it was against which limit
    assert (caught.value.partition_key, caught.value.size, caught.value.limit) == (
        "NIFTY",
        MAX_RECORD_BYTES + 1,
        MAX_RECORD_BYTES,
    )
    # And nothing changed: the open aggregate keeps accepting, in order
    assert batcher.pending_user_records == 1
    batcher.add("NIFTY", b"after", now=0.0)
    assert user_records(batcher.flush()) == [("NIFTY", b"before"), ("NIFTY", b"after")]


def test_multibyte_partition_keys_count_in_utf8_bytes() -> None:
    # Given a key of two characters but six UTF-8 bytes
    key = "ÄÖ€"[1:]  # "Ö€": 2 + 3 bytes
    assert len(key.encode()) == 5
    batcher = RecordBatcher(linger=0)
    # Then the record limit counts its bytes, not its characters
    with pytest.raises(RecordTooLargeError):
        batcher.add(key, bytes(MAX_RECORD_BYTES - 4), now=0.0)
    batcher.add(key, bytes(MAX_RECORD_BYTES - 5), now=0.0)
    assert [r.size for r in batcher.drain(now=0.0)[0].records] == [MAX_RECORD_BYTES]


def test_a_lone_record_that_looks_aggregated_is_wrapped_so_it_reads_back() -> None:
    # Given user data that starts with the KPL magic bytes
    batcher = RecordBatcher(linger=0)
    data = MAGIC + b"user data"
    # When it is sent alone, Then it is wrapped, so consumers do not misread it
    batcher.add("K", data, now=0.0)
    (batch,) = batcher.drain(now=0.0)
    assert deaggregate(batch.records[0].data) == [UserRecord("K", data)]


def test_a_lone_record_that_looks_aggregated_must_fit_one_mib_wrapped() -> None:
    # Given the largest magic-prefixed record whose wrapped form is exactly 1 MiB
    near = MAX_RECORD_BYTES - 100
    overhead = Aggregator().size_with("K", bytes(near)) - near
    largest = MAGIC + bytes(MAX_RECORD_BYTES - overhead - len(MAGIC))
    batcher = RecordBatcher(linger=0)
    # Then it is accepted as a record of exactly 1 MiB
    batcher.add("K", largest, now=0.0)
    assert [r.size for r in batcher.drain(now=0.0)[0].records] == [MAX_RECORD_BYTES]
    # And one byte more is too large, although bare it would fit
    with pytest.raises(RecordTooLargeError) as caught:
        batcher.add("K", largest + b"!", now=0.0)
    assert caught.value.size == MAX_RECORD_BYTES + 1


def test_a_record_larger_than_the_aggregate_target_travels_alone_in_order() -> None:
    # Given small aggregates and an open one for the key
    batcher = RecordBatcher(linger=1.0, aggregate_bytes=1000)
    batcher.add("NIFTY", b"small 1", now=0.0)
    # When a record too large to share an aggregate arrives, then another small one
    big = b"B" * 5000
    batcher.add("NIFTY", big, now=0.0)
    batcher.add("NIFTY", b"small 2", now=0.0)
    # Then the open aggregate went first, the big record alone, and order holds
    batches = batcher.flush()
    assert [r.user_records for b in batches for r in b.records] == [1, 1, 1]
    assert user_records(batches) == [("NIFTY", b"small 1"), ("NIFTY", big), ("NIFTY", b"small 2")]


def test_aggregates_never_exceed_their_target_size() -> None:
    # Given a 2,000-byte aggregate target
    batcher = RecordBatcher(linger=1.0, aggregate_bytes=2000)
    for i in range(100):
        batcher.add("NIFTY", b"%03d" % i + b"x" * 97, now=0.0)
    # Then every Kinesis record is within it, and each one was filled until the next would not fit
    records = [r for b in batcher.flush() for r in b.records]
    assert all(r.size <= 2000 for r in records)
    assert all(r.size > 2000 - 110 for r in records[:-1])
    assert sum(r.user_records for r in records) == 100


# -- the 500-record and 5 MiB request limits ---------------------------------------


def test_five_hundred_records_make_one_request_and_the_next_starts_another() -> None:
    # Given 501 underlyings with one record each
    batcher = RecordBatcher(linger=0)
    for i in range(MAX_REQUEST_RECORDS):
        batcher.add(f"S{i}", b"x", now=0.0)
    # When drained, Then 500 entries are exactly one request
    batches = batcher.drain(now=0.0)
    assert [len(b) for b in batches] == [MAX_REQUEST_RECORDS]
    # And 501 make two
    for i in range(MAX_REQUEST_RECORDS + 1):
        batcher.add(f"S{i}", b"x", now=1.0)
    assert [len(b) for b in batcher.drain(now=1.0)] == [MAX_REQUEST_RECORDS, 1]


def test_take_complete_returns_full_requests_and_leaves_the_rest_filling() -> None:
    # Given records for 501 underlyings, every one past its linger, each sealed by a full
    # aggregate (the 100-byte target holds one record)
    batcher = RecordBatcher(linger=0, aggregate_bytes=100)
    for i in range(MAX_REQUEST_RECORDS + 1):
        batcher.add(f"S{i}", b"x" * 60, now=0.0)
        batcher.add(f"S{i}", b"y" * 60, now=0.0)
    # When a busy sender takes only complete requests
    complete = batcher.take_complete()
    # Then it gets the one full request, and the rest stays pending for the next drain
    assert [len(b) for b in complete] == [MAX_REQUEST_RECORDS]
    left = 2 * (MAX_REQUEST_RECORDS + 1) - MAX_REQUEST_RECORDS
    assert batcher.pending_user_records == left
    # And the sender's next drain, once free, takes all of it
    assert sum(b.user_records for b in batcher.drain(now=0.0)) == left
    assert batcher.pending_user_records == 0


def test_a_request_of_exactly_five_mib_is_complete_and_one_byte_more_starts_another() -> None:
    # Given five records of exactly 1 MiB each (data + key)
    batcher = RecordBatcher(linger=10.0)
    one_mib = bytes(MAX_RECORD_BYTES - 2)
    ready = [batcher.add(f"K{i}", one_mib, now=0.0) for i in range(5)]
    # Then the fifth completes a request of exactly 5 MiB, ready before any linger
    assert ready == [False, False, False, False, True]
    (batch,) = batcher.drain(now=0.0)
    assert batch.size == MAX_REQUEST_BYTES
    # And with one byte more the sixth record goes to the next request
    for i in range(4):
        batcher.add(f"K{i}", one_mib, now=1.0)
    batcher.add("K4", one_mib[:-1], now=1.0)
    batcher.add("X", b"yz", now=1.0)  # 5 MiB - 1 + 3 bytes
    batches = batcher.flush()
    assert [b.size for b in batches] == [MAX_REQUEST_BYTES - 1, 3]


@pytest.mark.parametrize("linger", [0.0, 0.5])
def test_request_limits_hold_for_any_mix_of_record_sizes(linger: float) -> None:
    # Given many keys with records of very different sizes
    batcher = RecordBatcher(linger=linger, aggregate_bytes=MAX_RECORD_BYTES)
    sizes = [700, 300_000, 1, 900_000, 50_000, 1_000_000] * 6
    batches = []
    for i, n in enumerate(sizes):
        batcher.add(f"K{i % 7}", bytes(n), now=i * 0.1)
        batches += batcher.drain(now=i * 0.1)
    batches += batcher.flush()
    # Then no request breaks a limit and no record is lost
    assert all(len(b) <= MAX_REQUEST_RECORDS and b.size <= MAX_REQUEST_BYTES for b in batches)
    assert all(r.size <= MAX_RECORD_BYTES for b in batches for r in b.records)
    assert sorted(len(d) for _, d in user_records(batches)) == sorted(sizes)


# -- order and completeness under any interleaving ------------------------------

operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("add"),
            st.sampled_from(["NIFTY", "BANKNIFTY", "SBIN", "M&M"]),
            st.integers(0, 700),
        ),
        st.tuples(st.just("drain"), st.just(""), st.integers(0, 3)),
    ),
    max_size=120,
)


@settings(max_examples=60, deadline=None)
@given(operations)
def test_every_record_arrives_once_in_per_key_order_under_any_interleaving(
    ops: list[tuple[str, str, int]],
) -> None:
    # Given small limits, so aggregates seal and requests complete often
    batcher = RecordBatcher(
        linger=0.25, aggregate_bytes=1500, request_records=3, request_bytes=MAX_RECORD_BYTES
    )
    sent: dict[str, list[bytes]] = defaultdict(list)
    batches: list[PutRecordsBatch] = []
    now = 0.0
    # When records are added and drained in any interleaving, time moving on
    for n, (op, key, arg) in enumerate(ops):
        now += 0.1
        if op == "add":
            data = b"%d:" % n + bytes(arg)
            sent[key].append(data)
            batcher.add(key, data, now=now)
        else:
            now += arg * 0.1
            batches += batcher.drain(now=now)
        assert batcher.pending_user_records == sum(map(len, sent.values())) - sum(
            b.user_records for b in batches
        )
    batches += batcher.flush()
    # Then every record arrives exactly once, each key's records in the order added
    received: dict[str, list[bytes]] = defaultdict(list)
    for key, data in user_records(batches):
        received[key].append(data)
    assert received == sent
    # And every Kinesis record is under the key of the user records it holds
    for batch in batches:
        assert len(batch) <= 3
        for record in batch.records:
            assert {u.partition_key for u in deaggregate(record.data, record.partition_key)} == {
                record.partition_key
            }
    assert batcher.pending_user_records == batcher.pending_user_bytes == 0


# -- linger --------------------------------------------------------------------------


def test_nothing_is_sent_before_its_oldest_record_has_lingered() -> None:
    # Given a record added at t=10 with a 0.2 s linger
    batcher = RecordBatcher(linger=0.2)
    assert batcher.next_deadline() is None
    assert not batcher.add("NIFTY", b"a", now=10.0)
    batcher.add("NIFTY", b"b", now=10.15)
    # Then the deadline is set by the oldest record
    assert batcher.next_deadline() == pytest.approx(10.2)
    # When drained before it, Then nothing comes out
    assert batcher.drain(now=10.19) == []
    assert batcher.pending_user_records == 2
    # When drained at it, Then both records come out together
    (batch,) = batcher.drain(now=10.2)
    assert batch.user_records == 2
    assert batcher.next_deadline() is None
    assert batcher.pending_user_records == batcher.pending_user_bytes == 0


def test_only_aggregates_that_have_lingered_are_sealed() -> None:
    # Given an old and a young aggregate
    batcher = RecordBatcher(linger=1.0)
    batcher.add("OLD", b"o", now=0.0)
    batcher.add("YOUNG", b"y", now=0.8)
    # When drained at t=1, Then only the old one is sent; the young one waits
    (batch,) = batcher.drain(now=1.0)
    assert [r.partition_key for r in batch.records] == ["OLD"]
    assert batcher.next_deadline() == pytest.approx(1.8)
    assert [r.partition_key for r in batcher.drain(now=1.8)[0].records] == ["YOUNG"]


def test_a_full_aggregate_waits_in_the_open_request_until_its_records_linger() -> None:
    # Given aggregates small enough that the second record seals the first
    batcher = RecordBatcher(linger=1.0, aggregate_bytes=200)
    batcher.add("NIFTY", bytes(150), now=0.0)
    batcher.add("NIFTY", bytes(150), now=0.5)
    # Then the sealed one is not yet a complete request...
    assert batcher.ready_batches == 0
    assert batcher.drain(now=0.9) == []
    assert batcher.next_deadline() == pytest.approx(1.0)
    # ...and leaves when its oldest record has waited the linger
    (batch,) = batcher.drain(now=1.0)
    assert batch.user_records == 1
    assert batcher.next_deadline() == pytest.approx(1.5)


def test_add_reports_a_complete_request_for_the_sender() -> None:
    batcher = RecordBatcher(linger=60.0, request_records=2)
    assert not batcher.add("A", b"1", now=0.0)
    assert not batcher.add("B", b"1", now=0.0)
    # Open aggregates are not entries yet; two records too large to share one are
    # entries at once, and they complete a two-entry request
    assert not batcher.add("C", bytes(60_000), now=0.0)
    assert batcher.add("D", bytes(60_000), now=0.0)
    assert batcher.ready_batches == 1
    (batch,) = batcher.drain(now=0.0)
    assert [r.partition_key for r in batch.records] == ["C", "D"]


# -- request entries and retries --------------------------------------------------------


def test_request_entries_have_the_boto3_shape() -> None:
    record = KinesisRecord("NIFTY", b"d", 1, 1)
    hashed = KinesisRecord("NIFTY", b"d", 1, 1, explicit_hash_key="42")
    batch = PutRecordsBatch((record, hashed))
    assert batch.request_entries() == [
        {"Data": b"d", "PartitionKey": "NIFTY"},
        {"Data": b"d", "PartitionKey": "NIFTY", "ExplicitHashKey": "42"},
    ]
    assert (batch.size, batch.user_records, batch.user_bytes) == (12, 2, 2)


def test_a_retry_batch_holds_the_failed_entries_in_request_order() -> None:
    records = tuple(KinesisRecord(f"K{i}", b"x" * i, 1, i) for i in range(4))
    batch = PutRecordsBatch(records)
    retry = batch.subset([3, 1, 3])
    assert retry.records == (records[1], records[3])
    assert retry.size == records[1].size + records[3].size


# -- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["", "K" * 257])
def test_a_partition_key_kinesis_rejects_is_a_typed_error_and_adds_nothing(key: str) -> None:
    batcher = RecordBatcher(linger=0)
    with pytest.raises(InvalidKeyError):
        batcher.add(key, b"x", now=0.0)
    with pytest.raises(InvalidKeyError):
        batcher.add(key, bytes(MAX_RECORD_BYTES), now=0.0)
    assert batcher.pending_user_records == 0
    assert batcher.flush() == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"linger": -1.0}, "linger"),
        ({"linger": float("nan")}, "linger"),
        ({"linger": 0, "aggregate_bytes": 0}, "aggregate_bytes"),
        ({"linger": 0, "aggregate_bytes": MAX_RECORD_BYTES + 1}, "aggregate_bytes"),
        ({"linger": 0, "request_records": 0}, "request_records"),
        ({"linger": 0, "request_records": MAX_REQUEST_RECORDS + 1}, "request_records"),
        ({"linger": 0, "request_bytes": MAX_RECORD_BYTES - 1}, "request_bytes"),
        ({"linger": 0, "request_bytes": MAX_REQUEST_BYTES + 1}, "request_bytes"),
    ],
)
def test_limits_beyond_kinesis_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RecordBatcher(**kwargs)
