"""The container's configuration: environment variables ``FEED_*``, validated once at start.

Every knob has a production default; the sandbox and tests override what
they need. AWS endpoints and credentials come from the AWS SDK's own
environment (``AWS_REGION``, ``AWS_ENDPOINT_URL``, the task role), never
from here, and no secret is ever a setting: Kite tokens live in the
credential vault.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ticker_core.records.limits import (
    DEFAULT_AGGREGATE_BYTES,
    MAX_RECORD_BYTES,
    MAX_REQUEST_BYTES,
    MAX_REQUEST_RECORDS,
)

KITE_MAX_CONNECTIONS_PER_KEY = 3
KITE_MAX_INSTRUMENTS_PER_CONNECTION = 3000
MIB = 1024 * 1024


class FeedSettings(BaseSettings):
    """``python -m feed_container`` reads these from ``FEED_<NAME>`` (case-insensitive)."""

    model_config = SettingsConfigDict(env_prefix="FEED_", extra="ignore", frozen=True)

    # -- accounts and Kite -------------------------------------------------------------
    #: Account ids in the credential vault; empty: every account with stored API credentials.
    accounts: Annotated[tuple[str, ...], NoDecode] = ()
    #: With ``accounts`` empty, how often the vault is listed for accounts added since start.
    accounts_refresh_seconds: float = Field(60.0, gt=0)
    #: How often the status record (plan and connections) is written; 0 writes none.
    status_interval_seconds: float = Field(10.0, ge=0)
    #: This instance's name in the status record (default: the host name, the task's).
    instance_id: str = Field(default_factory=socket.gethostname, min_length=1, max_length=128)
    kite_ws_url: str = "wss://ws.kite.trade"
    kite_rest_url: str = "https://api.kite.trade"
    secrets_prefix: str = "ticker/kite"
    #: KMS key of the credential envelopes (ARN or alias); required.
    kms_key_id: str = Field(min_length=1)
    credential_cache_seconds: float = Field(60.0, ge=0)
    max_connections_per_key: int = Field(KITE_MAX_CONNECTIONS_PER_KEY, ge=1, le=3)
    max_instruments_per_connection: int = Field(
        KITE_MAX_INSTRUMENTS_PER_CONNECTION, ge=1, le=KITE_MAX_INSTRUMENTS_PER_CONNECTION
    )

    # -- connections -------------------------------------------------------------------
    #: No frame (heartbeats included) for this long: the connection is dead; reconnect.
    watchdog_seconds: float = Field(10.0, gt=0)
    connect_timeout_seconds: float = Field(10.0, gt=0)
    close_timeout_seconds: float = Field(5.0, gt=0)
    """How long a WebSocket close handshake may take before the socket is aborted."""
    backoff_initial_seconds: float = Field(1.0, gt=0)
    backoff_max_seconds: float = Field(30.0, gt=0)
    backoff_factor: float = Field(2.0, ge=1)
    #: A connection that stayed up this long starts its next reconnect from scratch.
    backoff_reset_after_seconds: float = Field(60.0, ge=0)
    #: Minimum wait after Kite answers 429 (too many connections for the key).
    rate_limited_delay_seconds: float = Field(5.0, ge=0)

    # -- subscriptions and instruments ---------------------------------------------------
    subscriptions_table: str = Field(min_length=1)
    subscription_poll_seconds: float = Field(1.0, gt=0)
    #: How often ATM windows are re-centred on their underlyings' live prices.
    atm_recentre_seconds: float = Field(1.0, gt=0)
    #: A window moves only once its underlying has gone this many strike steps from the
    #: price it was centred on (0: re-centre on every move past a midpoint).
    atm_hysteresis_steps: float = Field(0.5, ge=0, le=5)
    #: ``kite`` (GET /instruments), ``file:///path.csv`` or ``s3://bucket/prefix/`` (the
    #: instruments function's published snapshot: ``current.json`` under the prefix).
    instruments_source: str = "kite"
    instruments_refresh_seconds: float = Field(6 * 3600.0, gt=0)

    # -- validation ----------------------------------------------------------------------
    max_abs_price: float = Field(1e8, gt=0)
    #: Exchange timestamps further than this ahead of the receive time are corrupt (a week:
    #: generous, because simulators run their market clock on the next trading day).
    max_future_skew_seconds: float = Field(7 * 86400.0, gt=0)

    # -- Kinesis ----------------------------------------------------------------------------
    stream_name: str = Field(min_length=1)
    linger_ms: float = Field(100.0, ge=0)
    aggregate_bytes: int = Field(DEFAULT_AGGREGATE_BYTES, gt=0, le=MAX_RECORD_BYTES)
    request_records: int = Field(MAX_REQUEST_RECORDS, gt=0, le=MAX_REQUEST_RECORDS)
    request_bytes: int = Field(MAX_REQUEST_BYTES, ge=MAX_RECORD_BYTES, le=MAX_REQUEST_BYTES)
    #: Independent senders, each owning a fixed share of partition keys and one request
    #: in flight: order per key holds, and lanes overlap their round trips.
    sender_lanes: int = Field(4, ge=1, le=64)
    put_timeout_seconds: float = Field(10.0, gt=0)
    retry_initial_seconds: float = Field(0.05, gt=0)
    retry_max_seconds: float = Field(2.0, gt=0)
    breaker_failures: int = Field(5, ge=1)
    breaker_open_seconds: float = Field(5.0, gt=0)
    breaker_max_open_seconds: float = Field(60.0, gt=0)

    # -- memory and spill -----------------------------------------------------------------
    #: Bytes of records held in memory (all lanes); above it new batches go to disk.
    memory_high_bytes: int = Field(256 * MIB, gt=0)
    #: Spilled batches are read back once memory falls below this.
    memory_low_bytes: int = Field(128 * MIB, ge=0)
    spill_dir: Path = Path("/tmp/feed-spill")  # noqa: S108  # nosec B108 # Fargate ephemeral storage
    spill_max_bytes: int = Field(10 * 1024 * MIB, ge=0)
    spill_segment_bytes: int = Field(64 * MIB, gt=0)

    # -- operations -------------------------------------------------------------------------
    health_host: str = "0.0.0.0"  # noqa: S104  # nosec B104 # the ECS health check and scraper
    health_port: int = Field(8080, ge=0, le=65535)
    #: SIGTERM to exit; ECS's default stop timeout is 30 s.
    stop_timeout_seconds: float = Field(25.0, gt=0)
    emf_interval_seconds: float = Field(60.0, ge=0)
    emf_namespace: str = "TickerService/Feed"
    log_level: str = "INFO"

    @field_validator("accounts", mode="before")
    @classmethod
    def _split_accounts(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(a.strip() for a in value.split(",") if a.strip())
        return value

    @model_validator(mode="after")
    def _consistent(self) -> FeedSettings:
        if self.memory_low_bytes >= self.memory_high_bytes:
            raise ValueError("memory_low_bytes must be below memory_high_bytes")
        if self.backoff_max_seconds < self.backoff_initial_seconds:
            raise ValueError("backoff_max_seconds must be >= backoff_initial_seconds")
        if self.retry_max_seconds < self.retry_initial_seconds:
            raise ValueError("retry_max_seconds must be >= retry_initial_seconds")
        source = self.instruments_source
        if source != "kite" and not source.startswith(("file://", "s3://")):
            raise ValueError("instruments_source must be kite, file:///path or s3://bucket/prefix/")
        return self

    @property
    def linger_seconds(self) -> float:
        """The batcher's linger in seconds."""
        return self.linger_ms / 1000.0
