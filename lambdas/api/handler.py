"""API function entry points: each builds its dependencies once, then serves its events.

Three functions share this module (``[tool.ticker-service.functions]``):

* ``handler`` (api): API Gateway's REST proxy events, every route but
  ``/market/*`` (``lambdas.api.market_handler`` serves those);
* ``order_updates`` (api-order-updates): the SQS queue the feed container
  forwards Kite's WebSocket order messages to;
* ``login_check`` (api-login-check): the schedule at Kite's token expiry.

Each has its own ``Dependencies`` (what its environment model names, and the
clients for it), built on its first invocation by a cached ``from_env`` and
kept for the execution environment's life: importing this module reads no
environment and calls nothing. Tests build them with ``build`` and their own
clients.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import boto3
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

from lambdas.api.accounts import Accounts, LoginRequired, LoginSettings, logins_required, utc_now
from lambdas.api.app import ApiApp, build_app, observed_app
from lambdas.api.broker import KiteBroker
from lambdas.api.context import Dependencies as Routes
from lambdas.api.dal.account_events import AccountEventPublisher
from lambdas.api.dal.accounts import DynamoAccountRegistry
from lambdas.api.dal.events import EventBridgePublisher
from lambdas.api.dal.grants import CachedGrants, DynamoGrantStore
from lambdas.api.dal.lifecycle import PostgresLifecycle
from lambdas.api.dal.limiter import DynamoOrderLimiter
from lambdas.api.dal.state_key import SecretsManagerStateKey
from lambdas.api.errors import ServiceUnavailableError
from lambdas.api.idempotency import IdempotentWrites
from lambdas.api.ingest import UpdateIngest, ingest_isolating
from lambdas.api.kite import classify, client_factory
from lambdas.api.logic import ResolveSettings, Trading
from lambdas.api.login_broker import KiteSessionExchange
from lambdas.api.settings import ApiEnvironment, LoginCheckEnvironment, OrderUpdatesEnvironment
from lambdas.api.subscriptions import StreamingLimits, SubscriptionService
from lambdas.api.updates import OrderUpdate, UpdateRejectedError, order_update
from lambdas.api.validation import OrderRules
from lambdas.common.db import DatabaseSettings, create_pool
from lambdas.common.observability import Observability
from lambdas.common.runtime import (
    LambdaHandler,
    Lazy,
    LoopRunner,
    close_all,
    context_entry_point,
    entry_point,
)
from lambdas.common.snapshots import current_registry
from ticker_adapters.credentials import CredentialError, CredentialVault
from ticker_adapters.feed_status import FeedStatusStore
from ticker_adapters.instrument_snapshots import InstrumentSnapshotReader
from ticker_adapters.kite_rest import KiteTransport
from ticker_adapters.subscription_store import SubscriptionStore
from ticker_core.tz import IST

obs = Observability("api")
updates_obs = Observability("api-order-updates")
login_obs = Observability("api-login-check")


def ist_today() -> date:
    """Today's date in India (expiries and the snapshot are IST days)."""
    return datetime.now(UTC).astimezone(IST).date()


def database_pool(settings: DatabaseSettings, secretsmanager: Any) -> Lazy[asyncpg.Pool]:
    """The environment's pool, opened on first use (the RDS secret read then, if named)."""
    secrets = secretsmanager if settings.secret_arn else None
    return Lazy(lambda: create_pool(settings, secrets))


