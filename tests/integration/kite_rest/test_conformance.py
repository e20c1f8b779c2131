"""The project's Kite client against the official one: the same requests, the same errors.

Each call the project makes (or the trading API will make) is made by both
``kiteconnect.KiteConnect`` and :class:`KiteRestClient`, with the same
method name and arguments, against one recording server on 127.0.0.1; what
arrives must be the same request (method, path, query, body, and the
headers that matter). Then every Kite ``error_type`` is answered to both and
each must raise the same family of exception.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest

from tests.integration.kite_rest.peers import Recorded, RecordingServer, Reply
from ticker_adapters.kite_rest import KiteRestClient, KiteTransport, retry_transient
from ticker_core.kite_errors import (
    ERROR_TYPES,
    KiteDataError,
    KiteError,
    KiteGeneralError,
    KiteInputError,
    KiteNetworkError,
    KiteOrderError,
    KitePermissionError,
    KiteTokenError,
)

pytestmark = pytest.mark.integration

API_KEY = secrets.token_hex(8)
ACCESS_TOKEN = secrets.token_hex(16)  # a fake, for this loopback server only
OFFICIAL_FAMILIES: dict[type[KiteError], str] = {
    KiteGeneralError: "GeneralException",
    KiteTokenError: "TokenException",
    KitePermissionError: "PermissionException",
    KiteInputError: "InputException",
    KiteOrderError: "OrderException",
    KiteDataError: "DataException",
    KiteNetworkError: "NetworkException",
}
"""Our classes that stand for the official client's seven, by its names."""

INSTRUMENTS_CSV = (
    b"instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike,tick_size,"
    b"lot_size,instrument_type,segment,exchange\n"
    b"256265,1001,NIFTY 50,NIFTY 50,0,,0,0,0,EQ,INDICES,NSE\n"
    b"738561,2885,RELIANCE,RELIANCE INDUSTRIES,0,,0,0.05,1,EQ,NSE,NSE\n"
)
GTT_ORDERS = [
    {"transaction_type": "SELL", "quantity": 1, "order_type": "LIMIT", "product": "CNC",
     "price": 2900},
    {"transaction_type": "SELL", "quantity": 1, "order_type": "LIMIT", "product": "CNC",
     "price": 3100.5},
]  # fmt: skip
MARGIN_ORDERS = [
    {"exchange": "NSE", "tradingsymbol": "INFY", "transaction_type": "BUY", "variety": "regular",
     "product": "CNC", "order_type": "LIMIT", "quantity": 2, "price": 1500.5, "trigger_price": 0},
]  # fmt: skip
ORDER_ID = {"order_id": "240603000000001"}
TRIGGER_ID = {"trigger_id": 123}

