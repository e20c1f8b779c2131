"""Orders, trades, positions and matching (sans-I/O).

The engine keeps each account's order book for the day and matches it
against the simulated market's depth, the way Kite's OMS and the exchange
would look from an API client:

- parameter errors (missing or bad fields, unknown instrument, MARKET or
  SL-M without ``market_protection``) fail the call with ``InputException``;
- risk and exchange checks (quantity not a lot multiple, price off the tick
  grid or outside the circuit band, wrong product for the segment, funds)
  create the order and reject it, with a ``status_message``;
- a marketable order fills against the opposite side's depth at once, level
  by level; what the visible depth cannot absorb stays ``OPEN`` and fills on
  later market steps (partial fills for large quantities);
- MARKET orders carry their protection as a limit price (``-1`` = automatic);
  SL and SL-M wait in ``TRIGGER PENDING`` until the last price crosses the
  trigger; IOC cancels what the first match leaves; TTL expires;
- varieties: ``regular``, ``amo`` (queued while the market is closed and
  sent at the open), ``co`` (a stop-loss leg follows the entry's fill),
  ``iceberg`` (one leg visible at a time).

Every state change is recorded in the order's history and queued as an
:class:`OrderEvent`; the server sends those to the account's WebSocket
connections and, for the statuses Kite posts back, to its postback URL.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from kite_sim.auth import Account
from kite_sim.clock import MarketClock, kite_timestamp
from kite_sim.errors import InputError, NotFoundError, OrderError
from kite_sim.margins import is_derivative, order_margin
from kite_sim.marketview import InstrumentLike, Level, MarketView, Snapshot

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


def _round_to_tick(price: float, tick: float) -> float:
    return round(round(price / tick) * tick, 6)


def _on_tick_grid(price: float, tick: float) -> bool:
    steps = price / tick
    return abs(steps - round(steps)) < 1e-6


def auto_protection(price: float) -> float:
    """Percent of protection Kite applies for ``market_protection=-1`` (approximation)."""
    if price < 100:
        return 2.0
    if price < 500:
        return 1.0
    return 0.5


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
        """The order as ``GET /orders`` shows it (``status`` overrides, for events)."""
        tags = [self.tag] if self.tag else None
        return {
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
            "validity_ttl": self.validity_ttl,
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
            "meta": dict(self.meta),
            "tag": self.tag,
            "tags": tags,
            "guid": self.guid,
        }


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


@dataclass
class _Book:
    account: Account
    orders: dict[str, Order] = field(default_factory=dict)
    history: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    trades: list[Trade] = field(default_factory=list)


SessionOpen = Callable[[str, datetime], bool]


def always_open(exchange: str, when: datetime) -> bool:
    """A session predicate for a market that never closes."""
    return True


class OrderEngine:
    """Every account's orders for the day, matched against a :class:`MarketView`."""

    def __init__(
        self,
        market: MarketView,
        clock: MarketClock,
        *,
        session_open: SessionOpen = always_open,
        opening_funds: float = 1_000_000.0,
        check_funds: bool = True,
    ) -> None:
        self._market = market
        self._clock = clock
        self._session_open = session_open
        self.opening_funds = opening_funds
        self.check_funds = check_funds
        self._books: dict[str, _Book] = {}
        self._by_id: dict[str, tuple[_Book, Order]] = {}
        self._events: list[OrderEvent] = []
        self._seq = 0
        self._trade_seq = 0
        self.holdings_provider: Callable[[Account, InstrumentLike], int] | None = None

    # -- bookkeeping -----------------------------------------------------------
    def _book(self, account: Account) -> _Book:
        book = self._books.get(account.api_key)
        if book is None:
            book = self._books[account.api_key] = _Book(account)
        return book

    def _next_order_id(self, now: datetime) -> str:
        self._seq += 1
        return f"{now:%y%m%d}{self._seq:09d}"

    def _record(self, book: _Book, order: Order, *, event: str | None = None) -> None:
        """Append the order's state to its history; queue an event when asked."""
        book.history.setdefault(order.order_id, []).append(order.to_kite())
        if event is not None:
            self._events.append(OrderEvent(book.account, order.to_kite(status=event)))

    def drain_events(self) -> list[OrderEvent]:
        """Events since the last drain, oldest first."""
        events, self._events = self._events, []
        return events

    def orders(self, account: Account) -> list[dict[str, Any]]:
        """``GET /orders``."""
        return [o.to_kite() for o in self._book(account).orders.values()]

    def order_history(self, account: Account, order_id: str) -> list[dict[str, Any]]:
        """``GET /orders/:order_id``."""
        book = self._book(account)
        if order_id not in book.history:
            raise NotFoundError("Couldn't find that `order_id`.")
        return list(book.history[order_id])

    def trades(self, account: Account, order_id: str | None = None) -> list[dict[str, Any]]:
        """``GET /trades`` or ``GET /orders/:order_id/trades``."""
        book = self._book(account)
        if order_id is not None and order_id not in book.orders:
            raise NotFoundError("Couldn't find that `order_id`.")
        return [
            t.to_kite() for t in book.trades if order_id is None or t.order.order_id == order_id
        ]

    def get(self, account: Account, order_id: str) -> Order:
        """One of the account's orders."""
        order = self._book(account).orders.get(order_id)
        if order is None:
            raise NotFoundError("Couldn't find that `order_id`.")
        return order

    # -- placing -----------------------------------------------------------------
    def place(self, account: Account, variety: str, params: Mapping[str, Any]) -> Order:
        """``POST /orders/:variety``: validate, accept, then risk-check and match."""
        now = self._clock.now()
        order, inst = self._validate_new(account, variety, params, now)
        book = self._book(account)
        book.orders[order.order_id] = order
        self._by_id[order.order_id] = (book, order)
        self._record(book, order)
        order.status = "VALIDATION PENDING"
        self._record(book, order)
        reason = self._risk_check(account, order, inst)
        if reason is not None:
            self._reject(book, order, reason)
            return order
        if variety == "amo" and not self._session_open(order.exchange, now):
            order.status = AMO_RECEIVED
            self._record(book, order, event=AMO_RECEIVED)
            return order
        if variety != "amo" and not self._session_open(order.exchange, now):
            self._reject(
                book,
                order,
                "Markets are closed right now. Use GTT or AMO for orders outside market hours.",
            )
            return order
        self._send_to_exchange(book, order, now)
        return order

    def _validate_new(
        self, account: Account, variety: str, p: Mapping[str, Any], now: datetime
    ) -> tuple[Order, InstrumentLike]:
        if variety not in VARIETIES:
            raise InputError(f"Invalid variety `{variety}`.")
        if variety == "auction":
            raise InputError("Auction orders are not supported by the simulator.")
        exchange = _required(p, "exchange")
        tradingsymbol = _required(p, "tradingsymbol")
        inst = self._market.instrument(exchange, tradingsymbol)
        if inst is None:
            raise InputError("Invalid `tradingsymbol` or `exchange`.")
        if inst.segment == "INDICES":
            raise InputError(f"{tradingsymbol} is an index and is not tradable.")
        transaction_type = _choice(p, "transaction_type", TRANSACTION_TYPES)
        order_type = _choice(p, "order_type", ORDER_TYPES)
        product = _choice(p, "product", PRODUCTS)
        validity = _choice(p, "validity", VALIDITIES, default="DAY")
        quantity = _int(p, "quantity")
        if quantity <= 0:
            raise InputError("Quantity should be greater than 0.")
        price = _float(p, "price", default=0.0)
        trigger_price = _float(p, "trigger_price", default=0.0)
        disclosed = _int(p, "disclosed_quantity", default=0)
        validity_ttl = None
        if validity == "TTL":
            validity_ttl = _int(p, "validity_ttl")
            if validity_ttl <= 0:
                raise InputError("`validity_ttl` should be a positive number of minutes.")
        if order_type in ("LIMIT", "SL") and price <= 0:
            raise InputError("Invalid `price`.")
        if order_type in ("SL", "SL-M") and trigger_price <= 0:
            raise InputError("Invalid `trigger_price`.")
        protection = 0.0
        if order_type in ("MARKET", "SL-M"):
            raw = p.get("market_protection")
            if raw in (None, ""):
                raise InputError(
                    "`market_protection` is required for MARKET and SL-M orders "
                    "(-1 for automatic, or a percentage above 0 up to 100)."
                )
            protection = _float(p, "market_protection")
            if not (protection == -1 or 0 < protection <= 100):
                raise InputError("Invalid `market_protection`: -1, or above 0 up to 100.")
        meta: dict[str, Any] = {}
        stoploss = 0.0
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
            legs = _int(p, "iceberg_legs")
            leg_qty = _int(p, "iceberg_quantity")
            if not 2 <= legs <= 10:
                raise InputError("`iceberg_legs` should be between 2 and 10.")
            if leg_qty <= 0 or leg_qty * legs < quantity or leg_qty >= quantity:
                raise InputError("Invalid `iceberg_quantity` for the given legs and quantity.")
            meta["iceberg"] = {
                "leg": 1,
                "legs": legs,
                "leg_quantity": leg_qty,
                "total_quantity": quantity,
                "remaining_quantity": quantity,
            }
        tag = p.get("tag")
        if tag is not None and (len(str(tag)) > 20 or not str(tag).isascii()):
            raise InputError("`tag` should be alphanumeric and at most 20 characters.")
        order = Order(
            order_id=self._next_order_id(now),
            user_id=account.user_id,
            api_key=account.api_key,
            variety=variety,
            exchange=inst.exchange,
            tradingsymbol=inst.tradingsymbol,
            instrument_token=inst.instrument_token,
            transaction_type=transaction_type,
            order_type=order_type,
            product=product,
            validity=validity,
            validity_ttl=validity_ttl,
            quantity=quantity,
            disclosed_quantity=disclosed,
            price=price if order_type in ("LIMIT", "SL") else 0.0,
            trigger_price=trigger_price,
            market_protection=protection,
            tag=None if tag is None else str(tag),
            guid=f"{account.user_id}-{self._seq}",
            order_timestamp=now,
            meta=meta,
            stoploss=stoploss,
        )
        return order, inst

    def _risk_check(self, account: Account, order: Order, inst: InstrumentLike) -> str | None:
        """Why the OMS or the exchange would reject ``order``, or None."""
        if is_derivative(inst) and order.product in ("CNC", "MTF"):
            return f"{order.product} is not allowed for derivatives. Use NRML or MIS."
        if not is_derivative(inst) and order.product == "NRML" and inst.exchange in ("NSE", "BSE"):
            return "NRML is not allowed for equity. Use CNC or MIS."
        lot = max(1, inst.lot_size)
        if order.quantity % lot:
            return f"Quantity should be a multiple of the lot size {lot}."
        tick = inst.tick_size or 0.05
        for name, value in (("price", order.price), ("trigger price", order.trigger_price)):
            if value and not _on_tick_grid(value, tick):
                return (
                    f"Tick size for this script is {tick:g}. Kindly enter {name} "
                    "in the multiple of tick size for this script."
                )
        if order.stoploss and not _on_tick_grid(order.stoploss, tick):
            return f"Tick size for this script is {tick:g}. Kindly enter the stoploss on the grid."
        snap = self._market.snapshot(inst.instrument_token)
        for value in (order.price, order.trigger_price):
            if (
                value
                and snap.upper_circuit
                and not (snap.lower_circuit <= value <= snap.upper_circuit)
            ):
                return (
                    f"Your order price is outside the circuit limits "
                    f"({snap.lower_circuit:g} - {snap.upper_circuit:g}). Try within the range."
                )
        if order.transaction_type == "SELL" and order.product in ("CNC", "MTF"):
            held = self._holding_quantity(account, inst)
            if held < order.quantity:
                return "Insufficient holdings to sell. Check your holdings and open orders."
        if self.check_funds:
            price = order.price or snap.last_price
            need = order_margin(inst, order.transaction_type, order.quantity, price, order.product)[
                "total"
            ]
            available = self.available_funds(account)
            if need > available:
                return (
                    f"Insufficient funds. Required margin is {need:.2f} "
                    f"but available margin is {available:.2f}."
                )
        return None

    def _holding_quantity(self, account: Account, inst: InstrumentLike) -> int:
        held = self.holdings_provider(account, inst) if self.holdings_provider else 0
        for pos in self.position_rows(account):
            if pos["instrument_token"] == inst.instrument_token and pos["product"] == "CNC":
                held += int(pos["quantity"])
        return held

    def _reject(self, book: _Book, order: Order, reason: str) -> None:
        order.status = REJECTED
        order.status_message = reason
        order.exchange_update_timestamp = self._clock.now()
        self._record(book, order, event=REJECTED)

    def _send_to_exchange(self, book: _Book, order: Order, now: datetime) -> None:
        order.status = "OPEN PENDING"
        order.exchange_order_id = f"{1_100_000_000_000_000 + self._seq}"
        order.exchange_timestamp = now
        order.exchange_update_timestamp = now
        self._record(book, order)
        if order.order_type in ("SL", "SL-M"):
            order.status = TRIGGER_PENDING
            self._record(book, order, event=TRIGGER_PENDING)
            self._check_trigger(book, order, self._market.snapshot(order.instrument_token))
            return
        order.status = OPEN
        self._record(book, order, event=OPEN)
        self._match(book, order, self._market.snapshot(order.instrument_token), {}, first=True)

    # -- matching ------------------------------------------------------------------
    def _limit_for(self, order: Order, snap: Snapshot) -> float:
        """The worst price the order accepts right now."""
        if order.order_type in ("LIMIT", "SL"):
            return order.price
        pct = order.market_protection
        if pct == -1:
            pct = auto_protection(snap.last_price)
        inst = self._market.by_token(order.instrument_token)
        tick = inst.tick_size if inst is not None and inst.tick_size else 0.05
        if order.transaction_type == "BUY":
            cap = snap.last_price * (1 + pct / 100.0)
            if snap.upper_circuit:
                cap = min(cap, snap.upper_circuit)
            return _round_to_tick(math.floor(cap / tick) * tick, tick)
        floor_ = snap.last_price * (1 - pct / 100.0)
        if snap.lower_circuit:
            floor_ = max(floor_, snap.lower_circuit)
        return _round_to_tick(math.ceil(floor_ / tick) * tick, tick)

    def _match(
        self,
        book: _Book,
        order: Order,
        snap: Snapshot,
        taken: dict[tuple[int, str, float], int],
        *,
        first: bool = False,
    ) -> None:
        """Fill what the opposite depth allows; IOC cancels the rest."""
        if order.status != OPEN:
            return
        inst = self._market.by_token(order.instrument_token)
        lot = max(1, inst.lot_size) if inst is not None else 1
        limit = self._limit_for(order, snap)
        buying = order.transaction_type == "BUY"
        levels: list[Level] = snap.asks if buying else snap.bids
        side = "ask" if buying else "bid"
        remaining = order.quantity - order.filled_quantity
        ice = order.meta.get("iceberg")
        if ice is not None:
            remaining = min(remaining, int(ice["leg_quantity"]))
        fills: list[tuple[int, float]] = []
        for level in levels:
            if remaining <= 0:
                break
            if (buying and level.price > limit + 1e-9) or (
                not buying and level.price < limit - 1e-9
            ):
                break
            key = (order.instrument_token, side, level.price)
            available = level.quantity - taken.get(key, 0)
            qty = (min(available, remaining) // lot) * lot
            if qty <= 0:
                continue
            taken[key] = taken.get(key, 0) + qty
            fills.append((qty, level.price))
            remaining -= qty
        now = self._clock.now()
        for qty, price in fills:
            self._fill(book, order, qty, price, now)
        if order.filled_quantity >= order.quantity:
            order.status = COMPLETE
            order.exchange_update_timestamp = now
            self._record(book, order, event=COMPLETE)
            self._after_complete(book, order, now)
        elif fills:
            order.exchange_update_timestamp = now
            self._record(book, order, event=UPDATE)
        if first and order.validity == "IOC" and order.status == OPEN:
            self._cancel_now(book, order, "IOC order cancelled: unmatched quantity.")

    def _fill(self, book: _Book, order: Order, qty: int, price: float, now: datetime) -> None:
        self._trade_seq += 1
        order.filled_quantity += qty
        order.filled_value += qty * price
        ice = order.meta.get("iceberg")
        if ice is not None:
            ice["remaining_quantity"] = order.quantity - order.filled_quantity
            leg_qty = int(ice["leg_quantity"])
            ice["leg"] = min(int(ice["legs"]), 1 + order.filled_quantity // leg_qty)
        book.trades.append(Trade(f"{10_000_000 + self._trade_seq}", order, qty, price, now))

    def _after_complete(self, book: _Book, order: Order, now: datetime) -> None:
        """A cover order's entry leg filled: its stop-loss leg goes live."""
        if order.variety != "co" or order.parent_order_id is not None:
            return
        child = Order(
            order_id=self._next_order_id(now),
            user_id=order.user_id,
            api_key=order.api_key,
            variety="co",
            exchange=order.exchange,
            tradingsymbol=order.tradingsymbol,
            instrument_token=order.instrument_token,
            transaction_type="SELL" if order.transaction_type == "BUY" else "BUY",
            order_type="SL-M",
            product=order.product,
            validity="DAY",
            quantity=order.quantity,
            price=0.0,
            trigger_price=order.stoploss,
            market_protection=-1,
            order_timestamp=now,
            parent_order_id=order.order_id,
            guid=order.guid,
            tag=order.tag,
        )
        book.orders[child.order_id] = child
        self._by_id[child.order_id] = (book, child)
        self._record(book, child)
        self._send_to_exchange(book, child, now)

    def _check_trigger(self, book: _Book, order: Order, snap: Snapshot) -> None:
        if order.status != TRIGGER_PENDING:
            return
        ltp = snap.last_price
        hit = (
            ltp >= order.trigger_price
            if order.transaction_type == "BUY"
            else (ltp <= order.trigger_price)
        )
        if not hit:
            return
        order.status = OPEN
        order.exchange_update_timestamp = self._clock.now()
        self._record(book, order, event=OPEN)
        self._match(book, order, snap, {}, first=False)

    def step(self) -> None:
        """One market step: triggers, matching, AMO release and TTL expiry."""
        now = self._clock.now()
        taken: dict[tuple[int, str, float], int] = {}
        for book in self._books.values():
            for order in list(book.orders.values()):
                if order.status not in LIVE_STATUSES:
                    continue
                if order.status == AMO_RECEIVED:
                    if self._session_open(order.exchange, now):
                        self._send_to_exchange(book, order, now)
                    continue
                if order.validity == "TTL" and order.validity_ttl is not None:
                    deadline = order.order_timestamp + timedelta(minutes=order.validity_ttl)
                    if now >= deadline:
                        self._cancel_now(book, order, "TTL expired.")
                        continue
                snap = self._market.snapshot(order.instrument_token)
                if order.status == TRIGGER_PENDING:
                    self._check_trigger(book, order, snap)
                else:
                    self._match(book, order, snap, taken)

    # -- modify / cancel -----------------------------------------------------------
    def modify(
        self, account: Account, variety: str, order_id: str, params: Mapping[str, Any]
    ) -> Order:
        """``PUT /orders/:variety/:order_id``."""
        book = self._book(account)
        order = self.get(account, order_id)
        if order.variety != variety:
            raise InputError(f"Order {order_id} is not a {variety} order.")
        if order.status not in LIVE_STATUSES:
            raise OrderError(f"Order cannot be modified as it is {order.status.lower()}.")
        order_type = _choice(params, "order_type", ORDER_TYPES, default=order.order_type)
        if order.parent_order_id is not None and order_type != order.order_type:
            raise InputError("The stop-loss leg of a cover order can only change its trigger.")
        quantity = _int(params, "quantity", default=order.quantity)
        if quantity <= order.filled_quantity:
            raise InputError("Quantity should be more than the filled quantity.")
        price = _float(params, "price", default=order.price)
        trigger = _float(params, "trigger_price", default=order.trigger_price)
        validity = _choice(params, "validity", VALIDITIES, default=order.validity)
        disclosed = _int(params, "disclosed_quantity", default=order.disclosed_quantity)
        if order_type in ("LIMIT", "SL") and price <= 0:
            raise InputError("Invalid `price`.")
        if order_type in ("SL", "SL-M") and trigger <= 0:
            raise InputError("Invalid `trigger_price`.")
        protection = order.market_protection
        if order_type in ("MARKET", "SL-M"):
            if "market_protection" in params and params["market_protection"] not in (None, ""):
                protection = _float(params, "market_protection")
            if not (protection == -1 or 0 < protection <= 100):
                raise InputError(
                    "`market_protection` is required for MARKET and SL-M orders "
                    "(-1 for automatic, or a percentage above 0 up to 100)."
                )
        inst = self._market.by_token(order.instrument_token)
        tick = inst.tick_size if inst is not None and inst.tick_size else 0.05
        lot = max(1, inst.lot_size) if inst is not None else 1
        if quantity % lot:
            raise InputError(f"Quantity should be a multiple of the lot size {lot}.")
        for value in (price, trigger):
            if order_type in ("LIMIT", "SL", "SL-M") and value and not _on_tick_grid(value, tick):
                raise InputError(f"Tick size for this script is {tick:g}.")
        order.order_type = order_type
        order.quantity = quantity
        order.price = price if order_type in ("LIMIT", "SL") else 0.0
        order.trigger_price = trigger if order_type in ("SL", "SL-M") else 0.0
        order.validity = validity
        order.disclosed_quantity = disclosed
        order.market_protection = protection
        order.modified = True
        now = self._clock.now()
        order.exchange_update_timestamp = now
        if order.status == OPEN and order_type in ("SL", "SL-M"):
            order.status = TRIGGER_PENDING
        elif order.status == TRIGGER_PENDING and order_type in ("LIMIT", "MARKET"):
            order.status = OPEN
        self._record(book, order, event=UPDATE)
        snap = self._market.snapshot(order.instrument_token)
        if order.status == TRIGGER_PENDING:
            self._check_trigger(book, order, snap)
        elif order.status == OPEN:
            self._match(book, order, snap, {})
        return order

    def cancel(
        self,
        account: Account,
        variety: str,
        order_id: str,
        parent_order_id: str | None = None,
    ) -> Order:
        """``DELETE /orders/:variety/:order_id`` (a CO's stop-loss leg exits at market)."""
        book = self._book(account)
        order = self.get(account, order_id)
        if order.variety != variety:
            raise InputError(f"Order {order_id} is not a {variety} order.")
        if order.status not in LIVE_STATUSES:
            raise OrderError(f"Order cannot be cancelled as it is {order.status.lower()}.")
        if order.parent_order_id is not None and order.status == TRIGGER_PENDING:
            order.order_type = "MARKET"
            order.status = OPEN
            order.exchange_update_timestamp = self._clock.now()
            self._record(book, order, event=OPEN)
            self._match(book, order, self._market.snapshot(order.instrument_token), {})
            return order
        self._cancel_now(book, order, None)
        return order

    def _cancel_now(self, book: _Book, order: Order, message: str | None) -> None:
        order.cancelled_quantity = order.quantity - order.filled_quantity
        order.status = CANCELLED
        order.status_message = message
        order.exchange_update_timestamp = self._clock.now()
        self._record(book, order, event=CANCELLED)

    # -- portfolio -------------------------------------------------------------------
    def position_rows(self, account: Account) -> list[dict[str, Any]]:
        """Today's positions (``net`` and ``day`` are the same: no carried positions)."""
        rows: dict[tuple[str, str, str], dict[str, Any]] = {}
        for trade in self._book(account).trades:
            o = trade.order
            key = (o.exchange, o.tradingsymbol, o.product)
            row = rows.get(key)
            if row is None:
                row = rows[key] = _empty_position(o)
            side = "buy" if o.transaction_type == "BUY" else "sell"
            row[f"{side}_quantity"] += trade.quantity
            row[f"{side}_value"] += trade.quantity * trade.price
        out = []
        for row in rows.values():
            snap = self._market.snapshot(row["instrument_token"])
            _finish_position(row, snap)
            out.append(row)
        return out

    def positions(self, account: Account) -> dict[str, list[dict[str, Any]]]:
        """``GET /portfolio/positions``."""
        rows = self.position_rows(account)
        return {"net": rows, "day": [dict(r) for r in rows]}

    def utilised(self, account: Account) -> float:
        """Margin blocked by open positions and live orders."""
        total = 0.0
        for row in self.position_rows(account):
            inst = self._market.by_token(row["instrument_token"])
            qty = int(row["quantity"])
            if inst is None or qty == 0:
                continue
            side = "BUY" if qty > 0 else "SELL"
            price = row["average_price"] or row["last_price"]
            total += order_margin(inst, side, abs(qty), price, row["product"])["total"]
        for order in self._book(account).orders.values():
            if order.status in LIVE_STATUSES and order.parent_order_id is None:
                inst = self._market.by_token(order.instrument_token)
                if inst is None:
                    continue
                price = order.price or self._market.snapshot(order.instrument_token).last_price
                total += order_margin(
                    inst, order.transaction_type, order.pending_quantity, price, order.product
                )["total"]
        return total

    def realised_unrealised(self, account: Account) -> tuple[float, float]:
        """Day's realised and unrealised P&L."""
        realised = unrealised = 0.0
        for row in self.position_rows(account):
            realised += row["realised"]
            unrealised += row["unrealised"]
        return realised, unrealised

    def available_funds(self, account: Account) -> float:
        """Cash that a new order may block."""
        realised, _ = self.realised_unrealised(account)
        return self.opening_funds + realised - self.utilised(account)

    def live_orders(self) -> list[Order]:
        """Every account's live orders (admin API)."""
        return [
            o for b in self._books.values() for o in b.orders.values() if o.status in LIVE_STATUSES
        ]

    def counts(self) -> dict[str, int]:
        """Orders by status and trades, over all accounts (admin API)."""
        out: dict[str, int] = {"trades": 0}
        for book in self._books.values():
            out["trades"] += len(book.trades)
            for order in book.orders.values():
                out[order.status] = out.get(order.status, 0) + 1
        return out


def _empty_position(o: Order) -> dict[str, Any]:
    return {
        "tradingsymbol": o.tradingsymbol,
        "exchange": o.exchange,
        "instrument_token": o.instrument_token,
        "product": o.product,
        "quantity": 0,
        "overnight_quantity": 0,
        "multiplier": 1,
        "average_price": 0.0,
        "close_price": 0.0,
        "last_price": 0.0,
        "value": 0.0,
        "pnl": 0.0,
        "m2m": 0.0,
        "unrealised": 0.0,
        "realised": 0.0,
        "buy_quantity": 0,
        "buy_price": 0.0,
        "buy_value": 0.0,
        "buy_m2m": 0.0,
        "sell_quantity": 0,
        "sell_price": 0.0,
        "sell_value": 0.0,
        "sell_m2m": 0.0,
        "day_buy_quantity": 0,
        "day_buy_price": 0.0,
        "day_buy_value": 0.0,
        "day_sell_quantity": 0,
        "day_sell_price": 0.0,
        "day_sell_value": 0.0,
    }


def _finish_position(row: dict[str, Any], snap: Snapshot) -> None:
    bq, sq = row["buy_quantity"], row["sell_quantity"]
    bv, sv = row["buy_value"], row["sell_value"]
    row["buy_price"] = round(bv / bq, 4) if bq else 0.0
    row["sell_price"] = round(sv / sq, 4) if sq else 0.0
    net = bq - sq
    row["quantity"] = net
    ltp = snap.last_price
    row["last_price"] = ltp
    row["close_price"] = snap.close
    closed = min(bq, sq)
    realised = closed * (row["sell_price"] - row["buy_price"]) if closed else 0.0
    if net > 0:
        avg = row["buy_price"]
    elif net < 0:
        avg = row["sell_price"]
    else:
        avg = 0.0
    unrealised = net * (ltp - avg) if net else 0.0
    row["average_price"] = avg
    row["value"] = round(sv - bv, 2)
    row["realised"] = round(realised, 2)
    row["unrealised"] = round(unrealised, 2)
    row["pnl"] = round(sv - bv + net * ltp, 2)
    row["m2m"] = row["pnl"]
    row["buy_m2m"] = round(bv, 2)
    row["sell_m2m"] = round(sv, 2)
    for side in ("buy", "sell"):
        row[f"day_{side}_quantity"] = row[f"{side}_quantity"]
        row[f"day_{side}_price"] = row[f"{side}_price"]
        row[f"day_{side}_value"] = round(row[f"{side}_value"], 2)
        row[f"{side}_value"] = round(row[f"{side}_value"], 2)


# -- parameter parsing -------------------------------------------------------------
def _required(p: Mapping[str, Any], name: str) -> str:
    value = p.get(name)
    if value is None or str(value).strip() == "":
        raise InputError(f"Missing `{name}`.")
    return str(value).strip()


def _choice(
    p: Mapping[str, Any], name: str, options: tuple[str, ...], default: str | None = None
) -> str:
    value = p.get(name)
    if value is None or str(value).strip() == "":
        if default is None:
            raise InputError(f"Missing `{name}`.")
        return default
    text = str(value).strip()
    if text not in options:
        raise InputError(f"Invalid `{name}`.")
    return text


def _number(p: Mapping[str, Any], name: str) -> float | None:
    """The parameter as a float; None when absent or blank; InputError when not a number."""
    value = p.get(name)
    if value is None or str(value).strip() == "":
        return None
    try:
        return float(str(value))
    except ValueError:
        raise InputError(f"Invalid `{name}`.") from None


def _int(p: Mapping[str, Any], name: str, default: int | None = None) -> int:
    number = _number(p, name)
    if number is None:
        if default is None:
            raise InputError(f"Missing `{name}`.")
        return default
    if not number.is_integer():
        raise InputError(f"Invalid `{name}`.")
    return int(number)


def _float(p: Mapping[str, Any], name: str, default: float | None = None) -> float:
    number = _number(p, name)
    if number is None:
        if default is None:
            raise InputError(f"Missing `{name}`.")
        return default
    if math.isnan(number) or math.isinf(number):
        raise InputError(f"Invalid `{name}`.")
    return number


__all__ = [
    "POSTBACK_STATUSES",
    "Order",
    "OrderEngine",
    "OrderEvent",
    "Trade",
]
