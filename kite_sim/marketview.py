"""What the order engine and the REST layer need from the market model.

A :class:`Snapshot` is one instrument's state at a market step, in rupees
(or the contract's currency units), as ``/quote`` reports it and as orders
match against it. :class:`MarketView` is the read side of the market model;
the order engine depends on this protocol only, so it is tested against a
hand-made book.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Protocol


class InstrumentLike(Protocol):
    """The instrument fields the simulator reads (Kite's instruments CSV columns)."""

    @property
    def instrument_token(self) -> int: ...
    @property
    def exchange_token(self) -> int: ...
    @property
    def tradingsymbol(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def expiry(self) -> date | None: ...
    @property
    def strike(self) -> float: ...
    @property
    def tick_size(self) -> float: ...
    @property
    def lot_size(self) -> int: ...
    @property
    def instrument_type(self) -> str: ...
    @property
    def segment(self) -> str: ...
    @property
    def exchange(self) -> str: ...


@dataclass(frozen=True)
class Level:
    """One depth level."""

    price: float
    quantity: int
    orders: int


@dataclass
class Snapshot:
    """One instrument's market state."""

    instrument_token: int
    last_price: float
    close: float
    open: float = 0.0
    high: float = 0.0
    low: float = 0.0
    last_quantity: int = 0
    average_price: float = 0.0
    volume: int = 0
    buy_quantity: int = 0
    sell_quantity: int = 0
    oi: int = 0
    oi_day_high: int = 0
    oi_day_low: int = 0
    last_trade_time: datetime | None = None
    timestamp: datetime | None = None
    lower_circuit: float = 0.0
    upper_circuit: float = 0.0
    bids: list[Level] = field(default_factory=list)
    asks: list[Level] = field(default_factory=list)


def round_to_tick(price: float, tick: float) -> float:
    """``price`` on the instrument's price grid (nearest multiple of ``tick``)."""
    return round(round(price / tick) * tick, 6)


def on_tick_grid(price: float, tick: float) -> bool:
    """Whether ``price`` is a multiple of ``tick`` (within float noise)."""
    steps = price / tick
    return abs(steps - round(steps)) < 1e-6


class MarketView(Protocol):
    """The read side of the market model."""

    def instrument(self, exchange: str, tradingsymbol: str) -> InstrumentLike | None:
        """The instrument listed as ``exchange:tradingsymbol``."""
        ...

    def by_token(self, token: int) -> InstrumentLike | None:
        """The instrument with ``instrument_token == token``."""
        ...

    def snapshot(self, token: int) -> Snapshot:
        """The instrument's current state."""
        ...
