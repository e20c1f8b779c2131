"""Orders checked against the instrument registry before Kite is called (pure).

Every rule that Kite (or the exchange) would refuse an order for, and that
the day's instruments snapshot lets us check, is checked here first, so a
bad order gets a 422 naming each field and rule and Kite is never called:

==========================  =====================================================
rule                        meaning
==========================  =====================================================
``unknown_instrument``      no such ``exchange:tradingsymbol`` in today's snapshot
``not_tradable``            an index (segment INDICES) cannot be traded
``expired``                 a derivative whose expiry is before today (IST)
``lot_size``                quantities must be multiples of the instrument's lot
``tick_size``               prices must be multiples of the instrument's tick
``required``                the field is needed for this order type or variety
``not_allowed``             the field means nothing for this order type or variety
``trigger_vs_price``        SL: a BUY's trigger at or below its price, a SELL's at or above
``market_protection``       -1 (Kite's automatic), or above 0 up to 100
``product_for_segment``     CNC/MTF are for equity, NRML for derivatives
``iceberg``                 legs x leg quantity must cover the quantity; a leg is less
``disclosed_quantity``      at most the quantity
``order_type_for_variety``  cover orders are MARKET or LIMIT and MIS
``gtt_shape``               single: one trigger value and order; two-leg: two of each
==========================  =====================================================

MARKET and SL-M orders need ``market_protection``; when the request has none,
``market_protection_default`` (configuration, ``API_MARKET_PROTECTION_DEFAULT``)
is used if set, otherwise the order is refused (``required``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from lambdas.api.errors import FieldProblem, ValidationFailedError
from lambdas.api.models import GttRequest, PlaceOrderRequest
from ticker_core.instruments import Instrument

DERIVATIVE_EXCHANGES = frozenset({"NFO", "BFO", "CDS", "BCD", "MCX", "NCO"})
EQUITY_EXCHANGES = frozenset({"NSE", "BSE"})
EQUITY_ONLY_PRODUCTS = frozenset({"CNC", "MTF"})


class InstrumentLookup(Protocol):
    """The registry, as far as order checks go."""

    def by_symbol(self, exchange: str, tradingsymbol: str) -> Instrument | None:
        """The instrument, or None when the snapshot does not list it."""
        ...


@dataclass(frozen=True)
class OrderRules:
    """Configuration of the checks."""

    market_protection_default: float | None = None
    """Used for MARKET and SL-M orders that do not say; None means the request must."""


def on_tick_grid(value: float, tick: float) -> bool:
    """Whether ``value`` is a whole number of ``tick`` (exactly, in decimal)."""
    if tick <= 0:
        return True
    try:
        return Decimal(repr(value)) % Decimal(repr(tick)) == 0
    except InvalidOperation:
        return False


def _problem(problems: list[FieldProblem], field: str, rule: str, message: str) -> None:
    problems.append(FieldProblem(field, rule, message))


def _instrument(
    registry: InstrumentLookup,
    exchange: str,
    tradingsymbol: str,
    today: date,
    problems: list[FieldProblem],
) -> Instrument | None:
    instrument = registry.by_symbol(exchange, tradingsymbol)
    if instrument is None:
        _problem(
            problems,
            "tradingsymbol",
            "unknown_instrument",
            f"{exchange}:{tradingsymbol} is not in today's instruments",
        )
        return None
    if instrument.segment == "INDICES":
        _problem(problems, "tradingsymbol", "not_tradable", "an index cannot be traded")
    if instrument.expiry is not None and instrument.expiry < today:
        _problem(
            problems, "tradingsymbol", "expired", f"expired on {instrument.expiry.isoformat()}"
        )
    return instrument


def _lot_and_tick(
    instrument: Instrument,
    quantities: dict[str, int | None],
    prices: dict[str, float | None],
    problems: list[FieldProblem],
) -> None:
    lot = max(1, instrument.lot_size)
    for field, quantity in quantities.items():
        if quantity and quantity % lot:
            _problem(problems, field, "lot_size", f"must be a multiple of the lot size {lot}")
    for field, price in prices.items():
        if price and not on_tick_grid(price, instrument.tick_size):
            _problem(
                problems,
                field,
                "tick_size",
                f"must be a multiple of the tick size {instrument.tick_size:g}",
            )


def _product_rule(
    instrument: Instrument, product: str, problems: list[FieldProblem], field: str = "product"
) -> None:
    derivative = instrument.exchange in DERIVATIVE_EXCHANGES or instrument.is_option
    if derivative and product in EQUITY_ONLY_PRODUCTS:
        _problem(problems, field, "product_for_segment", f"{product} is not for derivatives")
    if instrument.exchange in EQUITY_EXCHANGES and not derivative and product == "NRML":
        _problem(problems, field, "product_for_segment", "NRML is for derivatives; use CNC or MIS")


def _order_type_rules(
    order: PlaceOrderRequest, rules: OrderRules, problems: list[FieldProblem]
) -> float | None:
    """Price, trigger and protection per order type; returns the protection to send."""
    kind = order.order_type
    if kind in ("LIMIT", "SL"):
        if not order.price:
            _problem(problems, "price", "required", f"a {kind} order needs a price above 0")
    elif order.price:
        _problem(problems, "price", "not_allowed", f"a {kind} order takes no price")
    needs_trigger = kind in ("SL", "SL-M") or order.variety == "co"
    if needs_trigger and not order.trigger_price:
        what = "stoploss trigger_price" if order.variety == "co" else "trigger_price"
        _problem(problems, "trigger_price", "required", f"a {kind} order needs a {what}")
    elif not needs_trigger and order.trigger_price:
        _problem(problems, "trigger_price", "not_allowed", f"a {kind} order takes no trigger")
    if kind == "SL" and order.price and order.trigger_price:
        if order.transaction_type == "BUY" and order.trigger_price > order.price:
            _problem(
                problems,
                "trigger_price",
                "trigger_vs_price",
                "a BUY stop-loss triggers at or below its price",
            )
        if order.transaction_type == "SELL" and order.trigger_price < order.price:
            _problem(
                problems,
                "trigger_price",
                "trigger_vs_price",
                "a SELL stop-loss triggers at or above its price",
            )
    protection = order.market_protection
    if kind in ("MARKET", "SL-M"):
        if protection is None:
            protection = rules.market_protection_default
        if protection is None:
            _problem(
                problems,
                "market_protection",
                "required",
                f"a {kind} order needs market_protection (-1 for automatic, or 0-100 percent)",
            )
        elif protection != -1 and not 0 < protection <= 100:
            _problem(
                problems,
                "market_protection",
                "market_protection",
                "must be -1 (automatic) or above 0 up to 100",
            )
    elif protection is not None:
        _problem(problems, "market_protection", "not_allowed", f"a {kind} order takes none")
        protection = None
    return protection


def _variety_rules(order: PlaceOrderRequest, problems: list[FieldProblem]) -> None:
    if order.variety == "iceberg":
        if order.iceberg_legs is None:
            _problem(problems, "iceberg_legs", "required", "an iceberg order needs its legs")
        if order.iceberg_quantity is None:
            _problem(problems, "iceberg_quantity", "required", "an iceberg order needs a leg size")
        if order.iceberg_legs and order.iceberg_quantity:
            if order.iceberg_legs * order.iceberg_quantity < order.quantity:
                _problem(problems, "iceberg_quantity", "iceberg", "legs x leg quantity < quantity")
            if order.iceberg_quantity >= order.quantity:
                _problem(
                    problems, "iceberg_quantity", "iceberg", "a leg must be less than the quantity"
                )
    else:
        for field in ("iceberg_legs", "iceberg_quantity"):
            if getattr(order, field) is not None:
                _problem(problems, field, "not_allowed", "only for the iceberg variety")
    if order.variety == "auction":
        if order.auction_number is None:
            _problem(problems, "auction_number", "required", "an auction order needs its number")
    elif order.auction_number is not None:
        _problem(problems, "auction_number", "not_allowed", "only for the auction variety")
    if order.variety == "co":
        if order.order_type not in ("MARKET", "LIMIT"):
            _problem(
                problems, "order_type", "order_type_for_variety", "a cover order is MARKET or LIMIT"
            )
        if order.product != "MIS":
            _problem(problems, "product", "order_type_for_variety", "a cover order is MIS")
    if order.validity == "TTL":
        if order.validity_ttl is None:
            _problem(problems, "validity_ttl", "required", "TTL validity needs minutes")
    elif order.validity_ttl is not None:
        _problem(problems, "validity_ttl", "not_allowed", "only with TTL validity")
    if order.disclosed_quantity and order.disclosed_quantity > order.quantity:
        _problem(problems, "disclosed_quantity", "disclosed_quantity", "at most the quantity")


def _prefixed(problems: list[FieldProblem], prefix: str) -> list[FieldProblem]:
    return [FieldProblem(f"{prefix}{p.field}", p.rule, p.message) for p in problems]


def order_problems(
    order: PlaceOrderRequest, registry: InstrumentLookup, rules: OrderRules, today: date
) -> tuple[list[FieldProblem], float | None]:
    """Every broken rule of ``order`` (empty when it may go to Kite) and its protection."""
    problems: list[FieldProblem] = []
    instrument = _instrument(registry, order.exchange, order.tradingsymbol, today, problems)
    protection = _order_type_rules(order, rules, problems)
    _variety_rules(order, problems)
    if instrument is not None:
        _product_rule(instrument, order.product, problems)
        _lot_and_tick(
            instrument,
            {
                "quantity": order.quantity,
                "iceberg_quantity": order.iceberg_quantity,
                "disclosed_quantity": order.disclosed_quantity,
            },
            {"price": order.price, "trigger_price": order.trigger_price},
            problems,
        )
    return problems, protection


def kite_order_params(order: PlaceOrderRequest, protection: float | None) -> dict[str, Any]:
    """Keyword arguments for the Kite client's ``place_order`` (without ``tag``)."""
    params = order.model_dump(exclude_none=True, exclude={"tag", "market_protection"})
    if protection is not None:
        params["market_protection"] = protection
    return params