# -- api ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dependencies:
    """What one execution environment of the API function builds once and reuses."""

    app: ApiApp
    routes: Routes
    writes: IdempotentWrites
    runner: LoopRunner
    pool: Lazy[asyncpg.Pool]

    @classmethod
    def build(
        cls,
        environment: ApiEnvironment,
        *,
        dynamodb: Any,
        s3: Any,
        secretsmanager: Any,
        kms: Any,
        events: Any,
    ) -> Dependencies:
        """Wire the function from its settings and AWS clients."""
        settings, kite = environment.api, environment.kite
        runner = LoopRunner()
        pool = database_pool(environment.database, secretsmanager)
        vault = CredentialVault.from_settings(
            environment.vault, secretsmanager=secretsmanager, kms=kms
        )
        registry = current_registry(
            InstrumentSnapshotReader.from_settings(s3, environment.snapshot),
            obs,
            ServiceUnavailableError,
        )

        transport = KiteTransport(
            kite.rest_url,
            connect_timeout=settings.kite_connect_timeout_seconds,
            read_timeout=settings.kite_read_timeout_seconds,
            plaintext_hosts=kite.plaintext_hosts,
        )
        lifecycle = PostgresLifecycle(pool, runner)
        writes = IdempotentWrites(
            DynamoDBPersistenceLayer(
                table_name=environment.idempotency.name, boto3_client=dynamodb
            ),
            expires_after_seconds=settings.idempotency_ttl_seconds,
        )
        trading = Trading(
            broker=KiteBroker(vault, client_factory(transport), classify),
            lifecycle=lifecycle,
            limiter=DynamoOrderLimiter(
                dynamodb,
                environment.limiter.name,
                limit=settings.order_rate_per_second,
                window_seconds=settings.order_rate_window_seconds,
                max_wait_seconds=settings.order_rate_max_wait_seconds,
            ),
            registry=registry,
            rules=OrderRules(market_protection_default=settings.market_protection_default),
            today=ist_today,
            sleep=time.sleep,
            resolve=ResolveSettings(settings.resolve_attempts, settings.resolve_delay_seconds),
        )

        def api_secret(account_id: str) -> str | None:
            try:
                return vault.api_credentials(account_id).api_secret
            except (CredentialError, ValueError):
                return None

        grants = CachedGrants(
            DynamoGrantStore(dynamodb, environment.grants.name),
            ttl_seconds=settings.grants_cache_seconds,
        )
        feed_status = FeedStatusStore(dynamodb, environment.subscriptions.name)
        accounts = Accounts(
            registry=DynamoAccountRegistry(dynamodb, environment.accounts.name),
            vault=vault,
            grants=grants,
            state_key=SecretsManagerStateKey(secretsmanager, environment.login_state.arn),
            exchange=KiteSessionExchange(transport, classify),
            feed_status=feed_status.latest,
            settings=LoginSettings(
                kite_login_url=kite.login_url,
                state_ttl=timedelta(seconds=settings.login_state_ttl_seconds),
            ),
            audit=lambda event, fields: obs.logger.info(event, extra=fields),
        )
        subscriptions = SubscriptionService(
            store=SubscriptionStore(dynamodb, environment.subscriptions.name),
            registry=registry,
            active_accounts=accounts.active_count,
            feed_statuses=feed_status.read_all,
            limits=StreamingLimits(
                settings.connections_per_account, settings.instruments_per_connection
            ),
            now=utc_now,
        )
        routes = Routes(
            trading=trading,
            grants=grants,
            writes=writes,
            updates=UpdateIngest(lifecycle, EventBridgePublisher(events, environment.events.name)),
            api_secret=api_secret,
            accounts=accounts,
            subscriptions=subscriptions,
        )
        origins = settings.origins()
        app = observed_app(
            build_app(routes, origins),
            obs,
            cors_origins=origins,
            max_body_bytes=settings.max_body_bytes,
        )
        return cls(app, routes, writes, runner, pool)

    @classmethod
    def from_env(cls) -> Dependencies:
        """The environment's settings and the SDK's default clients (Lambda's init)."""
        names = ("dynamodb", "s3", "secretsmanager", "kms", "events")
        return cls.build(ApiEnvironment.from_env(), **{n: boto3.client(n) for n in names})

    def close(self) -> None:
        """Close the pool and the loop (tests; Lambda freezes the environment instead)."""
        close_all(self.runner, self.pool)


def serve(event: dict[str, Any], deps: Dependencies, context: Any) -> dict[str, Any]:
    """API Gateway (REST, proxy integration) -> the API."""
    deps.writes.register_context(context)
    return deps.app(event, context)


def make_handler(dependencies: Callable[[], Dependencies]) -> LambdaHandler:
    """The API function's entry point over ``dependencies`` (called every time: cache it)."""
    return context_entry_point(obs, serve, dependencies)


# -- api-order-updates -------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderUpdatesDependencies:
    """What one execution environment of the order-update consumer builds once and reuses."""

    ingest: UpdateIngest
    runner: LoopRunner
    pool: Lazy[asyncpg.Pool]

    @classmethod
    def build(
        cls, environment: OrderUpdatesEnvironment, *, events: Any, secretsmanager: Any
    ) -> OrderUpdatesDependencies:
        """Wire the consumer: the lifecycle store, then the bus."""
        runner = LoopRunner()
        pool = database_pool(environment.database, secretsmanager)
        ingest = UpdateIngest(
            PostgresLifecycle(pool, runner),
            EventBridgePublisher(events, environment.events.name),
        )
        return cls(ingest, runner, pool)

    @classmethod
    def from_env(cls) -> OrderUpdatesDependencies:
        """The environment's settings and the SDK's default clients (Lambda's init)."""
        environment = OrderUpdatesEnvironment.from_env()
        secrets = boto3.client("secretsmanager") if environment.database.secret_arn else None
        return cls.build(environment, events=boto3.client("events"), secretsmanager=secrets)

    def close(self) -> None:
        """Close the pool and the loop (tests; Lambda freezes the environment instead)."""
        close_all(self.runner, self.pool)


def forwarded_updates(event: dict[str, Any]) -> tuple[list[tuple[str, OrderUpdate]], int]:
    """The order updates in an SQS batch from the feed, each with its message id, and how
    many bodies were unusable.

    Each message body is ``{"account_id": ..., "order": {...}}``: the ``data``
    of a Kite WebSocket ``order`` message and the account whose connection
    received it.
    """
    updates = []
    rejected = 0
    for record in event.get("Records", []):
        try:
            body = json.loads(record.get("body") or "")
            update = order_update(str(body["account_id"]), body["order"])
        except (ValueError, KeyError, TypeError, UpdateRejectedError):
            rejected += 1
            continue
        updates.append((str(record.get("messageId")), update))
    return updates, rejected


