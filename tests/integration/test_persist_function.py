"""The persist function end to end: Kinesis events in, PostgreSQL rows out, poison reported."""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
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
from testkit.factories import kinesis_event, tick_bytes, tick_record, tick_stream
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


async def quarantined(info: ConnectionInfo) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(**connection_parameters(settings_for(info)))
    try:
        return list(
            await conn.fetch(
                "select src_shard, src_seq, src_subseq, reason, detail, data "
                "from market.quarantine order by src_seq, src_subseq"
            )
        )
    finally:
        await conn.close()


def writer_for(info: ConnectionInfo) -> tuple[Lazy[asyncpg.Pool], PostgresBatchWriter]:
    pool = Lazy(lambda: asyncpg.create_pool(**connection_parameters(settings_for(info))))
    return pool, PostgresBatchWriter(pool, PartitionManager())


async def test_a_poison_record_is_quarantined_and_does_not_block_the_others(
    migrated: ConnectionInfo,
) -> None:
    # Given a batch of 3 aggregated records; the middle one holds one poison user record
    _, datas = batch_of(300, 100)
    poison = b'{"schema": "tick/1", "mode": "bogus"}'
    poisoned = [*datas[100:150], poison, *datas[150:200]]
    event = kinesis_event([("NIFTY", datas[:100]), ("NIFTY", poisoned), ("NIFTY", datas[200:])])
    pool, writer = writer_for(migrated)
    # When the function processes it
    outcome = await persist_event(event, writer)
    # Then nothing is reported failed (the poison can never be stored: no retry for it)
    assert outcome.response == {"batchItemFailures": []}
    assert outcome.poison == {"bad_field": 1}
    # And every good tick, even those sharing the poison's aggregate, was written
    assert await count(migrated, "ticks") == 300
    # And the poison is in the quarantine: where it sat on the stream, why, and its bytes
    middle = event["Records"][1]["kinesis"]["sequenceNumber"]
    [entry] = await quarantined(migrated)
    assert (entry["src_seq"], entry["src_subseq"], entry["reason"]) == (middle, 50, "bad_field")
    assert bytes(entry["data"]) == poison
    # When Kinesis redelivers the batch anyway (a later record's failure, say)
    again = await persist_event(event, writer)
    # Then nothing is written or quarantined twice
    assert again.response["batchItemFailures"] == []
    assert again.written.ticks_inserted == 0
    assert await count(migrated, "ticks") == 300
    assert len(await quarantined(migrated)) == 1
    await (await pool.get()).close()


async def test_a_corrupt_aggregate_is_quarantined_whole(migrated: ConnectionInfo) -> None:
    event, _ = batch_of(20, 10)
    event["Records"][0]["kinesis"]["data"] = "84mawgAAAA=="  # magic + garbage
    pool, writer = writer_for(migrated)
    outcome = await persist_event(event, writer)
    assert outcome.poison == {"corrupt_record": 1}
    assert outcome.response["batchItemFailures"] == []
    assert await count(migrated, "ticks") == 10
    [entry] = await quarantined(migrated)
    assert (entry["src_subseq"], entry["reason"]) == (-1, "corrupt_record")
    assert bytes(entry["data"]) == base64.b64decode("84mawgAAAA==")
    await (await pool.get()).close()


def greeks_data(token: int, as_of: datetime, **changes: Any) -> bytes:
    """A valid greeks/1 record for a source tick, with ``changes``."""
    record: dict[str, Any] = {
        "schema": "greeks/1", "instrument_token": token, "tradingsymbol": "NIFTY26DEC24000CE",
        "underlying": "NIFTY", "expiry": "2026-12-29", "strike": 24000.0, "option_type": "CE",
        "price": 210.5, "forward": 24100.0, "forward_source": "future", "t_years": 0.087,
        "rate": 0.065, "iv": 0.14, "delta": 0.55, "gamma": 0.0004, "theta": -8.1, "vega": 25.2,
        "rho": -0.18, "raw": {"theta": -2956.5, "vega": 2520.0, "rho": -18.3}, "reason": None,
        "exchange_timestamp": as_of.isoformat(), "as_of": as_of.isoformat(),
        "computed_at": as_of.isoformat(),
        "source": {"shard_id": "shardId-000000000001", "sequence_number": str(token),
                   "sub_sequence_number": 0},
    }  # fmt: skip
    record.update(changes)
    return json.dumps(record).encode()


