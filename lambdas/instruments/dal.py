"""Where a snapshot is published: the S3 objects and the PostgreSQL registry.

S3: the snapshot object is gzip (deterministic bytes) with an SHA-256
checksum S3 verifies on upload; the pointer is small JSON, never cached by
intermediaries. PostgreSQL: one transaction per publication, serialised by
an advisory lock, so two runs (the schedule and an on-demand call) cannot
interleave; rows go in by binary COPY.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import asyncpg

from lambdas.common.runtime import Lazy
from ticker_adapters.instrument_snapshots import (
    SnapshotPointer,
    compress,
    pointer_key,
    read_pointer,
)
from ticker_core.instruments import Instrument

# Distinct from the migration and partition locks.
REGISTRY_LOCK_KEY = 0x696E7374  # "inst"

INSTRUMENT_COLUMNS = (
    "snapshot_date", "instrument_token", "exchange_token", "tradingsymbol", "name",
    "last_price", "expiry", "strike", "tick_size", "lot_size", "instrument_type",
    "segment", "exchange", "underlying",
)  # fmt: skip


class S3SnapshotStore:
    """The snapshot objects and the pointer in one bucket under one prefix."""

    def __init__(self, s3: Any, bucket: str, prefix: str) -> None:
        self._s3 = s3
        self._bucket = bucket
        self._prefix = prefix

    def current(self) -> SnapshotPointer | None:
        """The pointer as it is now (None before the first publication)."""
        return read_pointer(self._s3, self._bucket, self._prefix)

    def put_snapshot(self, key: str, csv_bytes: bytes) -> None:
        """Write the compressed dump at ``key``; S3 checks its SHA-256 on receipt."""
        self._s3.put_object(
            Bucket=self._bucket,
            Key=key,
            Body=compress(csv_bytes),
            ContentType="application/gzip",
            ChecksumAlgorithm="SHA256",
        )

    def put_pointer(self, pointer: SnapshotPointer) -> None:
        """Write ``current.json``: from now on readers load ``pointer.key``."""
        self._s3.put_object(
            Bucket=self._bucket,
            Key=pointer_key(self._prefix),
            Body=pointer.to_json(),
            ContentType="application/json",
            CacheControl="no-cache",
            ChecksumAlgorithm="SHA256",
        )


def instrument_rows(
    pointer: SnapshotPointer, instruments: Sequence[Instrument]
) -> list[tuple[Any, ...]]:
    """``market.instruments`` rows in :data:`INSTRUMENT_COLUMNS` order."""
    day = pointer.day
    return [
        (day, i.instrument_token, i.exchange_token, i.tradingsymbol, i.name, i.last_price,
         i.expiry, i.strike, i.tick_size, i.lot_size, i.instrument_type.value, i.segment,
         i.exchange, i.underlying)
        for i in instruments
    ]  # fmt: skip


class PostgresRegistry:
    """Publishes snapshots to ``market.instrument_snapshots`` and ``market.instruments``."""

    def __init__(self, pool: Lazy[asyncpg.Pool]) -> None:
        self._pool = pool

    async def publish(
        self, pointer: SnapshotPointer, instruments: Sequence[Instrument], keep_days: int
    ) -> bool:
        """Store the snapshot in one transaction; True if any row changed.

        The same day and SHA again: nothing changes (old days are still
        pruned). The same day with another SHA: that day's rows are replaced.
        Days more than ``keep_days`` before this one are deleted.
        """
        pool = await self._pool.get()
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("select pg_advisory_xact_lock($1)", REGISTRY_LOCK_KEY)
            existing = await conn.fetchval(
                "select sha256 from market.instrument_snapshots where snapshot_date = $1",
                pointer.day,
            )
            changed = bool(existing != pointer.sha256)
            if changed:
                await conn.execute(
                    "delete from market.instruments where snapshot_date = $1", pointer.day
                )
                await conn.execute(
                    "insert into market.instrument_snapshots "
                    "(snapshot_date, sha256, s3_key, instruments, summary, published_at) "
                    "values ($1, $2, $3, $4, $5::jsonb, $6) "
                    "on conflict (snapshot_date) do update set sha256 = excluded.sha256, "
                    "s3_key = excluded.s3_key, instruments = excluded.instruments, "
                    "summary = excluded.summary, published_at = excluded.published_at",
                    pointer.day,
                    pointer.sha256,
                    pointer.key,
                    len(instruments),
                    json.dumps(pointer.summary.as_dict()),
                    pointer.published_at,
                )
                await conn.copy_records_to_table(
                    "instruments",
                    schema_name="market",
                    columns=INSTRUMENT_COLUMNS,
                    records=instrument_rows(pointer, instruments),
                )
            await conn.execute(
                "delete from market.instrument_snapshots where snapshot_date < $1",
                pointer.day - timedelta(days=keep_days),
            )
        return changed
