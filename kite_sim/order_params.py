"""Order parameters (sans-I/O): parse and validate what ``/orders`` receives.

Everything here fails the call itself with ``InputException``, before an
order exists: missing or malformed fields, an unknown or untradable
instrument, MARKET or SL-M without ``market_protection``, a variety's own
rules (cover order stop-loss, iceberg legs, auction sells). Risk and
exchange checks that Kite applies to an accepted order (and answer with a
REJECTED order) live in :mod:`kite_sim.risk`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kite_sim.errors import InputError
from kite_sim.marketview import InstrumentLike, MarketView, on_tick_grid
from kite_sim.order_model import (
    ORDER_TYPES,
    PRODUCTS,
    TRANSACTION_TYPES,
    VALIDITIES,
    VARIETIES,
    Order,
)

MARKET_PROTECTION_REQUIRED = (
    "`market_protection` is required for MARKET and SL-M orders "
    "(-1 for automatic, or a percentage above 0 up to 100)."
)
MAX_TAG_LENGTH = 20
MAX_ICEBERG_LEGS = 10


@dataclass(frozen=True)
class OrderRequest:
    """A new order's parameters, parsed and checked (``POST /orders/:variety``)."""

    variety: str
    instrument: InstrumentLike
    transaction_type: str
    order_type: str
    product: str
    validity: str
    validity_ttl: int | None
    quantity: int
    price: float
    trigger_price: float
    disclosed_quantity: int
    market_protection: float
    tag: str | None
    stoploss: float = 0.0  # cover orders: the stop-loss leg's trigger
    iceberg_legs: int = 0  # iceberg orders: how many legs ...
    iceberg_quantity: int = 0  # ... of at most this quantity each
    auction_number: str | None = None  # auction orders


@dataclass(frozen=True)
class ModifyRequest:
    """An order's new parameters (``PUT /orders/:variety/:order_id``)."""

    order_type: str
    quantity: int
    price: float
    trigger_price: float
    validity: str
    disclosed_quantity: int
    market_protection: float


def parse_new(variety: str, p: Mapping[str, Any], market: MarketView) -> OrderRequest:
    """Parse a new order; :class:`InputError` naming the first bad field."""
    if variety not in VARIETIES:
        raise InputError(f"Invalid variety `{variety}`.")
    exchange = required(p, "exchange")
    tradingsymbol = required(p, "tradingsymbol")
    inst = market.instrument(exchange, tradingsymbol)
    if inst is None:
        raise InputError("Invalid `tradingsymbol` or `exchange`.")
    if inst.segment == "INDICES":
        raise InputError(f"{tradingsymbol} is an index and is not tradable.")
    transaction_type = choice(p, "transaction_type", TRANSACTION_TYPES)
    order_type = choice(p, "order_type", ORDER_TYPES)
    product = choice(p, "product", PRODUCTS)
    validity = choice(p, "validity", VALIDITIES, default="DAY")
    quantity = integer(p, "quantity")
    if quantity <= 0:
        raise InputError("Quantity should be greater than 0.")
    price = number(p, "price", default=0.0)
    trigger_price = number(p, "trigger_price", default=0.0)
    disclosed = integer(p, "disclosed_quantity", default=0)
    validity_ttl = None
    if validity == "TTL":
        validity_ttl = integer(p, "validity_ttl")
        if validity_ttl <= 0:
            raise InputError("`validity_ttl` should be a positive number of minutes.")
    _check_prices(order_type, price, trigger_price)
    protection = 0.0
    if order_type in ("MARKET", "SL-M"):
        raw = p.get("market_protection")
        if raw in (None, ""):
            raise InputError(MARKET_PROTECTION_REQUIRED)
        protection = number(p, "market_protection")
        if not valid_protection(protection):
            raise InputError("Invalid `market_protection`: -1, or above 0 up to 100.")
    stoploss = 0.0
    legs = leg_qty = 0
    auction_number = None
    if variety == "co":
        if order_type not in ("MARKET", "LIMIT"):
            raise InputError("Cover orders must be MARKET or LIMIT.")
        if trigger_price <= 0:
            raise InputError("Cover orders need a stoploss `trigger_price`.")
        product = "MIS" if product == "CO" else product
        if product != "MIS":
            raise InputError("Cover orders are intraday (MIS) only.")
        stoploss, trigger_price = trigger_price, 0.0
    if variety == "iceberg":
        legs = integer(p, "iceberg_legs")
        leg_qty = integer(p, "iceberg_quantity")
        if not 2 <= legs <= MAX_ICEBERG_LEGS:
            raise InputError(f"`iceberg_legs` should be between 2 and {MAX_ICEBERG_LEGS}.")
        if leg_qty <= 0 or leg_qty * legs < quantity or leg_qty >= quantity:
            raise InputError("Invalid `iceberg_quantity` for the given legs and quantity.")
        if validity == "IOC":
            raise InputError("Iceberg orders take DAY or TTL validity.")
    if variety == "auction":
        auction_number = required(p, "auction_number")
        if not auction_number.isdigit():
            raise InputError("Invalid `auction_number`.")
        if (transaction_type, product, order_type) != ("SELL", "CNC", "LIMIT"):
            raise InputError("Auction orders sell holdings: SELL, CNC and LIMIT only.")
    tag = p.get("tag")
    if tag is not None and (len(str(tag)) > MAX_TAG_LENGTH or not str(tag).isascii()):
        raise InputError("`tag` should be alphanumeric and at most 20 characters.")
    return OrderRequest(
        variety=variety,
        instrument=inst,
        transaction_type=transaction_type,
        order_type=order_type,
        product=product,
        validity=validity,
        validity_ttl=validity_ttl,
        quantity=quantity,
        price=price if order_type in ("LIMIT", "SL") else 0.0,
        trigger_price=trigger_price,
        disclosed_quantity=disclosed,
        market_protection=protection,
        tag=None if tag is None else str(tag),
        stoploss=stoploss,
        iceberg_legs=legs,
        iceberg_quantity=leg_qty,
        auction_number=auction_number,
    )


