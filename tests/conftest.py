"""Fixtures shared by every test layer.

Expensive servers are session-scoped and started lazily: a unit-only run never
starts PostgreSQL or moto. Tests that need a clean slate reset rather than
restart (``moto.reset()``, a fresh database per test module).
"""

from __future__ import annotations

import os
import secrets
import ssl
from collections import Counter
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

# `make test` runs the suite on two workers (pytest-xdist). A test module is one unit of
# work, so its module-scoped stack starts once; these directories are one unit each, as
# their tests share a costly session fixture (the CDK synthesis; the Twisted reactor).
WHOLE_DIRECTORY_UNITS = ("tests/infra/", "tests/integration/kite_sim/")
# Handed out first, longest first, so that no worker is left with a long unit at the end;
# the two e2e runs share one unit, so two whole sandboxes never run at once.
LONG_UNITS_FIRST = ("tests/e2e/", "tests/infra/", "tests/integration/test_deployable_images.py")


def work_unit(nodeid: str) -> str:
    """The unit of work a test belongs to when the suite runs on several workers."""
    module = nodeid.partition("::")[0]
    return next((d for d in WHOLE_DIRECTORY_UNITS if module.startswith(d)), module)


def _start_rank(nodeid: str) -> int:
    ranks = (i for i, prefix in enumerate(LONG_UNITS_FIRST) if nodeid.startswith(prefix))
    return next(ranks, len(LONG_UNITS_FIRST))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """Units of work as :func:`work_unit` draws them, handed out in collection order.

    (Not ``--dist loadgroup``: its groups rename node ids, which pytest 9.2 ignores.)
    """
    from xdist.scheduler import LoadScopeScheduling

    class WorkUnitScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    config.option.loadscopereorder = False  # keep the order set below
    return WorkUnitScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Each test its own node id; in an xdist worker, long units first (a stable sort)."""
    _give_each_test_its_own_id(items)
    if hasattr(config, "workerinput"):
        items.sort(key=lambda item: _start_rank(item.nodeid))


def _give_each_test_its_own_id(items: list[pytest.Item]) -> None:
    """schemathesis names each operation's test ``test[GET /health]``, but pytest 9.2 builds
    the node id from the function's name alone: one id for every operation, and xdist, which
    tracks tests by id, ran one of them and dropped the rest without a word. The id is
    rebuilt from the name, as pytest does for any other node; an id still shared fails the
    session rather than a test going unrun."""
    for item in items:
        if item.name.endswith("]") and not item.nodeid.endswith("]") and item.parent:
            item._id = item.parent.id.child(item.name)
    shared = sorted(nodeid for nodeid, n in Counter(i.nodeid for i in items).items() if n > 1)
    if shared:
        raise pytest.UsageError(f"tests sharing a node id (only one would run): {shared[:5]}")


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
        return ConnectionInfo.from_url(os.environ["DATABASE_URL"])
    return postgres_server.info


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
    return info.db_env()


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
