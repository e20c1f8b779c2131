"""The instruments function against kite_sim (Kite REST), moto (S3, SM, KMS) and PostgreSQL."""

from __future__ import annotations

import importlib
import json
import secrets
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from types import ModuleType
from typing import Any

import asyncpg
import boto3
import pytest

from kite_sim.config import SimConfig
from kite_sim.ratelimit import scaled_limits
from kite_sim.server import ThreadedSimulator
from kite_sim.universe import UniverseConfig
from lambdas.common.db import connection_parameters
from lambdas.common.runtime import Lazy
from lambdas.instruments.dal import PostgresRegistry, S3SnapshotStore
from lambdas.instruments.logic import PublishSettings, SnapshotRejectedError, publish_instruments
from sandbox.moto_server import AwsEndpoint
from sandbox.postgres import ConnectionInfo
from tests.conftest import INSTRUMENTS_BUCKET, db_env, settings_for
from ticker_adapters.credentials import ApiCredentials, CredentialVault, KiteSession
from ticker_adapters.envelope import KmsEnvelopeCipher
from ticker_adapters.instrument_snapshots import pointer_key, read_pointer
from ticker_adapters.kite_rest import KiteRestClient, KiteTransport, retry_transient
from ticker_adapters.retry import no_delays
from ticker_core.instruments import parse_instruments
from ticker_core.kite_errors import (
    KiteGeneralError,
    KiteInputError,
    KiteNetworkError,
    KiteTokenError,
)

pytestmark = pytest.mark.integration

BUCKET = INSTRUMENTS_BUCKET
PREFIX = "instruments/"
YESTERDAY = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)  # 07:30 IST
TODAY = YESTERDAY + timedelta(days=1)


def sim_config(seed: int, stocks: int) -> SimConfig:
    return SimConfig(
        seed=seed,
        universe=UniverseConfig(stocks=stocks),
        rate_limits=scaled_limits(1000),
        default_tick_rate=0.0,
    )


@pytest.fixture(scope="module")
def sim() -> Iterator[ThreadedSimulator]:
    with ThreadedSimulator(sim_config(seed=5, stocks=12)) as threaded:
        yield threaded


@pytest.fixture(scope="module")
def small_sim() -> Iterator[ThreadedSimulator]:
    """The same market with far fewer stocks: its dump looks like a partial download."""
    with ThreadedSimulator(sim_config(seed=5, stocks=3)) as threaded:
        yield threaded


@pytest.fixture
def sim_faults(sim: ThreadedSimulator) -> Iterator[ThreadedSimulator]:
    yield sim
    running = sim.sim
    assert running is not None
    sim.call(running.faults.clear)


