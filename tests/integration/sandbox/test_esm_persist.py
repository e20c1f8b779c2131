"""The event source mapping drives the real persist function from a moto stream into PostgreSQL."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from lambdas.common.db import DatabaseSettings, connection_parameters
from lambdas.migrate.dal import migrate
from lambdas.migrate.logic import bundled_migrations
from sandbox.esm import EventSourceMapping, MappingConfig, MappingTarget
from sandbox.lambda_runtime import LambdaFunction
from sandbox.moto_server import AwsEndpoint
from sandbox.postgres import ConnectionInfo, EmbeddedPostgres
from sandbox.provision import Resources, client, provision
from tests.factories import tick_record
from tests.waiting import wait_until
from ticker_core.records import Aggregator

pytestmark = pytest.mark.integration

UNDERLYINGS = ("NIFTY", "BANKNIFTY", "RELIANCE", "INFY", "TCS", "SBIN")
MakeMapping = Callable[[LambdaFunction], EventSourceMapping]
PERSIST_MAPPING = MappingConfig(
    batch_size=200,
    maximum_batching_window_s=0.2,
    maximum_retry_attempts=8,
    bisect_batch_on_function_error=True,
    report_batch_item_failures=True,
    retry_base_delay_s=0.1,
    retry_max_delay_s=1.0,
)


async def migrate_database(info: ConnectionInfo) -> None:
    conn = await asyncpg.connect(**connection_parameters(DatabaseSettings(**settings(info))))
    try:
        await migrate(conn, bundled_migrations())
    finally:
        await conn.close()


def settings(info: ConnectionInfo) -> dict[str, str]:
    return {k[3:].lower(): v for k, v in info.db_env().items()}


async def identities(info: ConnectionInfo) -> list[tuple[str, int, int]]:
    conn = await asyncpg.connect(**connection_parameters(DatabaseSettings(**settings(info))))
    try:
        rows = await conn.fetch("select src_shard, src_seq, src_subseq from market.ticks")
    finally:
        await conn.close()
    return sorted((r[0], int(r[1]), int(r[2])) for r in rows)


def put_ticks(
    aws: AwsEndpoint, resources: Resources, count: int, *, poison_at: int | None = None
) -> list[tuple[str, int, int]]:
    """Put ``count`` ticks, 25 to an aggregate; returns the user records' identities."""
    kinesis = client(aws, "kinesis")
    start = datetime(2026, 11, 27, 4, 0, tzinfo=UTC)
    identities: list[tuple[str, int, int]] = []
    n = 0
    while n < count:
        underlying = UNDERLYINGS[(n // 25) % len(UNDERLYINGS)]
        aggregator = Aggregator()
        datas = []
        for _ in range(min(25, count - n)):
            record = tick_record(
                1000 + n % 40, 100.0 + n, start + timedelta(seconds=n), underlying=underlying
            )
            data = json.dumps(record).encode()
            if n == poison_at:
                data = b'{"schema": "tick/1", "mode": "bogus"}'
            assert aggregator.try_add(underlying, data)
            datas.append(data)
            n += 1
        entries = [{"Data": aggregator.build(), "PartitionKey": underlying}]
        [result] = kinesis.put_records(StreamName=resources.names.ticks_stream, Records=entries)[
            "Records"
        ]
        identities += [
            (result["ShardId"], int(result["SequenceNumber"]), sub) for sub in range(len(datas))
        ]
    return identities


@pytest.fixture
def resources(aws: AwsEndpoint) -> Resources:
    return provision(aws, shards=4)


def persist_function(info: ConnectionInfo, aws: AwsEndpoint, log_dir: Path) -> LambdaFunction:
    return LambdaFunction(
        "persist",
        "lambdas.persist.handler.handler",
        env={**info.db_env(), **aws.env(), "POWERTOOLS_METRICS_NAMESPACE": "Sandbox"},
        log_dir=log_dir,
        timeout_s=30,
        max_concurrency=4,
    )


@pytest.fixture
def mapping_factory(aws: AwsEndpoint, resources: Resources) -> Iterator[MakeMapping]:
    made: list[tuple[EventSourceMapping, LambdaFunction]] = []

    def make(function: LambdaFunction) -> EventSourceMapping:
        target = MappingTarget(
            function_name=function.name,
            function_arn=function.arn,
            stream_name=resources.names.ticks_stream,
            stream_arn=resources.ticks_stream_arn,
            role_arn=resources.role_arn(function.name),
            on_failure_queue_url=resources.persist_failures_url,
        )
        mapping = EventSourceMapping(
            "ticks-persist",
            PERSIST_MAPPING,
            target,
            function,
            lambda service: client(aws, service),
            poll_interval_s=0.2,
        )
        made.append((mapping, function))
        mapping.start()
        return mapping

    yield make
    for mapping, function in made:
        mapping.stop()
        function.kill_all()


def wait_caught_up(mapping: EventSourceMapping, since: float, timeout: float = 60.0) -> None:
    """Wait until every shard of ``mapping`` has found nothing new after ``since``."""
    wait_until(
        mapping.view,
        lambda view: view.caught_up_since(since),
        within=timeout,
        every=0.1,
        what=f"{mapping.name} to catch up",
    )


def dlq_messages(aws: AwsEndpoint, resources: Resources) -> list[dict]:
    sqs = client(aws, "sqs")
    found: list[dict] = []
    while True:
        page = sqs.receive_message(
            QueueUrl=resources.persist_failures_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
        )
        messages = page.get("Messages", [])
        if not messages:
            return found
        found += [json.loads(m["Body"]) for m in messages]
        for m in messages:
            sqs.delete_message(
                QueueUrl=resources.persist_failures_url, ReceiptHandle=m["ReceiptHandle"]
            )


async def test_every_tick_on_every_shard_reaches_postgresql_once(
    aws: AwsEndpoint,
    resources: Resources,
    fresh_database: ConnectionInfo,
    mapping_factory: MakeMapping,
    tmp_path: Path,
) -> None:
    # Given a migrated database and 3000 ticks over six underlyings on four shards
    await migrate_database(fresh_database)
    put = put_ticks(aws, resources, 3000)
    assert len({shard for shard, _, _ in put}) > 1
    # When the persist function consumes the stream through the mapping
    function = persist_function(fresh_database, aws, tmp_path)
    started = time.time()
    mapping = mapping_factory(function)
    wait_caught_up(mapping, started)
    # Then PostgreSQL holds exactly the stream's user records, by Kinesis identity
    assert await identities(fresh_database) == sorted(put)
    view = mapping.view()
    assert view.total("records_discarded") == 0
    assert view.iterator_age_ms == 0
    assert function.stats().metrics["TicksInserted"] == 3000
    assert dlq_messages(aws, resources) == []


async def test_a_poison_record_goes_to_the_on_failure_queue_and_its_neighbours_are_kept(
    aws: AwsEndpoint,
    resources: Resources,
    fresh_database: ConnectionInfo,
    mapping_factory: MakeMapping,
    tmp_path: Path,
) -> None:
    # Given 100 ticks, one of them poison
    await migrate_database(fresh_database)
    put = put_ticks(aws, resources, 100, poison_at=60)
    poison_id = put[60]
    # When the mapping runs the persist function (partial batch responses, 8 retries)
    started = time.time()
    mapping = mapping_factory(persist_function(fresh_database, aws, tmp_path))
    wait_caught_up(mapping, started)
    # Then every good tick is stored, its aggregate siblings included
    assert await identities(fresh_database) == sorted(i for i in put if i != poison_id)
    # And the poison's Kinesis record went to the on-failure queue after the retries
    [document] = dlq_messages(aws, resources)
    info = document["KinesisBatchInfo"]
    assert info["shardId"] == poison_id[0]
    assert info["startSequenceNumber"] == info["endSequenceNumber"] == str(poison_id[1])
    assert document["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert document["requestContext"]["approximateInvokeCount"] == 9
    assert mapping.view().total("records_discarded") == 1


async def test_crashes_and_a_database_restart_lose_and_duplicate_nothing(
    aws: AwsEndpoint, resources: Resources, mapping_factory: MakeMapping, tmp_path: Path
) -> None:
    # Given a private database we may restart, and a stream being filled while it is consumed
    with EmbeddedPostgres() as server:
        await migrate_database(server.info)
        function = persist_function(server.info, aws, tmp_path)
        started = time.time()
        mapping = mapping_factory(function)
        put: list[tuple[str, int, int]] = []
        producer = threading.Thread(target=lambda: put.extend(put_ticks(aws, resources, 6000)))
        producer.start()
        # When an environment is killed mid-invocation, and later the database restarts
        killed = function.kill_busy(wait_s=30)
        server.restart(mode="immediate")
        producer.join()
        wait_caught_up(mapping, max(started, time.time()))
        # Then every record is stored exactly once
        assert killed is not None
        assert await identities(server.info) == sorted(put)
        stats = function.stats()
        assert stats.crashes >= 1
        assert mapping.view().total("records_discarded") == 0
