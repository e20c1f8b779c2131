"""Persisting ticks and Greeks to a real PostgreSQL: exactly once, bars that match the ticks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from lambdas.common.db import DatabaseSettings, connection_parameters
from lambdas.migrate.dal import migrate
from lambdas.migrate.logic import bundled_migrations
from lambdas.persist.dal import PartitionManager, write_batch
from lambdas.persist.logic import TICK_COLUMNS, decode
from sandbox.postgres import ConnectionInfo, EmbeddedPostgres
from tests.conftest import db_env
from tests.factories import tick_record, tick_stream, user_record
from tests.waiting import wait_until_async
from ticker_core.records import KinesisUserRecord

pytestmark = pytest.mark.integration

KINESIS_SEQUENCE = 49_590_338_271_490_256_608_559_692_538_361_571_095_921_575_989_136_588_898
TS = datetime(2026, 11, 27, 4, 0, tzinfo=UTC)


async def connect(info: ConnectionInfo) -> asyncpg.Connection:
    settings = DatabaseSettings(**{k[3:].lower(): v for k, v in db_env(info).items()})
    conn = await asyncpg.connect(**connection_parameters(settings))
    await conn.execute("set timezone to 'UTC'")
    return conn


@pytest.fixture
async def db(fresh_database: ConnectionInfo) -> AsyncIterator[asyncpg.Connection]:
    conn = await connect(fresh_database)
    await migrate(conn, bundled_migrations())
    yield conn
    await conn.close()


def rows_of(stream: list[KinesisUserRecord]) -> tuple[list[Any], list[Any]]:
    ticks, greeks = [], []
    for user in stream:
        kind, row = decode(user)
        (ticks if kind == "tick" else greeks).append(row)
    return ticks, greeks


def expected_bars(
    stream: list[KinesisUserRecord],
) -> dict[tuple[int, datetime], dict[str, Any]]:
    """Minute bars computed in Python, straight from the records, in stream order."""
    bars: dict[tuple[int, datetime], dict[str, Any]] = {}
    for user in stream:
        r = json.loads(user.data)
        ts = datetime.fromisoformat(r["exchange_timestamp"])
        key = (r["instrument_token"], ts.replace(second=0, microsecond=0))
        price = r["last_price"]
        bar = bars.setdefault(key, {"open": price, "high": price, "low": price, "ticks": 0})
        bar["high"] = max(bar["high"], price)
        bar["low"] = min(bar["low"], price)
        bar["close"] = price
        bar["cum_close"] = r["volume_traded"]
        bar["ticks"] += 1
    return bars


async def fetch_bars(conn: asyncpg.Connection) -> dict[tuple[int, datetime], dict[str, Any]]:
    rows = await conn.fetch(
        "select instrument_token, minute, open, high, low, close, cum_volume_close, tick_count "
        "from market.bars_1m"
    )
    return {
        (r["instrument_token"], r["minute"]): {
            "open": r["open"],
            "high": r["high"],
            "low": r["low"],
            "close": r["close"],
            "cum_close": r["cum_volume_close"],
            "ticks": r["tick_count"],
        }
        for r in rows
    }


async def test_a_batch_written_twice_yields_each_row_once(db: asyncpg.Connection) -> None:
    # Given a batch of 2,000 ticks spanning several minutes
    stream = list(tick_stream(2000))
    ticks, greeks = rows_of(stream)
    partitions = PartitionManager()
    # When it is written, and then written again (a Kinesis retry)
    first = await write_batch(db, partitions, ticks, greeks)
    second = await write_batch(db, partitions, ticks, greeks)
    # Then every tick is stored once, and the replay inserted nothing
    assert first.ticks_inserted == 2000
    assert second.ticks_inserted == 0
    assert await db.fetchval("select count(*) from market.ticks") == 2000
    # And the minute bars match the ticks exactly, unmoved by the replay
    assert await fetch_bars(db) == expected_bars(stream)


async def test_bars_are_exact_however_the_stream_is_split_and_replayed(
    db: asyncpg.Connection,
) -> None:
    # Given a stream delivered in uneven batches, with overlapping redeliveries
    # (what bisect-on-error and partial batch responses produce)
    stream = list(tick_stream(1500, seed=11))
    partitions = PartitionManager()
    cuts = [(0, 400), (300, 700), (700, 701), (650, 1200), (1100, 1500), (0, 1500)]
    # When each delivery is written in turn
    for start, end in cuts:
        ticks, _ = rows_of(stream[start:end])
        await write_batch(db, partitions, ticks, [])
    # Then the table holds the stream exactly once and the bars are those of the whole stream
    assert await db.fetchval("select count(*) from market.ticks") == 1500
    assert await fetch_bars(db) == expected_bars(stream)


async def test_bar_volume_view_derives_traded_volume(db: asyncpg.Connection) -> None:
    stream = list(tick_stream(600, seed=5, tokens=1))
    ticks, _ = rows_of(stream)
    await write_batch(db, PartitionManager(), ticks, [])
    rows = await db.fetch("select volume, minute from market.bars_1m_view order by minute")
    total = sum(r["volume"] for r in rows)
    cum = [json.loads(u.data)["volume_traded"] for u in stream]
    # The view's volumes add up to the cumulative volume traded between the first and last tick
    assert total == cum[-1] - cum[0]


@pytest.mark.parametrize("exchange_timestamp", [True, False], ids=["full-mode", "quote-mode"])
async def test_greeks_replayed_from_a_recomputation_collide_on_the_source_tick(
    db: asyncpg.Connection, exchange_timestamp: bool
) -> None:
    # Given a Greeks row, and the same row recomputed 30 s later (new computed_at, same
    # source) - for a full-mode tick and for a quote-mode tick, which has no exchange time
    ts = datetime(2026, 11, 27, 4, 0, tzinfo=UTC)
    record = {
        "schema": "greeks/1", "instrument_token": 1, "tradingsymbol": "X", "underlying": "NIFTY",
        "expiry": "2026-12-29", "strike": 24000.0, "option_type": "PE", "price": 12.0,
        "forward": 24100.0, "forward_source": "parity", "t_years": 0.1, "rate": 0.065,
        "iv": 0.2, "delta": -0.1, "gamma": 0.0001, "theta": -1.0, "vega": 2.0, "rho": -0.1,
        "raw": {"theta": -365.0, "vega": 200.0, "rho": -10.0}, "reason": None,
        "exchange_timestamp": ts.isoformat() if exchange_timestamp else None,
        "as_of": ts.isoformat(), "computed_at": ts.isoformat(),
        "source": {"shard_id": "shardId-000000000000", "sequence_number": "42",
                   "sub_sequence_number": 0},
    }  # fmt: skip
    later = {**record, "computed_at": (ts + timedelta(seconds=30)).isoformat()}
    rows = [
        decode(user_record(json.dumps(r).encode(), str(n), shard_id="shardId-000000000009"))[1]
        for n, r in enumerate((record, later))
    ]
    # When both are written
    result = await write_batch(db, PartitionManager(), [], rows)
    # Then only one is stored, keyed on the tick's instant rather than the computation's
    assert result.greeks_inserted == 1
    assert await db.fetchval("select count(*) from market.greeks") == 1
    assert await db.fetchval("select ts from market.greeks") == ts


async def test_partitions_are_created_on_demand_and_detached_by_retention(
    db: asyncpg.Connection,
) -> None:
    # Given ticks on two different IST days
    partitions = PartitionManager()
    day1 = list(tick_stream(10, start=datetime(2026, 11, 26, 4, 0, tzinfo=UTC)))
    day2 = list(tick_stream(10, start=datetime(2026, 11, 27, 4, 0, tzinfo=UTC)))
    day2 = [user_record(u.data, str(int(u.sequence_number) + 100)) for u in day2]
    # When they are written, Then each day got its own partition
    await write_batch(db, partitions, rows_of(day1)[0] + rows_of(day2)[0], [])
    names = {
        r["relname"]
        for r in await db.fetch("select relname from pg_class where relname like 'ticks_p%'")
    }
    assert {"ticks_p20261126", "ticks_p20261127"} <= names
    # When partitions older than the 27th are detached
    detached = await partitions.detach_older_than(db, date(2026, 11, 27))
    # Then the 26th's tables left the live tables, and the 27th's stayed
    assert detached == ["bars_1m_p20261126", "greeks_p20261126", "ticks_p20261126"]
    assert await db.fetchval("select count(*) from market.ticks") == 10
    # And ahead-of-time creation is idempotent, across processes too
    await partitions.ensure_ahead(db, date(2026, 11, 27), days_ahead=3)
    await PartitionManager().ensure_ahead(db, date(2026, 11, 27), days_ahead=3)
    ahead = await db.fetchval(
        "select count(*) from pg_class where relname ~ '^ticks_p2026(1127|1128|1129|1130)$'"
    )
    assert ahead == 4


async def test_a_crash_mid_batch_commits_nothing_and_the_retry_is_exact() -> None:
    # Given a private server, migrated, and a stream split in two batches
    with EmbeddedPostgres() as server:
        conn = await connect(server.info)
        await migrate(conn, bundled_migrations())
        stream = list(tick_stream(3000, seed=3))
        first, second = rows_of(stream[:1500])[0], rows_of(stream[1500:])[0]
        partitions = PartitionManager()
        await write_batch(conn, partitions, first, [])
        # And another session holding the bars table, so that the second batch, once its
        # ticks are copied, waits inside its transaction
        blocker, observer = await connect(server.info), await connect(server.info)
        await blocker.execute("begin; lock table market.bars_1m in share mode")
        writing = asyncio.create_task(write_batch(conn, partitions, second, []))
        await wait_until_async(
            lambda: observer.fetchrow(
                "select wait_event_type, query from pg_stat_activity where pid = $1",
                conn.get_server_pid(),
            ),
            lambda seen: seen["wait_event_type"] == "Lock" and "bars_1m" in seen["query"],
            what="the second batch to wait for the bars table",
        )
        # When the database crashes while the second batch is being written
        await asyncio.to_thread(server.restart, "immediate")
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
            await writing
        for lost in (conn, blocker, observer):
            lost.terminate()
        # Then nothing of the second batch was committed
        conn = await connect(server.info)
        assert await conn.fetchval("select count(*) from market.ticks") == 1500
        # And after it comes back, Kinesis retries the whole second batch (and, for
        # good measure, the first)
        await write_batch(conn, PartitionManager(), first + second, [])
        # And every tick is stored exactly once, with bars matching the whole stream
        assert await conn.fetchval("select count(*) from market.ticks") == 3000
        assert await fetch_bars(conn) == expected_bars(stream)
        await conn.close()


async def test_new_batches_are_copied_and_redeliveries_merged(db: asyncpg.Connection) -> None:
    # Given a stream whose second delivery overlaps the first by half
    stream = list(tick_stream(1000, seed=8))
    partitions = PartitionManager()
    first, _ = rows_of(stream[:600])
    overlapping, _ = rows_of(stream[300:])
    # When both are written
    copied = await write_batch(db, partitions, first, [])
    merged = await write_batch(db, partitions, overlapping, [])
    # Then the first went straight in, and the second fell back to the merge,
    # inserting only its unseen half, once
    assert (copied.replay, copied.ticks_inserted) == (False, 600)
    assert (merged.replay, merged.ticks_inserted) == (True, 400)
    assert await db.fetchval("select count(*) from market.ticks") == 1000
    assert await fetch_bars(db) == expected_bars(stream)


@pytest.mark.parametrize("mode", ["ltp", "quote", "full"])
async def test_the_column_encoder_stores_what_asyncpg_would(
    db: asyncpg.Connection, mode: str
) -> None:
    # Given ticks of one mode (ltp and quote leave many columns NULL)
    stream = [
        user_record(
            json.dumps(
                tick_record(256265 + n % 7, 100.0 + n / 8, TS + timedelta(seconds=n), mode=mode)
            ).encode(),
            str(KINESIS_SEQUENCE + n // 10),
            n % 10,
        )
        for n in range(300)
    ]
    ticks, _ = rows_of(stream)
    # When written by the persist path, and separately by asyncpg's own COPY encoding
    await write_batch(db, PartitionManager(), ticks, [])
    await db.execute("create temp table reference (like market.ticks)")
    await db.copy_records_to_table("reference", records=ticks, columns=TICK_COLUMNS)
    # Then the two tables hold the same rows, value for value
    difference = await db.fetchval(
        "select count(*) from ((select * from market.ticks except all select * from reference)"
        " union all (select * from reference except all select * from market.ticks)) d"
    )
    assert difference == 0
    assert await db.fetchval("select count(*) from reference") == 300


async def test_a_real_kinesis_sequence_number_is_kept_to_the_last_digit(
    db: asyncpg.Connection,
) -> None:
    # Given a tick carried by a record with a 56-digit sequence number, as Kinesis assigns
    record = tick_record(256265, 24010.5, TS)
    ticks, _ = rows_of([user_record(json.dumps(record).encode(), str(KINESIS_SEQUENCE), 7)])
    # When written
    await write_batch(db, PartitionManager(), ticks, [])
    # Then it is stored exactly
    stored = await db.fetchval("select src_seq::text from market.ticks")
    assert stored == str(KINESIS_SEQUENCE)


async def test_bar_partitions_leave_room_for_in_place_updates(db: asyncpg.Connection) -> None:
    # Given the partitions of one day, When they are created
    await PartitionManager().ensure(db, {date(2026, 11, 27)})
    options = {
        r["relname"]: r["reloptions"]
        for r in await db.fetch(
            "select relname, reloptions from pg_class where relname like '%_p20261127'"
        )
    }
    # Then only the bars, which every batch rewrites, keep free space on their pages
    assert options == {
        "ticks_p20261127": None,
        "greeks_p20261127": None,
        "bars_1m_p20261127": ["fillfactor=50"],
    }


async def test_one_batch_written_by_two_writers_at_once_lands_once(
    db: asyncpg.Connection, fresh_database: ConnectionInfo
) -> None:
    # Given a batch, and a second writer (a retry racing an invocation that timed out)
    stream = list(tick_stream(3000, seed=13))
    ticks, _ = rows_of(stream)
    other = await connect(fresh_database)
    try:
        # When both write it at the same moment
        results = await asyncio.gather(
            write_batch(db, PartitionManager(), ticks, []),
            write_batch(other, PartitionManager(), ticks, []),
        )
    finally:
        await other.close()
    # Then one copied it, the other was refused by the key and merged nothing
    assert sorted((r.replay, r.ticks_inserted) for r in results) == [(False, 3000), (True, 0)]
    assert await db.fetchval("select count(*) from market.ticks") == 3000
    assert await fetch_bars(db) == expected_bars(stream)


async def test_a_record_repeated_within_one_batch_is_stored_and_counted_once(
    db: asyncpg.Connection,
) -> None:
    # Given a batch in which one user record appears twice (a corrupt producer, say)
    stream = list(tick_stream(50, seed=17))
    ticks, _ = rows_of([*stream, stream[10]])
    # When it is written
    result = await write_batch(db, PartitionManager(), ticks, [])
    # Then the key refused the straight copy, and the merge stored the record once
    assert (result.replay, result.ticks_inserted) == (True, 50)
    assert await db.fetchval("select count(*) from market.ticks") == 50
    # And the bars count it once
    assert await fetch_bars(db) == expected_bars(stream)
