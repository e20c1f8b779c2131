"""Fixtures shared by every test layer.

Expensive servers are session-scoped and started lazily: a unit-only run never
starts PostgreSQL or moto. Tests that need a clean slate reset rather than
restart (``moto.reset()``, a fresh database per test module).
"""

from __future__ import annotations

import os
import secrets
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import asyncpg
import pytest

from lambdas.common.db import DatabaseSettings, connection_parameters
from lambdas.migrate.dal import migrate
from lambdas.migrate.logic import bundled_migrations
from sandbox.moto_server import AwsEndpoint, MotoServer
from sandbox.postgres import ConnectionInfo, EmbeddedPostgres

INSTRUMENTS_BUCKET = "ticker-instruments"


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """moto's server on 127.0.0.1 for the whole session; stopped at the end."""
    server = MotoServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def aws(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> AwsEndpoint:
    """A clean emulated AWS account, with the SDK's environment pointed at it."""
    moto_server.reset()
    for key, value in moto_server.endpoint.env().items():
        monkeypatch.setenv(key, value)
    return moto_server.endpoint


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[EmbeddedPostgres | None]:
    """The session's PostgreSQL: embedded, unless DATABASE_URL names one (then None)."""
    if os.environ.get("DATABASE_URL"):
        yield None
        return
    server = EmbeddedPostgres()
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def postgres(postgres_server: EmbeddedPostgres | None) -> ConnectionInfo:
    """Connection details of the session's PostgreSQL."""
    if postgres_server is None:
        return _info_from_url(os.environ["DATABASE_URL"])
    return postgres_server.info


def _info_from_url(url: str) -> ConnectionInfo:
    from urllib.parse import unquote, urlparse

    parsed = urlparse(url)
    return ConnectionInfo(
        host=parsed.hostname or "127.0.0.1",
        port=parsed.port or 5432,
        user=unquote(parsed.username or "postgres"),
        password=unquote(parsed.password or ""),
        database=(parsed.path or "/postgres").lstrip("/") or "postgres",
        ca_file=None,
    )


@pytest.fixture
async def fresh_database(postgres: ConnectionInfo) -> AsyncIterator[ConnectionInfo]:
    """A new, empty database on the session's server, dropped after the test."""
    name = f"t_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(postgres.dsn, ssl=_client_tls(postgres))
    try:
        await admin.execute(f'create database "{name}"')
    finally:
        await admin.close()
    yield replace(postgres, database=name)
    admin = await asyncpg.connect(postgres.dsn, ssl=_client_tls(postgres))
    try:
        await admin.execute(f'drop database if exists "{name}" with (force)')
    finally:
        await admin.close()


def _client_tls(info: ConnectionInfo) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(info.ca_file) if info.ca_file else None)
    if info.ca_file is None:  # an external server we hold no CA for
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def db_env(info: ConnectionInfo) -> dict[str, str]:
    """DB_* settings that point the Lambdas' database code at ``info``."""
    env = {
        "DB_HOST": info.host,
        "DB_PORT": str(info.port),
        "DB_NAME": info.database,
        "DB_USER": info.user,
        "DB_PASSWORD": info.password,
        "DB_TLS": "verify-full" if info.ca_file else "require",
    }
    if info.ca_file:
        env["DB_CA_FILE"] = str(info.ca_file)
    return env


def settings_for(info: ConnectionInfo) -> DatabaseSettings:
    """The Lambdas' database settings for ``info`` (as their DB_* environment would give)."""
    return DatabaseSettings(**{k[3:].lower(): v for k, v in db_env(info).items()})


@pytest.fixture
async def migrated(fresh_database: ConnectionInfo) -> ConnectionInfo:
    """A fresh database with every bundled migration applied."""
    conn = await asyncpg.connect(**connection_parameters(settings_for(fresh_database)))
    await migrate(conn, bundled_migrations())
    await conn.close()
    return fresh_database


@pytest.fixture
def s3(aws: AwsEndpoint) -> object:
    """An S3 client on the emulated account, with the instruments bucket created."""
    import boto3

    client = boto3.client("s3", **aws.client_kwargs())
    client.create_bucket(
        Bucket=INSTRUMENTS_BUCKET, CreateBucketConfiguration={"LocationConstraint": aws.region}
    )
    return client


@pytest.fixture
def fake_secret() -> str:
    """A freshly generated stand-in for an API secret or token (never committed)."""
    return secrets.token_hex(16)
