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


def test_get_records_pages_in_order_from_any_iterator(aws: AwsEndpoint) -> None:
    # Given 50 records on one shard
    client = boto3.client("kinesis", **aws.client_kwargs())
    client.create_stream(StreamName="pages", ShardCount=1)
    client.get_waiter("stream_exists").wait(StreamName="pages")
    shard_id = client.list_shards(StreamName="pages")["Shards"][0]["ShardId"]
    empty = client.get_shard_iterator(
        StreamName="pages", ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    assert client.get_records(ShardIterator=empty)["Records"] == []
    entries = [{"Data": str(i).encode(), "PartitionKey": "k"} for i in range(50)]
    sequences = [
        r["SequenceNumber"]
        for r in client.put_records(StreamName="pages", Records=entries)["Records"]
    ]

    def read(iterator: str, limit: int) -> tuple[list[bytes], int]:
        out: list[bytes] = []
        pages = 0
        while True:
            page = client.get_records(ShardIterator=iterator, Limit=limit)
            if not page["Records"]:
                assert page["MillisBehindLatest"] == 0
                return out, pages
            pages += 1
            out += [r["Data"] for r in page["Records"]]
            iterator = page["NextShardIterator"]

    # When read 7 at a time from the horizon, Then every record comes once, in order
    everything, pages = read(empty, 7)
    assert everything == [str(i).encode() for i in range(50)]
    assert pages == 8
    # And an iterator after a sequence number starts right after it
    after = client.get_shard_iterator(
        StreamName="pages",
        ShardId=shard_id,
        ShardIteratorType="AFTER_SEQUENCE_NUMBER",
        StartingSequenceNumber=sequences[41],
    )["ShardIterator"]
    assert read(after, 100)[0] == [str(i).encode() for i in range(42, 50)]
    at = client.get_shard_iterator(
        StreamName="pages",
        ShardId=shard_id,
        ShardIteratorType="AT_SEQUENCE_NUMBER",
        StartingSequenceNumber=sequences[10],
    )["ShardIterator"]
    assert read(at, 100)[0][0] == b"10"
    latest = client.get_shard_iterator(
        StreamName="pages", ShardId=shard_id, ShardIteratorType="LATEST"
    )["ShardIterator"]
    assert read(latest, 100)[0] == []
