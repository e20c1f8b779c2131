"""The Kinesis fault proxy passes everything through, and throttles writes the ways Kinesis does."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from sandbox.kinesis_proxy import THROTTLED, KinesisFaultProxy
from sandbox.moto_server import AwsEndpoint
from tests.integration.test_moto_kinesis_concurrency import read_shard

pytestmark = pytest.mark.integration


@pytest.fixture
def proxy(aws: AwsEndpoint) -> Iterator[KinesisFaultProxy]:
    proxy = KinesisFaultProxy(aws.url)
    proxy.start()
    yield proxy
    proxy.close()


def kinesis_via(proxy: KinesisFaultProxy, aws: AwsEndpoint):
    kwargs = {**aws.client_kwargs(), "endpoint_url": proxy.url}
    return boto3.client("kinesis", config=Config(retries={"total_max_attempts": 1}), **kwargs)


def entries(n: int, tag: str) -> list[dict]:
    return [{"Data": f"{tag}{i}".encode(), "PartitionKey": "NIFTY"} for i in range(n)]


def test_writes_pass_through_until_a_throttling_window_opens(
    proxy: KinesisFaultProxy, aws: AwsEndpoint
) -> None:
    kinesis = kinesis_via(proxy, aws)
    kinesis.create_stream(StreamName="ticks", ShardCount=1)
    kinesis.get_waiter("stream_exists").wait(StreamName="ticks")
    shard = kinesis.list_shards(StreamName="ticks")["Shards"][0]["ShardId"]
    # Given a healthy proxy, When a batch is put, Then all of it is written
    assert (
        kinesis.put_records(StreamName="ticks", Records=entries(4, "a"))["FailedRecordCount"] == 0
    )

    # When a throttling window opens, Then the first call is refused whole...
    proxy.throttle(30)
    with pytest.raises(ClientError) as refused:
        kinesis.put_records(StreamName="ticks", Records=entries(4, "b"))
    assert refused.value.response["Error"]["Code"] == THROTTLED
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    # ...and the next is written in part, the refused entries flagged in place
    partial = kinesis.put_records(StreamName="ticks", Records=entries(4, "c"))
    assert partial["FailedRecordCount"] == 2
    codes = [r.get("ErrorCode") for r in partial["Records"]]
    assert codes == [THROTTLED, None, THROTTLED, None]
    assert all("SequenceNumber" in r for r in partial["Records"][1::2])
    # And a single PutRecord is refused whole
    with pytest.raises(ClientError, match=THROTTLED):
        kinesis.put_record(StreamName="ticks", Data=b"d", PartitionKey="NIFTY")

    # When the window closes, Then writes pass again
    proxy.throttle(0)
    assert (
        kinesis.put_records(StreamName="ticks", Records=entries(1, "e"))["FailedRecordCount"] == 0
    )

    # And the stream holds exactly what was acknowledged
    stored = [r["Data"] for r in read_shard(kinesis, "ticks", shard)]
    assert stored == [b"a0", b"a1", b"a2", b"a3", b"c1", b"c3", b"e0"]
    assert (proxy.calls_refused, proxy.entries_refused) == (2, 2)


def test_refusing_a_number_of_calls_ends_after_that_many_however_late_they_come(
    proxy: KinesisFaultProxy, aws: AwsEndpoint
) -> None:
    kinesis = kinesis_via(proxy, aws)
    kinesis.create_stream(StreamName="counted", ShardCount=1)
    kinesis.get_waiter("stream_exists").wait(StreamName="counted")
    # Given the next two write calls are to be refused
    proxy.refuse_next(2)
    assert proxy.throttling
    # When three calls arrive, Then the first is refused whole, the second in part...
    with pytest.raises(ClientError) as refused:
        kinesis.put_records(StreamName="counted", Records=entries(2, "a"))
    assert refused.value.response["Error"]["Code"] == THROTTLED
    assert (
        kinesis.put_records(StreamName="counted", Records=entries(2, "b"))["FailedRecordCount"] == 1
    )
    # ...and the third passes: the refusals are used up
    assert not proxy.throttling
    assert (
        kinesis.put_records(StreamName="counted", Records=entries(2, "c"))["FailedRecordCount"] == 0
    )
    assert (proxy.calls_refused, proxy.entries_refused) == (1, 1)


def test_a_negative_number_of_refusals_is_an_error(proxy: KinesisFaultProxy) -> None:
    with pytest.raises(ValueError, match="calls"):
        proxy.refuse_next(-1)
