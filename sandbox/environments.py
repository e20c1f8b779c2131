"""The environment of every child the sandbox starts: the one place that names their variables.

Each deployable reads the settings its deployed configuration would give it;
here they point at the loopback stand-ins instead (moto, the Kinesis fault
proxy, the embedded PostgreSQL, the Kite simulator). Pure: values in,
dictionaries out.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from feed_container.settings import VARIABLE_PREFIXES
from lambdas.ws.protocol import Channel
from sandbox.moto_server import AwsEndpoint
from sandbox.postgres import ConnectionInfo
from sandbox.provision import Resources, UserPool

# What every function's environment has besides its own settings.
FUNCTION_ENV = {"POWERTOOLS_METRICS_NAMESPACE": "TickerService", "LOG_LEVEL": "WARNING"}
API_CORS_ORIGINS = "http://127.0.0.1:8000"
# The feed's watchdog, short so that the chaos run's silent connection trips it.
FEED_WATCHDOG_S = 5.0
# Variable prefixes the feed reads: none of the caller's reach it, only what is set here.
FEED_READS = ("AWS_", *VARIABLE_PREFIXES)


def aws_env(aws: AwsEndpoint, kinesis_url: str | None = None) -> dict[str, str]:
    """The AWS SDK's endpoint and identity; Kinesis through ``kinesis_url`` when given."""
    env = aws.env()
    if kinesis_url is not None:
        env["AWS_ENDPOINT_URL_KINESIS"] = kinesis_url
    return env


def vault_env(resources: Resources) -> dict[str, str]:
    """``KITE_CREDENTIALS_*``: the credential vault the stack created."""
    return {
        "KITE_CREDENTIALS_KMS_KEY_ARN": resources.kms_key_arn,
        "KITE_CREDENTIALS_PREFIX": resources.names.secrets_prefix,
    }


def persist_env(aws: AwsEndpoint, db: ConnectionInfo) -> dict[str, str]:
    """The persist function: PostgreSQL only (it reads its events, it writes no stream)."""
    return {**FUNCTION_ENV, **aws_env(aws), **db.db_env()}


def greeks_env(
    aws: AwsEndpoint, resources: Resources, kinesis_url: str | None = None
) -> dict[str, str]:
    """The Greeks function: the instruments snapshot in, the Greeks stream out."""
    return {
        **FUNCTION_ENV,
        **aws_env(aws, kinesis_url),
        "INSTRUMENTS_BUCKET": resources.names.instruments_bucket,
        "GREEKS_STREAM_NAME": resources.names.greeks_stream,
    }


def api_env(
    aws: AwsEndpoint,
    db: ConnectionInfo,
    resources: Resources,
    kite_rest_url: str,
    **overrides: str,
) -> dict[str, str]:
    """The API function: its tables, bus and login-state key, Kite (and its login page), the
    vault, the account registry, the subscriptions table, the snapshot and PostgreSQL."""
    names = resources.names
    return {
        **FUNCTION_ENV,
        **aws_env(aws),
        **db.db_env(),
        **vault_env(resources),
        "GRANTS_TABLE_NAME": names.grants_table,
        "IDEMPOTENCY_TABLE_NAME": names.idempotency_table,
        "ORDER_LIMITER_TABLE_NAME": names.limiter_table,
        "ACCOUNTS_TABLE_NAME": names.accounts_table,
        "SUBSCRIPTIONS_TABLE_NAME": names.subscriptions_table,
        "EVENT_BUS_NAME": names.event_bus,
        "LOGIN_STATE_SECRET_ARN": resources.login_state_secret_arn,
        "KITE_REST_URL": kite_rest_url,
        "KITE_LOGIN_URL": f"{kite_rest_url}/connect/login",
        "INSTRUMENTS_BUCKET": names.instruments_bucket,
        "API_CORS_ORIGINS": API_CORS_ORIGINS,
        **overrides,
    }


def order_updates_env(aws: AwsEndpoint, db: ConnectionInfo, resources: Resources) -> dict[str, str]:
    """The order-update consumer: the lifecycle in PostgreSQL, the bus."""
    return {
        **FUNCTION_ENV,
        **aws_env(aws),
        **db.db_env(),
        "EVENT_BUS_NAME": resources.names.event_bus,
    }


def login_check_env(aws: AwsEndpoint, resources: Resources) -> dict[str, str]:
    """The scheduled login check: the account registry, the vault's sessions, the bus."""
    return {
        **FUNCTION_ENV,
        **aws_env(aws),
        **vault_env(resources),
        "ACCOUNTS_TABLE_NAME": resources.names.accounts_table,
        "EVENT_BUS_NAME": resources.names.event_bus,
    }


