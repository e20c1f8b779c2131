"""Migrations against a real PostgreSQL: once, in order, safe under concurrency."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import asyncpg
import pytest

from lambdas.common.db import DatabaseSettings, connection_parameters
from lambdas.common.runtime import LoopRunner
from lambdas.migrate.dal import migrate
from lambdas.migrate.handler import Dependencies, make_handler
from lambdas.migrate.logic import Migration, bundled_migrations
from lambdas.migrate.settings import MigrateEnvironment
from sandbox.postgres import ConnectionInfo
from tests.conftest import db_env, settings_for

pytestmark = pytest.mark.integration


async def connect(info: ConnectionInfo) -> asyncpg.Connection:
    settings = DatabaseSettings(**{k[3:].lower(): v for k, v in db_env(info).items()})
    return await asyncpg.connect(**connection_parameters(settings))


async def test_concurrent_runners_apply_each_migration_once(fresh_database: ConnectionInfo) -> None:
    # Given two runners starting at the same moment on an empty database
    conns = [await connect(fresh_database) for _ in range(2)]
    try:
        # When both migrate
        results = await asyncio.gather(*(migrate(c, bundled_migrations()) for c in conns))
        # Then every migration was applied by exactly one of them
        applied = sorted(m.version for r in results for m in r)
        assert applied == [m.version for m in bundled_migrations()]
        # And the schema is there
        tables = await conns[0].fetch(
            "select tablename from pg_tables where schemaname = 'market' order by 1"
        )
        assert {"ticks", "greeks", "bars_1m"} <= {t["tablename"] for t in tables}
        # And running again does nothing
        assert await migrate(conns[0], bundled_migrations()) == []
    finally:
        for c in conns:
            await c.close()


async def test_failed_migration_leaves_the_last_good_version(
    fresh_database: ConnectionInfo,
) -> None:
    # Given a good migration followed by a broken one
    good = Migration(1, "good", "create table a (x int);")
    broken = Migration(2, "broken", "create table b (x int); select * from missing_table;")
    conn = await connect(fresh_database)
    try:
        # When they are applied, Then the error surfaces
        with pytest.raises(asyncpg.UndefinedTableError):
            await migrate(conn, [good, broken])
        # And the database holds version 1 only, with none of version 2's changes
        versions = await conn.fetch("select version from schema_migrations")
        assert [r["version"] for r in versions] == [1]
        assert await conn.fetchval("select to_regclass('public.b')") is None
    finally:
        await conn.close()


def test_the_migration_command_applies_and_reports(fresh_database: ConnectionInfo) -> None:
    # Given DB_* settings for an empty database
    env = {**os.environ, **db_env(fresh_database)}
    # When the one migration command runs, Then it applies everything and says so
    first = subprocess.run(
        [sys.executable, "-m", "lambdas.migrate"], env=env, capture_output=True, text=True
    )
    assert first.returncode == 0, first.stderr
    assert "applied 0001_market" in first.stdout
    # And a second run finds nothing to do
    again = subprocess.run(
        [sys.executable, "-m", "lambdas.migrate"], env=env, capture_output=True, text=True
    )
    assert "up to date" in again.stdout


def test_the_migrate_function_applies_once_and_answers_what_it_did(
    fresh_database: ConnectionInfo,
) -> None:
    # Given the function's dependencies for an empty database
    deps = Dependencies(MigrateEnvironment(database=settings_for(fresh_database)), LoopRunner())
    handler = make_handler(lambda: deps)
    try:
        # When it is invoked at deploy time, Then it applies every bundled migration
        first = handler({}, DeployContext())
        assert first["applied"] == [f"{m.version:04d}_{m.name}" for m in bundled_migrations()]
        # And a second deploy applies nothing
        assert handler({}, DeployContext()) == {"applied": []}
    finally:
        deps.runner.close()


class DeployContext:
    function_name = "migrate"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:ap-south-1:123456789012:function:migrate"
    aws_request_id = "req-migrate"
