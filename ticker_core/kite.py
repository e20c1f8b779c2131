"""Kite Connect's vocabulary, defined once: modes, limits, segments, the token's daily expiry.

Everything here is a fact about Kite that more than one part of the service
must agree on: the feed subscribes in these modes and plans within these
limits, the simulator enforces them, the record codecs and the subscription
store validate against them. The packets each mode produces are laid out in
:mod:`ticker_core.kite_wire` (``MODE_PACKET_BYTES`` there is derived from those
layouts); Kite's REST error types and envelope have their own module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from enum import IntEnum, StrEnum
from types import MappingProxyType
from typing import Final

from ticker_core.tz import IST

__all__ = [
    "MAX_CONNECTIONS_PER_API_KEY",
    "MAX_INSTRUMENTS_PER_CONNECTION",
    "MAX_INSTRUMENT_TOKEN",
    "MODES",
    "MODE_FULL",
    "MODE_LTP",
    "MODE_QUOTE",
    "MODE_RANK",
    "REST_RATE_LIMITS",
    "SEGMENT_CODES",
    "TOKEN_EXPIRY_TIME",
    "RateCategory",
    "RateLimit",
    "Segment",
    "next_token_expiry",
    "wider_mode",
]

# --- subscription modes ----------------------------------------------------------------

MODE_LTP: Final = "ltp"
"""Last traded price only."""
MODE_QUOTE: Final = "quote"
"""Price, volume and OHLC."""
MODE_FULL: Final = "full"
"""Quote plus open interest, timestamps and five levels of market depth."""

MODES: Final[tuple[str, ...]] = (MODE_LTP, MODE_QUOTE, MODE_FULL)
"""Kite's subscription modes, narrowest first: a wider one carries all a narrower one does."""

MODE_RANK: Final[Mapping[str, int]] = MappingProxyType({mode: n for n, mode in enumerate(MODES)})
"""A mode's place in :data:`MODES` (0 for ltp): larger carries more."""


def wider_mode(a: str, b: str) -> str:
    """The mode that carries both ``a`` and ``b``."""
    return a if MODE_RANK[a] >= MODE_RANK[b] else b


# --- WebSocket limits --------------------------------------------------------------------

MAX_CONNECTIONS_PER_API_KEY: Final = 3
"""WebSocket connections one API key may hold; Kite refuses a fourth at the handshake (429)."""
MAX_INSTRUMENTS_PER_CONNECTION: Final = 3000
"""Instruments one WebSocket connection may subscribe to."""

# --- REST rate limits --------------------------------------------------------------------


class RateCategory(StrEnum):
    """The endpoint groups Kite rate-limits separately, per API key."""

    QUOTE = "quote"
    HISTORICAL = "historical"
    ORDERS = "orders"
    """Placing, modifying and cancelling orders."""
    OTHER = "other"


@dataclass(frozen=True)
class RateLimit:
    """At most ``count`` calls in any ``window`` seconds; over it, Kite answers HTTP 429."""

    count: int
    window: float


REST_RATE_LIMITS: Final[Mapping[RateCategory, tuple[RateLimit, ...]]] = MappingProxyType(
    {
        RateCategory.QUOTE: (RateLimit(1, 1.0),),
        RateCategory.HISTORICAL: (RateLimit(3, 1.0),),
        RateCategory.ORDERS: (RateLimit(10, 1.0), RateLimit(200, 60.0), RateLimit(3000, 86400.0)),
        RateCategory.OTHER: (RateLimit(10, 1.0),),
    }
)
"""Kite's published REST limits: quote 1/s, historical 3/s, orders 10/s, 200/min and
3000/day, everything else 10/s."""

# --- instrument tokens and exchange segments ---------------------------------------------

MAX_INSTRUMENT_TOKEN: Final = 2**32 - 1
"""Instrument tokens are unsigned 32-bit integers on the wire."""


class Segment(IntEnum):
    """Kite's exchange segment codes: the low byte of an instrument token."""

    NSE = 1
    NFO = 2
    CDS = 3
    BSE = 4
    BFO = 5
    BCD = 6
    MCX = 7
    MCXSX = 8
    INDICES = 9
    NCO = 12


SEGMENT_CODES: Final[Mapping[str, int]] = MappingProxyType({s.name: int(s) for s in Segment})
"""Segment code by segment family: the instruments dump's ``segment`` column up to its
first ``-`` (``NFO-OPT`` -> ``NFO``)."""

# --- sessions ---------------------------------------------------------------------------

TOKEN_EXPIRY_TIME: Final = time(6, 0)
"""Kite invalidates access tokens every morning; 06:00 IST is the earliest reported time."""


def next_token_expiry(issued_at: datetime) -> datetime:
    """The first 06:00 IST strictly after ``issued_at``, in UTC: when Kite invalidates the token.

    UTC, as every instant the service stores or answers with; IST is only how
    the rule is stated.
    """
    if issued_at.tzinfo is None:
        raise ValueError("issued_at must be timezone-aware")
    local = issued_at.astimezone(IST)
    expiry = datetime.combine(local.date(), TOKEN_EXPIRY_TIME, tzinfo=IST)
    if expiry <= local:
        expiry += timedelta(days=1)
    return expiry.astimezone(UTC)
