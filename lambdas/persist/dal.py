"""Write ticks, Greeks and minute bars to PostgreSQL, idempotently (asyncpg).

One batch is one transaction. A batch never seen before - the common case -
is binary-COPied straight into the tables, and its minute bars, folded on
the client, are merged into the stored ones in the same transaction. A
replay is caught by the primary keys (the Kinesis identity is part of each):
the COPY fails, nothing is kept, and the batch is merged through a staging
table with ``ON CONFLICT DO NOTHING``, its bars folded from only the rows
inserted *now*. The batch's poison (what the decoder refused) goes into
``market.quarantine`` in the same transaction.

Rows the database refuses. The decoder bounds every value to its column, so
this is rare; but one row the database will not take must not cost the
batch's other rows. A refusal of the data itself - SQLSTATE class 22 (data
exception), 23 (integrity: a CHECK, or no partition for the row) or 54 (a
limit, such as an oversized key), or the client failing to encode a value -
sends the batch down the isolation path: the day partitions are looked at
afresh, then the rows are written in halves, each in its own transaction,
and a refused half is halved again until each refused row stands alone. It
is quarantined (reason ``db_rejected``, the database's error as detail), and
every other row is stored. Partial commits are safe: writes are idempotent,
so a redelivery after a crash half way merges what is already there. Any
other error (connection lost, the server shutting down, a serialization
failure) is not about the rows: it propagates, the invocation fails, and
Kinesis redelivers the batch.

A day whose partitions were detached (past retention) can take no rows:
``create table if not exists`` does nothing for a detached table. Its rows
are quarantined (reason ``partition_detached``) rather than written.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

import asyncpg
import numpy as np

from lambdas.common.kinesis_batch import Poisoned, describe
from lambdas.common.runtime import Lazy
from lambdas.persist.bars import MinuteBars, fold_minute_bars
from lambdas.persist.logic import GREEKS_COLUMNS, TICK_COLUMNS, Rows
from lambdas.persist.pgcopy import BinaryCopyEncoder, CopyColumn, Kind
from ticker_core.tz import ist_date, ist_midnight

PARTITIONED_TABLES = ("ticks", "greeks", "bars_1m")
PARTITION_NAME = re.compile(r"^(?P<table>ticks|greeks|bars_1m)_p(?P<day>\d{8})$")
# Bars are updated in place by every batch touching their minute: room on the page
# keeps those updates HOT (no new index entry), measured ~25% off the bar merge.
PARTITION_STORAGE = {"bars_1m": " with (fillfactor = 50)"}
# Distinct from the migration lock: partition DDL from many Lambda environments serialises here.
PARTITION_LOCK_KEY = 0x70617274  # "part"


PARTITION_DETACHED: Final = "partition_detached"
DB_REJECTED: Final = "db_rejected"
ROW_ERRORS: Final = (
    asyncpg.DataError,  # class 22: a value the column cannot hold
    asyncpg.IntegrityConstraintViolationError,  # class 23: a CHECK, no partition for the row
    asyncpg.ProgramLimitExceededError,  # class 54: e.g. a key too large for its index
    ValueError,  # the client could not encode a value (asyncpg's own DataError is one)
    OverflowError,  # the column encoder: an integer beyond its column
)
"""Errors that are about the rows written, not the connection or the server: worth isolating."""

Describe = Callable[[str, int, str, str], Poisoned]
"""(kind "tick"|"greeks", row index, reason, detail) -> the row's quarantine entry."""


@dataclass(frozen=True)
class WriteResult:
    """What one batch changed."""

    ticks_inserted: int
    greeks_inserted: int
    bars_touched: int
    replay: bool = False
    """Whether some rows were already stored, so the batch was merged rather than copied."""
    rejected: tuple[Poisoned, ...] = ()
    """Rows the write quarantined itself (partition_detached, db_rejected), not the decoder."""
    ticks_rejected: int = 0
    greeks_rejected: int = 0
    quarantined: int = 0
    """Entries the write put in the quarantine (the decoder's and its own; new or repeated)."""

    def plus(self, other: WriteResult) -> WriteResult:
        """Both parts' counts, as if one write."""
        return WriteResult(
            self.ticks_inserted + other.ticks_inserted,
            self.greeks_inserted + other.greeks_inserted,
            self.bars_touched + other.bars_touched,
            self.replay or other.replay,
        )


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """[00:00 IST of ``day``, 00:00 IST of the next day) as UTC instants."""
    start = ist_midnight(day).astimezone(UTC)
    return start, start + timedelta(days=1)


EXISTING_PARTITIONS = """
select c.relname, c.relispartition
from pg_class c join pg_namespace n on n.oid = c.relnamespace
where n.nspname = 'market' and c.relname = any($1::text[])
"""


