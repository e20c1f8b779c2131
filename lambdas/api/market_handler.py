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
Nothing is built at import: :class:`Dependencies` is built on the first invocation
(a cached ``from_env``) and kept for the execution environment's life.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

import asyncpg
import boto3

from lambdas.api.app import ApiApp, RouterModule, build_app, observed_app
from lambdas.api.context import Dependencies as Routes
from lambdas.api.dal.accounts import DynamoAccountRegistry
from lambdas.api.dal.market import PostgresMarket
from lambdas.api.errors import ServiceUnavailableError
from lambdas.api.history_broker import KiteHistory
from lambdas.api.kite import classify
from lambdas.api.market import MarketData, MarketSettings
from lambdas.api.routers import market
from lambdas.api.settings import MarketEnvironment
from lambdas.common.db import create_pool
from lambdas.common.observability import Observability
from lambdas.common.runtime import LambdaHandler, Lazy, LoopRunner, close_all, context_entry_point
from lambdas.common.snapshots import current_registry
from ticker_adapters.credentials import CredentialVault
from ticker_adapters.instrument_snapshots import InstrumentSnapshotReader
from ticker_adapters.kite_rest import KiteTransport

obs = Observability("api-market")
MARKET_ROUTERS: tuple[RouterModule, ...] = (market,)


@dataclass(frozen=True)
class Dependencies:
    """What one execution environment of the market-data function builds once and reuses."""

    app: ApiApp
    routes: Routes
    runner: LoopRunner
    pool: Lazy[asyncpg.Pool]

    @classmethod
    def build(
        cls,
        environment: MarketEnvironment,
        *,
        dynamodb: Any,
        s3: Any,
        secretsmanager: Any,
        kms: Any,
    ) -> Dependencies:
        """Wire the function from its settings and AWS clients."""
        settings, database, snapshot = (
            environment.market,
            environment.database,
            environment.snapshot,
        )
        runner = LoopRunner()
        secrets = secretsmanager if database.secret_arn else None
        pool: Lazy[asyncpg.Pool] = Lazy(lambda: create_pool(database, secrets))
        registry = current_registry(
            InstrumentSnapshotReader.from_settings(s3, snapshot), obs, ServiceUnavailableError
        )
        history = KiteHistory(
            DynamoAccountRegistry(dynamodb, environment.accounts.name),
            CredentialVault.from_settings(
                environment.vault, secretsmanager=secretsmanager, kms=kms
            ),
            KiteTransport(
                environment.kite.rest_url,
                connect_timeout=settings.kite_connect_timeout_seconds,
                read_timeout=settings.kite_read_timeout_seconds,
                plaintext_hosts=environment.kite.plaintext_hosts,
            ),
            classify,
        )
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
        routes = Routes(
            trading=inert,
            grants=inert,
            writes=inert,
            updates=inert,
            api_secret=lambda _: None,
            market=data,
        )
        origins = environment.http.origins()
        app = observed_app(
            build_app(routes, origins, routers=MARKET_ROUTERS),
            obs,
            cors_origins=origins,
            max_body_bytes=environment.http.max_body_bytes,
        )
        return cls(app, routes, runner, pool)

    @classmethod
    def from_env(cls) -> Dependencies:
        """The environment's settings and the SDK's default clients (Lambda's init)."""
        names = ("dynamodb", "s3", "secretsmanager", "kms")
        return cls.build(MarketEnvironment.from_env(), **{n: boto3.client(n) for n in names})

    def close(self) -> None:
        """Close the pool and the loop (tests; Lambda freezes the environment instead)."""
        close_all(self.runner, self.pool)


def serve(event: dict[str, Any], deps: Dependencies, context: Any) -> dict[str, Any]:
    """API Gateway (REST, proxy integration, ``/market/*``) -> the market-data routes."""
    return deps.app(event, context)


def make_handler(dependencies: Callable[[], Dependencies]) -> LambdaHandler:
    """The market-data function's entry point over ``dependencies`` (cache it)."""
    return context_entry_point(obs, serve, dependencies)


#: Built on the first invocation and kept for the execution environment's life.
environment = functools.cache(Dependencies.from_env)
handler = make_handler(environment)