def ingest_updates(event: dict[str, Any], deps: OrderUpdatesDependencies) -> dict[str, Any]:
    """SQS (the feed's forwarded WebSocket order messages) -> the lifecycle store and the bus.

    Unusable messages are counted and dropped (they can never be stored). A
    message the store refuses is named in ``batchItemFailures`` (the mapping
    reports batch item failures), so SQS redelivers only it and, past the
    redrive count, moves it alone to the dead-letter queue; the others in its
    batch are stored and deleted.
    """
    updates, rejected = forwarded_updates(event)
    outcome = ingest_isolating(deps.ingest, updates, "websocket")
    updates_obs.count("OrderUpdatesStored", outcome.new)
    updates_obs.count("OrderUpdatesDuplicate", outcome.duplicates)
    updates_obs.count("OrderUpdatesRejected", rejected)
    updates_obs.count("OrderUpdatesFailed", len(outcome.failed))
    return {
        "batchItemFailures": [{"itemIdentifier": message_id} for message_id in outcome.failed],
        "stored": outcome.new,
        "duplicates": outcome.duplicates,
        "rejected": rejected,
        "failed": len(outcome.failed),
    }


def make_order_updates_handler(
    dependencies: Callable[[], OrderUpdatesDependencies],
) -> LambdaHandler:
    """The order-update consumer's entry point over ``dependencies`` (cache it)."""
    return entry_point(updates_obs, ingest_updates, dependencies)


# -- api-login-check ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LoginCheckDependencies:
    """What one execution environment of the scheduled login check builds once and reuses."""

    registry: DynamoAccountRegistry
    vault: CredentialVault
    events: AccountEventPublisher

    @classmethod
    def build(
        cls,
        environment: LoginCheckEnvironment,
        *,
        dynamodb: Any,
        secretsmanager: Any,
        kms: Any,
        events: Any,
    ) -> LoginCheckDependencies:
        """Wire the check: the registry, the vault's sessions, the bus."""
        return cls(
            DynamoAccountRegistry(dynamodb, environment.accounts.name),
            CredentialVault.from_settings(
                environment.vault, secretsmanager=secretsmanager, kms=kms
            ),
            AccountEventPublisher(events, environment.events.name),
        )

    @classmethod
    def from_env(cls) -> LoginCheckDependencies:
        """The environment's settings and the SDK's default clients (Lambda's init)."""
        names = ("dynamodb", "secretsmanager", "kms", "events")
        return cls.build(LoginCheckEnvironment.from_env(), **{n: boto3.client(n) for n in names})


def report_login_required(required: list[LoginRequired]) -> None:
    """``KiteLoginRequired`` in all and per ``account``, and a warning per account."""
    login_obs.count("KiteLoginRequired", len(required))
    for item in required:
        with single_metric(
            name="KiteLoginRequired",
            unit=MetricUnit.Count,
            value=1,
            namespace=login_obs.metrics.namespace,
            default_dimensions={"service": login_obs.service, "account": item.account_id},
        ):
            pass
        login_obs.logger.warning(
            "kite login required",
            extra={
                "account_id": item.account_id,
                "session_expired_at": (
                    item.session_expired_at.isoformat() if item.session_expired_at else None
                ),
            },
        )


def check_logins(event: dict[str, Any], deps: LoginCheckDependencies) -> dict[str, Any]:
    """EventBridge schedule (at Kite's token expiry, ~06:00 IST) -> who must log in.

    Each active account without a live Kite session is counted
    (``KiteLoginRequired``, in all and per ``account``), published to the bus
    (``Kite Login Required``) and noted in the registry, so the accounts list
    shows it too.
    """
    checked_at = utc_now()
    required = logins_required(deps.registry, deps.vault, checked_at)
    report_login_required(required)  # first: the alarm must not depend on the bus
    published = deps.events.login_required(required, checked_at)
    return {
        "checked_at": checked_at.isoformat(),
        "login_required": [item.account_id for item in required],
        "events_published": published,
    }


def make_login_check_handler(dependencies: Callable[[], LoginCheckDependencies]) -> LambdaHandler:
    """The scheduled login check's entry point over ``dependencies`` (cache it)."""
    return entry_point(login_obs, check_logins, dependencies, log_context=False)


#: Each built on its function's first invocation and kept for the environment's life.
environment = functools.cache(Dependencies.from_env)
handler = make_handler(environment)
order_updates_environment = functools.cache(OrderUpdatesDependencies.from_env)
order_updates = make_order_updates_handler(order_updates_environment)
login_check_environment = functools.cache(LoginCheckDependencies.from_env)
login_check = make_login_check_handler(login_check_environment)
