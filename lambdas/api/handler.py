"""API function entry points: build the dependencies once, then serve requests.

``handler`` serves API Gateway's REST proxy events (every route but
``/market/*``, which ``lambdas.api.market_handler`` serves); ``order_updates``
consumes the SQS queue the feed container forwards Kite's WebSocket order
messages to; ``login_check`` runs on a schedule at Kite's token expiry.
Nothing is built at import: :func:`build` (tests call it with their own
clients and Kite) assembles one :class:`ApiFunction` per execution
environment, on the first invocation.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

import boto3
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

from lambdas.api.accounts import Accounts, LoginSettings, SessionExchange, utc_now
from lambdas.api.app import ApiApp, build_app, observed_app
from lambdas.api.broker import Classifier, ClientFactory, KiteBroker
from lambdas.api.context import Dependencies
from lambdas.api.dal.account_events import AccountEventPublisher
from lambdas.api.dal.accounts import DynamoAccountRegistry
from lambdas.api.dal.events import EventBridgePublisher
from lambdas.api.dal.grants import DynamoGrantStore
from lambdas.api.dal.lifecycle import PostgresLifecycle
from lambdas.api.dal.limiter import DynamoOrderLimiter
from lambdas.api.dal.state_key import SecretsManagerStateKey
from lambdas.api.errors import ServiceUnavailableError
from lambdas.api.idempotency import IdempotentWrites
from lambdas.api.ingest import UpdateIngest
from lambdas.api.logic import ResolveSettings, Trading
from lambdas.api.settings import AccountSettings, ApiSettings
from lambdas.api.subscriptions import StreamingLimits, SubscriptionService
from lambdas.api.updates import UpdateRejectedError, order_update
from lambdas.api.validation import InstrumentLookup, OrderRules
from lambdas.common.db import DatabaseSettings, create_pool
from lambdas.common.observability import Observability
from lambdas.common.runtime import Lazy, LoopRunner
from ticker_adapters.credentials import CredentialError, CredentialVault
from ticker_adapters.envelope import KmsEnvelopeCipher
from ticker_adapters.feed_status import FeedStatusStore
from ticker_adapters.instrument_snapshots import InstrumentSnapshotReader, SnapshotError
from ticker_adapters.settings import SnapshotSettings, VaultSettings
from ticker_adapters.subscription_store import SubscriptionStore
from ticker_core.instruments import InstrumentRegistry
from ticker_core.tz import IST

SERVICE = "api"


@dataclass
class AwsClients:
    """The AWS SDK clients the function uses (one set per environment)."""

    dynamodb: Any
    s3: Any
    secretsmanager: Any
    kms: Any
    events: Any

    @classmethod
    def from_environment(cls) -> AwsClients:
        """Clients configured by the SDK's environment (region, endpoint, role)."""
        return cls(
            *(boto3.client(name) for name in ("dynamodb", "s3", "secretsmanager", "kms", "events"))
        )


@dataclass
class ApiFunction:
    """One execution environment's state."""

    app: ApiApp
    deps: Dependencies
    writes: IdempotentWrites
    ingest: UpdateIngest
    obs: Observability
    runner: LoopRunner
    pool: Lazy[Any]
    account_events: AccountEventPublisher

    def close(self) -> None:
        """Close the pool and the loop (tests; Lambda freezes the environment instead)."""
        opened = self.pool.reset()
        if opened is not None:
            self.runner.run(opened.close())
        self.runner.close()


def ist_today() -> date:
    """Today's date in India (expiries and the snapshot are IST days)."""
    return datetime.now(UTC).astimezone(IST).date()


