"""Order engine: validation, rejection, matching, partial fills, triggers, varieties."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

import pytest

from kite_sim.auth import generate_account
from kite_sim.clock import ManualClock, MarketClock
from kite_sim.errors import InputError, NotFoundError, OrderError
from kite_sim.marketview import Level, Snapshot
from kite_sim.orders import OrderEngine
from kite_sim.portfolio import AuctionLot
from ticker_core.tz import IST


@dataclass(frozen=True)
class Inst:
    instrument_token: int
    tradingsymbol: str
    exchange: str = "NSE"
    segment: str = "NSE"
    instrument_type: str = "EQ"
    lot_size: int = 1
    tick_size: float = 0.05
    exchange_token: int = 0
    name: str = "X"
    expiry: date | None = None
    strike: float = 0.0


@dataclass
class FakeMarket:
    """A book whose depth the test sets by hand."""

    instruments: dict[int, Inst] = field(default_factory=dict)
    snaps: dict[int, Snapshot] = field(default_factory=dict)

    def add(self, inst: Inst, ltp: float, step: float = 0.05, qty: int = 100) -> None:
        self.instruments[inst.instrument_token] = inst
        self.snaps[inst.instrument_token] = Snapshot(
            inst.instrument_token,
            last_price=ltp,
            close=ltp,
            lower_circuit=ltp * 0.8,
            upper_circuit=ltp * 1.2,
        )
        self.set_depth(inst.instrument_token, ltp, step, qty)

    def set_depth(self, token: int, ltp: float, step: float, qty: int) -> None:
        snap = self.snaps[token]
        snap.last_price = ltp
        snap.bids = [Level(round(ltp - step * (i + 1), 2), qty, 1) for i in range(5)]
        snap.asks = [Level(round(ltp + step * (i + 1), 2), qty, 1) for i in range(5)]

    def instrument(self, exchange: str, tradingsymbol: str) -> Inst | None:
        for inst in self.instruments.values():
            if inst.exchange == exchange and inst.tradingsymbol == tradingsymbol:
                return inst
        return None

    def by_token(self, token: int) -> Inst | None:
        return self.instruments.get(token)

    def snapshot(self, token: int) -> Snapshot:
        return self.snaps[token]


INFY = Inst(408065, "INFY")
NIFTY_FUT = Inst(
    13238274, "NIFTY24JUNFUT", "NFO", "NFO-FUT", "FUT", lot_size=25, tick_size=0.1, name="NIFTY"
)
NIFTY_IDX = Inst(256265, "NIFTY 50", "NSE", "INDICES", "EQ", tick_size=0.0)


@pytest.fixture
def market() -> FakeMarket:
    m = FakeMarket()
    m.add(INFY, 1500.0)
    m.add(NIFTY_FUT, 22000.0, step=0.5, qty=500)
    m.add(NIFTY_IDX, 21950.0)
    return m


@pytest.fixture
def clock() -> MarketClock:
    return MarketClock(ManualClock(), datetime(2024, 6, 3, 10, 0, tzinfo=IST))


@pytest.fixture
def engine(market: FakeMarket, clock: MarketClock) -> OrderEngine:
    return OrderEngine(market, clock)


ACCOUNT = generate_account(0)


def limit(side: str, qty: int, price: float, **extra: object) -> dict[str, object]:
    params: dict[str, object] = {
        "exchange": "NSE",
        "tradingsymbol": "INFY",
        "transaction_type": side,
        "quantity": qty,
        "product": "CNC" if side == "BUY" else "MIS",
        "order_type": "LIMIT",
        "price": price,
    }
    params.update(extra)
    return params


def test_marketable_limit_fills_at_the_touch_and_emits_events(engine: OrderEngine) -> None:
    # Given asks at 1500.05 x 100
    # When a buy limit at 1500.10 for 50 is placed
    order = engine.place(ACCOUNT, "regular", limit("BUY", 50, 1500.10))
    # Then it completes at the best ask, one trade, events OPEN then COMPLETE
    assert order.status == "COMPLETE"
    assert order.average_price == pytest.approx(1500.05)
    trades = engine.trades(ACCOUNT)
    assert [(t["quantity"], t["average_price"]) for t in trades] == [(50, 1500.05)]
    assert [e.status for e in engine.drain_events()] == ["OPEN", "COMPLETE"]
    history = [h["status"] for h in engine.order_history(ACCOUNT, order.order_id)]
    assert history == [
        "PUT ORDER REQ RECEIVED",
        "VALIDATION PENDING",
        "OPEN PENDING",
        "OPEN",
        "COMPLETE",
    ]


def test_large_order_walks_depth_then_fills_partially_over_steps(
    engine: OrderEngine, market: FakeMarket
) -> None:
    # Given 100 at each of 5 ask levels (1500.05 .. 1500.25)
    # When buying 700 with a limit of 1500.15 (three levels reachable)
    order = engine.place(ACCOUNT, "regular", limit("BUY", 700, 1500.15, product="MIS"))
    # Then 300 fill now, the rest stays OPEN; an UPDATE event tells of the partial fill
    assert order.status == "OPEN"
    assert order.filled_quantity == 300
    assert order.pending_quantity == 400
    assert [e.status for e in engine.drain_events()] == ["OPEN", "UPDATE"]
    # When the market refreshes its depth at the same prices, the order keeps filling
    engine.step()
    assert order.filled_quantity == 600
    engine.step()
    assert order.status == "COMPLETE"
    assert order.filled_quantity == 700
    positions = engine.positions(ACCOUNT)["net"]
    assert positions[0]["quantity"] == 700
    assert positions[0]["buy_quantity"] == 700


def test_resting_limit_fills_when_market_moves(engine: OrderEngine, market: FakeMarket) -> None:
    order = engine.place(ACCOUNT, "regular", limit("BUY", 10, 1490.0))
    assert order.status == "OPEN"
    engine.step()
    assert order.filled_quantity == 0
    market.set_depth(INFY.instrument_token, 1489.0, 0.05, 100)
    engine.step()
    assert order.status == "COMPLETE"
    assert order.average_price == pytest.approx(1489.05)


def test_market_order_needs_protection_and_respects_it(
    engine: OrderEngine, market: FakeMarket
) -> None:
    params = limit("BUY", 10, 0, order_type="MARKET")
    del params["price"]
    with pytest.raises(InputError, match="market_protection"):
        engine.place(ACCOUNT, "regular", params)
    with pytest.raises(InputError, match="market_protection"):
        engine.place(ACCOUNT, "regular", {**params, "market_protection": 0})
    # Asks far above: 2% protection allows nothing beyond 1530
    market.set_depth(INFY.instrument_token, 1500.0, 20.0, 5)
    order = engine.place(ACCOUNT, "regular", {**params, "market_protection": 2})
    assert order.filled_quantity == 5  # 1520 only; 1540 is beyond protection
    assert order.status == "OPEN"
    order2 = engine.place(ACCOUNT, "regular", {**params, "market_protection": -1})
    assert order2.filled_quantity == 0  # auto = 0.5% above 500


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tradingsymbol": "NOPE"}, "tradingsymbol"),
        ({"quantity": 0}, "Quantity"),
        ({"quantity": "1.5"}, "quantity"),
        ({"quantity": "x"}, "quantity"),
        ({"transaction_type": "HOLD"}, "transaction_type"),
        ({"price": 0}, "price"),
        ({"price": "nan"}, "price"),
        ({"order_type": "SL", "trigger_price": None}, "trigger_price"),
        ({"validity": "TTL"}, "validity_ttl"),
        ({"validity": "TTL", "validity_ttl": 0}, "validity_ttl"),
        ({"tag": "x" * 21}, "tag"),
        ({"product": None}, "product"),
    ],
)
def test_bad_parameters_raise_input_errors(
    engine: OrderEngine, change: dict[str, object], message: str
) -> None:
    params = limit("BUY", 10, 1500.0)
    for key, value in change.items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = value
    with pytest.raises(InputError, match=message):
        engine.place(ACCOUNT, "regular", params)


def test_bad_variety_index_and_auction(engine: OrderEngine) -> None:
    with pytest.raises(InputError):
        engine.place(ACCOUNT, "bracket", limit("BUY", 1, 1500.0))
    with pytest.raises(InputError):
        engine.place(ACCOUNT, "auction", limit("BUY", 1, 1500.0))
    with pytest.raises(InputError, match="index"):
        engine.place(ACCOUNT, "regular", limit("BUY", 1, 1500.0, tradingsymbol="NIFTY 50"))


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        (limit("BUY", 10, 1500.03), "Tick size"),
        (limit("BUY", 10, 1900.0), "circuit"),
        (limit("BUY", 10_000, 1500.0), "Insufficient funds"),
        (limit("SELL", 10, 1500.0, product="CNC"), "holdings"),
        (limit("BUY", 10, 1500.0, product="NRML"), "NRML"),
        (
            {
                **limit("BUY", 10, 22000.0),
                "exchange": "NFO",
                "tradingsymbol": "NIFTY24JUNFUT",
                "product": "NRML",
            },
            "lot size",
        ),
        (
            {
                **limit("BUY", 25, 22000.0),
                "exchange": "NFO",
                "tradingsymbol": "NIFTY24JUNFUT",
                "product": "CNC",
            },
            "derivatives",
        ),
    ],
)
def test_risk_checks_reject_the_order(
    engine: OrderEngine, params: dict[str, object], reason: str
) -> None:
    order = engine.place(ACCOUNT, "regular", params)
    assert order.status == "REJECTED"
    assert reason in (order.status_message or "")
    assert [e.status for e in engine.drain_events()] == ["REJECTED"]


def test_modify_then_cancel(engine: OrderEngine) -> None:
    order = engine.place(ACCOUNT, "regular", limit("BUY", 10, 1400.0))
    engine.drain_events()
    engine.modify(ACCOUNT, "regular", order.order_id, {"price": "1450", "quantity": "20"})
    assert (order.price, order.quantity, order.modified) == (1450.0, 20, True)
    assert [e.status for e in engine.drain_events()] == ["UPDATE"]
    engine.cancel(ACCOUNT, "regular", order.order_id)
    assert order.status == "CANCELLED"
    assert order.cancelled_quantity == 20
    with pytest.raises(OrderError):
        engine.cancel(ACCOUNT, "regular", order.order_id)
    with pytest.raises(OrderError):
        engine.modify(ACCOUNT, "regular", order.order_id, {"price": "1"})
    with pytest.raises(NotFoundError):
        engine.cancel(ACCOUNT, "regular", "nope")
    with pytest.raises(NotFoundError):
        engine.order_history(ACCOUNT, "nope")
    with pytest.raises(NotFoundError):
        engine.trades(ACCOUNT, "nope")


def test_modify_into_the_market_fills(engine: OrderEngine) -> None:
    order = engine.place(ACCOUNT, "regular", limit("BUY", 10, 1400.0))
    engine.modify(ACCOUNT, "regular", order.order_id, {"price": "1500.10"})
    assert order.status == "COMPLETE"
    assert engine.trades(ACCOUNT, order.order_id)[0]["quantity"] == 10


def test_modify_validation(engine: OrderEngine) -> None:
    order = engine.place(ACCOUNT, "regular", limit("BUY", 10, 1400.0))
    with pytest.raises(InputError):
        engine.modify(ACCOUNT, "amo", order.order_id, {"price": "1"})
    with pytest.raises(InputError, match="filled"):
        engine.modify(ACCOUNT, "regular", order.order_id, {"quantity": "0"})
    with pytest.raises(InputError, match="market_protection"):
        engine.modify(ACCOUNT, "regular", order.order_id, {"order_type": "MARKET"})
    with pytest.raises(InputError, match="Tick"):
        engine.modify(ACCOUNT, "regular", order.order_id, {"price": "1400.01"})
    with pytest.raises(InputError, match="trigger_price"):
        engine.modify(ACCOUNT, "regular", order.order_id, {"order_type": "SL"})
    engine.modify(ACCOUNT, "regular", order.order_id, {"order_type": "SL", "trigger_price": "1600"})
    assert order.status == "TRIGGER PENDING"


def test_stop_loss_waits_for_trigger(engine: OrderEngine, market: FakeMarket) -> None:
    params = limit("SELL", 10, 1450.0, order_type="SL", trigger_price=1460.0, product="MIS")
    order = engine.place(ACCOUNT, "regular", params)
    assert order.status == "TRIGGER PENDING"
    engine.step()
    assert order.status == "TRIGGER PENDING"
    market.set_depth(INFY.instrument_token, 1459.0, 0.05, 100)
    engine.step()
    assert order.status == "COMPLETE"
    assert order.average_price == pytest.approx(1458.95)


def test_ioc_cancels_the_unfilled_rest(engine: OrderEngine) -> None:
    order = engine.place(ACCOUNT, "regular", limit("BUY", 150, 1500.05, validity="IOC"))
    assert order.status == "CANCELLED"
    assert order.filled_quantity == 100
    assert order.cancelled_quantity == 50


def test_ttl_expires(engine: OrderEngine, clock: MarketClock) -> None:
    order = engine.place(
        ACCOUNT, "regular", limit("BUY", 1, 1400.0, validity="TTL", validity_ttl=2)
    )
    clock.advance(119)
    engine.step()
    assert order.status == "OPEN"
    clock.advance(2)
    engine.step()
    assert order.status == "CANCELLED"


def test_amo_waits_for_the_open(market: FakeMarket, clock: MarketClock) -> None:
    is_open = {"now": False}
    engine = OrderEngine(market, clock, session_open=lambda _ex, _t: is_open["now"])
    with_regular = engine.place(ACCOUNT, "regular", limit("BUY", 1, 1500.10))
    assert with_regular.status == "REJECTED"
    order = engine.place(ACCOUNT, "amo", limit("BUY", 1, 1500.10))
    assert order.status == "AMO REQ RECEIVED"
    engine.step()
    assert order.status == "AMO REQ RECEIVED"
    is_open["now"] = True
    engine.step()
    assert order.status == "COMPLETE"


def test_cover_order_adds_a_stop_loss_leg_and_exits(
    engine: OrderEngine, market: FakeMarket
) -> None:
    params = limit("BUY", 10, 1500.10, product="MIS", trigger_price=1480.0)
    entry = engine.place(ACCOUNT, "co", params)
    assert entry.status == "COMPLETE"
    legs = [o for o in engine.orders(ACCOUNT) if o["parent_order_id"] == entry.order_id]
    assert len(legs) == 1
    leg = legs[0]
    assert (leg["order_type"], leg["transaction_type"], leg["status"]) == (
        "SL-M",
        "SELL",
        "TRIGGER PENDING",
    )
    assert leg["trigger_price"] == 1480.0
    # Exiting the cover order sells at market
    exit_order = engine.cancel(ACCOUNT, "co", leg["order_id"], parent_order_id=entry.order_id)
    assert exit_order.status == "COMPLETE"
    assert engine.positions(ACCOUNT)["net"][0]["quantity"] == 0


def test_cover_order_validation(engine: OrderEngine) -> None:
    with pytest.raises(InputError, match="stoploss"):
        engine.place(ACCOUNT, "co", limit("BUY", 1, 1500.0, product="MIS"))
    with pytest.raises(InputError, match="MIS"):
        engine.place(ACCOUNT, "co", limit("BUY", 1, 1500.0, trigger_price=1490.0))
    with pytest.raises(InputError, match="MARKET or LIMIT"):
        engine.place(
            ACCOUNT,
            "co",
            limit("BUY", 1, 1500.0, product="MIS", order_type="SL", trigger_price=1490.0),
        )


def _legs(engine: OrderEngine) -> list[dict[str, object]]:
    return [o for o in engine.orders(ACCOUNT) if o["variety"] == "iceberg"]


def test_iceberg_places_its_legs_as_separate_orders_one_at_a_time(
    engine: OrderEngine, market: FakeMarket
) -> None:
    # Given 20 offered at each level from 1500.05
    market.set_depth(INFY.instrument_token, 1500.0, 0.05, 20)
    # When an iceberg of 70 in legs of at most 30 is placed at 1500.05
    params = limit("BUY", 70, 1500.05, iceberg_legs=3, iceberg_quantity=30, tag="ice1")
    first = engine.place(ACCOUNT, "iceberg", params)
    # Then the answer is the first leg: 30 of 70, partly filled, and no other leg is live yet
    assert (first.quantity, first.filled_quantity, first.status) == (30, 20, "OPEN")
    assert first.meta["iceberg"] == {
        "leg": 1,
        "legs": 3,
        "leg_quantity": 30,
        "total_quantity": 70,
        "remaining_quantity": 40,
    }
    assert [leg["order_id"] for leg in _legs(engine)] == [first.order_id]
    # When the market refreshes its depth twice
    engine.step()
    engine.step()
    # Then each filled leg was followed by the next as a new order with the same tag
    legs = _legs(engine)
    assert [leg["meta"]["iceberg"]["leg"] for leg in legs] == [1, 2, 3]
    assert [leg["quantity"] for leg in legs] == [30, 30, 10]
    assert [leg["meta"]["iceberg"]["remaining_quantity"] for leg in legs] == [40, 10, 0]
    assert {leg["tag"] for leg in legs} == {"ice1"}
    assert len({leg["order_id"] for leg in legs}) == 3
    assert [leg["status"] for leg in legs[:2]] == ["COMPLETE", "COMPLETE"]
    engine.step()
    assert _legs(engine)[2]["status"] == "COMPLETE"
    assert sum(t["quantity"] for t in engine.trades(ACCOUNT)) == 70
    # And the first leg's own history still says leg 1
    assert engine.order_history(ACCOUNT, first.order_id)[-1]["meta"]["iceberg"]["leg"] == 1


def test_cancelling_an_iceberg_leg_ends_the_iceberg(engine: OrderEngine) -> None:
    params = limit("BUY", 90, 1400.0, iceberg_legs=3, iceberg_quantity=30)
    first = engine.place(ACCOUNT, "iceberg", params)
    with pytest.raises(InputError, match="quantity"):
        engine.modify(ACCOUNT, "iceberg", first.order_id, {"quantity": "60"})
    engine.cancel(ACCOUNT, "iceberg", first.order_id)
    engine.step()
    assert [leg["status"] for leg in _legs(engine)] == ["CANCELLED"]


def test_iceberg_parameter_rules(engine: OrderEngine) -> None:
    params = limit("BUY", 90, 1500.25, iceberg_legs=3, iceberg_quantity=30)
    with pytest.raises(InputError, match="iceberg_legs"):
        engine.place(ACCOUNT, "iceberg", {**params, "iceberg_legs": 11})
    with pytest.raises(InputError, match="iceberg_quantity"):
        engine.place(ACCOUNT, "iceberg", {**params, "iceberg_quantity": 10})
    with pytest.raises(InputError, match="validity"):
        engine.place(ACCOUNT, "iceberg", {**params, "validity": "IOC"})


def test_positions_pnl_and_funds(engine: OrderEngine, market: FakeMarket) -> None:
    engine.place(ACCOUNT, "regular", limit("BUY", 10, 1500.05, product="MIS"))
    market.set_depth(INFY.instrument_token, 1510.0, 0.05, 100)
    engine.place(ACCOUNT, "regular", limit("SELL", 4, 1509.95))
    row = engine.positions(ACCOUNT)["net"][0]
    assert row["quantity"] == 6
    assert row["realised"] == pytest.approx(4 * (1509.95 - 1500.05))
    assert row["unrealised"] == pytest.approx(6 * (1510.0 - 1500.05))
    realised, _ = engine.realised_unrealised(ACCOUNT)
    assert engine.available_funds(ACCOUNT) < engine.opening_funds + realised
    assert engine.counts()["COMPLETE"] == 2
    assert engine.live_orders() == []


def test_amo_during_market_hours_is_refused(engine: OrderEngine) -> None:
    # Given an open market, When an AMO is placed, Then Kite refuses the call itself
    with pytest.raises(InputError, match="outside market hours"):
        engine.place(ACCOUNT, "amo", limit("BUY", 1, 1500.10))
    assert engine.orders(ACCOUNT) == []


def test_order_book_fields_follow_kites(engine: OrderEngine) -> None:
    tagged = engine.place(ACCOUNT, "regular", limit("BUY", 1, 1400.0, tag="abc123"))
    untagged = engine.place(
        ACCOUNT, "regular", limit("BUY", 1, 1400.0, validity="TTL", validity_ttl=5)
    )
    book = {o["order_id"]: o for o in engine.orders(ACCOUNT)}
    assert book[tagged.order_id]["tags"] == ["abc123"]
    assert book[tagged.order_id]["validity_ttl"] == 0
    assert book[tagged.order_id]["account_id"] == ACCOUNT.user_id
    assert "tags" not in book[untagged.order_id]
    assert book[untagged.order_id]["validity_ttl"] == 5
    assert "auction_number" not in book[untagged.order_id]


def test_exiting_a_cover_order_names_its_entry(engine: OrderEngine) -> None:
    entry = engine.place(
        ACCOUNT, "co", limit("BUY", 10, 1500.10, product="MIS", trigger_price=1480.0)
    )
    leg = next(o for o in engine.orders(ACCOUNT) if o["parent_order_id"] == entry.order_id)
    # An exit naming another order as the parent is refused; the leg stays live
    with pytest.raises(InputError, match="not a leg"):
        engine.cancel(ACCOUNT, "co", str(leg["order_id"]), parent_order_id="999")
    assert engine.get(ACCOUNT, str(leg["order_id"])).status == "TRIGGER PENDING"
    # The entry itself cannot be cancelled once filled
    with pytest.raises(OrderError):
        engine.cancel(ACCOUNT, "co", entry.order_id)


@pytest.fixture
def auction_engine(market: FakeMarket, clock: MarketClock) -> OrderEngine:
    """An engine whose account may sell 20 INFY in auction 42, with 20 INFY held."""
    engine = OrderEngine(market, clock)
    engine.holdings_provider = lambda _account, inst: 20 if inst is INFY else 0
    engine.auction_lots = lambda _account: [AuctionLot("42", INFY.instrument_token, 20)]
    clock.set(datetime(2024, 6, 3, 14, 5, tzinfo=IST))
    return engine


def auction(qty: int = 10, price: float = 1510.0, **extra: object) -> dict[str, object]:
    return limit("SELL", qty, price, **{"product": "CNC", "auction_number": "42", **extra})


def test_auction_order_rests_and_sells_at_its_price_when_the_auction_closes(
    auction_engine: OrderEngine, clock: MarketClock
) -> None:
    # Given the auction session (14:00-14:30) is on
    # When an auction sell is placed above the continuous market's best bid
    order = auction_engine.place(ACCOUNT, "auction", auction())
    # Then it rests OPEN, untouched by the continuous book, with its auction number
    assert order.status == "OPEN"
    auction_engine.step()
    assert order.filled_quantity == 0
    assert auction_engine.orders(ACCOUNT)[0]["auction_number"] == "42"
    with pytest.raises(InputError, match="cannot be modified"):
        auction_engine.modify(ACCOUNT, "auction", order.order_id, {"price": "1515"})
    # When the auction closes
    clock.set(datetime(2024, 6, 3, 14, 30, tzinfo=IST))
    auction_engine.step()
    # Then it sold all of it at its limit price
    assert order.status == "COMPLETE"
    assert [(t["quantity"], t["average_price"]) for t in auction_engine.trades(ACCOUNT)] == [
        (10, 1510.0)
    ]


def test_auction_order_can_be_cancelled_before_the_close(auction_engine: OrderEngine) -> None:
    order = auction_engine.place(ACCOUNT, "auction", auction())
    auction_engine.cancel(ACCOUNT, "auction", order.order_id)
    assert order.status == "CANCELLED"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({k: v for k, v in auction().items() if k != "auction_number"}, "auction_number"),
        (auction(auction_number="7"), "auction_number"),
        (auction(transaction_type="BUY"), "SELL"),
        (auction(product="MIS"), "CNC"),
    ],
)
def test_auction_parameters_are_checked(
    auction_engine: OrderEngine, params: dict[str, object], message: str
) -> None:
    with pytest.raises(InputError, match=message):
        auction_engine.place(ACCOUNT, "auction", params)


@pytest.mark.parametrize(
    ("when", "qty", "reason"),
    [
        (datetime(2024, 6, 3, 13, 59, tzinfo=IST), 10, "auction session"),
        (datetime(2024, 6, 3, 14, 30, tzinfo=IST), 10, "auction session"),
        (datetime(2024, 6, 3, 14, 10, tzinfo=IST), 25, "holdings"),
    ],
)
def test_auction_orders_outside_the_session_or_beyond_holdings_are_rejected(
    auction_engine: OrderEngine, clock: MarketClock, when: datetime, qty: int, reason: str
) -> None:
    clock.set(when)
    order = auction_engine.place(ACCOUNT, "auction", auction(qty))
    assert order.status == "REJECTED"
    assert reason in (order.status_message or "")
