"""Orders, trades and order events as Kite shows them (sans-I/O data only).

Kite's order vocabulary (varieties, order types, products, validities,
statuses) and the three records the order engine keeps: an :class:`Order`
with Kite's fields, a :class:`Trade` (one fill) and an :class:`OrderEvent`
(an order changed: what the account's sockets and postback URL are told).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from kite_sim.auth import Account
from kite_sim.clock import kite_timestamp

VARIETIES = ("regular", "amo", "co", "iceberg", "auction")
ORDER_TYPES = ("MARKET", "LIMIT", "SL", "SL-M")
PRODUCTS = ("CNC", "NRML", "MIS", "MTF", "CO")
VALIDITIES = ("DAY", "IOC", "TTL")
TRANSACTION_TYPES = ("BUY", "SELL")

OPEN = "OPEN"
COMPLETE = "COMPLETE"
CANCELLED = "CANCELLED"
REJECTED = "REJECTED"
TRIGGER_PENDING = "TRIGGER PENDING"
AMO_RECEIVED = "AMO REQ RECEIVED"
UPDATE = "UPDATE"
LIVE_STATUSES = (OPEN, TRIGGER_PENDING, AMO_RECEIVED)
POSTBACK_STATUSES = frozenset({COMPLETE, CANCELLED, REJECTED, UPDATE})


@dataclass
class Order:
    """One order, with Kite's fields."""

    order_id: str
    user_id: str
    api_key: str
    variety: str
    exchange: str
    tradingsymbol: str
    instrument_token: int
    transaction_type: str
    order_type: str
    product: str
    validity: str
    quantity: int
    price: float
    trigger_price: float
    order_timestamp: datetime
    validity_ttl: int | None = None
    disclosed_quantity: int = 0
    market_protection: float = 0.0
    tag: str | None = None
    guid: str = ""
    parent_order_id: str | None = None
    status: str = "PUT ORDER REQ RECEIVED"
    status_message: str | None = None
    exchange_order_id: str | None = None
    exchange_timestamp: datetime | None = None
    exchange_update_timestamp: datetime | None = None
    filled_quantity: int = 0
    filled_value: float = 0.0
    cancelled_quantity: int = 0
    modified: bool = False
    meta: dict[str, Any] = field(default_factory=dict)
    stoploss: float = 0.0  # CO: the second leg's trigger
    auction_number: str | None = None  # auction orders: the exchange's auction

    def successor(self, **changes: Any) -> Order:
        """A new order with this one's parameters (not its state), ``changes`` applied.

        For the orders Kite places on the client's behalf: a cover order's
        stop-loss leg, an iceberg's next leg. ``changes`` must name the new
        ``order_id`` and ``order_timestamp``.
        """
        params = {
            f.name: getattr(self, f.name) for f in fields(self) if f.name not in _LIFECYCLE_FIELDS
        }
        params["meta"] = {name: dict(value) for name, value in self.meta.items()}
        params.update(changes)
        return Order(**params)

    @property
    def pending_quantity(self) -> int:
        """What is neither filled nor cancelled (0 once the order is closed)."""
        if self.status not in LIVE_STATUSES:
            return 0
        return self.quantity - self.filled_quantity

    @property
    def average_price(self) -> float:
        """Average fill price (0 before any fill)."""
        return round(self.filled_value / self.filled_quantity, 4) if self.filled_quantity else 0.0

    def to_kite(self, status: str | None = None) -> dict[str, Any]:
        """The order as ``GET /orders`` shows it (``status`` overrides, for events).

        As Kite's order book: ``validity_ttl`` is 0 unless the validity is TTL,
        ``tags`` is there only when the order has a tag, ``auction_number`` only
        on auction orders.
        """
        kite: dict[str, Any] = {
            "account_id": self.user_id,
            "placed_by": self.user_id,
            "order_id": self.order_id,
            "exchange_order_id": self.exchange_order_id,
            "parent_order_id": self.parent_order_id,
            "status": status or self.status,
            "status_message": self.status_message,
            "status_message_raw": self.status_message,
            "order_timestamp": kite_timestamp(self.order_timestamp),
            "exchange_update_timestamp": (
                kite_timestamp(self.exchange_update_timestamp)
                if self.exchange_update_timestamp
                else None
            ),
            "exchange_timestamp": (
                kite_timestamp(self.exchange_timestamp) if self.exchange_timestamp else None
            ),
            "variety": self.variety,
            "modified": self.modified,
            "exchange": self.exchange,
            "tradingsymbol": self.tradingsymbol,
            "instrument_token": self.instrument_token,
            "order_type": self.order_type,
            "transaction_type": self.transaction_type,
            "validity": self.validity,
            "validity_ttl": self.validity_ttl or 0,
            "product": self.product,
            "quantity": self.quantity,
            "disclosed_quantity": self.disclosed_quantity,
            "price": self.price,
            "trigger_price": self.trigger_price,
            "average_price": self.average_price,
            "filled_quantity": self.filled_quantity,
            "pending_quantity": self.pending_quantity,
            "cancelled_quantity": self.cancelled_quantity,
            "market_protection": self.market_protection,
            "meta": {name: dict(value) for name, value in self.meta.items()},
            "tag": self.tag,
            "guid": self.guid,
        }
        if self.tag:
            kite["tags"] = [self.tag]
        if self.auction_number is not None:
            kite["auction_number"] = self.auction_number
        return kite


# What happens to an order after it is placed (not carried over by Order.successor).
_LIFECYCLE_FIELDS = frozenset(
    {
        "status",
        "status_message",
        "exchange_order_id",
        "exchange_timestamp",
        "exchange_update_timestamp",
        "filled_quantity",
        "filled_value",
        "cancelled_quantity",
        "modified",
    }
)


@dataclass
class Trade:
    """One fill."""

    trade_id: str
    order: Order
    quantity: int
    price: float
    fill_timestamp: datetime

    def to_kite(self) -> dict[str, Any]:
        """The trade as ``GET /trades`` shows it."""
        o = self.order
        return {
            "trade_id": self.trade_id,
            "order_id": o.order_id,
            "exchange": o.exchange,
            "tradingsymbol": o.tradingsymbol,
            "instrument_token": o.instrument_token,
            "product": o.product,
            "average_price": self.price,
            "quantity": self.quantity,
            "exchange_order_id": o.exchange_order_id,
            "transaction_type": o.transaction_type,
            "fill_timestamp": kite_timestamp(self.fill_timestamp),
            "order_timestamp": kite_timestamp(self.fill_timestamp),
            "exchange_timestamp": kite_timestamp(self.fill_timestamp),
        }


@dataclass
class OrderEvent:
    """An order changed: what the account's sockets and postback URL are told."""

    account: Account
    order: dict[str, Any]

    @property
    def status(self) -> str:
        """The event's status (``UPDATE`` for partial fills and modifications)."""
        return str(self.order["status"])
