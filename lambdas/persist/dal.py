"""Write ticks, Greeks and minute bars to PostgreSQL, idempotently (asyncpg).

One batch is one transaction. A batch never seen before - the common case -
is binary-COPied straight into the tables, and its minute bars, folded on
the client, are merged into the stored ones in the same transaction. A
replay is caught by the primary keys (the Kinesis identity is part of each):
the COPY fails, nothing is kept, and the batch is merged through a staging
table with ``ON CONFLICT DO NOTHING``, its bars folded from only the rows
inserted *now*. Either everything in the batch commits or nothing does,
which is what lets the caller fail a batch and have Kinesis retry it.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import numpy as np

from lambdas.common.runtime import Lazy
from lambdas.persist.bars import MinuteBars, fold_minute_bars
from lambdas.persist.logic import GREEKS_COLUMNS, TICK_COLUMNS
from lambdas.persist.pgcopy import BinaryCopyEncoder, CopyColumn, Kind
from ticker_core.tz import ist_date, ist_midnight

PARTITIONED_TABLES = ("ticks", "greeks", "bars_1m")
PARTITION_NAME = re.compile(r"^(?P<table>ticks|greeks|bars_1m)_p(?P<day>\d{8})$")
# Bars are updated in place by every batch touching their minute: room on the page
# keeps those updates HOT (no new index entry), measured ~25% off the bar merge.
PARTITION_STORAGE = {"bars_1m": " with (fillfactor = 50)"}
# Distinct from the migration lock: partition DDL from many Lambda environments serialises here.
PARTITION_LOCK_KEY = 0x70617274  # "part"


@dataclass(frozen=True)
class WriteResult:
    """What one batch changed."""

    ticks_inserted: int
    greeks_inserted: int
    bars_touched: int
    replay: bool = False
    """Whether some rows were already stored, so the batch was merged rather than copied."""


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """[00:00 IST of ``day``, 00:00 IST of the next day) as UTC instants."""
    start = ist_midnight(day).astimezone(UTC)
    return start, start + timedelta(days=1)


class PartitionManager:
    """Creates day partitions ahead of need and detaches old ones.

    Remembers which days exist in this process, so the common case (today's
    partition exists) costs no round trip.
    """

    def __init__(self) -> None:
        self._known: set[date] = set()

    async def ensure(self, conn: asyncpg.Connection, days: Iterable[date]) -> None:
        """Make sure every table has a partition for each of ``days``."""
        missing = sorted(set(days) - self._known)
        if not missing:
            return
        async with conn.transaction():
            await conn.execute("select pg_advisory_xact_lock($1)", PARTITION_LOCK_KEY)
            for day in missing:
                start, end = day_bounds(day)
                for table in PARTITIONED_TABLES:
                    # Identifiers are built from a date and a fixed table list, never from input.
                    await conn.execute(
                        f"create table if not exists market.{table}_p{day:%Y%m%d} "
                        f"partition of market.{table} for values from "
                        f"('{start.isoformat()}') to ('{end.isoformat()}')"
                        f"{PARTITION_STORAGE.get(table, '')}"
                    )
        self._known.update(missing)

    async def ensure_ahead(self, conn: asyncpg.Connection, today: date, days_ahead: int) -> None:
        """Partitions for ``today`` and the next ``days_ahead`` days."""
        await self.ensure(conn, (today + timedelta(days=n) for n in range(days_ahead + 1)))

    async def detach_older_than(self, conn: asyncpg.Connection, keep_from: date) -> list[str]:
        """Detach partitions of days before ``keep_from``; returns their names.

        Detached tables stay in the database (schema ``market``) for archiving
        or dropping by an operator; the live tables stop scanning them.
        """
        rows = await conn.fetch(
            "select c.relname, p.relname as parent from pg_inherits i "
            "join pg_class c on c.oid = i.inhrelid join pg_class p on p.oid = i.inhparent "
            "join pg_namespace n on n.oid = p.relnamespace "
            "where n.nspname = 'market' and p.relname = any($1::text[])",
            list(PARTITIONED_TABLES),
        )
        detached = []
        for row in rows:
            match = PARTITION_NAME.match(row["relname"])
            if not match:
                continue
            day = datetime.strptime(match["day"], "%Y%m%d").date()
            if day < keep_from:
                await conn.execute(
                    f"alter table market.{row['parent']} detach partition market.{row['relname']}"
                )
                self._known.discard(day)
                detached.append(row["relname"])
        return sorted(detached)


TICK_KINDS = {
    "ts": Kind.TIMESTAMPTZ, "instrument_token": Kind.INT8, "underlying": Kind.TEXT,
    "mode": Kind.TEXT, "last_price": Kind.FLOAT8, "last_traded_quantity": Kind.INT8,
    "average_traded_price": Kind.FLOAT8, "volume_traded": Kind.INT8,
    "total_buy_quantity": Kind.INT8, "total_sell_quantity": Kind.INT8, "open": Kind.FLOAT8,
    "high": Kind.FLOAT8, "low": Kind.FLOAT8, "close": Kind.FLOAT8, "change": Kind.FLOAT8,
    "last_trade_time": Kind.TIMESTAMPTZ, "oi": Kind.INT8, "oi_day_high": Kind.INT8,
    "oi_day_low": Kind.INT8, "exchange_timestamp": Kind.TIMESTAMPTZ, "depth": Kind.TEXT,
    "received_at": Kind.TIMESTAMPTZ, "src_shard": Kind.TEXT, "src_seq": Kind.NUMERIC,
    "src_subseq": Kind.INT4,
}  # fmt: skip
BAR_INPUTS = ("instrument_token", "ts", "last_price", "volume_traded", "oi")
UNIQUE_PER_ROW = frozenset({"depth"})  # not worth remembering encodings of


def tick_encoder() -> BinaryCopyEncoder:
    """A binary COPY encoder for ``market.ticks`` rows (in TICK_COLUMNS order).

    It keeps the columns the minute bars are folded from, already converted.
    """
    return BinaryCopyEncoder(
        [CopyColumn(name, TICK_KINDS[name], name not in UNIQUE_PER_ROW) for name in TICK_COLUMNS],
        retain=BAR_INPUTS,
    )


STAGING_DDL = """
create temp table if not exists stage_ticks (like market.ticks) on commit delete rows;
create temp table if not exists stage_greeks (like market.greeks) on commit delete rows;
"""

TICK_COLUMN_LIST = ", ".join(TICK_COLUMNS)
GREEKS_COLUMN_LIST = ", ".join(GREEKS_COLUMNS)
ALL_ROWS = slice(None)
SHARD, SEQ, SUBSEQ = (TICK_COLUMNS.index(name) for name in ("src_shard", "src_seq", "src_subseq"))

INSERT_NEW_TICKS = f"""
insert into market.ticks ({TICK_COLUMN_LIST})
select {TICK_COLUMN_LIST} from stage_ticks
on conflict do nothing
returning src_shard, src_seq, src_subseq
"""  # noqa: S608 # nosec B608 # column lists are module constants

# A batch's partial bars merged into the stored ones (see lambdas/persist/bars.py).
# Instants travel as µs since the Unix epoch: exact in int8 and float8 alike.
UPSERT_BARS = """
insert into market.bars_1m as b (
    instrument_token, minute, open, high, low, close, open_ts, close_ts,
    cum_volume_open, cum_volume_close, oi, tick_count
)
select token, to_timestamp(0) + minute_us * interval '1 microsecond', open, high, low, close,
       to_timestamp(0) + open_us * interval '1 microsecond',
       to_timestamp(0) + close_us * interval '1 microsecond',
       cum_volume_open, cum_volume_close, oi, tick_count
