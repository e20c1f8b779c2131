"""``API_*`` environment variables of the API function.

The function also reads ``KITE_CREDENTIALS_*`` (the vault,
:class:`ticker_adapters.settings.VaultSettings`), ``INSTRUMENTS_*`` (the
snapshot, :class:`ticker_adapters.settings.SnapshotSettings`) and ``DB_*``
(:class:`lambdas.common.db.DatabaseSettings`).
"""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class HttpSettings(BaseSettings):
    """``API_*`` variables of the request path, shared by the API's two functions."""

    model_config = SettingsConfigDict(env_prefix="API_", extra="ignore", hide_input_in_errors=True)

    cors_origins: str = ""
    """Comma-separated origins allowed to call from a browser (empty: none)."""
    max_body_bytes: int = Field(default=16 * 1024, ge=1024, le=6 * 1024 * 1024)

    def origins(self) -> list[str]:
        """The CORS allow-list."""
        return [o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip()]


class ApiSettings(HttpSettings):
    """What the API function is configured with (names are what the CDK stack sets)."""

    model_config = SettingsConfigDict(env_prefix="API_", extra="ignore", hide_input_in_errors=True)

    grants_table: str
    """DynamoDB table of grants (pk ``USER#<sub>``, sk ``ACCOUNT#<id>``)."""
    idempotency_table: str
    """DynamoDB table of Powertools idempotency records (key ``id``, TTL ``expiration``)."""
    limiter_table: str
    """DynamoDB table of the per-account order limiter (key ``pk``, TTL ``expires_at``)."""
    event_bus: str
    """EventBridge bus name or ARN for order updates."""
    kite_root: str = "https://api.kite.trade"
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

    @field_validator("market_protection_default")
    @classmethod
    def _protection(cls, value: float | None) -> float | None:
        if value is not None and value != -1 and not 0 < value <= 100:
            raise ValueError("API_MARKET_PROTECTION_DEFAULT must be -1 or in (0, 100]")
        return value


class AccountSettings(BaseSettings):
    """``API_*`` variables of the accounts, Kite login and subscription routes (API function)."""

    model_config = SettingsConfigDict(env_prefix="API_", extra="ignore", hide_input_in_errors=True)

    accounts_table: str
    """DynamoDB table of the account registry and login-state markers (``pk``/``sk``, TTL
    ``expires_at``)."""
    login_state_secret_arn: str
    """Secrets Manager secret holding the login-state signing key (generated at deploy, at
    least 32 characters; only this function reads it)."""
    login_state_ttl_seconds: int = Field(default=600, ge=60, le=3600)
    """How long a login link works (Kite's login form, TOTP included, fits in it)."""
    kite_login_url: str = "https://kite.zerodha.com/connect/login"
    subscriptions_table: str
    """The desired-subscriptions table (the feed reads it and writes its status there)."""
    connections_per_account: int = Field(default=3, ge=1, le=3)
    instruments_per_connection: int = Field(default=3000, ge=1, le=3000)

    @field_validator("kite_login_url")
    @classmethod
    def _login_url(cls, value: str) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(value)
        loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
        if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
            raise ValueError("API_KITE_LOGIN_URL must be https:// (http:// only to loopback)")
        return value


class MarketSettings(BaseSettings):
    """``MARKET_*`` variables of the market-data function.

    It also reads ``DB_*`` (read-only use of the ``market`` schema) and
    ``INSTRUMENTS_*``; with ``MARKET_ACCOUNTS_TABLE`` set, also
    ``KITE_CREDENTIALS_*`` (sessions, for Kite's historical API).
    """

    model_config = SettingsConfigDict(
        env_prefix="MARKET_", extra="ignore", hide_input_in_errors=True
    )

    risk_free_rate: float = Field(default=0.065, ge=-0.1, le=1.0)
    """Continuously compounded rate for option values (keep it equal to the greeks function's
    ``GREEKS_RISK_FREE_RATE``)."""
    quote_lookback_days: float = Field(default=7, gt=0, le=31)
    accounts_table: str | None = None
    """The account registry (as ``API_ACCOUNTS_TABLE``): a logged-in account serves Kite's
    historical API. Unset: candles come from stored bars only."""
    kite_root: str = "https://api.kite.trade"
    kite_connect_timeout_seconds: float = Field(default=3.0, gt=0)
    kite_read_timeout_seconds: float = Field(default=10.0, gt=0)
    max_history_calls: int = Field(default=3, ge=1, le=10)
    """Kite historical calls one candles request may make (Kite allows 3 a second per app)."""
