"""Response models of the market-data routes (instruments, quotes, option chains, candles).

Fields are named as Kite names them (``instrument_token``, ``tradingsymbol``,
``last_price``, ``oi``...). Every value read from storage says how old it is
(``age_seconds``, from the tick's own timestamp to the answer's ``as_of``).
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator

from lambdas.api.models import ApiModel

ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
ISO_INSTANT = re.compile(
    r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?(Z|[+-]\d{2}:?\d{2})?$"
)


def _written(pattern: re.Pattern[str], form: str) -> Any:
    def check(value: Any) -> Any:
        # pydantic would read "0" as 1970-01-01 (a Unix time): only ISO 8601 text is accepted
        if isinstance(value, str) and not pattern.match(value):
            raise ValueError(f"must be ISO 8601: {form}")
        return value

    return BeforeValidator(check)


IsoDate = Annotated[date, _written(ISO_DATE, "YYYY-MM-DD")]
"""A date written YYYY-MM-DD."""
IsoInstant = Annotated[datetime, _written(ISO_INSTANT, "YYYY-MM-DD[THH:MM[:SS]][+05:30]")]
"""An instant written in ISO 8601 (without an offset: IST, as Kite reads it)."""

CandleSource = Literal["stored", "kite"]
Interval = Literal["1m", "5m", "15m", "1h", "1d"]
ForwardSource = Literal["future", "parity", "none"]


class InstrumentInfo(ApiModel):
    """One row of today's instruments (Kite's dump), plus its underlying."""

    instrument_token: int
    exchange_token: int
    tradingsymbol: str
    name: str
    last_price: float
    """The dump's price (yesterday's close), not a live one: see the quotes route."""
    expiry: date | None
    strike: float
    tick_size: float
    lot_size: int
    instrument_type: str
    segment: str
    exchange: str
    underlying: str


class InstrumentList(ApiModel):
    """A search's matches, by exchange and tradingsymbol."""

    instruments: list[InstrumentInfo]
    truncated: bool
    """More matched than ``limit``."""


class Ohlc(ApiModel):
    """The day's open, high, low and previous close, as the tick carried them."""

    open: float | None
    high: float | None
    low: float | None
    close: float | None


class DepthLevel(ApiModel):
    """One level of market depth."""

    price: float
    quantity: int
    orders: int


class Depth(ApiModel):
    """Five levels each side (full mode only)."""

    buy: list[DepthLevel]
    sell: list[DepthLevel]


class Quote(ApiModel):
    """The latest stored tick of an instrument."""

    instrument_token: int
    exchange: str
    tradingsymbol: str
    timestamp: datetime
    """The tick's exchange timestamp, else when the feed received it."""
    age_seconds: float
    mode: str
    last_price: float
    last_traded_quantity: int | None = None
    average_traded_price: float | None = None
    volume: int | None = None
    buy_quantity: int | None = None
    sell_quantity: int | None = None
    ohlc: Ohlc
    net_change: float | None = None
    oi: int | None = None
    oi_day_high: int | None = None
    oi_day_low: int | None = None
    last_trade_time: datetime | None = None
    depth: Depth | None = None


class QuoteResult(ApiModel):
    """One requested instrument: its latest quote, or None when nothing is stored for it."""

    instrument: str
    """As requested."""
    quote: Quote | None


class Quotes(ApiModel):
    """Latest quotes, in the order requested."""

    as_of: datetime
    quotes: list[QuoteResult]


class OptionGreeks(ApiModel):
    """Black-76 implied volatility and Greeks of an option's last price on the chain's forward.

    Units as ``greeks.v1.json``: ``iv`` per year (0.15 = 15%), theta per calendar day, vega and
    rho per percentage point. Null numbers come with a ``reason`` (``below_intrinsic``,
    ``no_forward``, ``expired``...).
    """

    iv: float | None
    delta: float | None
    gamma: float | None
    theta: float | None
    vega: float | None
    rho: float | None
    reason: str | None


class ChainOption(ApiModel):
    """One call or put of a chain."""

    instrument_token: int
    tradingsymbol: str
    last_price: float | None
    """None when nothing is stored for it."""
    oi: int | None
    volume: int | None
    timestamp: datetime | None
    age_seconds: float | None
    greeks: OptionGreeks


class ChainStrike(ApiModel):
    """A strike's call and put (either may be unlisted)."""

    strike: float
    ce: ChainOption | None
    pe: ChainOption | None


class ForwardUsed(ApiModel):
    """The forward every option of the chain was valued on."""

    value: float | None
    source: ForwardSource
    """The same-expiry future's last price, else put-call parity nearest the money."""
    reason: str | None
    future_token: int | None
    parity_strikes: list[float]
    age_seconds: float | None
    """Age of the oldest price it was made from."""


class OptionChain(ApiModel):
    """Every strike of an underlying's expiry with last price, OI, IV and Greeks."""

    underlying: str
    exchange: str
    expiry: date
    as_of: datetime
    """The instant the Greeks are for (the answer's time)."""
    t_years: float
    """Time to expiry (15:30 IST on the expiry date) in years of 365 days."""
    rate: float
    forward: ForwardUsed
    atm_strike: float | None
    """The strike nearest the forward."""
    strikes: list[ChainStrike]


class MissingRange(ApiModel):
    """A part of the range no candle could be given for, and why."""

    start: datetime
    end: datetime
    reason: str


CANDLE_FIELDS = ["date", "open", "high", "low", "close", "volume", "oi", "source"]
GREEK_FIELDS = ["iv", "delta", "gamma", "theta", "vega", "rho"]


class Candles(ApiModel):
    """Candles as rows (Kite's own compact form), oldest first; ``fields`` names the columns.

    Each row is ``[date, open, high, low, close, volume, oi, source]``, and for an option
    ``iv, delta, gamma, theta, vega, rho`` at the candle's close follow. ``source`` is
    ``stored`` (this service's minute bars) or ``kite`` (Kite's historical API, for
    the part of the range before the first stored bar); the two never overlap.
    """

    instrument_token: int
    exchange: str
    tradingsymbol: str
    interval: Interval
    start: datetime
    end: datetime
    fields: list[str]
    candles: list[list[str | float | int | None]]
    missing: list[MissingRange]
