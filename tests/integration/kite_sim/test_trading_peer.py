"""kite_sim as the trading API's Kite peer, driven by the official kiteconnect client.

Ambiguous outcomes (an order accepted whose answer never arrives), the order
varieties Kite offers (iceberg legs, auction, AMO, cover order exit), order
call accounting.
"""

from __future__ import annotations

import secrets
from datetime import datetime, time, timedelta
from typing import Any

import pytest
import requests
from kiteconnect import KiteConnect
from kiteconnect import exceptions as kex

from kite_sim.config import AccountConfig, SimConfig
from kite_sim.ratelimit import scaled_limits
from kite_sim.server import ThreadedSimulator, default_market_start
from tests.integration.kite_sim.clients import login
from tests.waiting import wait_until
from ticker_core.calendar import NseCalendar
from ticker_core.tz import IST

pytestmark = pytest.mark.integration


def _tag() -> str:
    return f"t{secrets.token_hex(8)}"  # 17 characters: within Kite's 20


def _far_below(kite: KiteConnect, key: str = "NSE:INFY") -> float:
    """A buy price on the tick grid that rests (10% under the last price)."""
    last = kite.ltp(key)[key]["last_price"]
    return round(round(last * 0.9 / 0.05) * 0.05, 2)


def _resting_buy(kite: KiteConnect, tag: str) -> dict[str, Any]:
    return {
        "variety": "regular",
        "exchange": "NSE",
        "tradingsymbol": "INFY",
        "transaction_type": "BUY",
        "quantity": 1,
        "product": "CNC",
        "order_type": "LIMIT",
        "price": _far_below(kite),
        "tag": tag,
    }


def _faults(sim: ThreadedSimulator, spec: dict[str, Any]) -> None:
    response = requests.post(f"{sim.rest_url}/_sim/faults", json=spec, timeout=10)
    assert response.status_code == 200, response.text


def _counters(sim: ThreadedSimulator) -> dict[str, Any]:
    response = requests.get(f"{sim.rest_url}/_sim/counters?per_instrument=0", timeout=10)
    return dict(response.json())


def _with_tag(kite: KiteConnect, tag: str) -> list[dict[str, Any]]:
    return [o for o in kite.orders() if o["tag"] == tag]


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("hang_after_accept", requests.exceptions.Timeout),
        ("reset_after_accept", requests.exceptions.ConnectionError),
    ],
)
def test_an_order_whose_answer_is_lost_is_found_by_its_tag(
    sim: ThreadedSimulator, kind: str, error: type[Exception]
) -> None:
    # Given a client with a 1 s timeout, and a fault that loses the answer of its next placement
    kite = login(sim)
    impatient = KiteConnect(
        kite.api_key, access_token=kite.access_token, root=sim.rest_url, timeout=1
    )
    _faults(
        sim,
        {
            "kind": kind,
            "seconds": 30,
            "path_prefix": "/orders",
            "method": "POST",
            "api_key": kite.api_key,
        },
    )
    fired = _counters(sim)["faults"].get(kind, 0)
    tag = _tag()
    # When it places an order
    with pytest.raises(error):
        impatient.place_order(**_resting_buy(kite, tag))
    # Then the order was placed all the same, once, and the order book finds it by its tag
    found = _with_tag(kite, tag)
    assert len(found) == 1
    assert found[0]["status"] == "OPEN"
    assert found[0]["tags"] == [tag]
    assert _counters(sim)["faults"][kind] == fired + 1
    # And the fault is used up: the next placement is answered
    assert impatient.place_order(**_resting_buy(kite, _tag()))


def test_order_calls_per_key_are_counted_with_their_busiest_second() -> None:
    # Given Kite's own limits (10 order calls per second per key)
    with ThreadedSimulator(SimConfig(seed=3, accounts=[AccountConfig(), AccountConfig()])) as sim:
        kite = login(sim)
        other = login(sim, account_index=1)
        order = _resting_buy(kite, _tag())  # one quote call: quotes are limited to 1/s
        # When one key bursts 12 placements and the other places 3
        refused = []
        for _ in range(12):
            try:
                kite.place_order(**{**order, "tag": _tag()})
            except kex.NetworkException as exc:
                refused.append(exc.code)
        for _ in range(3):
            other.place_order(**{**order, "tag": _tag()})
        # Then the admin counters show, per key, what reached kite_sim and its busiest second
        rates = _counters(sim)["order_rate"]
    burst, calm = rates[kite.api_key], rates[other.api_key]
    assert burst["received"] == 12
    assert set(refused) == {429}
    assert burst["refused"] == len(refused) >= 2
    assert burst["max_received_in_window"] > 10  # the client broke Kite's limit ...
    assert burst["max_accepted_in_window"] <= 10  # ... and kite_sim refused the excess
    assert calm["max_received_in_window"] == 3
    assert len(calm["timestamps"]) == 3