def build(
    *,
    settings: ApiSettings,
    vault_settings: VaultSettings,
    snapshot_settings: SnapshotSettings,
    database: DatabaseSettings,
    clients: AwsClients,
    client_for: ClientFactory,
    classify: Classifier,
    account_settings: AccountSettings,
    exchange: SessionExchange,
    sleep: Callable[[float], None] | None = None,
) -> ApiFunction:
    """Every dependency of the function, wired."""
    import time

    obs = Observability(SERVICE)
    runner = LoopRunner()
    secrets = clients.secretsmanager if database.secret_arn else None
    pool: Lazy[Any] = Lazy(lambda: create_pool(database, secrets))
    vault = CredentialVault(
        clients.secretsmanager,
        KmsEnvelopeCipher(clients.kms, vault_settings.kms_key_arn),
        prefix=vault_settings.prefix,
        cache_seconds=vault_settings.cache_seconds,
    )
    snapshots = InstrumentSnapshotReader(
        clients.s3,
        snapshot_settings.bucket,
        prefix=snapshot_settings.prefix,
        recheck_seconds=snapshot_settings.recheck_seconds,
    )

    def registry() -> InstrumentLookup:
        try:
            return snapshots.current().registry
        except SnapshotError as exc:
            obs.logger.error(
                "instruments snapshot unavailable", extra={"error": type(exc).__name__}
            )
            raise ServiceUnavailableError() from exc

    lifecycle = PostgresLifecycle(pool, runner)
    ingest = UpdateIngest(lifecycle, EventBridgePublisher(clients.events, settings.event_bus))
    writes = IdempotentWrites(
        DynamoDBPersistenceLayer(
            table_name=settings.idempotency_table, boto3_client=clients.dynamodb
        ),
        expires_after_seconds=settings.idempotency_ttl_seconds,
    )
    trading = Trading(
        broker=KiteBroker(vault, client_for, classify),
        lifecycle=lifecycle,
        limiter=DynamoOrderLimiter(
            clients.dynamodb,
            settings.limiter_table,
            limit=settings.order_rate_per_second,
            window_seconds=settings.order_rate_window_seconds,
            max_wait_seconds=settings.order_rate_max_wait_seconds,
        ),
        registry=registry,
        rules=OrderRules(market_protection_default=settings.market_protection_default),
        today=ist_today,
        sleep=sleep or time.sleep,
        resolve=ResolveSettings(settings.resolve_attempts, settings.resolve_delay_seconds),
    )

    def api_secret(account_id: str) -> str | None:
        try:
            return vault.api_credentials(account_id).api_secret
        except (CredentialError, ValueError):
            return None

    grants = DynamoGrantStore(clients.dynamodb, settings.grants_table)
    registry_store = DynamoAccountRegistry(clients.dynamodb, account_settings.accounts_table)
    feed_status = FeedStatusStore(clients.dynamodb, account_settings.subscriptions_table)
    accounts = Accounts(
        registry=registry_store,
        vault=vault,
        grants=grants,
        state_key=SecretsManagerStateKey(
            clients.secretsmanager, account_settings.login_state_secret_arn
        ),
        exchange=exchange,
        feed_status=feed_status.latest,
        settings=LoginSettings(
            kite_login_url=account_settings.kite_login_url,
            state_ttl=timedelta(seconds=account_settings.login_state_ttl_seconds),
        ),
        audit=lambda event, fields: obs.logger.info(event, extra=fields),
    )
    subscriptions = SubscriptionService(
        store=SubscriptionStore(clients.dynamodb, account_settings.subscriptions_table),
        registry=lambda: cast(InstrumentRegistry, registry()),
        active_accounts=accounts.active_count,
        feed_statuses=feed_status.read_all,
        limits=StreamingLimits(
            account_settings.connections_per_account, account_settings.instruments_per_connection
        ),
        now=utc_now,
    )
    deps = Dependencies(
        trading=trading,
        grants=grants,
        writes=writes,
        updates=ingest,
        api_secret=api_secret,
        accounts=accounts,
        subscriptions=subscriptions,
    )

    origins = settings.origins()
    app = observed_app(
        build_app(deps, origins), obs, cors_origins=origins, max_body_bytes=settings.max_body_bytes
    )
    return ApiFunction(
        app,
        deps,
        writes,
        ingest,
        obs,
        runner,
        pool,
        AccountEventPublisher(clients.events, settings.event_bus),
    )


def forwarded_updates(event: dict[str, Any]) -> tuple[list[Any], int]:
    """The order updates in an SQS batch from the feed, and how many bodies were unusable.

    Each message body is ``{"account_id": ..., "order": {...}}``: the ``data``
    of a Kite WebSocket ``order`` message and the account whose connection
    received it.
    """
    updates = []
    rejected = 0
    for record in event.get("Records", []):
        try:
            body = json.loads(record.get("body") or "")
            updates.append(order_update(str(body["account_id"]), body["order"]))
        except (ValueError, KeyError, TypeError, UpdateRejectedError):
            rejected += 1
    return updates, rejected