Call = Callable[[Any], Any]
CASES: list[tuple[str, Call, Reply]] = [
    ("profile", lambda k: k.profile(), Reply.data({"user_id": "AB1234"})),
    ("margins", lambda k: k.margins(), Reply.data({"equity": {}})),
    ("margins_segment", lambda k: k.margins("equity"), Reply.data({"net": 1.0})),
    (
        "place_order_limit",
        lambda k: k.place_order(
            variety="regular",
            exchange="NSE",
            tradingsymbol="INFY",
            transaction_type="BUY",
            quantity=1,
            product="CNC",
            order_type="LIMIT",
            price=1500.55,
            validity="DAY",
            tag="idem-7f3a",
        ),
        Reply.data(ORDER_ID),
    ),
    (
        "place_order_every_parameter",
        lambda k: k.place_order(
            "iceberg",
            "NFO",
            "NIFTY24JUN23000CE",
            "SELL",
            500,
            "NRML",
            "SL",
            price=101.5,
            validity="TTL",
            validity_ttl=5,
            disclosed_quantity=50,
            trigger_price=100,
            iceberg_legs=5,
            iceberg_quantity=100,
            auction_number="22",
            tag="t",
            market_protection=-1,
        ),
        Reply.data(ORDER_ID),
    ),
    (
        "place_order_market_protection",
        lambda k: k.place_order(
            variety="amo",
            exchange="NSE",
            tradingsymbol="SBIN",
            transaction_type="SELL",
            quantity=3,
            product="MIS",
            order_type="SL-M",
            trigger_price=800.0,
            market_protection=2.5,
        ),
        Reply.data(ORDER_ID),
    ),
    (
        "modify_order",
        lambda k: k.modify_order(
            "regular",
            "240603000000001",
            quantity=2,
            price=1501.0,
            order_type="LIMIT",
            validity="DAY",
        ),
        Reply.data(ORDER_ID),
    ),
    (
        "modify_order_co_leg",
        lambda k: k.modify_order(
            "co",
            "240603000000002",
            parent_order_id="240603000000001",
            trigger_price=99.5,
            market_protection=-1,
        ),
        Reply.data(ORDER_ID),
    ),
    ("cancel_order", lambda k: k.cancel_order("regular", "240603000000001"), Reply.data(ORDER_ID)),
    (
        "cancel_order_with_parent",
        lambda k: k.cancel_order("co", "240603000000002", parent_order_id="240603000000001"),
        Reply.data(ORDER_ID),
    ),
    (
        "exit_order",
        lambda k: k.exit_order("co", "240603000000002", parent_order_id="240603000000001"),
        Reply.data(ORDER_ID),
    ),
    ("orders", lambda k: k.orders(), Reply.data([])),
    ("order_history", lambda k: k.order_history("240603000000001"), Reply.data([])),
    ("trades", lambda k: k.trades(), Reply.data([])),
    ("order_trades", lambda k: k.order_trades("240603000000001"), Reply.data([])),
    ("positions", lambda k: k.positions(), Reply.data({"net": [], "day": []})),
    ("holdings", lambda k: k.holdings(), Reply.data([])),
    (
        "convert_position",
        lambda k: k.convert_position("NSE", "INFY", "BUY", "day", 1, "MIS", "CNC"),
        Reply.data(True),
    ),
    ("order_margins", lambda k: k.order_margins(MARGIN_ORDERS), Reply.data([])),
    (
        "basket_order_margins",
        lambda k: k.basket_order_margins(MARGIN_ORDERS),
        Reply.data({"initial": {}, "final": {}, "orders": []}),
    ),
    (
        "basket_order_margins_compact",
        lambda k: k.basket_order_margins(MARGIN_ORDERS, consider_positions=False, mode="compact"),
        Reply.data({"initial": {}, "final": {}, "orders": []}),
    ),
    ("get_gtts", lambda k: k.get_gtts(), Reply.data([])),
    ("get_gtt", lambda k: k.get_gtt(123), Reply.data({"id": 123})),
    (
        "place_gtt_single",
        lambda k: k.place_gtt("single", "INFY", "NSE", [1400.0], 1500.0, GTT_ORDERS[:1]),
        Reply.data(TRIGGER_ID),
    ),
    (
        "place_gtt_two_leg",
        lambda k: k.place_gtt("two-leg", "INFY", "NSE", [2900, 3100.5], 3000, GTT_ORDERS),
        Reply.data(TRIGGER_ID),
    ),
    (
        "modify_gtt",
        lambda k: k.modify_gtt(123, "two-leg", "INFY", "NSE", [2800, 3200], 3000.25, GTT_ORDERS),
        Reply.data(TRIGGER_ID),
    ),
    ("delete_gtt", lambda k: k.delete_gtt(123), Reply.data(TRIGGER_ID)),
    (
        "quote",
        lambda k: k.quote("NSE:INFY", "NSE:RELIANCE", "256265"),
        Reply.data({"NSE:INFY": {"last_price": 1500.0}}),
    ),
    (
        "quote_as_a_list",
        lambda k: k.quote(["NSE:INFY", "BSE:SENSEX"]),
        Reply.data({"NSE:INFY": {"last_price": 1500.0}}),
    ),
    ("ltp", lambda k: k.ltp("NSE:INFY"), Reply.data({"NSE:INFY": {"last_price": 1.0}})),
    ("ohlc", lambda k: k.ohlc("NSE:INFY", "NFO:NIFTY24JUNFUT"), Reply.data({})),
    (
        "historical_data",
        lambda k: k.historical_data(
            256265, datetime(2024, 6, 3, 9, 15), datetime(2024, 6, 3, 15, 30), "5minute"
        ),
        Reply.data({"candles": [["2024-06-03T09:15:00+0530", 1, 2, 0.5, 1.5, 100]]}),
    ),
    (
        "historical_data_strings_continuous_oi",
        lambda k: k.historical_data(
            12345, "2024-06-01", "2024-06-03 12:00:00", "day", continuous=True, oi=True
        ),
        Reply.data({"candles": [["2024-06-03T00:00:00+0530", 1, 2, 0.5, 1.5, 100, 7]]}),
    ),
    (
        "instruments",
        lambda k: k.instruments(),
        Reply(content_type="text/csv", body=INSTRUMENTS_CSV),
    ),
    (
        "instruments_exchange_gzip",
        lambda k: k.instruments("NSE"),
        Reply(content_type="text/csv", body=INSTRUMENTS_CSV, gzip=True),
    ),
    ("invalidate_access_token", lambda k: k.invalidate_access_token(), Reply.data(True)),
]


@pytest.fixture(scope="module")
def server() -> Iterator[RecordingServer]:
    with RecordingServer() as running:
        yield running


def official(url: str, access_token: str | None = ACCESS_TOKEN) -> Any:
    from kiteconnect import KiteConnect

    return KiteConnect(API_KEY, access_token=access_token, root=url)


def ours(url: str, access_token: str | None = ACCESS_TOKEN) -> KiteRestClient:
    transport = KiteTransport(url, retry=retry_transient(1), connect_timeout=5, read_timeout=10)
    return KiteRestClient(API_KEY, access_token, transport=transport)