async def fetch(info: ConnectionInfo, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(**connection_parameters(settings_for(info)))
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


def download_from(sim: ThreadedSimulator, attempts: int = 3) -> Any:
    transport = KiteTransport(sim.rest_url, retry=retry_transient(attempts), delays=no_delays)
    account = sim.accounts[0]
    return KiteRestClient(
        account.api_key, sim.issue_access_token(), transport=transport
    ).instruments


class Adapters:
    def __init__(self, s3: Any, info: ConnectionInfo) -> None:
        self.s3 = s3
        self.store = S3SnapshotStore(s3, BUCKET, PREFIX)
        self.pool = Lazy(lambda: asyncpg.create_pool(**connection_parameters(settings_for(info))))
        self.registry = PostgresRegistry(self.pool)

    async def publish(self, download: Any, now: datetime) -> Any:
        return await publish_instruments(
            download,
            store=self.store,
            database=self.registry,
            now=now,
            prefix=PREFIX,
            settings=PublishSettings(),
        )

    async def close(self) -> None:
        pool = self.pool.reset()
        if pool is not None:
            await pool.close()


@pytest.fixture
async def adapters(s3: Any, migrated: ConnectionInfo) -> Any:
    made = Adapters(s3, migrated)
    yield made
    await made.close()


# --------------------------------------------------------------------------- the download


def test_the_dump_downloads_and_kites_errors_are_typed(
    sim_faults: ThreadedSimulator,
) -> None:
    sim = sim_faults
    running = sim.sim
    assert running is not None
    download = download_from(sim, attempts=3)
    # Given a healthy simulator, When the dump is downloaded, Then it is Kite's CSV
    parsed = parse_instruments(download().decode())
    assert parsed.summary().instruments > 1000
    assert parsed.problems == ()
    # Given two 503s, When downloading with three attempts, Then the third succeeds
    sim.call(lambda: running.faults.fail_rest(503, 2, path_prefix="/instruments"))
    assert download()
    # Given persistent 503s, Then the network error surfaces after the attempts
    sim.call(lambda: running.faults.fail_rest(503, 3, path_prefix="/instruments"))
    with pytest.raises(KiteNetworkError) as network:
        download()
    assert (network.value.http_status, network.value.error_type) == (503, "NetworkException")
    # Given a refused token or bad input, Then they are typed and not retried
    for status, kind in ((403, KiteTokenError), (400, KiteInputError), (418, KiteGeneralError)):
        sim.call(lambda s=status: running.faults.fail_rest(s, 1, path_prefix="/instruments"))
        with pytest.raises(kind):
            download()
        assert download()  # the fault was used up by exactly one attempt


# --------------------------------------------------------------------------- publication


async def test_a_failed_or_partial_download_keeps_yesterdays_snapshot(
    adapters: Adapters,
    sim_faults: ThreadedSimulator,
    small_sim: ThreadedSimulator,
    migrated: ConnectionInfo,
) -> None:
    sim = sim_faults
    running = sim.sim
    assert running is not None
    # Given yesterday's snapshot published from the full universe
    yesterday = await adapters.publish(download_from(sim), YESTERDAY)
    assert yesterday.status == "published"
    # When today's download keeps failing, Then the error surfaces
    sim.call(lambda: running.faults.fail_rest(503, 5, path_prefix="/instruments"))
    with pytest.raises(KiteNetworkError):
        await adapters.publish(download_from(sim), TODAY)
    # When today's dump is a fraction of yesterday's, Then it is refused with reasons
    with pytest.raises(SnapshotRejectedError) as refused:
        await adapters.publish(download_from(small_sim), TODAY)
    assert any(r.startswith("segment NSE:") for r in refused.value.reasons)
    # Then the pointer and the database still name yesterday's snapshot
    assert read_pointer(adapters.s3, BUCKET, PREFIX) == yesterday.pointer
    days = await fetch(migrated, "select snapshot_date from market.instrument_snapshots")
    assert [r["snapshot_date"] for r in days] == [date(2026, 11, 26)]


async def test_publication_is_idempotent_and_a_new_dump_replaces_the_day(
    adapters: Adapters, sim: ThreadedSimulator, migrated: ConnectionInfo
) -> None:
    # Given today's snapshot published
    first = await adapters.publish(download_from(sim), TODAY)
    pointer_etag = adapters.s3.head_object(Bucket=BUCKET, Key=pointer_key(PREFIX))["ETag"]
    # When the same dump is published again the same day
    again = await adapters.publish(download_from(sim), TODAY + timedelta(hours=1))
    # Then nothing is rewritten
    assert (again.status, again.database_changed, again.pointer) == (
        "unchanged",
        False,
        first.pointer,
    )
    assert adapters.s3.head_object(Bucket=BUCKET, Key=pointer_key(PREFIX))["ETag"] == pointer_etag
    # And the registry holds exactly the dump's instruments, underlyings as ticker_core derives them
    rows = await fetch(migrated, "select count(*) as n from market.instruments_current")
    assert rows[0]["n"] == first.pointer.summary.instruments
    nifty = await fetch(
        migrated,
        "select distinct underlying from market.instruments_current "
        "where tradingsymbol = 'NIFTY 50' or (name = 'NIFTY' and instrument_type = 'FUT')",
    )
    assert [r["underlying"] for r in nifty] == ["NIFTY"]
    # When a different dump (prices moved: another seed) is published the same day
    with ThreadedSimulator(sim_config(seed=6, stocks=12)) as other:
        replaced = await adapters.publish(download_from(other), TODAY + timedelta(hours=2))
    # Then the day's rows and pointer are replaced, in one snapshot row
    assert replaced.status == "published"
    assert replaced.pointer.sha256 != first.pointer.sha256
    assert read_pointer(adapters.s3, BUCKET, PREFIX) == replaced.pointer
    snapshots = await fetch(migrated, "select sha256, instruments from market.instrument_snapshots")
    assert [(r["sha256"], r["instruments"]) for r in snapshots] == [
        (replaced.pointer.sha256, replaced.pointer.summary.instruments)
    ]


async def test_the_pointer_is_written_last(
    s3: Any, sim: ThreadedSimulator, fresh_database: ConnectionInfo
) -> None:
    # Given yesterday's snapshot, and a database the registry cannot be written to (no schema)
    adapters = Adapters(s3, fresh_database)
    store = S3SnapshotStore(s3, BUCKET, PREFIX)

    class NoDatabase:
        async def publish(self, *args: Any) -> bool:
            return True

    yesterday = await publish_instruments(
        download_from(sim), store=store, database=NoDatabase(), now=YESTERDAY, prefix=PREFIX,
        settings=PublishSettings(),
    )  # fmt: skip
    # When today's publication fails at the database step
    with pytest.raises(asyncpg.UndefinedTableError):
        await adapters.publish(download_from(sim), TODAY)
    await adapters.close()
    # Then today's snapshot object may exist, but the pointer still names yesterday's
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX)["Contents"]]
    assert any(k.startswith("instruments/2026-11-27/") for k in keys)
    assert read_pointer(s3, BUCKET, PREFIX) == yesterday.pointer


