"""The environments of the WebSocket functions; importing this module reads nothing.

=============== ========================================================================
function        reads
=============== ========================================================================
ws-authorizer   ``COGNITO_*``
ws              ``WS_*``, ``WS_CONNECTIONS_TABLE_NAME``, ``WS_SUBSCRIBERS_TABLE_NAME``,
                ``SUBSCRIPTIONS_TABLE_NAME``, ``INSTRUMENTS_*``
fanout-ticks,   ``FANOUT_*``, ``WS_MANAGEMENT_URL``, ``WS_*``, ``WS_CONNECTIONS_TABLE_NAME``,
fanout-greeks   ``WS_SUBSCRIBERS_TABLE_NAME``, ``SUBSCRIPTIONS_TABLE_NAME``
=============== ========================================================================

A fan-out removes a gone connection's subscriptions, and with the last
subscriber an instrument leaves the feed's desired set: so it reads the
subscription store and the ``WS_*`` knobs of that bookkeeping too.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from lambdas.common.settings import (
    CognitoSettings,
    WsConnectionsTableSettings,
    WsSubscribersTableSettings,
)
from lambdas.ws.logic import Limits
from lambdas.ws.protocol import MAX_MESSAGE_BYTES, Channel
from ticker_adapters.endpoints import require_tls_off_loopback
from ticker_adapters.settings import Environment, SnapshotSettings, SubscriptionsTableSettings
from ticker_core.kite import MODES


class WsSettings(BaseSettings):
    """``WS_*``: the routes' limits and how clients' instruments join the feed's set."""

    model_config = SettingsConfigDict(
        env_prefix="WS_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    feed_mode: str = Field(default="full", pattern="^(" + "|".join(MODES) + ")$")
    """The mode instruments clients add are streamed in (full: depth and open interest too)."""
    feed_budget: int = Field(default=2000, ge=0, le=100_000)
    """Instruments clients may add to the feed's desired set, in all."""
    max_instruments: int = Field(default=1000, ge=1, le=10_000)
    """Per connection."""
    messages_per_second: int = Field(default=10, ge=1, le=1000)
    """Client messages per connection per second."""
    max_connections_per_user: int = Field(default=5, ge=1, le=1000)
    connection_ttl_seconds: int = Field(default=2 * 3600 + 600, ge=60)
    index_workers: int = Field(default=8, ge=1, le=64)
    """Threads writing subscriber entries (one DynamoDB write per instrument)."""

    def limits(self) -> Limits:
        """The limits the routes enforce."""
        return Limits(
            max_instruments=self.max_instruments,
            messages_per_second=self.messages_per_second,
            max_connections_per_user=self.max_connections_per_user,
            feed_budget=self.feed_budget,
            connection_ttl_seconds=self.connection_ttl_seconds,
        )


class WsManagementSettings(BaseSettings):
    """``WS_MANAGEMENT_URL``: the stage's ``@connections`` endpoint,
    ``https://<api id>.execute-api.<region>.amazonaws.com/<stage>``."""

    model_config = SettingsConfigDict(
        env_prefix="WS_MANAGEMENT_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    url: str = Field(min_length=1)

    @field_validator("url")
    @classmethod
    def _https_or_loopback(cls, value: str) -> str:
        return require_tls_off_loopback(value, schemes=("https",))


class FanoutSettings(BaseSettings):
    """``FANOUT_*``: which stream this fan-out function serves and how it posts."""

    model_config = SettingsConfigDict(
        env_prefix="FANOUT_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    channel: Channel
    """``ticks`` or ``greeks``: the stream its event source mapping reads."""
    post_workers: int = Field(default=32, ge=1, le=256)
    post_attempts: int = Field(default=3, ge=1, le=10)
    max_message_bytes: int = Field(default=MAX_MESSAGE_BYTES, ge=4096, le=MAX_MESSAGE_BYTES)
    max_carried_records: int = Field(default=50_000, ge=0)
    """Records kept for clients that fell behind, at most (beyond: dropped and counted)."""


@dataclass(frozen=True)
class AuthorizerEnvironment(Environment):
    """What the ``$connect`` authorizer (``lambdas.ws.authorizer.handler``) reads."""

    cognito: CognitoSettings


@dataclass(frozen=True)
class WsEnvironment(Environment):
    """What the routes function (``lambdas.ws.handler.handler``) reads."""

    ws: WsSettings
    connections: WsConnectionsTableSettings
    subscribers: WsSubscribersTableSettings
    #: ``SUBSCRIPTIONS_TABLE_NAME``: the feed's desired set, which clients' instruments join.
    subscriptions: SubscriptionsTableSettings
    #: ``INSTRUMENTS_*``: only instruments the feed can stream are subscribed.
    snapshot: SnapshotSettings


@dataclass(frozen=True)
class FanoutEnvironment(Environment):
    """What each fan-out function (``lambdas.ws.fanout_handler.handler``) reads."""

    fanout: FanoutSettings
    management: WsManagementSettings
    ws: WsSettings
    connections: WsConnectionsTableSettings
    subscribers: WsSubscribersTableSettings
    subscriptions: SubscriptionsTableSettings
