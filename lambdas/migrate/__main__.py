"""``python -m lambdas.migrate``: apply pending migrations to the database in DB_* settings."""

from __future__ import annotations

import asyncio
import sys

from lambdas.common.db import secrets_client_for
from lambdas.migrate.dal import migrate_database
from lambdas.migrate.logic import bundled_migrations
from lambdas.migrate.settings import MigrateEnvironment
from ticker_adapters.settings import SettingsError


def main() -> int:
    """Apply what is pending and print it; exit 2 if the environment is incomplete."""
    try:
        database = MigrateEnvironment.from_env().database
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    applied = asyncio.run(
        migrate_database(database, bundled_migrations(), secrets_client_for(database))
    )
    for m in applied:
        print(f"applied {m.version:04d}_{m.name}")
    if not applied:
        print("database is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