from unnest(
    $1::int8[], $2::int8[], $3::float8[], $4::float8[], $5::float8[], $6::float8[],
    $7::int8[], $8::int8[], $9::int8[], $10::int8[], $11::int8[], $12::int4[]
) as u(token, minute_us, open, high, low, close, open_us, close_us,
       cum_volume_open, cum_volume_close, oi, tick_count)
on conflict (instrument_token, minute) do update set
    open = case when excluded.open_ts < b.open_ts then excluded.open else b.open end,
    cum_volume_open = case when excluded.open_ts < b.open_ts
                           then excluded.cum_volume_open else b.cum_volume_open end,
    open_ts = least(b.open_ts, excluded.open_ts),
    high = greatest(b.high, excluded.high),
    low = least(b.low, excluded.low),
    close = case when excluded.close_ts >= b.close_ts then excluded.close else b.close end,
    cum_volume_close = case when excluded.close_ts >= b.close_ts
                            then excluded.cum_volume_close else b.cum_volume_close end,
    oi = case when excluded.close_ts >= b.close_ts
              then coalesce(excluded.oi, b.oi) else b.oi end,
    close_ts = greatest(b.close_ts, excluded.close_ts),
    tick_count = b.tick_count + excluded.tick_count
"""

INSERT_GREEKS = f"""
with inserted as (
    insert into market.greeks ({GREEKS_COLUMN_LIST})
    select {GREEKS_COLUMN_LIST} from stage_greeks
    on conflict do nothing
    returning 1
)
select count(*) from inserted
"""  # noqa: S608 # nosec B608 # column lists are module constants


async def _copy_ticks(
    conn: asyncpg.Connection, table: str, ticks: Sequence[tuple[Any, ...]]
) -> BinaryCopyEncoder:
    """Binary-COPY ``ticks`` into ``table``, chunk by chunk; returns the encoder used.

    The encoder keeps the columns the minute bars are folded from.
    """
    encoder = tick_encoder()
    schema, name = table.split(".")

    async def stream() -> AsyncIterator[bytes]:
        for chunk in encoder.encode(ticks):
            yield chunk

    await conn.copy_to_table(
        name, schema_name=schema, source=stream(), columns=list(encoder.copy_columns),
        format="binary",
    )  # fmt: skip
    return encoder


def _claimed(ticks: Sequence[tuple[Any, ...]], inserted: set[tuple[Any, ...]]) -> Iterator[bool]:
    """For each tick, whether it is the one that ``inserted`` (identities) stored.

    A repeated identity within one batch is stored once, so only its first
    occurrence counts towards the bars.
    """
    for row in ticks:
        identity = (row[SHARD], row[SEQ], row[SUBSEQ])
        if identity in inserted:
            inserted.remove(identity)
            yield True
        else:
            yield False


def _fold_encoded(encoder: BinaryCopyEncoder, new: np.ndarray | slice = ALL_ROWS) -> MinuteBars:
    """Bars of the rows ``encoder`` encoded (only those where ``new`` is true, if given)."""
    (token, _), (ts, _), (price, _), (volume, volume_null), (oi, oi_null) = (
        encoder.retained(name) for name in BAR_INPUTS
    )
    return fold_minute_bars(
        token[new], ts[new], price[new], (volume[new], volume_null[new]), (oi[new], oi_null[new])
    )


async def _merge_bars(conn: asyncpg.Connection, bars: MinuteBars) -> int:
    if not len(bars):
        return 0
    await conn.execute(
        UPSERT_BARS,
        bars.instrument_token.tolist(), bars.minute_us.tolist(), bars.open.tolist(),
        bars.high.tolist(), bars.low.tolist(), bars.close.tolist(), bars.open_ts_us.tolist(),
        bars.close_ts_us.tolist(), bars.cum_volume_open, bars.cum_volume_close, bars.oi,
        bars.tick_count.tolist(),
    )  # fmt: skip
    return len(bars)


async def _copy_all_new(
    conn: asyncpg.Connection,
    ticks: Sequence[tuple[Any, ...]],
    greeks: Sequence[tuple[Any, ...]],
) -> WriteResult:
    """The common case, a batch never seen: straight COPY; the keys refuse any repeat."""
    bars = 0
    async with conn.transaction():
        if ticks:
            encoder = await _copy_ticks(conn, "market.ticks", ticks)
            bars = await _merge_bars(conn, _fold_encoded(encoder))
        if greeks:
            await conn.copy_records_to_table(
                "greeks", schema_name="market", records=greeks, columns=GREEKS_COLUMNS
            )
    return WriteResult(len(ticks), len(greeks), bars, replay=False)


async def _merge_replay(
    conn: asyncpg.Connection,
    ticks: Sequence[tuple[Any, ...]],
    greeks: Sequence[tuple[Any, ...]],
) -> WriteResult:
    """A batch with rows already stored (a retry): insert only the missing ones."""
    await conn.execute(STAGING_DDL)
    ticks_inserted = bars = greeks_inserted = 0
    async with conn.transaction():
        if ticks:
            encoder = await _copy_ticks(conn, "pg_temp.stage_ticks", ticks)
            inserted = {
                (shard, int(seq), subseq)
                for shard, seq, subseq in await conn.fetch(INSERT_NEW_TICKS)
            }
            new = np.fromiter(_claimed(ticks, inserted), bool, len(ticks))
            ticks_inserted = int(new.sum())
            bars = await _merge_bars(conn, _fold_encoded(encoder, new)) if ticks_inserted else 0
        if greeks:
            await conn.copy_records_to_table("stage_greeks", records=greeks, columns=GREEKS_COLUMNS)
            greeks_inserted = int(await conn.fetchval(INSERT_GREEKS))
    return WriteResult(ticks_inserted, greeks_inserted, bars, replay=True)


async def write_batch(
    conn: asyncpg.Connection,
    partitions: PartitionManager,
    ticks: Sequence[tuple[Any, ...]],
    greeks: Sequence[tuple[Any, ...]],
) -> WriteResult:
    """Write one batch atomically; rows already present are skipped.

    Rows are first copied straight into the tables, in one transaction with
    their bars. Kinesis redelivers only after a failure, so that is nearly
    always the whole story; if any row is already stored, the primary key
    refuses the COPY, the transaction rolls back, and the batch is merged
    row by row instead (``ON CONFLICT DO NOTHING``; bars from the rows that
    were new). Ticks are expected in stream order, as a Kinesis event has them.
    """
    days = {ist_date(row[0]) for row in ticks} | {ist_date(row[0]) for row in greeks}
    await partitions.ensure(conn, days)
    try:
        return await _copy_all_new(conn, ticks, greeks)
    except asyncpg.UniqueViolationError:
        return await _merge_replay(conn, ticks, greeks)


class PostgresBatchWriter:
    """The persist function's writer: one pooled connection per batch."""

    def __init__(self, pool: Lazy[asyncpg.Pool], partitions: PartitionManager) -> None:
        self._pool = pool
        self._partitions = partitions

    async def write(
        self, ticks: Sequence[tuple[Any, ...]], greeks: Sequence[tuple[Any, ...]]
    ) -> WriteResult:
        """Write one batch atomically (see :func:`write_batch`)."""
        pool = await self._pool.get()
        async with pool.acquire() as conn:
            return await write_batch(conn, self._partitions, ticks, greeks)

    async def maintain(self, today: date, days_ahead: int, retention_days: int) -> list[str]:
        """Create partitions ahead and detach those past retention; returns detached names."""
        pool = await self._pool.get()
        async with pool.acquire() as conn:
            await self._partitions.ensure_ahead(conn, today, days_ahead)
            return await self._partitions.detach_older_than(
                conn, today - timedelta(days=retention_days)
            )
