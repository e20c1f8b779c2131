"""kite_sim answers with the keys of Kite's documented responses, endpoint by endpoint.

``kite_mock_keys.json`` holds the key paths of Zerodha's published sample
responses (github.com/zerodha/kiteconnect-mocks, commit recorded in the
file), written by ``tools/kite_mock_keys.py``: ``required`` (in every record
of the sample) and ``allowed`` (in any record). For each endpoint, every
required key must be in every record kite_sim sends, and kite_sim sends no
key the samples do not know.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import requests

from kite_sim.auth import session_checksum
from kite_sim.server import ThreadedSimulator
from tests.integration.kite_sim.clients import PostbackReceiver
from tests.waiting import wait_until
from tools.kite_mock_keys import KEYED_BY_DATA, key_paths

pytestmark = pytest.mark.integration
TABLE = json.loads((Path(__file__).with_name("kite_mock_keys.json")).read_text())["endpoints"]
# Where one sample's keys stand for another answer's too: an order's history is
# its order-book rows over time; a postback is the order-book row plus
# user_id, unfilled_quantity, app_id and checksum (the order-book sample is newer).
ALSO_ALLOWED = {
    "order_info.json": ["orders.json"],
    "postback.json": ["orders.json"],
}


def _allowed(sample: str) -> set[str]:
    allowed = set(TABLE[sample]["allowed"])
    for other in ALSO_ALLOWED.get(sample, []):
        for path in TABLE[other]["allowed"]:
            # orders.json is a list: its rows' keys are "[].x"; a postback is one row
            allowed.add(path.removeprefix("[].") if sample == "postback.json" else path)
    return allowed


def assert_shape(sample: str, data: Any) -> None:
    """``data`` has every key the sample always has, and no key the samples lack."""
    required, allowed = key_paths(data, keyed_by_data=sample in KEYED_BY_DATA)
    missing = set(TABLE[sample]["required"]) - required
    unknown = allowed - _allowed(sample)
    problems = {"missing": sorted(missing), "not in Kite's samples": sorted(unknown)}
    assert problems == {"missing": [], "not in Kite's samples": []}, sample


class Rest:
    """Raw REST calls (the JSON as sent, not as a client reshapes it)."""

    def __init__(self, sim: ThreadedSimulator, account_index: int = 0) -> None:
        self.root = sim.rest_url
        account = sim.accounts[account_index]
        self.api_key = account.api_key
        self.token = sim.issue_access_token(account_index)
        self.headers = {"Authorization": f"token {self.api_key}:{self.token}"}

    def __call__(self, method: str, path: str, **kwargs: Any) -> Any:
        response = requests.request(
            method, f"{self.root}{path}", headers=self.headers, timeout=10, **kwargs
        )
        body = response.json()
        assert response.status_code == 200, body
        return body["data"]


@pytest.fixture(scope="module")
def rest(sim: ThreadedSimulator) -> Rest:
    return Rest(sim)


def _price(rest: Rest, key: str, factor: float) -> float:
    last = rest("GET", "/quote/ltp", params={"i": key})[key]["last_price"]
    return round(round(last * factor / 0.05) * 0.05, 2)


@pytest.fixture(scope="module")
def orders(rest: Rest, postback_receiver: PostbackReceiver) -> dict[str, str]:
    """A resting, a modified-then-cancelled, a filled and an iceberg order of account 0."""
    base = {
        "exchange": "NSE",
        "tradingsymbol": "INFY",
        "transaction_type": "BUY",
        "quantity": "1",
        "product": "CNC",
        "order_type": "LIMIT",
    }
    far = _price(rest, "NSE:INFY", 0.9)
    near = _price(rest, "NSE:INFY", 1.02)
    placed = rest("POST", "/orders/regular", data={**base, "price": far, "tag": "shape"})
    resting = placed["order_id"]
    assert_shape("order_response.json", placed)
    cancelled = rest("POST", "/orders/regular", data={**base, "price": far})["order_id"]
    assert_shape(
        "order_modify.json",
        rest("PUT", f"/orders/regular/{cancelled}", data={"price": far - 1}),
    )
    assert_shape("order_cancel.json", rest("DELETE", f"/orders/regular/{cancelled}"))
    filled = rest(
        "POST",
        "/orders/regular",
        data={**base, "order_type": "MARKET", "market_protection": "-1"},
    )["order_id"]
    iceberg = rest(
        "POST",
        "/orders/iceberg",
        data={
            **base,
            "quantity": "3",
            "price": near,
            "iceberg_legs": "2",
            "iceberg_quantity": "2",
            "validity": "TTL",
            "validity_ttl": "5",
        },
    )["order_id"]
    wait_until(
        lambda: any(b["order_id"] == filled for b in postback_receiver.bodies),
        what="the filled order's postback",
    )
    return {"resting": resting, "cancelled": cancelled, "filled": filled, "iceberg": iceberg}


def test_session_and_profile(sim: ThreadedSimulator) -> None:
    account = sim.accounts[0]
    login = requests.get(
        f"{sim.rest_url}/connect/login",
        params={"api_key": account.api_key},
        allow_redirects=False,
        timeout=10,
    )
    request_token = login.headers["Location"].rsplit("request_token=", 1)[1]
    session = requests.post(
        f"{sim.rest_url}/session/token",
        data={
            "api_key": account.api_key,
            "request_token": request_token,
            "checksum": session_checksum(account.api_key, request_token, account.api_secret),
        },
        timeout=10,
    ).json()["data"]
    assert_shape("generate_session.json", session)
    rest = Rest(sim)
    assert_shape("profile.json", rest("GET", "/user/profile"))
    logout = requests.delete(
        f"{sim.rest_url}/session/token",
        params={"api_key": account.api_key, "access_token": session["access_token"]},
        timeout=10,
    ).json()["data"]
    assert_shape("session_logout.json", logout)


def test_funds_and_margins(rest: Rest, orders: dict[str, str]) -> None:
    assert_shape("margins.json", rest("GET", "/user/margins"))
    assert_shape("margins_equity.json", rest("GET", "/user/margins/equity"))
    assert_shape("margin_commodity.json", rest("GET", "/user/margins/commodity"))


def test_order_book_history_and_trades(rest: Rest, orders: dict[str, str]) -> None:
    book = rest("GET", "/orders")
    assert {o["variety"] for o in book} >= {"regular", "iceberg"}
    assert_shape("orders.json", book)
    for order_id in orders.values():
        assert_shape("order_info.json", rest("GET", f"/orders/{order_id}"))
    assert_shape("trades.json", rest("GET", "/trades"))
    assert_shape("order_trades.json", rest("GET", f"/orders/{orders['filled']}/trades"))


def test_postback(postback_receiver: PostbackReceiver, orders: dict[str, str]) -> None:
    body = next(b for b in postback_receiver.bodies if b["order_id"] == orders["filled"])
    assert_shape("postback.json", body)


def test_portfolio(rest: Rest, orders: dict[str, str]) -> None:
    assert_shape("positions.json", rest("GET", "/portfolio/positions"))
    holdings = rest("GET", "/portfolio/holdings")
    assert_shape("holdings.json", holdings)
    assert date.fromisoformat(holdings[0]["authorised_date"][:10])
    assert_shape("auctions_list.json", rest("GET", "/portfolio/holdings/auctions"))
    converted = rest(
        "PUT",
        "/portfolio/positions",
        data={
            "exchange": "NSE",
            "tradingsymbol": "INFY",
            "transaction_type": "BUY",
            "position_type": "day",
            "quantity": "1",
            "old_product": "CNC",
            "new_product": "MIS",
        },
    )
    assert_shape("convert_position.json", converted)


def test_margin_and_charge_calculators(rest: Rest) -> None:
    basket = [
        {
            "exchange": "NSE",
            "tradingsymbol": "INFY",
            "transaction_type": side,
            "variety": "regular",
            "product": "CNC",
            "order_type": "MARKET",
            "quantity": 1,
            "price": 0,
        }
        for side in ("BUY", "SELL")
    ]
    assert_shape("order_margins.json", rest("POST", "/margins/orders", json=basket))
    assert_shape("basket_margins.json", rest("POST", "/margins/basket", json=basket))
    notes = [dict(o, order_id="1", average_price=1500.0) for o in basket]
    assert_shape("virtual_contract_note.json", rest("POST", "/charges/orders", json=notes))


def test_market_data(rest: Rest, sim: ThreadedSimulator) -> None:
    keys = {"i": ["NSE:INFY", "NSE:NIFTY 50"]}
    assert_shape("quote.json", rest("GET", "/quote", params=keys))
    assert_shape("ltp.json", rest("GET", "/quote/ltp", params=keys))
    assert_shape("ohlc.json", rest("GET", "/quote/ohlc", params=keys))
    token = rest("GET", "/quote/ltp", params={"i": "NSE:INFY"})["NSE:INFY"]["instrument_token"]
    window = {"from": "2024-06-03 09:15:00", "to": "2024-06-03 10:15:00"}
    path = f"/instruments/historical/{token}/minute"
    assert_shape("historical_minute.json", rest("GET", path, params=window))
    assert_shape("historical_oi.json", rest("GET", path, params={**window, "oi": "1"}))


def test_gtt(rest: Rest, sim: ThreadedSimulator) -> None:
    # A trigger on a stock no other test trades, fired by a shock to its price
    symbol = "TCS"
    key = f"NSE:{symbol}"
    last = rest("GET", "/quote/ltp", params={"i": key})[key]["last_price"]
    below = round(round(last * 0.97 / 0.05) * 0.05, 2)
    form = {
        "type": "single",
        "condition": json.dumps(
            {
                "exchange": "NSE",
                "tradingsymbol": symbol,
                "trigger_values": [below],
                "last_price": last,
            }
        ),
        "orders": json.dumps(
            [
                {
                    "exchange": "NSE",
                    "tradingsymbol": symbol,
                    "transaction_type": "BUY",
                    "quantity": 1,
                    "order_type": "LIMIT",
                    "product": "CNC",
                    "price": below,
                }
            ]
        ),
    }
    placed = rest("POST", "/gtt/triggers", data=form)
    assert_shape("gtt_place_order.json", placed)
    trigger_id = placed["trigger_id"]
    assert_shape("gtt_modify_order.json", rest("PUT", f"/gtt/triggers/{trigger_id}", data=form))
    assert_shape("gtt_get_order.json", rest("GET", f"/gtt/triggers/{trigger_id}"))
    requests.post(
        f"{sim.rest_url}/_sim/market/shock", json={"underlying": symbol, "pct": -6}, timeout=10
    )
    wait_until(
        lambda: rest("GET", f"/gtt/triggers/{trigger_id}")["status"] == "triggered",
        what="the trigger to fire",
    )
    fired = rest("GET", f"/gtt/triggers/{trigger_id}")
    assert fired["orders"][0]["result"]["order_result"]["status"] == "success"
    assert_shape("gtt_get_order.json", fired)
    assert_shape("gtt_get_orders.json", rest("GET", "/gtt/triggers"))
    assert_shape("gtt_delete_order.json", rest("DELETE", f"/gtt/triggers/{trigger_id}"))


def test_the_shape_check_can_fail() -> None:
    # Given a trade without its trade_id and with a key Kite does not send
    trade = {path.removeprefix("[]."): 0 for path in TABLE["trades.json"]["required"]}
    del trade["trade_id"]
    trade["invented"] = 0
    # When checked, Then both are named
    with pytest.raises(AssertionError) as failure:
        assert_shape("trades.json", [trade])
    assert "[].trade_id" in str(failure.value)
    assert "[].invented" in str(failure.value)