async def test_one_batch_mixing_every_kind_of_poison_stores_each_good_record_once(
    migrated: ConnectionInfo,
) -> None:
    # Given yesterday's partitions detached by retention, a CHECK the decoder knows
    # nothing of (a database refusal only the write can find), and one batch where
    # good ticks and Greeks sit between records that each failed the whole batch before
    today = datetime(2026, 11, 27, 4, 0, tzinfo=UTC)
    yesterday = today - timedelta(days=1)
    pool, writer = writer_for(migrated)
    await persist_event(kinesis_event([("NIFTY", [tick_bytes(1, 1.0, yesterday)])]), writer)
    conn = await asyncpg.connect(**connection_parameters(settings_for(migrated)))
    await PartitionManager().detach_older_than(conn, today.date())
    await conn.execute("alter table market.ticks add constraint no_13 check (last_price <> 13.13)")
    await conn.close()
    tick = tick_record(256265, 100.0, today)
    never = "1970-01-01T05:30:00+05:30"  # Kite's 0: "never"
    bad = {
        "bad_text": [
            json.dumps({**tick, "underlying": "NIF\u0000TY"}).encode(),
            greeks_data(90, today, tradingsymbol="NIFTY\u0000CE"),
        ],
        "out_of_range": [
            greeks_data(91, today, source={"shard_id": "shardId-000000000001",
                        "sequence_number": "91", "sub_sequence_number": 2**31}),
            json.dumps({**tick, "instrument_token": 2**63}).encode(),
            greeks_data(2**63, today),
        ],
        "bad_field": [
            json.dumps({**tick, "mode": ["full"]}).encode(),
            greeks_data(92, today, option_type={"CE": True}),
        ],
        "partition_detached": [
            json.dumps(tick_record(256265, 99.0, yesterday + timedelta(minutes=5))).encode(),
        ],
        "db_rejected": [json.dumps(tick_record(256265, 13.13, today)).encode()],
    }  # fmt: skip
    good_ticks = [
        json.dumps(tick_record(256265 + n, 100.0 + n, today + timedelta(seconds=n))).encode()
        for n in range(40)
    ]
    never_traded = {**tick_record(256300, 5.0, today), "exchange_timestamp": never,
                    "last_trade_time": never}  # fmt: skip
    good_ticks.append(json.dumps(never_traded).encode())
    good_greeks = [greeks_data(100 + n, today) for n in range(10)]
    poison = [data for datas in bad.values() for data in datas]
    mixed = [*good_ticks[:20], *poison[:5], *good_greeks, *poison[5:], *good_ticks[20:]]
    event = kinesis_event([("NIFTY", mixed[:30]), ("NIFTY", mixed[30:])], first_sequence=7_000)
    # When the function processes it
    outcome = await persist_event(event, writer)
    # Then nothing is reported failed: no retry of the batch or any record of it
    assert outcome.response == {"batchItemFailures": []}
    # And every bad record is counted under its reason, and quarantined once with it
    expected = {reason: len(datas) for reason, datas in bad.items()}
    assert outcome.poison == expected
    entries = await quarantined(migrated)
    assert Counter(e["reason"] for e in entries) == expected
    assert {bytes(e["data"]) for e in entries} == set(poison)
    [refused] = [e for e in entries if e["reason"] == "db_rejected"]
    assert "23514" in refused["detail"]  # the database's own word: a check violation
    # And every good record is stored, once
    assert (outcome.ticks, outcome.greeks) == (41, 10)
    assert await count(migrated, "ticks") == 41 + 0  # yesterday's is in the detached partition
    assert await count(migrated, "greeks") == 10
    # And "never" is stored as NULL, the tick keyed on its receipt time
    conn = await asyncpg.connect(**connection_parameters(settings_for(migrated)))
    stored = await conn.fetchrow(
        "select ts, received_at, exchange_timestamp, last_trade_time "
        "from market.ticks where instrument_token = 256300"
    )
    await conn.close()
    assert stored["ts"] == stored["received_at"]
    assert (stored["exchange_timestamp"], stored["last_trade_time"]) == (None, None)
    # When the same batch is delivered again, Then nothing is stored or quarantined twice
    again = await persist_event(event, writer)
    assert again.response == {"batchItemFailures": []}
    assert await count(migrated, "ticks") == 41
    assert await count(migrated, "greeks") == 10
    assert len(await quarantined(migrated)) == len(poison)
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
