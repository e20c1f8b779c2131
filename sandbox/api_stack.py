"""The trading API as deployed, on loopback, for tests and benchmarks.

:func:`api_stack` starts, on a running moto server and PostgreSQL server:
every AWS resource the CDK stack creates (and a Cognito pool with an
administrator, a trader holding ``trade`` grants on every account, and a
viewer holding ``view`` on the first), a migrated database, kite_sim in this
process (Kite's own rate limits; postbacks and login redirects to the
gateway), the day's instruments snapshot in S3, and the API's functions
(the trading API, the market-data function, the order-update consumer and
the scheduled login check) as execution environments (worker processes, as
Lambda runs them), the first two behind the local API Gateway. The accounts
are registered and logged in to Kite through the API itself (the
administrator's token, Kite's redirect, the callback). Everything it starts,
it stops.
"""

from __future__ import annotations

import asyncio
import secrets
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import asyncpg

from infra.limits import API_GATEWAY_INTEGRATION_TIMEOUT_S
from kite_sim.config import AccountConfig, SimConfig
from kite_sim.server import Simulator, ThreadedSimulator
from lambdas.common.db import connection_parameters
from lambdas.instruments.dal import S3SnapshotStore
from lambdas.migrate.dal import migrate
from lambdas.migrate.logic import bundled_migrations
from sandbox.accounts import register_and_login
from sandbox.environments import api_env, login_check_env, market_env, order_updates_env
from sandbox.kite import SimAccount
from sandbox.lambda_runtime import LambdaFunction
from sandbox.moto_server import AwsEndpoint, MotoServer
from sandbox.postgres import ConnectionInfo, free_port
from sandbox.provision import PoolUser, Resources, client, create_user, provision
from sandbox.stack import database_settings
from sandbox.trading import ApiSandbox, api_call, start_api
from ticker_adapters.instrument_snapshots import SnapshotPointer, csv_digest, snapshot_key
from ticker_core.instruments import parse_instruments
from ticker_core.kite import RateCategory
from ticker_core.tz import IST

CALLBACK_PATH = "/kite/login/callback"
RATE_WINDOW_WAIT_S = 10.0


def publish_snapshot(
    store: S3SnapshotStore, csv_bytes: bytes, day: date | None = None
) -> SnapshotPointer:
    """A snapshot (today's by default) published as the instruments function does, unchecked.

    The object first, then the pointer.
    """
    day = day or datetime.now(UTC).astimezone(IST).date()
    sha = csv_digest(csv_bytes)
    summary = parse_instruments(csv_bytes.decode()).summary()
    pointer = SnapshotPointer(
        day, sha, snapshot_key(day, sha, "instruments/"), datetime.now(UTC), summary
    )
    store.put_snapshot(pointer.key, csv_bytes)
    store.put_pointer(pointer)
    return pointer


