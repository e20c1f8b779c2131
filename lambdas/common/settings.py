"""Settings more than one Lambda function reads, each under one name (the feed reads none).

What the feed shares with the functions is in :mod:`ticker_adapters.settings`;
what one function reads alone is in its own ``settings`` module. These are
the names the CDK stack sets on several functions:

=============================== ==================================================
``ACCOUNTS_TABLE_NAME``          the account registry and single-use login-state markers
                                 (api, api-market, api-login-check)
``EVENT_BUS_NAME``               the EventBridge bus for order updates and
                                 login-required events (api, api-order-updates,
                                 api-login-check)
``WS_CONNECTIONS_TABLE_NAME``    WebSocket connections, TTL ``expires_at`` (ws, fanout-*)
``WS_SUBSCRIBERS_TABLE_NAME``    WebSocket subscribers by instrument (ws, fanout-*)
``COGNITO_ISSUER``,              the user pool whose ID tokens are accepted
``COGNITO_CLIENT_IDS``,          (ws-authorizer; the sandbox's REST gateway too)
``COGNITO_JWKS_URL``
=============================== ==================================================

The database's ``DB_*`` are :class:`lambdas.common.db.DatabaseSettings`.
"""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ticker_adapters.settings import ResourceNameSettings


class AccountsTableSettings(ResourceNameSettings):
    """``ACCOUNTS_TABLE_NAME``: the account registry (``pk``/``sk``, TTL ``expires_at``)."""

    model_config = SettingsConfigDict(env_prefix="ACCOUNTS_TABLE_")


class EventBusSettings(ResourceNameSettings):
    """``EVENT_BUS_NAME``: the EventBridge bus (name or ARN) other services listen on."""

    model_config = SettingsConfigDict(env_prefix="EVENT_BUS_")


class WsConnectionsTableSettings(ResourceNameSettings):
    """``WS_CONNECTIONS_TABLE_NAME``: WebSocket connections and users (TTL ``expires_at``)."""

    model_config = SettingsConfigDict(env_prefix="WS_CONNECTIONS_TABLE_")


class WsSubscribersTableSettings(ResourceNameSettings):
    """``WS_SUBSCRIBERS_TABLE_NAME``: WebSocket subscribers by instrument, the feed budget."""

    model_config = SettingsConfigDict(env_prefix="WS_SUBSCRIBERS_TABLE_")


#: Where a user pool publishes its signing keys, under its issuer URL.
JWKS_PATH = "/.well-known/jwks.json"


class CognitoSettings(BaseSettings):
    """``COGNITO_*``: the user pool whose ID tokens are accepted."""

    model_config = SettingsConfigDict(
        env_prefix="COGNITO_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    issuer: str
    """``https://cognito-idp.<region>.amazonaws.com/<pool id>``: what the tokens' ``iss`` says."""
    client_ids: str
    """The app client ids tokens may be issued to (``aud``), comma-separated."""
    jwks_url: str | None = None
    """Where the signing keys are fetched; by default ``<issuer>/.well-known/jwks.json``."""
    refetch_seconds: float = Field(default=60.0, ge=0)

    @field_validator("issuer")
    @classmethod
    def _https_issuer(cls, value: str) -> str:
        if not value.startswith("https://"):
            raise ValueError("must be the pool's https issuer URL")
        return value

    @field_validator("client_ids")
    @classmethod
    def _some_client(cls, value: str) -> str:
        if not any(c.strip() for c in value.split(",")):
            raise ValueError("names no app client")
        return value

    def audiences(self) -> frozenset[str]:
        """The accepted ``aud`` values."""
        return frozenset(c.strip() for c in self.client_ids.split(",") if c.strip())

    def keys_url(self) -> str:
        """The JWKS URL: configured, else the issuer's."""
        return self.jwks_url or self.issuer.rstrip("/") + JWKS_PATH