def test_iceberg_legs_are_orders_in_the_book(sim: ThreadedSimulator) -> None:
    # Given a marketable iceberg of 3 shares in legs of at most 2
    kite = login(sim)
    tag = _tag()
    last = kite.ltp("NSE:INFY")["NSE:INFY"]["last_price"]
    first = kite.place_order(
        variety="iceberg",
        exchange="NSE",
        tradingsymbol="INFY",
        transaction_type="BUY",
        quantity=3,
        product="CNC",
        order_type="LIMIT",
        price=round(round(last * 1.02 / 0.05) * 0.05, 2),
        iceberg_legs=2,
        iceberg_quantity=2,
        tag=tag,
    )
    # When both legs have filled
    wait_until(
        lambda: [o["status"] for o in _with_tag(kite, tag)] == ["COMPLETE", "COMPLETE"],
        what="two complete iceberg legs",
    )
    # Then the answer named the first leg, and each leg is its own order with Kite's meta
    legs = _with_tag(kite, tag)
    assert legs[0]["order_id"] == first
    assert [o["quantity"] for o in legs] == [2, 1]
    assert [o["meta"]["iceberg"]["leg"] for o in legs] == [1, 2]
    assert {o["meta"]["iceberg"]["total_quantity"] for o in legs} == {3}
    assert {o["variety"] for o in legs} == {"iceberg"}
    traded = sum(t["quantity"] for o in legs for t in kite.order_trades(o["order_id"]))
    assert traded == 3


def test_amo_is_refused_while_the_market_is_open(sim: ThreadedSimulator) -> None:
    kite = login(sim)
    with pytest.raises(kex.InputException, match="outside market hours"):
        kite.place_order(**{**_resting_buy(kite, _tag()), "variety": "amo"})


def test_cover_order_exit_sells_at_market(sim: ThreadedSimulator) -> None:
    # Given a filled cover order with its stop-loss leg pending
    kite = login(sim)
    tag = _tag()
    last = kite.ltp("NSE:INFY")["NSE:INFY"]["last_price"]
    entry = kite.place_order(
        variety="co",
        exchange="NSE",
        tradingsymbol="INFY",
        transaction_type="BUY",
        quantity=1,
        product="MIS",
        order_type="MARKET",
        market_protection=-1,
        trigger_price=round(round(last * 0.95 / 0.05) * 0.05, 2),
        tag=tag,
    )
    wait_until(lambda: len(_with_tag(kite, tag)) == 2, what="the stop-loss leg")
    leg = next(o for o in _with_tag(kite, tag) if o["parent_order_id"] == entry)
    assert leg["status"] == "TRIGGER PENDING"
    # When the cover order is exited through its leg
    kite.exit_order("co", leg["order_id"], parent_order_id=entry)
    # Then the leg sold at market and the position is flat
    wait_until(lambda: kite.order_history(leg["order_id"])[-1]["status"] == "COMPLETE")
    mis = [
        p for p in kite.positions()["net"] if p["tradingsymbol"] == "INFY" and p["product"] == "MIS"
    ]
    assert mis
    assert mis[0]["quantity"] == 0


def test_auction_order_sells_holdings_at_the_auction_close() -> None:
    # Given a simulator at 14:05 IST on a trading day, during NSE's auction session
    calendar = NseCalendar.load()
    day = default_market_start(calendar).date()
    start = datetime.combine(day, time(14, 5), IST)
    config = SimConfig(
        seed=5, market_start=start, session_loop=False, rate_limits=scaled_limits(100)
    )
    with ThreadedSimulator(config) as sim:
        kite = login(sim)
        # When the account sells what an auction wants at the 20% ceiling
        lot = kite.get_auction_instruments()[0]
        key = f"NSE:{lot['tradingsymbol']}"
        ceiling = kite.quote(key)[key]["upper_circuit_limit"]
        order_id = kite.place_order(
            variety="auction",
            exchange="NSE",
            tradingsymbol=lot["tradingsymbol"],
            transaction_type="SELL",
            quantity=lot["quantity"],
            product="CNC",
            order_type="LIMIT",
            price=ceiling,
            auction_number=lot["auction_number"],
        )
        # Then it rests with its auction number until the auction closes at 14:30
        placed = kite.order_history(order_id)[-1]
        assert (placed["status"], placed["auction_number"]) == ("OPEN", lot["auction_number"])
        with pytest.raises(kex.InputException):
            kite.modify_order("auction", order_id, price=ceiling - 1)
        requests.post(
            f"{sim.rest_url}/_sim/clock",
            json={"set": (start + timedelta(minutes=25)).isoformat()},
            timeout=10,
        )
        wait_until(lambda: kite.order_history(order_id)[-1]["status"] == "COMPLETE")
        trades = kite.order_trades(order_id)
        assert sum(t["quantity"] for t in trades) == lot["quantity"]
        assert {t["average_price"] for t in trades} == {ceiling}
        # And an auction number the account has no lot in is an input error
        with pytest.raises(kex.InputException, match="auction_number"):
            kite.place_order(
                variety="auction",
                exchange="NSE",
                tradingsymbol=lot["tradingsymbol"],
                transaction_type="SELL",
                quantity=1,
                product="CNC",
                order_type="LIMIT",
                price=ceiling,
                auction_number="99999",
            )