def checked_order(
    order: PlaceOrderRequest,
    registry: InstrumentLookup,
    rules: OrderRules,
    today: date,
    *,
    field_prefix: str = "",
) -> dict[str, Any]:
    """Kite's parameters for ``order``, or :class:`ValidationFailedError` naming every problem."""
    problems, protection = order_problems(order, registry, rules, today)
    if problems:
        raise ValidationFailedError(_prefixed(problems, field_prefix))
    return kite_order_params(order, protection)


def checked_gtt(gtt: GttRequest, registry: InstrumentLookup, today: date) -> None:
    """Raise :class:`ValidationFailedError` unless the GTT fits its instrument and type."""
    problems: list[FieldProblem] = []
    legs = 1 if gtt.trigger_type == "single" else 2
    if len(gtt.trigger_values) != legs:
        _problem(
            problems, "trigger_values", "gtt_shape", f"a {gtt.trigger_type} GTT has {legs} value(s)"
        )
    if len(gtt.orders) != legs:
        _problem(problems, "orders", "gtt_shape", f"a {gtt.trigger_type} GTT has {legs} order(s)")
    if (
        legs == 2
        and len(gtt.trigger_values) == 2
        and gtt.trigger_values[0] >= gtt.trigger_values[1]
    ):
        _problem(problems, "trigger_values", "gtt_shape", "two-leg values are lower, then upper")
    instrument = _instrument(registry, gtt.exchange, gtt.tradingsymbol, today, problems)
    if instrument is not None:
        _lot_and_tick(
            instrument,
            {},
            {f"trigger_values.{i}": v for i, v in enumerate(gtt.trigger_values)},
            problems,
        )
        for i, leg in enumerate(gtt.orders):
            _product_rule(instrument, leg.product, problems, f"orders.{i}.product")
            _lot_and_tick(
                instrument,
                {f"orders.{i}.quantity": leg.quantity},
                {f"orders.{i}.price": leg.price},
                problems,
            )
    if problems:
        raise ValidationFailedError(problems)