class PartitionManager:
    """Creates day partitions ahead of need, detaches old ones, knows which days are closed.

    Remembers which days have attached partitions in this process, so the
    common case (today's partition exists) costs no round trip. A day whose
    partition exists but is detached is *closed*: it is never remembered, so
    it is looked at again each time (an operator may re-attach it).
    """

    def __init__(self) -> None:
        self._known: set[date] = set()

    async def ensure(self, conn: asyncpg.Connection, days: Iterable[date]) -> set[date]:
        """Make sure every table has a partition for each of ``days``; returns the closed ones.

        A closed day has a partition that was detached (retention): rows for
        it cannot be written, and creating it again would do nothing.
        """
        missing = sorted(set(days) - self._known)
        if not missing:
            return set()
        names = {(day, t): f"{t}_p{day:%Y%m%d}" for day in missing for t in PARTITIONED_TABLES}
        async with conn.transaction():
            await conn.execute("select pg_advisory_xact_lock($1)", PARTITION_LOCK_KEY)
            attached = dict(await conn.fetch(EXISTING_PARTITIONS, list(names.values())))
            closed = {day for (day, _), name in names.items() if attached.get(name) is False}
            for (day, table), name in names.items():
                if day in closed or name in attached:
                    continue
                start, end = day_bounds(day)
                # Identifiers are built from a date and a fixed table list, never from input.
                await conn.execute(
                    f"create table if not exists market.{name} "
                    f"partition of market.{table} for values from "
                    f"('{start.isoformat()}') to ('{end.isoformat()}')"
                    f"{PARTITION_STORAGE.get(table, '')}"
                )
        self._known.update(day for day in missing if day not in closed)
        return closed

    def forget(self) -> None:
        """Look at every day afresh next time (another process may have detached one)."""
        self._known.clear()

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

INSERT_QUARANTINE = """
insert into market.quarantine (
    stream_arn, src_shard, src_seq, src_subseq, partition_key, reason, detail, data
) values ($1, $2, $3, $4, $5, $6, $7, $8)
on conflict do nothing
"""
QUARANTINE_KEY_LIMIT = 256  # the identity is the primary key: bounded well inside an index row
QUARANTINE_TEXT_LIMIT = 2000

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


def _quarantine_text(value: str | None, limit: int = QUARANTINE_TEXT_LIMIT) -> str | None:
    """Text the quarantine can always hold: no NUL, no lone surrogate, bounded."""
    if value is None:
        return None
    cleaned = value.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode()
    return cleaned[:limit]


async def _insert_quarantine(conn: asyncpg.Connection, entries: Sequence[Poisoned]) -> None:
    """Quarantine entries, each once: nothing in them can make the insert fail."""
    key = QUARANTINE_KEY_LIMIT
    await conn.executemany(
        INSERT_QUARANTINE,
        [
            (
                _quarantine_text(e.stream_arn, key), _quarantine_text(e.shard_id, key),
                _quarantine_text(e.sequence_number, key), e.sub_sequence_number,
                _quarantine_text(e.partition_key), e.reason, _quarantine_text(e.detail), e.data,
            )
            for e in entries
        ],
    )  # fmt: skip