def parse_modify(
    order: Order, params: Mapping[str, Any], inst: InstrumentLike | None
) -> ModifyRequest:
    """Parse a modification of a live ``order``; :class:`InputError` when it cannot apply."""
    if order.variety == "auction":
        raise InputError("Auction orders cannot be modified: cancel and place a new one.")
    order_type = choice(params, "order_type", ORDER_TYPES, default=order.order_type)
    if order.parent_order_id is not None and order_type != order.order_type:
        raise InputError("The stop-loss leg of a cover order can only change its trigger.")
    quantity = integer(params, "quantity", default=order.quantity)
    if order.variety == "iceberg" and quantity != order.quantity:
        raise InputError("An iceberg leg's quantity cannot be modified.")
    if quantity <= order.filled_quantity:
        raise InputError("Quantity should be more than the filled quantity.")
    price = number(params, "price", default=order.price)
    trigger = number(params, "trigger_price", default=order.trigger_price)
    validity = choice(params, "validity", VALIDITIES, default=order.validity)
    disclosed = integer(params, "disclosed_quantity", default=order.disclosed_quantity)
    _check_prices(order_type, price, trigger)
    protection = order.market_protection
    if order_type in ("MARKET", "SL-M"):
        if "market_protection" in params and params["market_protection"] not in (None, ""):
            protection = number(params, "market_protection")
        if not valid_protection(protection):
            raise InputError(MARKET_PROTECTION_REQUIRED)
    tick = inst.tick_size if inst is not None and inst.tick_size else 0.05
    lot = max(1, inst.lot_size) if inst is not None else 1
    if quantity % lot:
        raise InputError(f"Quantity should be a multiple of the lot size {lot}.")
    for value in (price, trigger):
        if order_type in ("LIMIT", "SL", "SL-M") and value and not on_tick_grid(value, tick):
            raise InputError(f"Tick size for this script is {tick:g}.")
    return ModifyRequest(
        order_type=order_type,
        quantity=quantity,
        price=price if order_type in ("LIMIT", "SL") else 0.0,
        trigger_price=trigger if order_type in ("SL", "SL-M") else 0.0,
        validity=validity,
        disclosed_quantity=disclosed,
        market_protection=protection,
    )


def valid_protection(value: float) -> bool:
    """Whether ``value`` is a valid ``market_protection``: -1 (automatic) or (0, 100]."""
    return value == -1 or 0 < value <= 100


def _check_prices(order_type: str, price: float, trigger_price: float) -> None:
    if order_type in ("LIMIT", "SL") and price <= 0:
        raise InputError("Invalid `price`.")
    if order_type in ("SL", "SL-M") and trigger_price <= 0:
        raise InputError("Invalid `trigger_price`.")


# -- field parsers -------------------------------------------------------------------
def required(p: Mapping[str, Any], name: str) -> str:
    """The parameter as stripped text; :class:`InputError` when absent or blank."""
    value = p.get(name)
    if value is None or str(value).strip() == "":
        raise InputError(f"Missing `{name}`.")
    return str(value).strip()


def choice(
    p: Mapping[str, Any], name: str, options: tuple[str, ...], default: str | None = None
) -> str:
    """The parameter, one of ``options`` (``default`` when absent)."""
    value = p.get(name)
    if value is None or str(value).strip() == "":
        if default is None:
            raise InputError(f"Missing `{name}`.")
        return default
    text = str(value).strip()
    if text not in options:
        raise InputError(f"Invalid `{name}`.")
    return text


def _maybe_number(p: Mapping[str, Any], name: str) -> float | None:
    """The parameter as a float; None when absent or blank; InputError when not a number."""
    value = p.get(name)
    if value is None or str(value).strip() == "":
        return None
    try:
        return float(str(value))
    except ValueError:
        raise InputError(f"Invalid `{name}`.") from None


def integer(p: Mapping[str, Any], name: str, default: int | None = None) -> int:
    """The parameter as a whole number (``default`` when absent)."""
    value = _maybe_number(p, name)
    if value is None:
        if default is None:
            raise InputError(f"Missing `{name}`.")
        return default
    if not value.is_integer():
        raise InputError(f"Invalid `{name}`.")
    return int(value)


def number(p: Mapping[str, Any], name: str, default: float | None = None) -> float:
    """The parameter as a finite float (``default`` when absent)."""
    value = _maybe_number(p, name)
    if value is None:
        if default is None:
            raise InputError(f"Missing `{name}`.")
        return default
    if math.isnan(value) or math.isinf(value):
        raise InputError(f"Invalid `{name}`.")
    return value
