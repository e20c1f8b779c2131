"""PutRecords with per-entry retries: only failed entries are resent; persistent failure raises."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from lambdas.greeks.dal import KinesisPublisher, PublishError
from ticker_adapters.retry import no_delays
from ticker_core.records import RecordBatcher


class FlakyKinesis:
    """Fails the entries whose data is in ``fail_times`` that many times, then accepts them."""

    def __init__(self, fail_times: dict[bytes, int], call_error: Exception | None = None) -> None:
        self.fail_times = dict(fail_times)
        self.call_error = call_error
        self.calls: list[dict[str, Any]] = []
        self.written: list[bytes] = []

    def put_records(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        if self.call_error is not None:
            error, self.call_error = self.call_error, None
            raise error
        results = []
        for entry in kwargs["Records"]:
            data = entry["Data"]
            if self.fail_times.get(data, 0) > 0:
                self.fail_times[data] -= 1
                results.append({"ErrorCode": "ProvisionedThroughputExceededException"})
            else:
                self.written.append(data)
                results.append({"SequenceNumber": "1", "ShardId": "shardId-000000000000"})
        return {"Records": results, "FailedRecordCount": sum("ErrorCode" in r for r in results)}


def batches(n: int) -> Any:
    batcher = RecordBatcher(linger=0, aggregate_bytes=64)  # one user record per Kinesis record
    for i in range(n):
        batcher.add(f"U{i}", b"x" * 40 + str(i).encode(), 0.0)
    return batcher.flush()


def data(i: int) -> bytes:
    return b"x" * 40 + str(i).encode()


def test_only_the_failed_entries_are_resent_until_written() -> None:
    # Given a stream that throttles entry 1 twice and entry 3 once
    kinesis = FlakyKinesis({data(1): 2, data(3): 1})
    sleeps: list[float] = []
    publisher = KinesisPublisher(kinesis, "greeks", delays=no_delays, sleep=sleeps.append)
    # When five records are published
    result = publisher.publish(batches(5))
    # Then every record is written exactly once, and retries carried only failed entries
    assert sorted(kinesis.written) == sorted(data(i) for i in range(5))
    assert [len(c["Records"]) for c in kinesis.calls] == [5, 2, 1]
    assert (result.records, result.user_records, result.resent) == (5, 5, 3)
    assert sleeps == [0.0, 0.0]
    assert kinesis.calls[0]["StreamName"] == "greeks"


def test_entries_still_failing_after_every_attempt_raise() -> None:
    kinesis = FlakyKinesis({data(0): 10})
    publisher = KinesisPublisher(kinesis, "arn:aws:kinesis:r:1:stream/g", attempts=3,
                                 delays=no_delays, sleep=lambda _: None)  # fmt: skip
    with pytest.raises(PublishError) as info:
        publisher.publish(batches(2))
    assert info.value.failed == 1
    assert info.value.codes == {"ProvisionedThroughputExceededException": 1}
    assert len(kinesis.calls) == 3
    assert kinesis.calls[0]["StreamARN"] == "arn:aws:kinesis:r:1:stream/g"


def test_a_throttled_or_dropped_call_is_retried_whole() -> None:
    for error in (
        ClientError({"Error": {"Code": "ThrottlingException"}}, "PutRecords"),
        EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
    ):
        kinesis = FlakyKinesis({}, call_error=error)
        publisher = KinesisPublisher(kinesis, "greeks", delays=no_delays, sleep=lambda _: None)
        assert publisher.publish(batches(3)).resent == 3
        assert len(kinesis.written) == 3


def test_a_non_retryable_error_propagates_at_once() -> None:
    error = ClientError({"Error": {"Code": "ResourceNotFoundException"}}, "PutRecords")
    kinesis = FlakyKinesis({}, call_error=error)
    publisher = KinesisPublisher(kinesis, "greeks", delays=no_delays, sleep=lambda _: None)
    with pytest.raises(ClientError):
        publisher.publish(batches(1))
    assert len(kinesis.calls) == 1


def test_a_publisher_needs_at_least_one_attempt() -> None:
    with pytest.raises(ValueError, match="attempts"):
        KinesisPublisher(FlakyKinesis({}), "greeks", attempts=0)
