"""The container's configuration, validated once at start: :class:`FeedEnvironment`.

The feed's own knobs are ``FEED_*`` (:class:`FeedSettings`); what it shares
with the functions keeps one name everywhere (``ticker_adapters.settings``):
the vault (``KITE_CREDENTIALS_*``), Kite's endpoints (``KITE_REST_URL``,
``KITE_WS_URL``), the stream it writes (``TICKS_STREAM_NAME``), the
subscriptions table (``SUBSCRIPTIONS_TABLE_NAME``) and, with
``FEED_INSTRUMENTS_SOURCE=snapshot``, the instruments snapshot
(``INSTRUMENTS_*``). Only the feed reads ``ORDER_UPDATES_QUEUE_URL``
(:class:`OrderUpdatesQueueSettings`, here): where Kite's order messages go.
Importing this module reads nothing; ``from_env`` does.

Every knob has a production default; the sandbox and tests override what
they need. AWS endpoints and credentials come from the AWS SDK's own
environment (``AWS_REGION``, ``AWS_ENDPOINT_URL``, the task role), never
from here, and no secret is ever a setting: Kite tokens live in the
credential vault.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ticker_adapters.endpoints import require_tls_off_loopback
from ticker_adapters.settings import (
    Environment,
    EnvironmentReader,
    KiteSettings,
    SnapshotSettings,
    SubscriptionsTableSettings,
    TicksStreamSettings,
    VaultSettings,
)
from ticker_core.kite import MAX_CONNECTIONS_PER_API_KEY, MAX_INSTRUMENTS_PER_CONNECTION
from ticker_core.records.limits import (
    DEFAULT_AGGREGATE_BYTES,
    MAX_RECORD_BYTES,
    MAX_REQUEST_BYTES,
    MAX_REQUEST_RECORDS,
)

MIB = 1024 * 1024

#: The prefixes of every variable :class:`FeedEnvironment` reads (what a parent process
#: must not pass on to a feed it configures itself).
VARIABLE_PREFIXES = (
    "FEED_",
    "KITE_",
    "TICKS_",
    "SUBSCRIPTIONS_",
    "INSTRUMENTS_",
    "ORDER_UPDATES_",
)


class FeedSettings(BaseSettings):
    """``python -m feed_container`` reads these from ``FEED_<NAME>`` (case-insensitive)."""

    model_config = SettingsConfigDict(
        env_prefix="FEED_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    # -- accounts and Kite -------------------------------------------------------------
    #: Account ids in the credential vault; empty: every account with stored API credentials.
    accounts: Annotated[tuple[str, ...], NoDecode] = ()
    #: With ``accounts`` empty, how often the vault is listed for accounts added since start.
    accounts_refresh_seconds: float = Field(60.0, gt=0)
    #: How often the status record (plan and connections) is written; 0 writes none.
    status_interval_seconds: float = Field(10.0, ge=0)
    #: This instance's name in the status record (default: the host name, the task's).
    instance_id: str = Field(default_factory=socket.gethostname, min_length=1, max_length=128)
    max_connections_per_key: int = Field(
        MAX_CONNECTIONS_PER_API_KEY, ge=1, le=MAX_CONNECTIONS_PER_API_KEY
    )
    max_instruments_per_connection: int = Field(
        MAX_INSTRUMENTS_PER_CONNECTION, ge=1, le=MAX_INSTRUMENTS_PER_CONNECTION
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
    subscription_poll_seconds: float = Field(1.0, gt=0)
    #: How often ATM windows are re-centred on their underlyings' live prices.
    atm_recentre_seconds: float = Field(1.0, gt=0)
    #: A window moves only once its underlying has gone this many strike steps from the
    #: price it was centred on (0: re-centre on every move past a midpoint).
    atm_hysteresis_steps: float = Field(0.5, ge=0, le=5)
    #: ``kite`` (GET /instruments), ``file:///path.csv`` or ``snapshot`` (the instruments
    #: function's published snapshot, where ``INSTRUMENTS_BUCKET``/``_PREFIX`` say).
    instruments_source: str = "kite"
    instruments_refresh_seconds: float = Field(6 * 3600.0, gt=0)

    # -- validation ----------------------------------------------------------------------
    max_abs_price: float = Field(1e8, gt=0)
    #: Exchange timestamps further than this ahead of the receive time are corrupt (a week:
    #: generous, because simulators run their market clock on the next trading day).
    max_future_skew_seconds: float = Field(7 * 86400.0, gt=0)

    # -- Kinesis ----------------------------------------------------------------------------
    linger_ms: float = Field(100.0, ge=0)
    aggregate_bytes: int = Field(DEFAULT_AGGREGATE_BYTES, gt=0, le=MAX_RECORD_BYTES)
    request_records: int = Field(MAX_REQUEST_RECORDS, gt=0, le=MAX_REQUEST_RECORDS)
    request_bytes: int = Field(MAX_REQUEST_BYTES, ge=MAX_RECORD_BYTES, le=MAX_REQUEST_BYTES)
    #: Independent senders, each owning a fixed share of partition keys and one request
    #: in flight: order per key holds, and lanes overlap their round trips. An idle lane
    #: sends once per linger, so calls scale with lanes: at 110,000 ticks/s three lanes
    #: made 2.4-2.8 PutRecords calls per 10,000 ticks, four 3.7, with the same latency
    #: (BENCHMARKS.md, feed_e2e: round trips of 30-75 ms against a 100 ms linger).
    sender_lanes: int = Field(3, ge=1, le=64)
    #: Timeout of one call to AWS: a PutRecords, or a SendMessageBatch of order messages.
    put_timeout_seconds: float = Field(10.0, gt=0)
    #: Delays between retries of a failed PutRecords or SendMessageBatch (exponential).
    retry_initial_seconds: float = Field(0.05, gt=0)
    retry_max_seconds: float = Field(2.0, gt=0)
    breaker_failures: int = Field(5, ge=1)
    breaker_open_seconds: float = Field(5.0, gt=0)
    breaker_max_open_seconds: float = Field(60.0, gt=0)

    # -- order updates (to ORDER_UPDATES_QUEUE_URL) ------------------------------------
    #: Kite order messages held while SQS does not take them (in memory; about 1 KB each);
    #: past it new ones are dropped, counted (feed_order_updates_dropped_total).
    order_updates_buffer: int = Field(10_000, ge=1, le=1_000_000)

    # -- memory and spill -----------------------------------------------------------------
    #: Bytes of records held in memory (all lanes); above it new batches go to disk.
    memory_high_bytes: int = Field(256 * MIB, gt=0)
    #: While the disk refuses writes (full, failing), batches wait in memory up to this
    #: (all lanes), in order behind the spill; past it they are dropped (counted).
    memory_max_bytes: int = Field(512 * MIB, gt=0)
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
    #: After the first subscriptions are applied, when to freeze the start-up heap out of the
    #: garbage collector's sight (feed_container/pauses.py).
    heap_settle_seconds: float = Field(10.0, ge=0)
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
        if self.memory_max_bytes < self.memory_high_bytes:
            raise ValueError("memory_max_bytes must be >= memory_high_bytes")
        if self.backoff_max_seconds < self.backoff_initial_seconds:
            raise ValueError("backoff_max_seconds must be >= backoff_initial_seconds")
        if self.stop_timeout_seconds < self.close_timeout_seconds + self.put_timeout_seconds + 3:
            raise ValueError(
                "stop_timeout_seconds must be >= close_timeout_seconds + put_timeout_seconds + 3: "
                "room to close the connections, deliver their last frames, and end the last call"
            )
        if self.retry_max_seconds < self.retry_initial_seconds:
            raise ValueError("retry_max_seconds must be >= retry_initial_seconds")
        source = self.instruments_source
        if source not in ("kite", "snapshot") and not source.startswith("file://"):
            raise ValueError("instruments_source must be kite, snapshot or file:///path")
        return self

    @property
    def linger_seconds(self) -> float:
        """The batcher's linger in seconds."""
        return self.linger_ms / 1000.0


