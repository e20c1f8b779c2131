"""The persist function end to end: Kinesis events in, PostgreSQL rows out, poison reported."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from lambdas.common.db import connection_parameters
from lambdas.common.runtime import Lazy
from lambdas.persist.dal import PartitionManager, PostgresBatchWriter
from lambdas.persist.handler import Dependencies, make_handlers
from lambdas.persist.logic import persist_event
from lambdas.persist.settings import PersistEnvironment, PersistSettings
from sandbox.postgres import ConnectionInfo
from testkit.factories import kinesis_event, tick_stream
from tests.conftest import settings_for

pytestmark = pytest.mark.integration


async def count(info: ConnectionInfo, table: str) -> int:
    conn = await asyncpg.connect(**connection_parameters(settings_for(info)))
    try:
        return int(await conn.fetchval(f"select count(*) from market.{table}"))
    finally:
        await conn.close()


def batch_of(n: int, per_record: int, seed: int = 1) -> tuple[dict[str, Any], list[bytes]]:
    datas = [u.data for u in tick_stream(n, seed=seed)]
    chunks = [("NIFTY", datas[i : i + per_record]) for i in range(0, n, per_record)]
    return kinesis_event(chunks), datas


async def test_a_poison_record_is_reported_and_does_not_block_the_others(
    migrated: ConnectionInfo,
) -> None:
    # Given a batch of 3 aggregated records; the middle one holds one poison user record
    _, datas = batch_of(300, 100)
    poisoned = [*datas[100:150], b'{"schema": "tick/1", "mode": "bogus"}', *datas[150:200]]
    event = kinesis_event([("NIFTY", datas[:100]), ("NIFTY", poisoned), ("NIFTY", datas[200:])])
    pool = Lazy(lambda: asyncpg.create_pool(**connection_parameters(settings_for(migrated))))
    writer = PostgresBatchWriter(pool, PartitionManager())
    # When the function processes it
    outcome = await persist_event(event, writer)
    # Then exactly the poisoned Kinesis record is reported, by sequence number
    middle = event["Records"][1]["kinesis"]["sequenceNumber"]
    assert outcome.response == {"batchItemFailures": [{"itemIdentifier": middle}]}
    assert outcome.poison == {"bad_field": 1}
    # And every good tick, even those sharing the poison's aggregate, was written
    assert await count(migrated, "ticks") == 300
    # When Kinesis redelivers from the failed record (as it does after a partial failure)
    again = await persist_event({"Records": event["Records"][1:]}, writer)
    # Then the poison is reported again and nothing is written twice
    assert again.response["batchItemFailures"] == [{"itemIdentifier": middle}]
    assert again.written.ticks_inserted == 0
    assert await count(migrated, "ticks") == 300
    await (await pool.get()).close()


async def test_a_corrupt_aggregate_is_poison_too(migrated: ConnectionInfo) -> None:
    event, _ = batch_of(20, 10)
    event["Records"][0]["kinesis"]["data"] = "84mawgAAAA=="  # magic + garbage
    pool = Lazy(lambda: asyncpg.create_pool(**connection_parameters(settings_for(migrated))))
    outcome = await persist_event(event, PostgresBatchWriter(pool, PartitionManager()))
    assert outcome.poison == {"corrupt_record": 1}
    assert len(outcome.response["batchItemFailures"]) == 1
    assert await count(migrated, "ticks") == 10
    await (await pool.get()).close()


@pytest.fixture
def deps(migrated: ConnectionInfo) -> Iterator[Dependencies]:
    """What an execution environment builds on its first invocation, against ``migrated``."""
    built = Dependencies.build(
        PersistEnvironment(persist=PersistSettings(), database=settings_for(migrated))
    )
    yield built
    built.close()


class Context:
    function_name = "persist"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:ap-south-1:123456789012:function:persist"
    aws_request_id = "req-1"


def test_the_handler_reuses_its_pool_across_invocations_and_emits_metrics(
    deps: Dependencies, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given two batches delivered to the same execution environment
    first, _ = batch_of(200, 50, seed=1)
    second, _ = batch_of(200, 50, seed=2)
    for r in second["Records"]:
        r["eventID"] = r["eventID"].replace("shardId-000000000000", "shardId-000000000001")
    handler, maintain = make_handlers(lambda: deps)
    # When the handler runs twice
    assert handler(first, Context()) == {"batchItemFailures": []}
    pool = deps.pool.current
    assert handler(second, Context()) == {"batchItemFailures": []}
    # Then the second invocation used the same pool (one loop, connections kept)
    assert deps.pool.current is pool is not None
    # And EMF metrics reported what was written
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    inserted = [m["TicksInserted"] for m in emf if "TicksInserted" in m]
    assert inserted == [[200.0], [200.0]]
    # And a redelivery is reported as merged, inserting nothing
    assert handler(second, Context()) == {"batchItemFailures": []}
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert [(m["BatchesMerged"], m["TicksInserted"]) for m in emf] == [([1.0], [0.0])]
    # And the daily maintenance creates partitions ahead without error
    assert maintain({}, Context()) == {"detached": []}
