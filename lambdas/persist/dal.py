"""Write ticks, Greeks and minute bars to PostgreSQL, idempotently (asyncpg).

One batch is one transaction: rows are bulk-copied (binary COPY) into
session-local staging tables, then inserted with ``ON CONFLICT DO NOTHING``
on the Kinesis identity. Minute bars are folded from the ``RETURNING`` set -
only rows inserted *now* - so a replayed batch inserts nothing and leaves
the bars as they were. Either everything in the batch commits or nothing
does, which is what lets the caller fail a batch and have Kinesis retry it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import asyncpg

from lambdas.persist.logic import GREEKS_COLUMNS, TICK_COLUMNS

IST_OFFSET = timedelta(hours=5, minutes=30)
PARTITIONED_TABLES = ("ticks", "greeks", "bars_1m")
PARTITION_NAME = re.compile(r"^(?P<table>ticks|greeks|bars_1m)_p(?P<day>\d{8})$")
# Distinct from the migration lock: partition DDL from many Lambda environments serialises here.
PARTITION_LOCK_KEY = 0x70617274  # "part"


@dataclass(frozen=True)
class WriteResult:
    """What one batch changed."""

    ticks_inserted: int
    greeks_inserted: int
    bars_touched: int


def ist_day(instant: datetime) -> date:
    """The IST calendar day of an aware instant (partitions follow trading days)."""
    return (instant.astimezone(UTC) + IST_OFFSET).date()


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """[00:00 IST of ``day``, 00:00 IST of the next day) as UTC instants."""
    start = datetime.combine(day, time(0), tzinfo=UTC) - IST_OFFSET
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


STAGING_DDL = """
create temp table if not exists stage_ticks (like market.ticks) on commit delete rows;
create temp table if not exists stage_greeks (like market.greeks) on commit delete rows;
"""

TICK_COLUMN_LIST = ", ".join(TICK_COLUMNS)
GREEKS_COLUMN_LIST = ", ".join(GREEKS_COLUMNS)

# Ties on ts (exchange timestamps have 1 s resolution) are broken by stream order.
INSERT_TICKS_AND_FOLD_BARS = f"""
with inserted as (
    insert into market.ticks ({TICK_COLUMN_LIST})
    select {TICK_COLUMN_LIST} from stage_ticks
    on conflict do nothing
    returning instrument_token, ts, last_price, volume_traded, oi, src_seq, src_subseq
), minute as (
    select
        instrument_token,
        date_trunc('minute', ts) as minute,
        (array_agg(last_price order by ts, src_seq, src_subseq))[1] as open,
        max(last_price) as high,
        min(last_price) as low,
        (array_agg(last_price order by ts desc, src_seq desc, src_subseq desc))[1] as close,
        min(ts) as open_ts,
        max(ts) as close_ts,
        (array_agg(volume_traded order by ts, src_seq, src_subseq))[1] as cum_volume_open,
        (array_agg(volume_traded order by ts desc, src_seq desc, src_subseq desc))[1]
            as cum_volume_close,
        (array_agg(oi order by ts desc, src_seq desc, src_subseq desc))[1] as oi,
        count(*) as tick_count
    from inserted
    group by 1, 2
), bars as (
    insert into market.bars_1m as b (
        instrument_token, minute, open, high, low, close, open_ts, close_ts,
        cum_volume_open, cum_volume_close, oi, tick_count
    )
    select instrument_token, minute, open, high, low, close, open_ts, close_ts,
           cum_volume_open, cum_volume_close, oi, tick_count
    from minute
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
    returning 1
)
select (select count(*) from inserted) as ticks, (select count(*) from bars) as bars
"""  # noqa: S608 # nosec B608 # column lists are module constants

INSERT_GREEKS = f"""
with inserted as (
    insert into market.greeks ({GREEKS_COLUMN_LIST})
    select {GREEKS_COLUMN_LIST} from stage_greeks
    on conflict do nothing
    returning 1
)
select count(*) from inserted
"""  # noqa: S608 # nosec B608 # column lists are module constants


async def write_batch(
    conn: asyncpg.Connection,
    partitions: PartitionManager,
    ticks: Sequence[tuple[Any, ...]],
    greeks: Sequence[tuple[Any, ...]],
) -> WriteResult:
    """Write one batch atomically; rows already present are skipped."""
    days = {ist_day(row[0]) for row in ticks} | {ist_day(row[0]) for row in greeks}
    await partitions.ensure(conn, days)
    await conn.execute(STAGING_DDL)
    ticks_inserted = bars = greeks_inserted = 0
    async with conn.transaction():
        if ticks:
            await conn.copy_records_to_table("stage_ticks", records=ticks, columns=TICK_COLUMNS)
            row = await conn.fetchrow(INSERT_TICKS_AND_FOLD_BARS)
            ticks_inserted, bars = int(row["ticks"]), int(row["bars"])
        if greeks:
            await conn.copy_records_to_table("stage_greeks", records=greeks, columns=GREEKS_COLUMNS)
            greeks_inserted = int(await conn.fetchval(INSERT_GREEKS))
    return WriteResult(ticks_inserted, greeks_inserted, bars)