class OrderUpdatesQueueSettings(BaseSettings):
    """``ORDER_UPDATES_QUEUE_URL``: the SQS queue Kite's WebSocket order messages are sent to
    (the order-updates function consumes it); unset or empty, they are counted and dropped."""

    model_config = SettingsConfigDict(
        env_prefix="ORDER_UPDATES_QUEUE_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    url: str | None = None

    @field_validator("url")
    @classmethod
    def _https_off_loopback(cls, value: str | None) -> str | None:
        if not value:
            return None
        # Order messages are a trader's orders: in clear only to this machine (moto).
        return require_tls_off_loopback(value, schemes=("https",))


@dataclass(frozen=True)
class FeedEnvironment(Environment):
    """Everything ``python -m feed_container`` reads from its environment."""

    feed: FeedSettings
    kite: KiteSettings
    vault: VaultSettings
    ticks: TicksStreamSettings
    subscriptions: SubscriptionsTableSettings
    #: Where the instruments snapshot is; read only with ``FEED_INSTRUMENTS_SOURCE=snapshot``.
    snapshot: SnapshotSettings | None = None
    #: Where Kite's order messages go; None (as unset): nowhere.
    order_updates: OrderUpdatesQueueSettings | None = None

    @classmethod
    def from_env(cls) -> FeedEnvironment:
        """Read and validate every setting; a ``SettingsError`` names each bad variable."""
        reader = EnvironmentReader()
        feed = reader.read(FeedSettings)
        environment = cls(
            feed=feed,
            kite=reader.read(KiteSettings),
            vault=reader.read(VaultSettings),
            ticks=reader.read(TicksStreamSettings),
            subscriptions=reader.read(SubscriptionsTableSettings),
            snapshot=(
                reader.read(SnapshotSettings) if feed.instruments_source == "snapshot" else None
            ),
            order_updates=reader.read(OrderUpdatesQueueSettings),
        )
        reader.check()
        return environment

    @property
    def order_updates_queue_url(self) -> str | None:
        """The queue order messages go to; None: they are not forwarded."""
        return self.order_updates.url if self.order_updates is not None else None

    def __post_init__(self) -> None:
        if self.feed.instruments_source == "snapshot" and self.snapshot is None:
            raise ValueError("FEED_INSTRUMENTS_SOURCE=snapshot needs the snapshot settings")
