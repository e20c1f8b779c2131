"""moto's Kinesis, as the sandbox serves it, keeps every record under concurrent producers."""

from __future__ import annotations

import threading

import boto3
import pytest

from sandbox.moto_server import AwsEndpoint

pytestmark = pytest.mark.integration

PRODUCERS = 6
REQUESTS_EACH = 25
RECORDS_EACH = 40


def read_shard(client, stream: str, shard_id: str) -> list[dict]:
    iterator = client.get_shard_iterator(
        StreamName=stream, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    records: list[dict] = []
    while True:
        page = client.get_records(ShardIterator=iterator, Limit=10_000)
        records += page["Records"]
        iterator = page["NextShardIterator"]
        if not page["Records"]:
            return records


def test_concurrent_put_records_lose_nothing_and_share_no_sequence_number(
    aws: AwsEndpoint,
) -> None:
    # Given a one-shard stream (every producer races for the same sequence counter)
    client = boto3.client("kinesis", **aws.client_kwargs())
    client.create_stream(StreamName="race", ShardCount=1)
    client.get_waiter("stream_exists").wait(StreamName="race")

    # When several threads put batches at once, each with its own client
    def produce(n: int) -> None:
        own = boto3.client("kinesis", **aws.client_kwargs())
        for r in range(REQUESTS_EACH):
            entries = [
                {"Data": f"{n}/{r}/{i}".encode(), "PartitionKey": "NIFTY"}
                for i in range(RECORDS_EACH)
            ]
            response = own.put_records(StreamName="race", Records=entries)
            assert response["FailedRecordCount"] == 0

    threads = [threading.Thread(target=produce, args=(n,)) for n in range(PRODUCERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    # Then every record is on the shard exactly once, each with its own sequence number
    shard_id = client.list_shards(StreamName="race")["Shards"][0]["ShardId"]
    records = read_shard(client, "race", shard_id)
    expected = {
        f"{n}/{r}/{i}".encode()
        for n in range(PRODUCERS)
        for r in range(REQUESTS_EACH)
        for i in range(RECORDS_EACH)
    }
    assert sorted(rec["Data"] for rec in records) == sorted(expected)
    assert len({rec["SequenceNumber"] for rec in records}) == len(records)