async def test_old_days_are_pruned_from_the_database(
    adapters: Adapters, sim: ThreadedSimulator, migrated: ConnectionInfo
) -> None:
    for days_ago in (9, 8, 0):
        await adapters.publish(download_from(sim), TODAY - timedelta(days=days_ago))
    days = await fetch(migrated, "select snapshot_date from market.instrument_snapshots")
    assert [r["snapshot_date"] for r in days] == [date(2026, 11, 27)]


# --------------------------------------------------------------------------- the handler


@pytest.fixture
def handler_module(
    aws: AwsEndpoint,
    s3: Any,
    migrated: ConnectionInfo,
    sim_faults: ThreadedSimulator,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[ModuleType]:
    """The handler imported as Lambda would, with the account's credentials in the vault."""
    kms = boto3.client("kms", **aws.client_kwargs())
    key_arn = kms.create_key(Description="kite credentials")["KeyMetadata"]["Arn"]
    vault = CredentialVault(
        boto3.client("secretsmanager", **aws.client_kwargs()), KmsEnvelopeCipher(kms, key_arn)
    )
    account = sim_faults.accounts[0]
    vault.put_api_credentials("acct-1", ApiCredentials(account.api_key, account.api_secret))
    issued = datetime.now(UTC)
    vault.put_session(
        "acct-1",
        KiteSession(account.api_key, sim_faults.issue_access_token(), account.user_id, issued,
                    issued + timedelta(hours=6)),
    )  # fmt: skip
    env = {
        **db_env(migrated),
        "INSTRUMENTS_BUCKET": BUCKET,
        "INSTRUMENTS_KITE_ROOT": sim_faults.rest_url,
        "INSTRUMENTS_HTTP_ATTEMPTS": "2",
        "INSTRUMENTS_HTTP_RETRY_BASE_SECONDS": "0.01",
        "KITE_CREDENTIALS_KMS_KEY_ARN": key_arn,
        "POWERTOOLS_METRICS_NAMESPACE": "TickerServiceTest",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    sys.modules.pop("lambdas.instruments.handler", None)
    module = importlib.import_module("lambdas.instruments.handler")
    yield module
    pool = module.pool.reset()
    if pool is not None:
        module.runner.run(pool.close())
    module.runner.close()
    sys.modules.pop("lambdas.instruments.handler", None)


class Context:
    function_name = "instruments"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:ap-south-1:123456789012:function:instruments"
    aws_request_id = "req-" + secrets.token_hex(4)


def test_the_handler_publishes_then_finds_nothing_new_then_fails_loudly(
    handler_module: ModuleType,
    s3: Any,
    sim_faults: ThreadedSimulator,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # When the scheduled invocation runs
    result = handler_module.handler({}, Context())
    # Then today's snapshot is published and the pointer names it
    assert result["status"] == "published"
    pointer = read_pointer(s3, BUCKET, PREFIX)
    assert pointer is not None
    assert (pointer.key, pointer.summary.instruments) == (result["key"], result["instruments"])
    # When it runs again on demand for the same account, Then nothing changes
    assert handler_module.handler({"account_id": "acct-1"}, Context())["status"] == "unchanged"
    # When Kite fails every attempt, Then the invocation fails and the pointer stays
    running = sim_faults.sim
    assert running is not None
    sim_faults.call(lambda: running.faults.fail_rest(503, 2, path_prefix="/instruments"))
    with pytest.raises(KiteNetworkError):
        handler_module.handler({}, Context())
    assert read_pointer(s3, BUCKET, PREFIX) == pointer
    # And the failure is a metric and an ERROR log line
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert any(m.get("InstrumentsPublicationFailed") == [1.0] for m in lines)
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert [getattr(r, "error", None) for r in errors] == ["KiteNetworkError"]


def test_the_command_line_publishes_once_and_exits_non_zero_on_failure(
    handler_module: ModuleType,
    s3: Any,
    sim_faults: ThreadedSimulator,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from lambdas.instruments.__main__ import main

    # Given Kite failing every attempt, When the command runs, Then it exits 1 saying why
    running = sim_faults.sim
    assert running is not None
    sim_faults.call(lambda: running.faults.fail_rest(503, 2, path_prefix="/instruments"))
    assert main() == 1
    assert "not published" in capsys.readouterr().err
    assert read_pointer(s3, BUCKET, PREFIX) is None
    # When it runs in a fresh process (module) with Kite healthy, Then it publishes and says so
    sys.modules.pop("lambdas.instruments.handler", None)
    assert main() == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["status"] == "published"
    assert read_pointer(s3, BUCKET, PREFIX) is not None
