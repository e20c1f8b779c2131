"""One user record's failure, whatever its type, is that record's alone."""

from __future__ import annotations

from collections import Counter

import pytest

from lambdas.common.kinesis_batch import (
    WHOLE_RECORD,
    Poisoned,
    PoisonRecordError,
    consume_kinesis_event,
    consume_kinesis_record,
)
from testkit.factories import kinesis_event
from ticker_core.records import FieldRangeError, KinesisUserRecord

STREAM = "arn:aws:kinesis:ap-south-1:123456789012:stream/ticks"
DATAS = [b"good-0", b"typeerror", b"good-2", b"range", b"good-4", b"poison", b"good-6"]


class Consumer:
    """Consumes user records, failing some in every way a decoder might."""

    def __init__(self) -> None:
        self.consumed: list[bytes] = []

    def __call__(self, user: KinesisUserRecord) -> None:
        if user.data == b"typeerror":
            raise TypeError("unhashable type: 'list'")  # a decoder's own bug
        if user.data == b"range":
            raise FieldRangeError("instrument_token", "must be an unsigned 32-bit integer")
        if user.data == b"poison":
            raise PoisonRecordError("bad_text", "underlying holds a NUL character")
        self.consumed.append(user.data)


def test_every_user_record_is_consumed_whatever_failed_before_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given an aggregate whose user records fail with an untyped error, a typed
    # record error and a poison error, between good ones
    [raw] = kinesis_event([("NIFTY", DATAS)], stream_arn=STREAM)["Records"]
    consumer, poison, quarantine = Consumer(), Counter[str](), list[Poisoned]()
    # When it is consumed with a quarantine
    consume_kinesis_record(raw, consumer, poison, quarantine.append)
    # Then every good record after each failure was consumed
    assert consumer.consumed == [b"good-0", b"good-2", b"good-4", b"good-6"]
    # And each failure is counted under its reason; the untyped one as unexpected, logged
    assert poison == {"unexpected_error": 1, "out_of_range": 1, "bad_text": 1}
    assert [r.levelname for r in caplog.records] == ["ERROR"]
    # And each is quarantined with its bytes, identity and reason
    assert [(q.sub_sequence_number, q.reason, q.data) for q in quarantine] == [
        (1, "unexpected_error", b"typeerror"),
        (3, "out_of_range", b"range"),
        (5, "bad_text", b"poison"),
    ]
    assert {q.stream_arn for q in quarantine} == {STREAM}


def test_without_a_quarantine_the_kinesis_record_is_reported_once_all_are_consumed() -> None:
    # Given the same aggregate and a good record after it, consumed without a quarantine
    event = kinesis_event([("NIFTY", DATAS), ("NIFTY", [b"good-7"])])
    consumer, poison = Consumer(), Counter[str]()
    response = consume_kinesis_event(event, consumer, poison)
    # Then every good record was consumed, and the failing Kinesis record reported, once
    assert consumer.consumed == [b"good-0", b"good-2", b"good-4", b"good-6", b"good-7"]
    first = event["Records"][0]["kinesis"]["sequenceNumber"]
    assert response == {"batchItemFailures": [{"itemIdentifier": first}]}
    assert sum(poison.values()) == 3


def test_a_corrupt_aggregate_is_quarantined_whole() -> None:
    event = kinesis_event([("NIFTY", [b"a", b"b"])], stream_arn=STREAM)
    event["Records"][0]["kinesis"]["data"] = "84mawgAAAA=="  # magic + garbage
    poison, quarantine = Counter[str](), list[Poisoned]()
    response = consume_kinesis_event(event, Consumer(), poison, quarantine.append)
    assert response == {"batchItemFailures": []}
    [entry] = quarantine
    assert (entry.sub_sequence_number, entry.reason) == (WHOLE_RECORD, "corrupt_record")
    assert entry.data == b"\xf3\x89\x9a\xc2\x00\x00\x00"