def wire(request: Recorded) -> dict[str, Any]:
    """What Kite acts on: method, path, query, body (form pairs or JSON) and three headers."""
    content_type = request.header("Content-Type")
    body: Any = request.form()
    if content_type is not None and "json" in content_type:
        body = json.loads(request.body)
    return {
        "method": request.method,
        "path": request.path,
        "query": request.query,
        "body": body,
        "content_type": content_type.split(";")[0] if content_type else None,
        "x_kite_version": request.header("X-Kite-Version"),
        "authorization": request.header("Authorization"),
    }


def both_send(server: RecordingServer, call: Call, **client_kwargs: Any) -> tuple[Any, Any]:
    """Each client's one request for ``call``."""
    server.take()
    call(official(server.url, **client_kwargs))
    (theirs,) = server.take()
    result = call(ours(server.url, **client_kwargs))
    (mine,) = server.take()
    return wire(theirs), wire(mine) | {"result": result}


@pytest.mark.parametrize(("call", "reply"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_call_puts_the_official_clients_request_on_the_wire(
    server: RecordingServer, call: Call, reply: Reply
) -> None:
    # Given a server answering as Kite would
    server.reply = reply
    # When both clients make the same call with the same arguments
    theirs, mine = both_send(server, call)
    # Then Kite receives the same request from each
    result = mine.pop("result")
    assert mine == theirs
    assert mine["x_kite_version"] == "3"
    assert mine["authorization"] == f"token {API_KEY}:{ACCESS_TOKEN}"
    # And ours answers with the envelope's data (the CSV bytes for the dump)
    if reply.content_type == "text/csv":
        assert result == INSTRUMENTS_CSV
    elif isinstance(json.loads(reply.body)["data"], dict) and "order_id" in reply.body.decode():
        assert result == ORDER_ID["order_id"]


def test_the_login_exchange_sends_the_official_checksum_and_keeps_the_token(
    server: RecordingServer,
) -> None:
    # Given Kite answering a login exchange with a session
    session = {
        "user_id": "AB1234",
        "access_token": "fresh-token",
        "login_time": "2024-06-03 08:00:00",
        "api_key": API_KEY,
    }
    server.reply = Reply.data(session)
    server.take()
    # When both clients, with no session yet, exchange the same request token
    theirs_client = official(server.url, access_token=None)
    theirs_client.generate_session("request-token-1", "api-secret-1")
    mine_client = ours(server.url, access_token=None)
    answer = mine_client.generate_session("request-token-1", "api-secret-1")
    theirs, mine = (wire(r) for r in server.take())
    # Then the same form (api_key, request_token, checksum) went, without Authorization
    assert mine == theirs
    assert mine["authorization"] is None
    assert [k for k, _ in mine["body"]] == ["api_key", "request_token", "checksum"]
    # And both now hold the session's token, which the next call carries
    assert answer == session
    assert mine_client.access_token == theirs_client.access_token == "fresh-token"
    server.reply = Reply.data({})
    mine_client.profile()
    (after,) = server.take()
    assert after.header("Authorization") == f"token {API_KEY}:fresh-token"


ERROR_CASES = [
    *[(status, error_type) for error_type, status in (
        ("TokenException", 403), ("PermissionException", 403), ("InputException", 400),
        ("OrderException", 400), ("DataException", 502), ("NetworkException", 503),
        ("GeneralException", 500), ("UserException", 403), ("MarginException", 400),
        ("HoldingException", 400), ("NetworkException", 429), ("BrandNewException", 500),
        ("TokenException", 200),
    )]
]  # fmt: skip
READ_AND_WRITE: list[tuple[str, Call]] = [
    ("profile", lambda k: k.profile()),
    ("place_order", lambda k: k.place_order("regular", "NSE", "INFY", "BUY", 1, "CNC", "MARKET")),
]


def family(kind: type[KiteError]) -> str:
    """The official client's class name for one of ours: the nearest of its seven."""
    return next(OFFICIAL_FAMILIES[c] for c in kind.__mro__ if c in OFFICIAL_FAMILIES)


def test_every_documented_error_type_is_covered() -> None:
    assert set(ERROR_TYPES) <= {error_type for _, error_type in ERROR_CASES}


@pytest.mark.parametrize(("status", "error_type"), ERROR_CASES)
@pytest.mark.parametrize(("name", "call"), READ_AND_WRITE, ids=[n for n, _ in READ_AND_WRITE])
def test_each_error_type_raises_the_official_clients_exception_family(
    server: RecordingServer, status: int, error_type: str, name: str, call: Call
) -> None:
    from kiteconnect import exceptions

    # Given Kite answering with an error envelope of this type and status
    server.reply = Reply.error(status, error_type, "refused for a reason")
    # When each client makes the call
    with pytest.raises(exceptions.KiteException) as theirs:
        call(official(server.url))
    with pytest.raises(KiteError) as mine:
        call(ours(server.url))
    # Then ours is in the family of the official exception, with the same status and message
    assert family(type(mine.value)) == type(theirs.value).__name__
    assert mine.value.http_status == theirs.value.code
    assert mine.value.message == "refused for a reason"
    # And keeps Kite's own name for the type
    assert mine.value.error_type == error_type
    server.take()
