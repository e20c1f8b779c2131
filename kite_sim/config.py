"""The simulator's settings, one dataclass the CLI, tests and the sandbox fill in."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kite_sim.universe import UniverseConfig
from ticker_core.kite import (
    MAX_CONNECTIONS_PER_API_KEY,
    MAX_INSTRUMENTS_PER_CONNECTION,
    RateCategory,
    RateLimit,
)


@dataclass
class AccountConfig:
    """Credentials and URLs of one simulated app; blanks are generated at start."""

    user_id: str | None = None
    api_key: str | None = None
    api_secret: str | None = None
    redirect_url: str | None = None
    postback_url: str | None = None
    registered_ips: list[str] | None = None
    enforce_ip: bool = True


@dataclass
class SimConfig:
    """Everything that shapes one simulator run."""

    host: str = "127.0.0.1"
    port: int = 0  # 0: an ephemeral port, read back from Simulator.port
    seed: int = 1
    accounts: list[AccountConfig] = field(default_factory=lambda: [AccountConfig()])
    # Market clock: where simulated exchange time starts and how fast it runs.
    market_start: datetime | None = None  # None: 09:15 IST on the next trading day
    market_speed: float = 1.0
    step_seconds: float = 0.1  # granularity of the underlyings' paths (market seconds)
    universe: UniverseConfig = field(default_factory=UniverseConfig)
    # Feed.
    tick_interval: float = 0.1  # seconds between feed rounds (one frame per connection)
    default_tick_rate: float = 2.0  # ticks per second per instrument
    tick_rates: dict[str, float] = field(default_factory=dict)  # token/symbol/name/segment
    max_ticks_per_second: float | None = None  # total packets per second, all connections
    heartbeat_interval: float = 1.0
    send_queue_frames: int = 64  # frames buffered per connection before dropping
    # At 15:30 IST jump the market clock to the next trading day's 09:15, so an
    # off-market sandbox always trades; off: the market closes like NSE's.
    session_loop: bool = True
    max_connections_per_key: int = MAX_CONNECTIONS_PER_API_KEY
    max_instruments_per_connection: int = MAX_INSTRUMENTS_PER_CONNECTION
    # REST.
    rate_limits: dict[RateCategory, tuple[RateLimit, ...]] | None = None  # None: Kite's
    rate_limits_enabled: bool = True
    opening_funds: float = 1_000_000.0
    check_funds: bool = True
    postbacks: bool = True
    postback_timeout: float = 5.0
    admin_token: str | None = None  # required in X-Sim-Admin-Token when set
    faults: list[dict[str, Any]] = field(default_factory=list)  # applied at start
