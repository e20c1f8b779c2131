"""The order engine (sans-I/O): each account's orders for the day and their life.

The engine keeps each account's order book for the day and matches it
against the simulated market's depth, the way Kite's OMS and the exchange
would look from an API client. It composes four narrower modules:

- :mod:`kite_sim.order_params`: parameter errors (missing or bad fields,
  unknown instrument, MARKET or SL-M without ``market_protection``) fail the
  call with ``InputException``;
- :mod:`kite_sim.risk`: risk and exchange checks (quantity not a lot
  multiple, price off the tick grid or outside the circuit band, wrong
  product for the segment, holdings, funds) create the order and reject it,
  with a ``status_message``;
- :mod:`kite_sim.matching`: a marketable order fills against the opposite
  side's depth at once, level by level; what the visible depth cannot absorb
  stays ``OPEN`` and fills on later market steps (partial fills for large
  quantities); MARKET orders carry their protection as a limit price (``-1``
  = automatic); SL and SL-M wait in ``TRIGGER PENDING`` until the last price
  crosses the trigger;
- :mod:`kite_sim.portfolio`: positions and the margin they block.

Here: the order lifecycle and the varieties. IOC cancels what the first
match leaves; TTL expires; ``amo`` is accepted only while the market is
closed, queued and sent at the open; ``co`` adds a stop-loss leg once the
entry fills (exiting cancels that leg into a market order); ``iceberg``
places its legs as separate orders, the next when one fills; ``auction``
sells holdings into the exchange's auction session and matches at its close.

Every state change is recorded in the order's history and queued as an
:class:`OrderEvent`; the server sends those to the account's WebSocket
connections and, for the statuses Kite posts back, to its postback URL.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any

from kite_sim.auth import Account
from kite_sim.clock import MarketClock
from kite_sim.errors import InputError, NotFoundError, OrderError
from kite_sim.marketview import InstrumentLike, MarketView, Snapshot
from kite_sim.matching import Taken, fills, limit_price, trigger_hit
from kite_sim.order_model import (
    AMO_RECEIVED,
    CANCELLED,
    COMPLETE,
    LIVE_STATUSES,
    OPEN,
    POSTBACK_STATUSES,
    REJECTED,
    TRIGGER_PENDING,
    UPDATE,
    Order,
    OrderEvent,
    Trade,
)
from kite_sim.order_params import OrderRequest, parse_modify, parse_new
from kite_sim.portfolio import AuctionLot, blocked_margin, position_rows
from kite_sim.risk import rejection_reason
from ticker_core.tz import IST


@dataclass
class _Book:
    account: Account
    orders: dict[str, Order] = field(default_factory=dict)
    history: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    trades: list[Trade] = field(default_factory=list)


SessionOpen = Callable[[str, datetime], bool]
# NSE's auction session for short deliveries (IST); orders match at its close.
AUCTION_WINDOW = (time(14, 0), time(14, 30))
AMO_DURING_MARKET_HOURS = (
    "After market orders are accepted only outside market hours; place a regular order."
)


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
        auction_window: tuple[time, time] = AUCTION_WINDOW,
    ) -> None:
        self._market = market
        self._clock = clock
        self._session_open = session_open
        self.opening_funds = opening_funds
        self.check_funds = check_funds
        self._books: dict[str, _Book] = {}
        self._events: list[OrderEvent] = []
        self._seq = 0
        self._trade_seq = 0
        self.auction_window = auction_window
        self.holdings_provider: Callable[[Account, InstrumentLike], int] | None = None
        self.auction_lots: Callable[[Account], list[AuctionLot]] | None = None

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
        """``POST /orders/:variety``: validate, accept, then risk-check and match.

        Returns the order Kite answers with (an iceberg's first leg).
        """
        now = self._clock.now()
        request = parse_new(variety, params, self._market)
        inst = request.instrument
        if variety == "amo" and self._session_open(inst.exchange, now):
            raise InputError(AMO_DURING_MARKET_HOURS)
        lot = self._auction_lot(account, request) if variety == "auction" else None
        order = self._new_order(account, request, now)
        book = self._book(account)
        if not self._accept(book, order, inst):
            return order
        if variety == "amo":
            order.status = AMO_RECEIVED
            self._record(book, order, event=AMO_RECEIVED)
            return order
        if not self._session_open(order.exchange, now):
            self._reject(
                book,
                order,
                "Markets are closed right now. Use GTT or AMO for orders outside market hours.",
            )
            return order
        if lot is not None:
            reason = self._auction_rejection(order, lot, now)
            if reason is not None:
                self._reject(book, order, reason)
                return order
        self._send_to_exchange(book, order, now, {})
        return order

    def _accept(self, book: _Book, order: Order, inst: InstrumentLike) -> bool:
        """Record a new order and run the risk checks; False when it was rejected."""
        book.orders[order.order_id] = order
        self._record(book, order)
        order.status = "VALIDATION PENDING"
        self._record(book, order)
        reason = self._risk_check(book.account, order, inst)
        if reason is not None:
            self._reject(book, order, reason)
            return False
        return True

    def _new_order(self, account: Account, request: OrderRequest, now: datetime) -> Order:
        inst = request.instrument
        quantity = request.quantity
        meta: dict[str, Any] = {}
        if request.variety == "iceberg":
            quantity = min(request.iceberg_quantity, request.quantity)
            meta["iceberg"] = {
                "leg": 1,
                "legs": request.iceberg_legs,
                "leg_quantity": request.iceberg_quantity,
                "total_quantity": request.quantity,
                "remaining_quantity": request.quantity - quantity,
            }
        return Order(
            order_id=self._next_order_id(now),
            user_id=account.user_id,
            api_key=account.api_key,
            variety=request.variety,
            exchange=inst.exchange,
            tradingsymbol=inst.tradingsymbol,
            instrument_token=inst.instrument_token,
            transaction_type=request.transaction_type,
            order_type=request.order_type,
            product=request.product,
            validity=request.validity,
            validity_ttl=request.validity_ttl,
            quantity=quantity,
            disclosed_quantity=request.disclosed_quantity,
            price=request.price,
            trigger_price=request.trigger_price,
            market_protection=request.market_protection,
            tag=request.tag,
            guid=f"{account.user_id}-{self._seq}",
            order_timestamp=now,
            meta=meta,
            stoploss=request.stoploss,
            auction_number=request.auction_number,
        )

    def _auction_lot(self, account: Account, request: OrderRequest) -> AuctionLot:
        """The account's auction that ``request`` sells into; InputError when there is none."""
        lots = self.auction_lots(account) if self.auction_lots is not None else []
        for lot in lots:
            if (
                lot.auction_number == request.auction_number
                and lot.instrument_token == request.instrument.instrument_token
            ):
                return lot
        raise InputError("Invalid `auction_number` for this instrument.")

    def _auction_rejection(self, order: Order, lot: AuctionLot, now: datetime) -> str | None:
        """Why the exchange refuses an auction order now, or None."""
        opens, closes = self.auction_window
        if not opens <= now.astimezone(IST).time() < closes:
            return f"The auction session is open from {opens:%H:%M} to {closes:%H:%M} IST only."
        if order.quantity > lot.quantity:
            return f"Quantity exceeds the {lot.quantity} shares eligible for this auction."
        return None

    def _risk_check(self, account: Account, order: Order, inst: InstrumentLike) -> str | None:
        """Why the OMS or the exchange would reject ``order``, or None."""
        return rejection_reason(
            order,
            inst,
            self._market.snapshot(inst.instrument_token),
            held_quantity=lambda: self._holding_quantity(account, inst),
            available_funds=(lambda: self.available_funds(account)) if self.check_funds else None,
        )

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

    def _send_to_exchange(self, book: _Book, order: Order, now: datetime, taken: Taken) -> None:
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
        snap = self._market.snapshot(order.instrument_token)
        self._match(book, order, snap, taken, first=True)

    # -- matching ------------------------------------------------------------------
    def _match(
        self,
        book: _Book,
        order: Order,
        snap: Snapshot,
        taken: Taken,
        *,
        first: bool = False,
    ) -> None:
        """Fill what the opposite depth allows; IOC cancels the rest.

        Auction orders do not trade on the continuous book: they wait for the
        auction's close (:meth:`_settle_auction`).
        """
        if order.status != OPEN or order.variety == "auction":
            return
        inst = self._market.by_token(order.instrument_token)
        lot = max(1, inst.lot_size) if inst is not None else 1
        tick = inst.tick_size if inst is not None and inst.tick_size else 0.05
        wanted = order.quantity - order.filled_quantity
        matched = fills(
            order, snap, wanted=wanted, limit=limit_price(order, snap, tick), lot=lot, taken=taken
        )
        now = self._clock.now()
        for qty, price in matched:
            self._fill(book, order, qty, price, now)
        if order.filled_quantity >= order.quantity:
            self._complete(book, order, now, taken)
        elif matched:
            order.exchange_update_timestamp = now
            self._record(book, order, event=UPDATE)
        if first and order.validity == "IOC" and order.status == OPEN:
            self._cancel_now(book, order, "IOC order cancelled: unmatched quantity.")

    def _fill(self, book: _Book, order: Order, qty: int, price: float, now: datetime) -> None:
        self._trade_seq += 1
        order.filled_quantity += qty
        order.filled_value += qty * price
        book.trades.append(Trade(f"{10_000_000 + self._trade_seq}", order, qty, price, now))

    def _complete(self, book: _Book, order: Order, now: datetime, taken: Taken) -> None:
        """The order filled: record it, then what its variety does next."""
        order.status = COMPLETE
        order.exchange_update_timestamp = now
        self._record(book, order, event=COMPLETE)
        if order.variety == "co" and order.parent_order_id is None:
            self._cover_order_stop_loss(book, order, now)
        elif order.variety == "iceberg":
            self._next_iceberg_leg(book, order, now, taken)

    def _cover_order_stop_loss(self, book: _Book, order: Order, now: datetime) -> None:
        """A cover order's entry leg filled: its stop-loss leg goes live."""
        child = order.successor(
            order_id=self._next_order_id(now),
            order_timestamp=now,
            transaction_type="SELL" if order.transaction_type == "BUY" else "BUY",
            order_type="SL-M",
            validity="DAY",
            validity_ttl=None,
            price=0.0,
            trigger_price=order.stoploss,
            market_protection=-1,
            stoploss=0.0,
            parent_order_id=order.order_id,
        )
        book.orders[child.order_id] = child
        self._record(book, child)
        self._send_to_exchange(book, child, now, {})

    def _next_iceberg_leg(self, book: _Book, leg: Order, now: datetime, taken: Taken) -> None:
        """An iceberg leg filled: its next leg is placed as a new order, as Kite does.

        The next leg carries the filled leg's current price, trigger and
        validity (so a modification applies to the legs after it); depth the
        filled leg took in this step is not available to it again.
        """
        ice = leg.meta["iceberg"]
        remaining = int(ice["remaining_quantity"])
        if remaining <= 0:
            return
        quantity = min(int(ice["leg_quantity"]), remaining)
        nxt = leg.successor(
            order_id=self._next_order_id(now),
            order_timestamp=now,
            quantity=quantity,
            meta={
                "iceberg": dict(
                    ice, leg=int(ice["leg"]) + 1, remaining_quantity=remaining - quantity
                )
            },
        )
        inst = self._market.by_token(leg.instrument_token)
        if inst is not None and self._accept(book, nxt, inst):
            self._send_to_exchange(book, nxt, now, taken)

    def _check_trigger(self, book: _Book, order: Order, snap: Snapshot) -> None:
        if order.status != TRIGGER_PENDING or not trigger_hit(order, snap.last_price):
            return
        order.status = OPEN
        order.exchange_update_timestamp = self._clock.now()
        self._record(book, order, event=OPEN)
        self._match(book, order, snap, {}, first=False)

    def step(self) -> None:
        """One market step: triggers, matching, AMO release and TTL expiry."""
        now = self._clock.now()
        taken: Taken = {}
        for book in self._books.values():
            for order in list(book.orders.values()):
                if order.status not in LIVE_STATUSES:
                    continue
                if order.status == AMO_RECEIVED:
                    if self._session_open(order.exchange, now):
                        self._send_to_exchange(book, order, now, taken)
                    continue
                if order.variety == "auction":
                    self._settle_auction(book, order, now)
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

    def _settle_auction(self, book: _Book, order: Order, now: datetime) -> None:
        """At the auction's close, a live auction order sells at its limit price."""
        closes = datetime.combine(
            order.order_timestamp.astimezone(IST).date(), self.auction_window[1], IST
        )
        if order.status != OPEN or now < closes:
            return
        self._fill(book, order, order.quantity - order.filled_quantity, order.price, now)
        self._complete(book, order, now, {})

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
        change = parse_modify(order, params, self._market.by_token(order.instrument_token))
        order.order_type = change.order_type
        order.quantity = change.quantity
        order.price = change.price
        order.trigger_price = change.trigger_price
        order.validity = change.validity
        order.disclosed_quantity = change.disclosed_quantity
        order.market_protection = change.market_protection
        order.modified = True
        now = self._clock.now()
        order.exchange_update_timestamp = now
        if order.status == OPEN and change.order_type in ("SL", "SL-M"):
            order.status = TRIGGER_PENDING
        elif order.status == TRIGGER_PENDING and change.order_type in ("LIMIT", "MARKET"):
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
        """``DELETE /orders/:variety/:order_id``.

        Exiting a cover order is cancelling its stop-loss leg (with the entry
        as ``parent_order_id``): the leg leaves at market. Cancelling an
        iceberg leg ends the iceberg: no later leg is placed.
        """
        book = self._book(account)
        order = self.get(account, order_id)
        if order.variety != variety:
            raise InputError(f"Order {order_id} is not a {variety} order.")
        if order.status not in LIVE_STATUSES:
            raise OrderError(f"Order cannot be cancelled as it is {order.status.lower()}.")
        if parent_order_id is not None and parent_order_id != order.parent_order_id:
            raise InputError(f"Order {order_id} is not a leg of {parent_order_id}.")
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
        return position_rows(self._book(account).trades, self._market.snapshot)

    def positions(self, account: Account) -> dict[str, list[dict[str, Any]]]:
        """``GET /portfolio/positions``."""
        rows = self.position_rows(account)
        return {"net": rows, "day": [dict(r) for r in rows]}

    def utilised(self, account: Account) -> float:
        """Margin blocked by open positions and live orders."""
        return blocked_margin(
            self.position_rows(account),
            self._book(account).orders.values(),
            self._market.by_token,
            self._market.snapshot,
        )

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


__all__ = [
    "POSTBACK_STATUSES",
    "Order",
    "OrderEngine",
    "OrderEvent",
    "Trade",
]
