"""The environments of the API's four functions; importing this module reads nothing.

One ``<Name>Environment`` per function (``settings`` in pyproject's
``[tool.ticker-service.functions]``), each a frozen dataclass of settings
models read at once by ``from_env()``:

=================== ====================================================================
function            reads
=================== ====================================================================
api                 ``API_*``, ``KITE_*`` (REST, login page), ``KITE_CREDENTIALS_*``,
                    ``INSTRUMENTS_*``, ``SUBSCRIPTIONS_TABLE_NAME``, ``GRANTS_TABLE_NAME``,
                    ``IDEMPOTENCY_TABLE_NAME``, ``ORDER_LIMITER_TABLE_NAME``,
                    ``ACCOUNTS_TABLE_NAME``, ``EVENT_BUS_NAME``, ``LOGIN_STATE_SECRET_ARN``,
                    ``DB_*``
api-order-updates   ``EVENT_BUS_NAME``, ``DB_*``
api-login-check     ``ACCOUNTS_TABLE_NAME``, ``KITE_CREDENTIALS_*``, ``EVENT_BUS_NAME``
api-market          ``MARKET_*``, ``API_CORS_ORIGINS``, ``API_MAX_BODY_BYTES``, ``KITE_*``,
                    ``KITE_CREDENTIALS_*``, ``ACCOUNTS_TABLE_NAME``, ``INSTRUMENTS_*``,
                    ``DB_*``
=================== ====================================================================

Names several functions share come from :mod:`ticker_adapters.settings` and
:mod:`lambdas.common.settings`; the ones only the API function reads are here.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from lambdas.common.db import DatabaseSettings
from lambdas.common.settings import AccountsTableSettings, EventBusSettings
from ticker_adapters.settings import (
    Environment,
    KiteSettings,
    ResourceNameSettings,
    SnapshotSettings,
    SubscriptionsTableSettings,
    VaultSettings,
)

#: The longest a grant is remembered by an execution environment (see ``API_GRANTS_CACHE_SECONDS``).
MAX_GRANTS_CACHE_SECONDS = 60.0


class GrantsTableSettings(ResourceNameSettings):
    """``GRANTS_TABLE_NAME``: who may see or trade which account (``pk``/``sk``)."""

    model_config = SettingsConfigDict(env_prefix="GRANTS_TABLE_")


class IdempotencyTableSettings(ResourceNameSettings):
    """``IDEMPOTENCY_TABLE_NAME``: Powertools' idempotency records (key ``id``, TTL
    ``expiration``)."""

    model_config = SettingsConfigDict(env_prefix="IDEMPOTENCY_TABLE_")


class OrderLimiterTableSettings(ResourceNameSettings):
    """``ORDER_LIMITER_TABLE_NAME``: the per-account order limiter (key ``pk``, TTL
    ``expires_at``)."""

    model_config = SettingsConfigDict(env_prefix="ORDER_LIMITER_TABLE_")


class LoginStateSecretSettings(BaseSettings):
    """``LOGIN_STATE_SECRET_ARN``: the Secrets Manager secret holding the login-state signing
    key (generated at deploy, at least 32 characters; only the API function reads it)."""

    model_config = SettingsConfigDict(
        env_prefix="LOGIN_STATE_SECRET_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    arn: str = Field(min_length=1)


class HttpSettings(BaseSettings):
    """``API_*`` of the request path, read by both REST functions (api and api-market)."""

    model_config = SettingsConfigDict(
        env_prefix="API_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    cors_origins: str = ""
    """Comma-separated origins allowed to call from a browser (empty: none)."""
    max_body_bytes: int = Field(default=16 * 1024, ge=1024, le=6 * 1024 * 1024)

    def origins(self) -> list[str]:
        """The CORS allow-list."""
        return [o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip()]


class ApiSettings(HttpSettings):
    """``API_*``: the API function's knobs (its tables, bus and secret are named apart)."""

    kite_connect_timeout_seconds: float = Field(default=3.0, gt=0)
    kite_read_timeout_seconds: float = Field(default=7.0, gt=0)
    market_protection_default: float | None = None
    """For MARKET and SL-M orders without ``market_protection``: -1 (Kite's automatic) or a
    percentage; unset, such orders are refused (422)."""
    order_rate_per_second: int = Field(default=10, ge=1, le=100)
    order_rate_window_seconds: float = Field(default=1.1, ge=1.0, le=5.0)
    """The sliding window: one second plus a margin for transit variance."""
    order_rate_max_wait_seconds: float = Field(default=3.0, ge=0, le=20)
    idempotency_ttl_seconds: int = Field(default=24 * 3600, ge=60)
    resolve_attempts: int = Field(default=3, ge=1, le=10)
    """Order-book lookups for an order whose placement answer was lost."""
    resolve_delay_seconds: float = Field(default=0.5, ge=0, le=5)
    grants_cache_seconds: float = Field(default=10.0, ge=0, le=MAX_GRANTS_CACHE_SECONDS)
    """How long an execution environment reuses a grant it read (0: read every request). A
    revoked or lowered grant is honoured at most this long by an environment that read it
    before; the environment that changed it forgets it at once. A missing grant is never
    remembered (a new grant works at once)."""
    login_state_ttl_seconds: int = Field(default=600, ge=60, le=3600)
    """How long a login link works (Kite's login form, TOTP included, fits in it)."""
    connections_per_account: int = Field(default=3, ge=1, le=3)
    instruments_per_connection: int = Field(default=3000, ge=1, le=3000)

    @field_validator("market_protection_default")
    @classmethod
    def _protection(cls, value: float | None) -> float | None:
        if value is not None and value != -1 and not 0 < value <= 100:
            raise ValueError("API_MARKET_PROTECTION_DEFAULT must be -1 or in (0, 100]")
        return value


