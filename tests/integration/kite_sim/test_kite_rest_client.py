"""The project's Kite REST client against the simulator, over real sockets.

The login exchange, an order's life, the portfolio, GTTs, Kite's error
envelopes, 429, an expired session, and the case the trading API depends
on: a placement whose answer never came is reported as "outcome unknown"
and is not sent again.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from kite_sim.server import ThreadedSimulator
from tests.waiting import wait_until
from ticker_adapters.kite_rest import KiteRestClient, KiteTransport, retry_transient
from ticker_adapters.retry import no_delays
from ticker_core.kite_errors import (
    KiteGeneralError,
    KiteInputError,
    KiteOrderError,
    KiteOutcomeUnknownError,
    KiteTokenError,
    KiteTooManyRequestsError,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def sim_faults(sim: ThreadedSimulator) -> Iterator[ThreadedSimulator]:
    """The session's simulator; every fault a test injects is cleared after it."""
    yield sim
    running = sim.sim
    assert running is not None
    sim.call(running.faults.clear)


def transport(sim: ThreadedSimulator, *, read_timeout: float = 10.0) -> KiteTransport:
    return KiteTransport(
        sim.rest_url,
        connect_timeout=5,
        read_timeout=read_timeout,
        retry=retry_transient(3),
        delays=no_delays,
    )


def request_token(sim: ThreadedSimulator, api_key: str) -> str:
    """The browser's half of the login: Kite redirects to the app with a request token."""
    response = requests.get(
        f"{sim.rest_url}/connect/login",
        params={"api_key": api_key, "v": "3"},
        allow_redirects=False,
        timeout=10,
    )
    assert response.status_code == 302
    return parse_qs(urlsplit(response.headers["Location"]).query)["request_token"][0]


def logged_in(sim: ThreadedSimulator, account_index: int = 0) -> KiteRestClient:
    account = sim.accounts[account_index]
    token = sim.issue_access_token(account_index)
    return KiteRestClient(account.api_key, token, transport=transport(sim))


def rest_requests(sim: ThreadedSimulator) -> int:
    """REST requests the simulator has received (counted as they arrive)."""
    running = sim.sim
    assert running is not None
    return int(sim.call(lambda: running.rest_counts.get("requests", 0)))


def rest_in_flight(sim: ThreadedSimulator) -> int:
    """REST requests received but not yet answered (plus redirects, which are not counted)."""
    running = sim.sim
    assert running is not None
    counts = sim.call(lambda: dict(running.rest_counts))
    return counts.get("requests", 0) - sum(v for k, v in counts.items() if k != "requests")


def far_below_market(kite: KiteRestClient, symbol: str = "NSE:INFY") -> float:
    last = kite.ltp(symbol)[symbol]["last_price"]
    return round(round(last * 0.9 / 0.05) * 0.05, 2)


def test_the_login_exchange_gives_a_session_that_works_and_can_be_ended(
    sim: ThreadedSimulator,
) -> None:
    account = sim.accounts[0]
    kite = KiteRestClient(account.api_key, transport=transport(sim))
    # When the request token is exchanged with the app's secret
    session = kite.generate_session(request_token(sim, account.api_key), account.api_secret)
    # Then the session is the account's, and the client uses it
    assert session["user_id"] == account.user_id
    assert kite.access_token == session["access_token"]
    assert kite.profile()["user_id"] == account.user_id
    # When the session is invalidated, Then its token is refused
    assert kite.invalidate_access_token() is True
    with pytest.raises(KiteTokenError) as refused:
        kite.profile()
    assert refused.value.http_status == 403


def test_a_wrong_secret_is_refused_by_type(sim: ThreadedSimulator) -> None:
    account = sim.accounts[0]
    kite = KiteRestClient(account.api_key, transport=transport(sim))
    with pytest.raises(KiteTokenError):
        kite.generate_session(request_token(sim, account.api_key), "not-the-secret")
    assert kite.access_token is None


