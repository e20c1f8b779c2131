"""Environment models of the WebSocket functions (names are what the CDK stack sets).

The routes function reads :class:`WsSettings` and ``INSTRUMENTS_*``
(:class:`ticker_adapters.settings.SnapshotSettings`); each fan-out function
reads :class:`WsSettings` and :class:`FanoutSettings`; the authorizer reads
``COGNITO_*`` (:class:`lambdas.common.cognito.CognitoSettings`).
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from lambdas.ws.logic import Limits
from lambdas.ws.protocol import MAX_MESSAGE_BYTES, Channel
from ticker_core.kite import MODES


class WsSettings(BaseSettings):
    """``WS_*``: the state tables, the feed's desired set and the limits."""

    model_config = SettingsConfigDict(env_prefix="WS_", extra="ignore")

    connections_table: str
    """Connections and users (key ``pk``, TTL ``expires_at``)."""
    subscribers_table: str
    """Subscribers by instrument and the feed budget (key ``pk``)."""
    feed_subscriptions_table: str
    """The subscription store the feed reconciles against (the feed's FEED_SUBSCRIPTIONS_TABLE)."""
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


class FanoutSettings(BaseSettings):
    """``FANOUT_*``: which stream this fan-out function serves and how it posts."""

    model_config = SettingsConfigDict(env_prefix="FANOUT_", extra="ignore")

    channel: Channel
    """``ticks`` or ``greeks``: the stream its event source mapping reads."""
    management_endpoint: str
    """The stage's management endpoint.

    ``https://<api id>.execute-api.<region>.amazonaws.com/<stage>`` in AWS.
    """
    post_workers: int = Field(default=32, ge=1, le=256)
    post_attempts: int = Field(default=3, ge=1, le=10)
    max_message_bytes: int = Field(default=MAX_MESSAGE_BYTES, ge=4096, le=MAX_MESSAGE_BYTES)
    max_carried_records: int = Field(default=50_000, ge=0)
    """Records kept for clients that fell behind, at most (beyond: dropped and counted)."""
