"""The market-data function: the API's ``/market/*`` routes, in a function of their own.

Same code family as the trading API (its resolver, errors, authentication
and OpenAPI document), deployed apart for two reasons:

* **cold start**: option chains and candles need implied volatility and
  Greeks (numpy and scipy, through ``ticker_core.options``); the trading
  function stays free of scipy, so an order's cold start does not pay for it;
* **permissions**: this function only reads (the ``market`` schema, the
  instruments snapshot, and Kite sessions for Kite's historical API); it
  holds no grants, order, idempotency or vault-write rights.

API Gateway sends the operations marked ``x-ticker-function: market`` in
``openapi.json`` here and everything else to ``lambdas.api.handler``.
Nothing is built at import: the first invocation builds the environment.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

import boto3

from lambdas.api.app import ApiApp, RouterModule, build_app, observed_app
from lambdas.api.context import Dependencies
from lambdas.api.dal.accounts import DynamoAccountRegistry
from lambdas.api.dal.market import PostgresMarket
from lambdas.api.errors import ServiceUnavailableError
from lambdas.api.market import History, MarketData, MarketSettings
from lambdas.api.routers import market
from lambdas.api.settings import HttpSettings
from lambdas.api.settings import MarketSettings as MarketEnvironment
from lambdas.common.db import DatabaseSettings, create_pool
from lambdas.common.observability import Observability
from lambdas.common.runtime import Lazy, LoopRunner
from ticker_adapters.instrument_snapshots import InstrumentSnapshotReader, SnapshotError
from ticker_adapters.settings import SnapshotSettings, VaultSettings
from ticker_core.instruments import InstrumentRegistry

SERVICE = "api-market"
MARKET_ROUTERS: tuple[RouterModule, ...] = (market,)


@dataclass
class MarketFunction:
    """One execution environment's state."""

    app: ApiApp
    deps: Dependencies
    obs: Observability
    runner: LoopRunner
    pool: Lazy[Any]

    def close(self) -> None:
        """Close the pool and the loop (tests; Lambda freezes the environment instead)."""
        opened = self.pool.reset()
        if opened is not None:
            self.runner.run(opened.close())
        self.runner.close()


def build(
    *,
    settings: MarketEnvironment,
    snapshot_settings: SnapshotSettings,
    database: DatabaseSettings,
    s3: Any,
    secretsmanager: Any,
    history: History | None,
    cors_origins: list[str],
    max_body_bytes: int,
) -> MarketFunction:
    """Every dependency of the function, wired."""
    obs = Observability(SERVICE)
    runner = LoopRunner()
    secrets = secretsmanager if database.secret_arn else None
    pool: Lazy[Any] = Lazy(lambda: create_pool(database, secrets))
    snapshots = InstrumentSnapshotReader(
        s3,
        snapshot_settings.bucket,
        prefix=snapshot_settings.prefix,
        recheck_seconds=snapshot_settings.recheck_seconds,
    )

    def registry() -> InstrumentRegistry:
        try:
            return snapshots.current().registry
        except SnapshotError as exc:
            obs.logger.error(
                "instruments snapshot unavailable", extra={"error": type(exc).__name__}
            )
            raise ServiceUnavailableError() from exc

    data = MarketData(
        registry=registry,
        store=PostgresMarket(pool, runner),
        history=history,
        settings=MarketSettings(
            rate=settings.risk_free_rate,
            quote_lookback=timedelta(days=settings.quote_lookback_days),
            max_history_calls=settings.max_history_calls,
        ),
    )
    inert = cast(Any, None)  # the trading dependencies: no market route uses them
    deps = Dependencies(
        trading=inert,
        grants=inert,
        writes=inert,
        updates=inert,
        api_secret=lambda _: None,
        market=data,
    )

    app = observed_app(
        build_app(deps, cors_origins, routers=MARKET_ROUTERS),
        obs,
        cors_origins=cors_origins,
        max_body_bytes=max_body_bytes,
    )
    return MarketFunction(app, deps, obs, runner, pool)


def build_from_environment() -> MarketFunction:
    """The function as deployed: settings from the environment, the real Kite client."""
    settings = MarketEnvironment()
    history: History | None = None
    if settings.accounts_table:
        from lambdas.api.history_broker import KiteHistory
        from lambdas.api.kite import classify
        from ticker_adapters.credentials import CredentialVault
        from ticker_adapters.envelope import KmsEnvelopeCipher
        from ticker_adapters.kite_rest import KiteTransport

        vault_settings = VaultSettings()  # type: ignore[call-arg]  # from the environment
        secretsmanager = boto3.client("secretsmanager")
        vault = CredentialVault(
            secretsmanager,
            KmsEnvelopeCipher(boto3.client("kms"), vault_settings.kms_key_arn),
            prefix=vault_settings.prefix,
            cache_seconds=vault_settings.cache_seconds,
        )
        history = KiteHistory(
            DynamoAccountRegistry(boto3.client("dynamodb"), settings.accounts_table),
            vault,
            KiteTransport(
                settings.kite_root,
                connect_timeout=settings.kite_connect_timeout_seconds,
                read_timeout=settings.kite_read_timeout_seconds,
            ),
            classify,
        )
    http = HttpSettings()
    return build(
        settings=settings,
        snapshot_settings=SnapshotSettings(),  # type: ignore[call-arg]
        database=DatabaseSettings(),
        s3=boto3.client("s3"),
        secretsmanager=boto3.client("secretsmanager"),
        history=history,
        cors_origins=http.origins(),
        max_body_bytes=http.max_body_bytes,
    )


@functools.cache
def environment() -> MarketFunction:
    """The execution environment's one :class:`MarketFunction`, built on first use."""
    return build_from_environment()


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """API Gateway (REST, proxy integration, ``/market/*``) -> the market-data routes."""
    function = environment()
    try:
        return function.app(event, context)
    finally:
        function.obs.metrics.flush_metrics()