class MarketDataSettings(BaseSettings):
    """``MARKET_*``: the market-data function's knobs."""

    model_config = SettingsConfigDict(
        env_prefix="MARKET_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    risk_free_rate: float = Field(default=0.065, ge=-0.1, le=1.0)
    """Continuously compounded rate for option values (keep it equal to the greeks function's
    ``GREEKS_RISK_FREE_RATE``)."""
    quote_lookback_days: float = Field(default=7, gt=0, le=31)
    kite_connect_timeout_seconds: float = Field(default=3.0, gt=0)
    kite_read_timeout_seconds: float = Field(default=10.0, gt=0)
    max_history_calls: int = Field(default=3, ge=1, le=10)
    """Kite historical calls one candles request may make (Kite allows 3 a second per app)."""


@dataclass(frozen=True)
class ApiEnvironment(Environment):
    """Everything the API function (``lambdas.api.handler.handler``) reads."""

    api: ApiSettings
    #: ``KITE_REST_URL`` (orders, the login exchange), ``KITE_LOGIN_URL`` (the redirect).
    kite: KiteSettings
    #: ``KITE_CREDENTIALS_*``: sessions to trade with, API secrets for postbacks and logins.
    vault: VaultSettings
    #: ``INSTRUMENTS_*``: orders are checked against the day's instruments.
    snapshot: SnapshotSettings
    #: ``SUBSCRIPTIONS_TABLE_NAME``: the desired set, and the feed's status record.
    subscriptions: SubscriptionsTableSettings
    grants: GrantsTableSettings
    idempotency: IdempotencyTableSettings
    limiter: OrderLimiterTableSettings
    accounts: AccountsTableSettings
    events: EventBusSettings
    login_state: LoginStateSecretSettings
    database: DatabaseSettings


@dataclass(frozen=True)
class OrderUpdatesEnvironment(Environment):
    """What ``lambdas.api.handler.order_updates`` reads: the lifecycle store and the bus."""

    events: EventBusSettings
    database: DatabaseSettings


@dataclass(frozen=True)
class LoginCheckEnvironment(Environment):
    """What ``lambdas.api.handler.login_check`` reads: the registry, the sessions, the bus."""

    accounts: AccountsTableSettings
    vault: VaultSettings
    events: EventBusSettings


@dataclass(frozen=True)
class MarketEnvironment(Environment):
    """Everything the market-data function (``lambdas.api.market_handler.handler``) reads."""

    market: MarketDataSettings
    #: ``API_CORS_ORIGINS``, ``API_MAX_BODY_BYTES``: the same request path as the API's.
    http: HttpSettings
    #: ``KITE_REST_URL``: Kite's historical API, before the first stored bar.
    kite: KiteSettings
    #: ``KITE_CREDENTIALS_*`` and ``ACCOUNTS_TABLE_NAME``: a logged-in account's session.
    vault: VaultSettings
    accounts: AccountsTableSettings
    snapshot: SnapshotSettings
    database: DatabaseSettings