def build_from_environment() -> ApiFunction:
    """The function as deployed: settings from the environment, the real Kite client."""
    from lambdas.api.kite import classify, client_factory
    from lambdas.api.login_broker import KiteSessionExchange
    from ticker_adapters.kite_rest import KiteTransport

    settings = ApiSettings()  # type: ignore[call-arg]  # from the environment
    account_settings = AccountSettings()  # type: ignore[call-arg]
    login_transport = KiteTransport(
        settings.kite_root,
        connect_timeout=settings.kite_connect_timeout_seconds,
        read_timeout=settings.kite_read_timeout_seconds,
    )
    return build(
        settings=settings,
        account_settings=account_settings,
        exchange=KiteSessionExchange(login_transport, classify),
        vault_settings=VaultSettings(),  # type: ignore[call-arg]
        snapshot_settings=SnapshotSettings(),  # type: ignore[call-arg]
        database=DatabaseSettings(),
        clients=AwsClients.from_environment(),
        client_for=client_factory(
            settings.kite_root,
            connect_timeout=settings.kite_connect_timeout_seconds,
            read_timeout=settings.kite_read_timeout_seconds,
        ),
        classify=classify,
    )


class _Environment:
    """The execution environment's one :class:`ApiFunction`, built on first use."""

    function: ApiFunction | None = None

    @classmethod
    def get(cls) -> ApiFunction:
        if cls.function is None:
            cls.function = build_from_environment()
        return cls.function


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """API Gateway (REST, proxy integration) -> the API."""
    function = _Environment.get()
    function.writes.register_context(context)
    try:
        return function.app(event, context)
    finally:
        function.obs.metrics.flush_metrics()


def order_updates(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """SQS (the feed's forwarded WebSocket order messages) -> the lifecycle store and the bus.

    Unusable messages are counted and dropped (they can never be stored); a
    store failure fails the batch, so SQS redelivers it (storing is
    idempotent) and, past the redrive count, moves it to the dead-letter queue.
    """
    function = _Environment.get()
    updates, rejected = forwarded_updates(event)
    try:
        stored = function.ingest.ingest(updates, "websocket") if updates else []
        function.obs.count("OrderUpdatesStored", sum(stored))
        function.obs.count("OrderUpdatesDuplicate", len(stored) - sum(stored))
        function.obs.count("OrderUpdatesRejected", rejected)
    finally:
        function.obs.metrics.flush_metrics()
    return {"stored": sum(stored), "duplicates": len(stored) - sum(stored), "rejected": rejected}


def login_check(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """EventBridge schedule (at Kite's token expiry, ~06:00 IST) -> who must log in.

    Each active account without a live Kite session is counted
    (``KiteLoginRequired``, in all and per ``account``), published to the bus
    (``Kite Login Required``) and noted in the registry, so the accounts list
    shows it too.
    """
    function = _Environment.get()
    accounts = function.deps.accounts
    if accounts is None:  # never: build() always wires them
        raise RuntimeError("accounts are not configured")
    checked_at = utc_now()
    try:
        required = accounts.check_logins()
        published = function.account_events.login_required(required, checked_at)
        function.obs.count("KiteLoginRequired", len(required))
        for item in required:
            with single_metric(
                name="KiteLoginRequired",
                unit=MetricUnit.Count,
                value=1,
                namespace=function.obs.metrics.namespace,
                default_dimensions={"service": SERVICE, "account": item.account_id},
            ):
                pass
            function.obs.logger.warning(
                "kite login required",
                extra={
                    "account_id": item.account_id,
                    "session_expired_at": (
                        item.session_expired_at.isoformat() if item.session_expired_at else None
                    ),
                },
            )
    finally:
        function.obs.metrics.flush_metrics()
    return {
        "checked_at": checked_at.isoformat(),
        "login_required": [item.account_id for item in required],
        "events_published": published,
    }