def test_an_order_is_placed_modified_and_cancelled(sim: ThreadedSimulator) -> None:
    kite = logged_in(sim)
    price = far_below_market(kite)
    # When a LIMIT order is placed away from the market
    order_id = kite.place_order(
        variety="regular",
        exchange="NSE",
        tradingsymbol="INFY",
        transaction_type="BUY",
        quantity=2,
        product="CNC",
        order_type="LIMIT",
        price=price,
        tag="restclient1",
    )
    # Then it rests in the order book with its tag
    assert kite.order_history(order_id)[-1]["status"] == "OPEN"
    assert any(o["order_id"] == order_id and o["tag"] == "restclient1" for o in kite.orders())
    # When it is modified and then cancelled
    assert kite.modify_order("regular", order_id, quantity=3, price=price + 0.5) == order_id
    assert kite.cancel_order("regular", order_id) == order_id
    # Then its history says so, and it never traded
    history = kite.order_history(order_id)
    assert (history[-1]["status"], history[-1]["quantity"]) == ("CANCELLED", 3)
    assert kite.order_trades(order_id) == []
    # And cancelling it again is Kite's order error, not a success
    with pytest.raises(KiteOrderError) as again:
        kite.cancel_order("regular", order_id)
    assert (again.value.http_status, again.value.error_type) == (400, "OrderException")


def test_a_market_order_fills_into_the_portfolio(sim: ThreadedSimulator) -> None:
    kite = logged_in(sim)
    order_id = kite.place_order(
        "regular", "NSE", "SBIN", "BUY", 1, "MIS", "MARKET", market_protection=-1
    )
    assert kite.order_history(order_id)[-1]["status"] == "COMPLETE"
    assert kite.order_trades(order_id)[0]["quantity"] == 1
    assert any(t["order_id"] == order_id for t in kite.trades())
    positions = kite.positions()
    assert any(p["tradingsymbol"] == "SBIN" and p["product"] == "MIS" for p in positions["net"])
    assert kite.convert_position("NSE", "SBIN", "BUY", "day", 1, "MIS", "CNC") is True
    assert isinstance(kite.holdings(), list)
    margins = kite.margins()
    assert set(margins) >= {"equity", "commodity"}
    assert "net" in kite.margins("equity")
    assert kite.order_margins(
        [{"exchange": "NSE", "tradingsymbol": "INFY", "transaction_type": "BUY",
          "variety": "regular", "product": "CNC", "order_type": "MARKET", "quantity": 1,
          "price": 0, "trigger_price": 0}]
    )[0]["tradingsymbol"] == "INFY"  # fmt: skip


def test_a_gtt_is_created_read_modified_and_deleted(sim: ThreadedSimulator) -> None:
    kite = logged_in(sim)
    last = kite.ltp("NSE:INFY")["NSE:INFY"]["last_price"]
    low, high = round(last * 0.8, 1), round(last * 1.2, 1)
    legs = [
        {"transaction_type": "SELL", "quantity": 1, "order_type": "LIMIT", "product": "CNC",
         "price": low},
        {"transaction_type": "SELL", "quantity": 1, "order_type": "LIMIT", "product": "CNC",
         "price": high},
    ]  # fmt: skip
    # When a two-leg GTT is created
    trigger_id = kite.place_gtt("two-leg", "INFY", "NSE", [low, high], last, legs)["trigger_id"]
    # Then it can be read, alone and in the list
    assert kite.get_gtt(trigger_id)["condition"]["trigger_values"] == [low, high]
    assert trigger_id in [g["id"] for g in kite.get_gtts()]
    # When it is modified, Then the new triggers are kept
    lower = round(last * 0.7, 1)
    legs[0]["price"] = lower
    modified = kite.modify_gtt(trigger_id, "two-leg", "INFY", "NSE", [lower, high], last, legs)
    assert modified["trigger_id"] == trigger_id
    assert kite.get_gtt(trigger_id)["condition"]["trigger_values"] == [lower, high]
    # When it is deleted, Then it is gone (a 404: Kite's GeneralException)
    assert kite.delete_gtt(trigger_id)["trigger_id"] == trigger_id
    with pytest.raises(KiteGeneralError) as gone:
        kite.get_gtt(trigger_id)
    assert gone.value.http_status == 404


