"""Apply migrations to PostgreSQL (asyncpg)."""

from __future__ import annotations

from typing import Any

import asyncpg

from lambdas.common.db import DatabaseSettings, connection_parameters
from lambdas.migrate.logic import Migration, pending

# Any fixed number works; it only has to be the same for every runner.
MIGRATION_LOCK_KEY = 0x7469636B  # "tick"

BOOKKEEPING = """
create table if not exists public.schema_migrations (
    version    integer primary key,
    name       text        not null,
    checksum   text        not null,
    applied_at timestamptz not null default now()
)
"""


async def migrate(conn: asyncpg.Connection, available: list[Migration]) -> list[Migration]:
    """Apply what is pending; returns what was applied.

    A session advisory lock serialises concurrent runners (two deploys, or the
    sandbox and a test), and each migration commits together with its
    bookkeeping row, so a failure leaves the database at the last good version.
    """
    await conn.execute("select pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await conn.execute(BOOKKEEPING)
        rows = await conn.fetch("select version, checksum from public.schema_migrations")
        todo = pending(available, {r["version"]: r["checksum"] for r in rows})
        for migration in todo:
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "insert into public.schema_migrations (version, name, checksum) "
                    "values ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
        return todo
    finally:
        await conn.execute("select pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)


async def migrate_database(
    settings: DatabaseSettings, available: list[Migration], secrets_client: Any = None
) -> list[Migration]:
    """Connect with ``settings``, apply what is pending, disconnect; returns what was applied."""
    conn = await asyncpg.connect(**connection_parameters(settings, secrets_client))
    try:
        return await migrate(conn, available)
    finally:
        await conn.close()