async def _copy_all_new(
    conn: asyncpg.Connection,
    ticks: Sequence[tuple[Any, ...]],
    greeks: Sequence[tuple[Any, ...]],
    quarantine: Sequence[Poisoned],
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
        if quarantine:
            await _insert_quarantine(conn, quarantine)
    return WriteResult(len(ticks), len(greeks), bars, replay=False)


async def _merge_replay(
    conn: asyncpg.Connection,
    ticks: Sequence[tuple[Any, ...]],
    greeks: Sequence[tuple[Any, ...]],
    quarantine: Sequence[Poisoned],
) -> WriteResult:
    """A batch with rows already stored (a retry): insert only the missing ones."""
    await conn.execute(STAGING_DDL)
    ticks_inserted = bars = greeks_inserted = 0
    async with conn.transaction():
        if quarantine:
            await _insert_quarantine(conn, quarantine)
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


async def _write_once(
    conn: asyncpg.Connection,
    ticks: Sequence[tuple[Any, ...]],
    greeks: Sequence[tuple[Any, ...]],
    quarantine: Sequence[Poisoned] = (),
) -> WriteResult:
    """Everything in one transaction: copied if new, merged if some rows are stored already."""
    try:
        return await _copy_all_new(conn, ticks, greeks, quarantine)
    except asyncpg.UniqueViolationError:
        return await _merge_replay(conn, ticks, greeks, quarantine)


async def write_batch(
    conn: asyncpg.Connection,
    partitions: PartitionManager,
    ticks: Sequence[tuple[Any, ...]],
    greeks: Sequence[tuple[Any, ...]],
    *,
    quarantine: Sequence[Poisoned] = (),
    describe: Describe | None = None,
) -> WriteResult:
    """Write one batch; rows already present are skipped, rows that cannot be are quarantined.

    Rows are first copied straight into the tables, in one transaction with
    their bars and ``quarantine`` (the decoder's poison). Kinesis redelivers
    only after a failure, so that is nearly always the whole story; if any
    row is already stored, the primary key refuses the COPY, the transaction
    rolls back, and the batch is merged instead (``ON CONFLICT DO NOTHING``;
    bars from the rows that were new). If the database refuses the rows
    themselves, or a day's partition was detached, the batch is isolated
    row by row (see the module docstring); ``describe`` makes a refused
    row's quarantine entry (default: from the row's own identity and values).
    Ticks are expected in stream order, as a Kinesis event has them.
    """
    describe = describe or _row_describer(ticks, greeks)
    days = {ist_date(row[0]) for row in ticks} | {ist_date(row[0]) for row in greeks}
    if not await partitions.ensure(conn, days):
        try:
            return replace(
                await _write_once(conn, ticks, greeks, quarantine), quarantined=len(quarantine)
            )
        except ROW_ERRORS:
            partitions.forget()  # another environment may have detached a day we knew
    return await _isolate(conn, partitions, ticks, greeks, quarantine, describe)


async def _isolate(
    conn: asyncpg.Connection,
    partitions: PartitionManager,
    ticks: Sequence[tuple[Any, ...]],
    greeks: Sequence[tuple[Any, ...]],
    quarantine: Sequence[Poisoned],
    describe: Describe,
) -> WriteResult:
    """Store every row the database takes, quarantine each one it refuses (by halving)."""
    days = {ist_date(row[0]) for row in ticks} | {ist_date(row[0]) for row in greeks}
    closed = await partitions.ensure(conn, days)
    rejected: list[Poisoned] = []
    refused = {"tick": 0, "greeks": 0}
    total = WriteResult(0, 0, 0)
    for kind, rows in (("tick", ticks), ("greeks", greeks)):
        before = len(rejected)
        open_rows = []
        for index, row in enumerate(rows):
            day = ist_date(row[0])
            if day in closed:
                detail = f"the partitions of {day} were detached (past retention)"
                rejected.append(describe(kind, index, PARTITION_DETACHED, detail))
            else:
                open_rows.append(index)
        pending = [open_rows] if open_rows else []
        while pending:
            part = pending.pop()
            chosen = [rows[i] for i in part]
            try:
                if kind == "tick":
                    written = await _write_once(conn, chosen, ())
                else:
                    written = await _write_once(conn, (), chosen)
            except ROW_ERRORS as exc:
                if len(part) == 1:
                    rejected.append(describe(kind, part[0], DB_REJECTED, _sql_error(exc)))
                else:  # the first half is written first: ticks keep their stream order
                    middle = len(part) // 2
                    pending += [part[middle:], part[:middle]]
                continue
            total = total.plus(written)
        refused[kind] = len(rejected) - before
    entries = [*quarantine, *rejected]
    if entries:
        async with conn.transaction():
            await _insert_quarantine(conn, entries)
    return replace(
        total,
        rejected=tuple(rejected),
        ticks_rejected=refused["tick"],
        greeks_rejected=refused["greeks"],
        quarantined=len(entries),
    )


def _sql_error(exc: Exception) -> str:
    """The database's refusal, with its SQLSTATE when it has one."""
    sqlstate = getattr(exc, "sqlstate", None)
    return f"SQLSTATE {sqlstate}: {describe(exc)}" if sqlstate else describe(exc)


def _row_describer(ticks: Sequence[tuple[Any, ...]], greeks: Sequence[tuple[Any, ...]]) -> Describe:
    """Quarantine entries from the rows alone (a caller without the user records)."""

    def describe_row(kind: str, index: int, reason: str, detail: str) -> Poisoned:
        row = (ticks if kind == "tick" else greeks)[index]
        # Both tables end with the identity: src_shard, src_seq, src_subseq.
        return Poisoned(
            stream_arn="",
            shard_id=str(row[-3]),
            sequence_number=str(row[-2]),
            sub_sequence_number=int(row[-1]),
            partition_key=None,
            data=repr(row).encode(),
            reason=reason,
            detail=detail,
        )

    return describe_row


class PostgresBatchWriter:
    """The persist function's writer: one pooled connection per batch."""

    def __init__(self, pool: Lazy[asyncpg.Pool], partitions: PartitionManager) -> None:
        self._pool = pool
        self._partitions = partitions

    async def write(self, rows: Rows) -> WriteResult:
        """Write one decoded batch and its quarantine (see :func:`write_batch`)."""
        pool = await self._pool.get()
        async with pool.acquire() as conn:
            return await write_batch(
                conn, self._partitions, rows.ticks, rows.greeks,
                quarantine=rows.quarantine, describe=rows.rejected,
            )  # fmt: skip

    async def maintain(self, today: date, days_ahead: int, retention_days: int) -> list[str]:
        """Create partitions ahead and detach those past retention; returns detached names."""
        pool = await self._pool.get()
        async with pool.acquire() as conn:
            await self._partitions.ensure_ahead(conn, today, days_ahead)
            return await self._partitions.detach_older_than(
                conn, today - timedelta(days=retention_days)
            )