@dataclass
class Stack:
    """Everything a test talks to."""

    api: ApiSandbox
    sim: ThreadedSimulator
    aws: AwsEndpoint
    resources: Resources
    db: ConnectionInfo
    viewer: PoolUser
    accounts: list[SimAccount]
    function: LambdaFunction
    updates_function: LambdaFunction
    market_function: LambdaFunction
    login_check: LambdaFunction

    @property
    def simulator(self) -> Simulator:
        """The running simulator (its state is read on its own loop, via ``sim.call``)."""
        if self.sim.sim is None:
            raise RuntimeError("the simulator is not running")
        return self.sim.sim

    @property
    def account(self) -> str:
        return self.accounts[0].user_id

    def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        return api_call(method, self.api.url + path, token=token, body=body, headers=headers)

    def trader_call(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.call(method, path, token=self.api.trader.id_token, **kwargs)

    def sim_orders(self, account_index: int = 0) -> list[dict[str, Any]]:
        """The simulator's order book of one account (its state, read on its loop)."""
        sim = self.simulator
        account = sim.accounts[account_index]
        return self.sim.call(lambda: sim.engine.orders(account))

    def resting_price(self, exchange: str, symbol: str) -> float:
        """A BUY limit 5% under the last price, on the tick grid: it rests, open."""
        sim = self.simulator

        def price() -> float:
            instrument = sim.market.instrument(exchange, symbol)
            if instrument is None:
                raise ValueError(f"{exchange}:{symbol} is not in the simulator's universe")
            last = sim.market.snapshot(instrument.instrument_token).last_price
            return round(round(last * 0.95 / 0.05) * 0.05, 2)

        return self.sim.call(price)

    def await_quiet_kite(self) -> None:
        """Wait until no account has calls left in Kite's per-second window (a clean slate
        for a test that bursts reads at Kite's limit)."""
        _await_quiet_rate_windows(self.sim, [a.api_key for a in self.accounts])

    def sql(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async def run() -> list[asyncpg.Record]:
            conn = await asyncpg.connect(**connection_parameters(database_settings(self.db)))
            try:
                return list(await conn.fetch(query, *args))
            finally:
                await conn.close()

        return asyncio.run(run())


async def _database(server: ConnectionInfo) -> ConnectionInfo:
    name = f"api_{secrets.token_hex(5)}"
    admin = await asyncpg.connect(**connection_parameters(database_settings(server)))
    try:
        await admin.execute(f'create database "{name}"')
    finally:
        await admin.close()
    info = replace(server, database=name)
    conn = await asyncpg.connect(**connection_parameters(database_settings(info)))
    try:
        await migrate(conn, bundled_migrations())
    finally:
        await conn.close()
    return info


def _await_quiet_rate_windows(sim: ThreadedSimulator, api_keys: list[str]) -> None:
    """Wait until the logins' calls have left Kite's per-second windows (tests start clean).

    The logins are the stack's last Kite calls; a test's own burst of reads
    must meet Kite's limit (10 a second per app) on its own.
    """
    simulator = sim.sim
    if simulator is None:
        raise RuntimeError("the simulator is not running")
    deadline = time.monotonic() + RATE_WINDOW_WAIT_S

    def busy(key: str) -> bool:
        return bool(sim.call(lambda: simulator.limiter.recent(key, RateCategory.OTHER)))

    while any(busy(key) for key in api_keys):
        if time.monotonic() > deadline:
            raise RuntimeError("Kite's rate windows did not clear after the logins")
        time.sleep(0.05)  # polling the condition above, with a deadline


@contextmanager
def api_stack(
    moto_server: MotoServer,
    postgres: ConnectionInfo,
    *,
    accounts: int = 2,
    environments: int = 4,
    market_environments: int = 2,
    seed: int = 5,
    extra_env: dict[str, str] | None = None,
    snapshot_csv: bytes | None = None,
) -> Iterator[Stack]:
    """The whole API on loopback (see the module docstring).

    ``snapshot_csv`` is published as the day's instruments instead of the
    simulator's own (benchmarks bring a universe of their size).
    """
    moto_server.reset()
    aws = moto_server.endpoint
    resources = provision(aws, shards=1)
    db = asyncio.run(_database(postgres))
    port = free_port()
    config = SimConfig(
        seed=seed,
        accounts=[
            AccountConfig(
                postback_url=f"http://127.0.0.1:{port}/postbacks" if i == 0 else None,
                redirect_url=f"http://127.0.0.1:{port}{CALLBACK_PATH}",
                enforce_ip=False,
            )
            for i in range(accounts)
        ],
        tick_interval=0.2,
        default_tick_rate=1.0,
    )
    with ThreadedSimulator(config) as sim, tempfile.TemporaryDirectory() as logs:
        simulator = sim.sim
        if simulator is None:
            raise RuntimeError("the simulator did not start")
        sim_accounts = [SimAccount(a.user_id, a.api_key, a.api_secret) for a in sim.accounts]
        csv_bytes = (
            snapshot_csv or sim.call(lambda: simulator.market.instruments_csv(None)).encode()
        )
        publish_snapshot(
            S3SnapshotStore(client(aws, "s3"), resources.names.instruments_bucket, "instruments/"),
            csv_bytes,
        )
        overrides = {
            "API_KITE_READ_TIMEOUT_SECONDS": "2",
            "API_RESOLVE_DELAY_SECONDS": "0.2",
            "API_CORS_ORIGINS": "https://app.example.com",
            # Tests see a login, a grant change, at once (production keeps them a while).
            "KITE_CREDENTIALS_CACHE_SECONDS": "0",
            "API_GRANTS_CACHE_SECONDS": "0",
            **(extra_env or {}),
        }
        env = api_env(aws, db, resources, simulator.rest_url, **overrides)
        markets = market_env(
            aws,
            db,
            resources,
            simulator.rest_url,
            API_CORS_ORIGINS="https://app.example.com",
            KITE_CREDENTIALS_CACHE_SECONDS="0",
        )
        logs_dir = Path(logs)
        function = LambdaFunction.declared(
            "api",
            env=env,
            log_dir=logs_dir,
            timeout_s=API_GATEWAY_INTEGRATION_TIMEOUT_S,
            max_concurrency=environments,
        )
        updates_function = LambdaFunction.declared(
            "api-order-updates",
            env=order_updates_env(aws, db, resources),
            log_dir=logs_dir,
            timeout_s=29,  # an SQS consumer: API Gateway's limit is not its own
            max_concurrency=1,
        )
        market_function = LambdaFunction.declared(
            "api-market",
            env=markets,
            log_dir=logs_dir,
            timeout_s=API_GATEWAY_INTEGRATION_TIMEOUT_S,
            max_concurrency=market_environments,
        )
        login_check = LambdaFunction.declared(
            "api-login-check",
            env=login_check_env(aws, resources),
            log_dir=logs_dir,
            timeout_s=60,
            max_concurrency=1,
        )
        try:
            api = start_api(
                aws=aws,
                invoke={"api": function.invoke, "market": market_function.invoke},
                port=port,
                accounts=[a.user_id for a in sim_accounts],
                pool_name=resources.names.user_pool,
                environments=environments,
            )
            try:
                viewer = create_user(aws, api.pool, "sandbox-viewer")
                status, _, _ = api_call(
                    "PUT",
                    f"{api.url}/admin/grants/{viewer.sub}/{sim_accounts[0].user_id}",
                    token=api.admin.id_token,
                    body={"role": "view"},
                )
                if status != 200:
                    raise RuntimeError(f"granting the viewer: HTTP {status}")
                register_and_login(api.url, api.admin.id_token, sim_accounts)
                _await_quiet_rate_windows(sim, [a.api_key for a in sim_accounts])
                yield Stack(
                    api, sim, aws, resources, db, viewer, sim_accounts, function, updates_function,
                    market_function, login_check,
                )  # fmt: skip
            finally:
                api.server.stop()
        finally:
            for started in (function, updates_function, market_function, login_check):
                started.kill_all()
