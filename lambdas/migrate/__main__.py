"""``python -m lambdas.migrate``: apply pending migrations to the database in DB_* settings."""

from __future__ import annotations

import asyncio
import sys

import asyncpg

from lambdas.common.db import DatabaseSettings, connection_parameters
from lambdas.migrate.dal import migrate
from lambdas.migrate.logic import bundled_migrations


async def _main() -> int:
    settings = DatabaseSettings()
    secrets_client = None
    if settings.secret_arn:
        import boto3

        secrets_client = boto3.client("secretsmanager")
    conn = await asyncpg.connect(**connection_parameters(settings, secrets_client))
    try:
        applied = await migrate(conn, bundled_migrations())
    finally:
        await conn.close()
    for m in applied:
        print(f"applied {m.version:04d}_{m.name}")
    if not applied:
        print("database is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(_main()))
