"""The official kiteconnect clients, unmodified, against the simulator over loopback."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from kiteconnect import KiteConnect
from kiteconnect import exceptions as kex

from kite_sim.clock import ManualClock
from kite_sim.config import SimConfig
from kite_sim.server import ThreadedSimulator
from tests.integration.kite_sim.clients import PostbackReceiver, TickerProbe, login
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


def _tokens(kite: KiteConnect) -> dict[str, int]:
    """Tokens of one instrument of each kind the feed must encode."""
    rows = kite.instruments()
    by_symbol = {(r["exchange"], r["tradingsymbol"]): r for r in rows}
    option = next(r for r in rows if r["segment"] == "NFO-OPT" and r["name"] == "NIFTY")
    cds = next(r for r in rows if r["segment"] == "CDS-FUT")
    bcd = next(r for r in rows if r["segment"] == "BCD-FUT")
    return {
        "index": by_symbol[("NSE", "NIFTY 50")]["instrument_token"],
        "equity": by_symbol[("NSE", "INFY")]["instrument_token"],
        "option": option["instrument_token"],
        "cds": cds["instrument_token"],
        "bcd": bcd["instrument_token"],
    }


def test_login_via_generate_session_and_profile(sim: ThreadedSimulator) -> None:
    # Given the app's login redirect
    # When the request token is exchanged by generate_session
    kite = login(sim)
    # Then the session works for authenticated calls
    profile = kite.profile()
    assert profile["user_id"] == sim.accounts[0].user_id
    assert set(kite.margins()) == {"equity", "commodity"}


def test_wrong_checksum_is_a_token_exception(sim: ThreadedSimulator) -> None:
    account = sim.accounts[0]
    response = requests.get(
        f"{sim.rest_url}/connect/login",
        params={"api_key": account.api_key},
        allow_redirects=False,
        timeout=10,
    )
    request_token = response.headers["Location"].rsplit("request_token=", 1)[1]
    kite = KiteConnect(account.api_key, root=sim.rest_url)
    with pytest.raises(kex.TokenException) as info:
        kite.generate_session(request_token, "not-the-secret")
    assert info.value.code == 403


def test_expired_token_raises_token_exception_and_calls_hook(sim: ThreadedSimulator) -> None:
    # Given a logged-in client with a session expiry hook
    kite = login(sim)
    hooked: list[bool] = []
    kite.set_session_expiry_hook(lambda: hooked.append(True))
    # When the simulator expires the token (admin API)
    response = requests.post(
        f"{sim.rest_url}/_sim/tokens/expire", json={"access_token": kite.access_token}, timeout=10
    )
    assert response.json() == {"expired": 1}
    # Then REST calls fail with 403 TokenException and the hook runs
    with pytest.raises(kex.TokenException) as info:
        kite.profile()
    assert info.value.code == 403
    assert hooked == [True]


def traded_equity_ticks(ticks: list[dict[str, Any]], token: int) -> Iterator[dict[str, Any]]:
    """Full-mode ticks of ``token`` that report a trade today."""
    return (
        t
        for t in ticks
        if t["instrument_token"] == token and t["mode"] == "full" and t["volume_traded"] > 0
    )


def test_ticker_receives_ltp_quote_and_full_ticks(sim: ThreadedSimulator, reactor: Any) -> None:
    # Given a session and instruments across segments (NSE, INDICES, NFO, CDS, BCD)
    kite = login(sim)
    tokens = _tokens(kite)
    modes = {
        tokens["index"]: "full",
        tokens["equity"]: "full",
        tokens["option"]: "quote",
        tokens["cds"]: "ltp",
        tokens["bcd"]: "quote",
    }

    def subscribe(ws: Any) -> None:
        ws.subscribe(list(modes))
        for token, mode in modes.items():
            ws.set_mode(mode, [token])

    probe = TickerProbe(
        reactor, kite.api_key, kite.access_token, sim.ws_url, on_connect=subscribe
    ).connect()
    try:
        # When ticks flow for a while
        # (a full tick carries volume only after the day's first trade: the
        # session-scoped simulator's day may have just rolled over)
        wait_until(
            lambda: (
                {
                    t["instrument_token"]
                    for t in probe.ticks
                    if t["mode"] == modes.get(t["instrument_token"])
                }
                >= set(modes)
                and any(traded_equity_ticks(probe.ticks, tokens["equity"]))
            ),
            within=15,
            what="a tick in the requested mode for every instrument, and a traded equity tick",
        )
    finally:
        probe.close()
    latest = {t["instrument_token"]: t for t in probe.ticks}
    # Then each instrument's last tick is in its mode, with plausible, correctly scaled values
    index = latest[tokens["index"]]
    assert index["mode"] == "full"
    assert index["tradable"] is False
    assert 10_000 < index["last_price"] < 50_000
    assert index["exchange_timestamp"] is not None
    equity = list(traded_equity_ticks(probe.ticks, tokens["equity"]))[-1]
    assert equity["mode"] == "full"
    assert equity["tradable"] is True
    assert len(equity["depth"]["buy"]) == len(equity["depth"]["sell"]) == 5
    best_bid, best_ask = equity["depth"]["buy"][0]["price"], equity["depth"]["sell"][0]["price"]
    assert best_bid < best_ask
    assert equity["volume_traded"] > 0
    assert equity["ohlc"]["low"] <= equity["last_price"] <= equity["ohlc"]["high"]
    option = latest[tokens["option"]]
    assert option["mode"] == "quote"
    assert "depth" not in option
    cds = latest[tokens["cds"]]
    assert cds["mode"] == "ltp"
    assert 70 < cds["last_price"] < 100  # divisor 1e7
    bcd = latest[tokens["bcd"]]
    assert 70 < bcd["last_price"] < 100  # divisor 1e4
    # And the REST quote agrees with the feed's scale
    ltp = kite.ltp(str(tokens["cds"]))[str(tokens["cds"])]["last_price"]
    assert abs(ltp - cds["last_price"]) < 1.0


def test_orders_placed_modified_cancelled_filled_with_socket_updates_and_postbacks(
    sim: ThreadedSimulator, reactor: Any, postback_receiver: PostbackReceiver
) -> None:
    # Given a session, a ticker listening for order updates, and the app's postback URL
    kite = login(sim)
    probe = TickerProbe(reactor, kite.api_key, kite.access_token, sim.ws_url).connect()
    wait_until(probe.kws.is_connected, what="ticker connected")
    try:
        last = kite.ltp("NSE:INFY")["NSE:INFY"]["last_price"]
        far = round(round(last * 0.9 / 0.05) * 0.05, 2)
        # When an order is placed away from the market, modified, then cancelled
        resting = kite.place_order(
            variety=kite.VARIETY_REGULAR,
            exchange=kite.EXCHANGE_NSE,
            tradingsymbol="INFY",
            transaction_type=kite.TRANSACTION_TYPE_BUY,
            quantity=2,
            product=kite.PRODUCT_CNC,
            order_type=kite.ORDER_TYPE_LIMIT,
            price=far,
            tag="simtest",
        )
        assert kite.order_history(resting)[-1]["status"] == "OPEN"
        kite.modify_order(kite.VARIETY_REGULAR, resting, quantity=3, price=far + 0.5)
        kite.cancel_order(kite.VARIETY_REGULAR, resting)
        # And a MARKET order (with market_protection) fills
        filled = kite.place_order(
            variety=kite.VARIETY_REGULAR,
            exchange=kite.EXCHANGE_NSE,
            tradingsymbol="INFY",
            transaction_type=kite.TRANSACTION_TYPE_BUY,
            quantity=1,
            product=kite.PRODUCT_CNC,
            order_type=kite.ORDER_TYPE_MARKET,
            market_protection=kite.MARKET_PROTECTION_AUTO,
        )
        # Then the order book, history and trades say so
        statuses = [h["status"] for h in kite.order_history(resting)]
        assert statuses[-1] == "CANCELLED"
        assert kite.order_history(resting)[-1]["quantity"] == 3
        assert kite.order_history(filled)[-1]["status"] == "COMPLETE"
        trade = kite.order_trades(filled)[0]
        assert trade["quantity"] == 1
        assert any(p["tradingsymbol"] == "INFY" for p in kite.positions()["net"])
        # And the socket got the updates of both orders
        wait_until(
            lambda: (
                {(o["order_id"], o["status"]) for o in probe.orders}
                >= {
                    (resting, "OPEN"),
                    (resting, "UPDATE"),
                    (resting, "CANCELLED"),
                    (filled, "COMPLETE"),
                }
            ),
            what="order updates on the socket",
        )
        # And postbacks arrived with Kite's checksum
        wait_until(
            lambda: (
                {(b["order_id"], b["status"]) for b in postback_receiver.bodies}
                >= {(resting, "UPDATE"), (resting, "CANCELLED"), (filled, "COMPLETE")}
            ),
            what="postbacks",
        )
    finally:
        probe.close()
    secret = sim.accounts[0].api_secret
    for body in postback_receiver.bodies:
        expected = hashlib.sha256(
            (body["order_id"] + body["order_timestamp"] + secret).encode()
        ).hexdigest()
        assert body["checksum"] == expected
    assert {(b["order_id"], b["status"]) for b in postback_receiver.bodies} >= {
        (resting, "CANCELLED"),
        (filled, "COMPLETE"),
    }
    # And an update delivered both ways is the same update (the postback adds its checksum),
    # so a receiver can store it once
    for order_id, status in ((resting, "UPDATE"), (resting, "CANCELLED"), (filled, "COMPLETE")):
        on_socket = next(
            o for o in probe.orders if (o["order_id"], o["status"]) == (order_id, status)
        )
        posted = next(
            b
            for b in postback_receiver.bodies
            if (b["order_id"], b["status"]) == (order_id, status)
        )
        assert on_socket["checksum"] == ""
        assert {**on_socket, "checksum": posted["checksum"]} == posted


def test_market_order_without_protection_is_an_input_exception(sim: ThreadedSimulator) -> None:
    kite = login(sim)
    with pytest.raises(kex.InputException) as info:
        kite.place_order(
            variety="regular",
            exchange="NSE",
            tradingsymbol="INFY",
            transaction_type="BUY",
            quantity=1,
            product="CNC",
            order_type="MARKET",
        )
    assert info.value.code == 400


def test_orders_from_an_unregistered_ip_are_refused(sim: ThreadedSimulator) -> None:
    kite = login(sim, account_index=1)
    account = sim.accounts[1]
    sim.call(lambda: setattr(account, "registered_ips", {"203.0.113.7"}))
    try:
        with pytest.raises(kex.PermissionException):
            kite.place_order(
                variety="regular",
                exchange="NSE",
                tradingsymbol="INFY",
                transaction_type="BUY",
                quantity=1,
                product="CNC",
                order_type="LIMIT",
                price=1.0,
            )
    finally:
        sim.call(lambda: setattr(account, "registered_ips", {"127.0.0.1"}))


def test_ticker_handshake_with_expired_token_is_403(sim: ThreadedSimulator, reactor: Any) -> None:
    # Given a token the simulator has expired
    kite = login(sim)
    requests.post(
        f"{sim.rest_url}/_sim/tokens/expire", json={"access_token": kite.access_token}, timeout=10
    )
    # When KiteTicker connects with it
    probe = TickerProbe(reactor, kite.api_key, kite.access_token, sim.ws_url).connect()
    # Then the handshake is refused with HTTP 403
    wait_until(lambda: probe.failed_with(403), what="a 403 handshake failure")
    assert probe.connects == 0
    probe.close()


def test_fourth_connection_of_an_api_key_is_429(sim: ThreadedSimulator, reactor: Any) -> None:
    # Given three open connections for one API key
    kite = login(sim, account_index=1)
    probes = [
        TickerProbe(reactor, kite.api_key, kite.access_token, sim.ws_url).connect()
        for _ in range(3)
    ]
    try:
        for probe in probes:
            wait_until(probe.kws.is_connected, what="three connections")
        # When a fourth connects
        fourth = TickerProbe(reactor, kite.api_key, kite.access_token, sim.ws_url).connect()
        # Then it is refused at the handshake with HTTP 429
        wait_until(lambda: fourth.failed_with(429), what="a 429 handshake failure")
        assert fourth.connects == 0
        fourth.close()
    finally:
        for probe in probes:
            probe.close()


def test_dropped_connection_is_reconnected_by_the_ticker(
    sim: ThreadedSimulator, reactor: Any
) -> None:
    kite = login(sim)
    token = _tokens(kite)["equity"]
    probe = TickerProbe(
        reactor,
        kite.api_key,
        kite.access_token,
        sim.ws_url,
        on_connect=lambda ws: ws.subscribe([token]),
        reconnect=True,
    ).connect()
    try:
        wait_until(lambda: probe.ticks, what="first ticks")
        # When the simulator drops the connection (fault injection)
        requests.post(
            f"{sim.rest_url}/_sim/faults",
            json={"kind": "drop", "api_key": kite.api_key},
            timeout=10,
        )
        # Then KiteTicker reconnects, resubscribes and ticks again
        wait_until(lambda: probe.connects >= 2, within=20, what="a reconnect")
        before = len(probe.ticks)
        wait_until(lambda: len(probe.ticks) > before, what="ticks after reconnect")
    finally:
        probe.close()


def test_injected_rest_errors_reach_the_client_as_kite_exceptions(sim: ThreadedSimulator) -> None:
    kite = login(sim)
    requests.post(
        f"{sim.rest_url}/_sim/faults",
        json=[
            {"kind": "rest_error", "status": 503, "path_prefix": "/user/profile"},
            {"kind": "rest_error", "status": 500, "path_prefix": "/orders"},
        ],
        timeout=10,
    )
    with pytest.raises(kex.NetworkException) as network:
        kite.profile()
    assert network.value.code == 503
    with pytest.raises(kex.GeneralException) as general:
        kite.orders()
    assert general.value.code == 500
    assert kite.profile()["user_id"]  # one-shot faults are used up


def test_rest_bursts_are_rate_limited_with_429() -> None:
    # Given a simulator with Kite's own REST limits, on a clock only the test moves
    clock = ManualClock()
    with ThreadedSimulator(SimConfig(seed=2), clock=clock) as sim:
        kite = login(sim)
        # When quotes (1/s) and order placements (10/s) come in bursts
        quote_errors = []
        for _ in range(3):
            try:
                kite.ltp("NSE:INFY")
            except kex.NetworkException as exc:
                quote_errors.append(exc.code)
        order_errors = []
        for _ in range(12):
            try:
                kite.place_order(
                    variety="regular",
                    exchange="NSE",
                    tradingsymbol="INFY",
                    transaction_type="BUY",
                    quantity=1,
                    product="CNC",
                    order_type="LIMIT",
                    price=1.0,
                )
            except kex.NetworkException as exc:
                order_errors.append(exc.code)
            except kex.KiteException:
                pass
        # Then the calls over the limit fail with HTTP 429
        assert quote_errors == [429, 429]
        assert order_errors
        assert set(order_errors) == {429}
        # And the limit holds until its one-second window has passed, then calls work again
        with pytest.raises(kex.NetworkException):
            kite.ltp("NSE:INFY")
        sim.call(lambda: clock.advance(1.0))
        assert kite.ltp("NSE:INFY")