def test_market_data_calls_answer_by_instrument(sim: ThreadedSimulator) -> None:
    kite = logged_in(sim)
    assert set(kite.quote("NSE:INFY", "NSE:SBIN")) == {"NSE:INFY", "NSE:SBIN"}
    assert "ohlc" in kite.ohlc(["NSE:INFY"])["NSE:INFY"]
    token = kite.ltp("NSE:INFY")["NSE:INFY"]["instrument_token"]
    candles = kite.historical_data(token, "2024-06-03 09:15:00", "2024-06-03 10:15:00", "minute")
    assert candles
    assert set(candles[0]) == {"date", "open", "high", "low", "close", "volume"}
    dump = kite.instruments("NSE")
    assert dump.startswith(b"instrument_token,")


def test_kites_error_envelopes_arrive_typed(sim: ThreadedSimulator) -> None:
    kite = logged_in(sim)
    # A MARKET order without market protection: InputException, 400
    with pytest.raises(KiteInputError) as missing:
        kite.place_order("regular", "NSE", "INFY", "BUY", 1, "CNC", "MARKET")
    assert (missing.value.http_status, missing.value.error_type) == (400, "InputException")
    # An order that does not exist: 404
    with pytest.raises(KiteGeneralError) as unknown:
        kite.order_history("000000000000000")
    assert unknown.value.http_status == 404


def test_429_is_retried_for_reads_and_surfaces_for_writes(sim_faults: ThreadedSimulator) -> None:
    sim = sim_faults
    running = sim.sim
    assert running is not None
    kite = logged_in(sim)
    # Given one 429 on the order book, When it is read, Then the read is retried and succeeds
    sim.call(lambda: running.faults.fail_rest(429, 1, path_prefix="/orders", method="GET"))
    before = rest_requests(sim)
    assert isinstance(kite.orders(), list)
    assert rest_requests(sim) - before == 2
    # Given one 429 on placement, When an order is placed, Then it is refused typed, sent once
    sim.call(lambda: running.faults.fail_rest(429, 1, path_prefix="/orders", method="POST"))
    before = rest_requests(sim)
    with pytest.raises(KiteTooManyRequestsError) as limited:
        kite.place_order("regular", "NSE", "INFY", "BUY", 1, "CNC", "LIMIT", price=1.0)
    assert (limited.value.http_status, rest_requests(sim) - before) == (429, 1)


def test_an_expired_session_is_a_token_error(sim: ThreadedSimulator) -> None:
    kite = logged_in(sim, account_index=1)
    assert kite.profile()
    running = sim.sim
    assert running is not None
    token = kite.access_token
    assert sim.call(lambda: running.sessions.expire(access_token=token)) == 1
    before = rest_requests(sim)
    with pytest.raises(KiteTokenError) as expired:
        kite.orders()
    assert (expired.value.http_status, rest_requests(sim) - before) == (403, 1)


def test_a_placement_that_times_out_is_outcome_unknown_and_not_sent_again(
    sim_faults: ThreadedSimulator,
) -> None:
    sim = sim_faults
    running = sim.sim
    assert running is not None
    account = sim.accounts[0]
    token = sim.issue_access_token(0)
    kite = KiteRestClient(account.api_key, token, transport=transport(sim))
    impatient = KiteRestClient(account.api_key, token, transport=transport(sim, read_timeout=0.3))
    price = far_below_market(kite)
    # Given Kite answering only after the client has stopped waiting
    sim.call(lambda: setattr(running.faults, "rest_latency", 1.5))
    before, in_flight = rest_requests(sim), rest_in_flight(sim)
    # When an order is placed
    with pytest.raises(KiteOutcomeUnknownError) as unknown:
        impatient.place_order(
            "regular", "NSE", "INFY", "BUY", 1, "CNC", "LIMIT", price=price, tag="unknown1"
        )
    # Then the error says the request may have arrived
    assert unknown.value.http_status is None
    # And once the simulator has finished with it, it had arrived exactly once
    sim.call(lambda: setattr(running.faults, "rest_latency", 0.0))
    wait_until(
        lambda: rest_in_flight(sim) == in_flight, what="the simulator done with the placement"
    )
    assert rest_requests(sim) - before == 1
    # And the order book holds at most that one order
    assert len([o for o in kite.orders() if o.get("tag") == "unknown1"]) <= 1