def market_env(
    aws: AwsEndpoint,
    db: ConnectionInfo,
    resources: Resources,
    kite_rest_url: str,
    **overrides: str,
) -> dict[str, str]:
    """The market-data function: PostgreSQL, the snapshot, and sessions for Kite's history."""
    return {
        **FUNCTION_ENV,
        **aws_env(aws),
        **db.db_env(),
        **vault_env(resources),
        "ACCOUNTS_TABLE_NAME": resources.names.accounts_table,
        "KITE_REST_URL": kite_rest_url,
        "INSTRUMENTS_BUCKET": resources.names.instruments_bucket,
        "API_CORS_ORIGINS": API_CORS_ORIGINS,
        **overrides,
    }


def instruments_env(
    aws: AwsEndpoint, db: ConnectionInfo, resources: Resources, kite_rest_url: str
) -> dict[str, str]:
    """The instruments function: Kite's instrument list to S3 and PostgreSQL."""
    return {
        **FUNCTION_ENV,
        **aws_env(aws),
        **db.db_env(),
        **vault_env(resources),
        "INSTRUMENTS_BUCKET": resources.names.instruments_bucket,
        "KITE_REST_URL": kite_rest_url,
    }


def feed_env(
    parent: Mapping[str, str],
    aws: AwsEndpoint,
    resources: Resources,
    *,
    kinesis_url: str | None,
    kite_ws_url: str,
    kite_rest_url: str,
    health_port: int,
    spill_dir: Path,
) -> dict[str, str]:
    """The feed container, as its task definition would configure it.

    ``parent`` (this process's environment) passes through, less anything
    the feed reads (:data:`FEED_READS`) that could point it elsewhere.
    """
    return {
        **{k: v for k, v in parent.items() if not k.startswith(FEED_READS)},
        **aws_env(aws, kinesis_url),
        "KITE_WS_URL": kite_ws_url,
        "KITE_REST_URL": kite_rest_url,
        **vault_env(resources),
        "KITE_CREDENTIALS_CACHE_SECONDS": "5",
        "SUBSCRIPTIONS_TABLE_NAME": resources.names.subscriptions_table,
        "TICKS_STREAM_NAME": resources.names.ticks_stream,
        # Kite's order messages, to the queue the order-updates function consumes.
        "ORDER_UPDATES_QUEUE_URL": resources.order_updates.url,
        # The snapshot the instruments function published, as the Greeks function reads it.
        "FEED_INSTRUMENTS_SOURCE": "snapshot",
        "INSTRUMENTS_BUCKET": resources.names.instruments_bucket,
        "FEED_HEALTH_HOST": "127.0.0.1",
        "FEED_HEALTH_PORT": str(health_port),
        "FEED_SPILL_DIR": str(spill_dir),
        "FEED_WATCHDOG_SECONDS": str(FEED_WATCHDOG_S),
        "FEED_BACKOFF_INITIAL_SECONDS": "0.5",
        "FEED_BACKOFF_MAX_SECONDS": "5",
        "FEED_EMF_INTERVAL_SECONDS": "0",
        "FEED_STOP_TIMEOUT_SECONDS": "60",
    }


def ws_authorizer_env(pool: UserPool) -> dict[str, str]:
    """The WebSocket authorizer: the pool's issuer in AWS's form, its JWKS on moto."""
    return {
        **FUNCTION_ENV,
        "COGNITO_ISSUER": pool.issuer,
        "COGNITO_CLIENT_IDS": pool.client_id,
        "COGNITO_JWKS_URL": pool.jwks_url,
    }


def _ws_state_env(aws: AwsEndpoint, resources: Resources) -> dict[str, str]:
    names = resources.names
    return {
        **FUNCTION_ENV,
        **aws_env(aws),
        "WS_CONNECTIONS_TABLE_NAME": names.ws_connections_table,
        "WS_SUBSCRIBERS_TABLE_NAME": names.ws_subscribers_table,
        "SUBSCRIPTIONS_TABLE_NAME": names.subscriptions_table,
    }


def ws_routes_env(aws: AwsEndpoint, resources: Resources) -> dict[str, str]:
    """The WebSocket routes: the state tables, the feed's store, the instruments snapshot."""
    return {
        **_ws_state_env(aws, resources),
        "INSTRUMENTS_BUCKET": resources.names.instruments_bucket,
    }


def fanout_env(
    aws: AwsEndpoint, resources: Resources, channel: Channel, management_url: str
) -> dict[str, str]:
    """One fan-out function: its stream's channel and the gateway's @connections endpoint."""
    return {
        **_ws_state_env(aws, resources),
        "FANOUT_CHANNEL": channel.value,
        "WS_MANAGEMENT_URL": management_url,
    }
