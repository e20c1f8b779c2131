"""The one Kite Connect REST client: synchronous, pooled, typed errors, no blind retries.

Two parts. :class:`KiteTransport` is where and how requests go: the root URL
(HTTPS, or plain HTTP to a loopback simulator only), connect and read
timeouts for every call, one urllib3 pool of keep-alive connections, and
the retry policy. :class:`KiteRestClient` is one account's session on a
transport, with the official ``kiteconnect.KiteConnect``'s method names,
parameters and wire format (tests compare the two request by request), so a
Kite user reads it without a glossary. Both are thread-safe; share one
transport per process and make a client per account (cheap).

What goes on the wire: ``X-Kite-Version: 3``; ``Authorization: token
api_key:access_token`` once there is a session (:meth:`from_session` takes
the vault's); form-encoded bodies (JSON for the margin calculators), query
strings for GET and DELETE, gzip accepted. What comes back: the envelope's
``data`` (parsed JSON; timestamps stay strings, where the official client
parses them), the CSV bytes of the instruments dump, or a typed error from
:mod:`ticker_core.kite_errors` (never a message to match on).

Retries: only reads (GET) are repeated, after a delay from the injectable
``delays`` factory, while the injectable pure ``retry`` decision says so
(default: transient failures, three attempts). Writes (POST, PUT, DELETE)
are sent once. When a write gets no answer the error says whether it was
sent: :class:`~ticker_core.kite_errors.KiteNotSentError` (safe to repeat)
or :class:`~ticker_core.kite_errors.KiteOutcomeUnknownError` (look the
order up by its ``tag`` first).

urllib3 is botocore's HTTP client, so this adds nothing to any runtime; the
official client is a test dependency only (it imports Twisted).
"""

from __future__ import annotations

import json
import logging
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urlsplit

import urllib3

from ticker_adapters.retry import Delays, full_jitter
from ticker_core.kite_checksums import session_checksum
from ticker_core.kite_errors import (
    KiteDataError,
    KiteError,
    KiteInputError,
    KiteNotSentError,
    KiteOutcomeUnknownError,
    data_from_response,
    is_transient,
)

if TYPE_CHECKING:  # the vault pulls in the AWS Encryption SDK; the client needs only the type
    from ticker_adapters.credentials import KiteSession

log = logging.getLogger("ticker_adapters.kite_rest")

ROOT = "https://api.kite.trade"
KITE_VERSION = "3"
USER_AGENT = "ticker-service/0.1"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
JSON_CONTENT_TYPE = "application/json"
HISTORICAL_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
GTT_SINGLE = "single"
GTT_TWO_LEG = "two-leg"
GTT_TRIGGER_COUNTS = {GTT_SINGLE: 1, GTT_TWO_LEG: 2}
CANDLE_FIELDS = ("date", "open", "high", "low", "close", "volume", "oi")
GTT_ORDER_FIELDS = ("transaction_type", "quantity", "order_type", "product", "price")

RetryDecision = Callable[[KiteError, int], bool]
"""Pure: given a read's failure and how many attempts were made, whether to try again."""

Query = Mapping[str, Any]


def retry_transient(max_attempts: int = 3) -> RetryDecision:
    """Retry a transient failure (network family, 502/503/504) until ``max_attempts`` were made."""
    if max_attempts < 1:
        raise ValueError("max_attempts must be >= 1")

    def decide(error: KiteError, attempts_made: int) -> bool:
        return attempts_made < max_attempts and is_transient(error)

    return decide


def default_read_delays() -> Iterator[float]:
    """Full-jitter backoff from 0.5 s, capped at 4 s."""
    return full_jitter(0.5, 4.0)


def check_root(root: str) -> str:
    """``root`` without a trailing slash; refuses plain HTTP except to loopback."""
    parts = urlsplit(root)
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("Kite root must be a bare URL (no query, fragment or credentials)")
    if parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS):
        return root.rstrip("/")
    raise ValueError(f"Kite root must be https:// (or http:// to loopback), got {root!r}")


def _encode(pairs: Query) -> str:
    """Form or query encoding as Kite's clients do it: None dropped, lists repeated."""
    return urlencode({k: v for k, v in pairs.items() if v is not None}, doseq=True)


def _segment(value: object) -> str:
    """One path segment, escaped (an id can never reach another route)."""
    return quote(str(value), safe="")


def _transport_error(method: str, path: str, exc: urllib3.exceptions.HTTPError) -> KiteError:
    """Whether the request can have reached Kite decides the type (conservative: unknown)."""
    what = f"{method} {path}: no answer from Kite ({type(exc).__name__})"
    if isinstance(exc, urllib3.exceptions.ConnectTimeoutError):  # incl. refused and DNS
        return KiteNotSentError(what)
    if isinstance(exc, urllib3.exceptions.SSLError) and any(
        isinstance(arg, ssl.SSLCertVerificationError) for arg in exc.args
    ):
        return KiteNotSentError(what)  # the handshake failed before a byte of the request
    return KiteOutcomeUnknownError(what)


class KiteTransport:
    """Root URL, timeouts, pooled connections and the retry policy shared by every client."""

    def __init__(
        self,
        root: str = ROOT,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 15.0,
        retry: RetryDecision | None = None,
        delays: Delays = default_read_delays,
        sleep: Callable[[float], None] = time.sleep,
        max_connections: int = 10,
    ) -> None:
        if connect_timeout <= 0 or read_timeout <= 0:
            raise ValueError("timeouts must be positive")
        self.root = check_root(root)
        self.timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
        self._retry = retry or retry_transient()
        self._delays = delays
        self._sleep = sleep
        self._pool = urllib3.PoolManager(num_pools=2, maxsize=max_connections)

    def __repr__(self) -> str:
        return f"KiteTransport(root={self.root!r}, timeout={self.timeout!r})"

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Query | None = None,
        form: Query | None = None,
        json_body: Any = None,
        authorization: str | None = None,
    ) -> Any:
        """One call: the answer's data (or CSV bytes), or a typed error; GETs retried by policy."""
        method = method.upper()
        url = self.root + path
        if query:
            encoded = _encode(query)
            url = f"{url}?{encoded}" if encoded else url
        headers = {
            "X-Kite-Version": KITE_VERSION,
            "User-Agent": USER_AGENT,
            "Accept-Encoding": "gzip",
        }
        if authorization is not None:
            headers["Authorization"] = authorization
        body: bytes | None = None
        if json_body is not None:
            body = json.dumps(json_body, allow_nan=False).encode()
            headers["Content-Type"] = JSON_CONTENT_TYPE
        elif form:
            encoded_form = _encode(form)
            if encoded_form:
                body = encoded_form.encode()
                headers["Content-Type"] = FORM_CONTENT_TYPE
        if method != "GET":
            return self._send(method, url, path, body, headers)
        delays: Iterator[float] | None = None
        attempts = 0
        while True:
            attempts += 1
            try:
                return self._send(method, url, path, body, headers)
            except KiteError as error:
                if not self._retry(error, attempts):
                    raise
                delays = delays or self._delays()
                delay = next(delays)
                log.warning(
                    "Kite read failed; retrying",
                    extra={
                        "path": path,  # never the query: it can carry a token
                        "error": type(error).__name__,
                        "http_status": error.http_status,
                        "attempt": attempts,
                        "delay_s": round(delay, 3),
                    },
                )
                self._sleep(delay)

    def _send(
        self, method: str, url: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> Any:
        try:
            response = self._pool.urlopen(
                method,
                url,
                body=body,
                headers=headers,
                timeout=self.timeout,
                retries=False,
                redirect=False,
                preload_content=True,
                decode_content=True,
            )
        except urllib3.exceptions.HTTPError as exc:
            raise _transport_error(method, path, exc) from exc
        return data_from_response(
            response.status, response.headers.get("Content-Type", ""), response.data
        )

    def close(self) -> None:
        """Close the pooled connections (a transport is reusable afterwards)."""
        self._pool.clear()


class KiteRestClient:
    """One account's Kite Connect session: ``kiteconnect.KiteConnect``'s calls, on a transport."""

    def __init__(
        self,
        api_key: str,
        access_token: str | None = None,
        *,
        transport: KiteTransport | None = None,
    ) -> None:
        self.api_key = api_key
        self.access_token = access_token
        self.transport = transport or KiteTransport()

    @classmethod
    def from_session(cls, session: KiteSession, transport: KiteTransport) -> KiteRestClient:
        """A client on the vault's session for one account."""
        return cls(session.api_key, session.access_token, transport=transport)

    def __repr__(self) -> str:  # never the token
        state = "with session" if self.access_token else "no session"
        return f"KiteRestClient(api_key={self.api_key!r}, {state}, root={self.transport.root!r})"

    def set_access_token(self, access_token: str) -> None:
        """Use ``access_token`` from now on (as after :meth:`generate_session`)."""
        self.access_token = access_token

    # -- plumbing -------------------------------------------------------------------------
    def _authorization(self) -> str | None:
        if self.api_key and self.access_token:
            return f"token {self.api_key}:{self.access_token}"
        return None

    def _call(
        self,
        method: str,
        path: str,
        *,
        query: Query | None = None,
        form: Query | None = None,
        json_body: Any = None,
        csv: bool = False,
    ) -> Any:
        data = self.transport.request(
            method,
            path,
            query=query,
            form=form,
            json_body=json_body,
            authorization=self._authorization(),
        )
        if isinstance(data, bytes) != csv:
            expected = "the CSV dump" if csv else "Kite's JSON envelope"
            raise KiteDataError(f"{method} {path}: another kind of answer where {expected} was due")
        return data

    def _dict(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        data = self._call(method, path, **kwargs)
        if not isinstance(data, dict):
            raise KiteDataError(f"{method} {path}: expected an object, got {type(data).__name__}")
        return data

    def _list(self, path: str, query: Query | None = None) -> list[Any]:
        data = self._call("GET", path, query=query)
        if not isinstance(data, list):
            raise KiteDataError(f"GET {path}: expected a list, got {type(data).__name__}")
        return data

    def _order_id(self, method: str, path: str, form: Query | None = None, **kw: Any) -> str:
        data = self._dict(method, path, form=form, **kw)
        order_id = data.get("order_id")
        if order_id is None:
            raise KiteDataError(f"{method} {path}: no order_id in Kite's answer")
        return str(order_id)

    # -- session ----------------------------------------------------------------------------
    def generate_session(self, request_token: str, api_secret: str) -> dict[str, Any]:
        """Exchange a login's ``request_token`` for the day's session; the token is then used."""
        session = self._dict(
            "POST",
            "/session/token",
            form={
                "api_key": self.api_key,
                "request_token": request_token,
                "checksum": session_checksum(self.api_key, request_token, api_secret),
            },
        )
        access_token = session.get("access_token")
        if isinstance(access_token, str) and access_token:
            self.set_access_token(access_token)
        return session

    def invalidate_access_token(self, access_token: str | None = None) -> Any:
        """End a session (default: this client's)."""
        return self._call(
            "DELETE",
            "/session/token",
            query={"api_key": self.api_key, "access_token": access_token or self.access_token},
        )

    # -- user -------------------------------------------------------------------------------
    def profile(self) -> dict[str, Any]:
        """The user's profile."""
        return self._dict("GET", "/user/profile")

    def margins(self, segment: str | None = None) -> dict[str, Any]:
        """Funds and margins: every segment, or one (``equity``, ``commodity``)."""
        path = f"/user/margins/{_segment(segment)}" if segment else "/user/margins"
        return self._dict("GET", path)

    # -- orders -----------------------------------------------------------------------------
    def place_order(
        self,
        variety: str,
        exchange: str,
        tradingsymbol: str,
        transaction_type: str,
        quantity: int,
        product: str,
        order_type: str,
        price: float | None = None,
        validity: str | None = None,
        validity_ttl: int | None = None,
        disclosed_quantity: int | None = None,
        trigger_price: float | None = None,
        iceberg_legs: int | None = None,
        iceberg_quantity: int | None = None,
        auction_number: str | None = None,
        algo_id: str | None = None,
        tag: str | None = None,
        market_protection: float | None = None,
    ) -> str:
        """Place an order; its ``order_id``. Sent once: see the module on unknown outcomes."""
        form = {
            "variety": variety,
            "exchange": exchange,
            "tradingsymbol": tradingsymbol,
            "transaction_type": transaction_type,
            "quantity": quantity,
            "product": product,
            "order_type": order_type,
            "price": price,
            "validity": validity,
            "validity_ttl": validity_ttl,
            "disclosed_quantity": disclosed_quantity,
            "trigger_price": trigger_price,
            "iceberg_legs": iceberg_legs,
            "iceberg_quantity": iceberg_quantity,
            "auction_number": auction_number,
            "algo_id": algo_id,
            "tag": tag,
            "market_protection": market_protection,
        }
        return self._order_id("POST", f"/orders/{_segment(variety)}", form)

    def modify_order(
        self,
        variety: str,
        order_id: str,
        parent_order_id: str | None = None,
        quantity: int | None = None,
        price: float | None = None,
        order_type: str | None = None,
        trigger_price: float | None = None,
        validity: str | None = None,
        disclosed_quantity: int | None = None,
        market_protection: float | None = None,
    ) -> str:
        """Modify an open order; its ``order_id``."""
        form = {
            "variety": variety,
            "order_id": order_id,
            "parent_order_id": parent_order_id,
            "quantity": quantity,
            "price": price,
            "order_type": order_type,
            "trigger_price": trigger_price,
            "validity": validity,
            "disclosed_quantity": disclosed_quantity,
            "market_protection": market_protection,
        }
        return self._order_id("PUT", f"/orders/{_segment(variety)}/{_segment(order_id)}", form)

    def cancel_order(self, variety: str, order_id: str, parent_order_id: str | None = None) -> str:
        """Cancel an open order; its ``order_id``."""
        return self._order_id(
            "DELETE",
            f"/orders/{_segment(variety)}/{_segment(order_id)}",
            query={"parent_order_id": parent_order_id},
        )

    def exit_order(self, variety: str, order_id: str, parent_order_id: str | None = None) -> str:
        """Exit a cover order (Kite's cancel of it); its ``order_id``."""
        return self.cancel_order(variety, order_id, parent_order_id=parent_order_id)

    def orders(self) -> list[dict[str, Any]]:
        """The day's order book."""
        return self._list("/orders")

    def order_history(self, order_id: str) -> list[dict[str, Any]]:
        """Every state an order went through."""
        return self._list(f"/orders/{_segment(order_id)}")

    def trades(self) -> list[dict[str, Any]]:
        """The day's trades."""
        return self._list("/trades")

    def order_trades(self, order_id: str) -> list[dict[str, Any]]:
        """The trades of one order."""
        return self._list(f"/orders/{_segment(order_id)}/trades")

    # -- portfolio --------------------------------------------------------------------------
    def positions(self) -> dict[str, Any]:
        """Net and day positions."""
        return self._dict("GET", "/portfolio/positions")

    def holdings(self) -> list[dict[str, Any]]:
        """Equity holdings."""
        return self._list("/portfolio/holdings")

    def convert_position(
        self,
        exchange: str,
        tradingsymbol: str,
        transaction_type: str,
        position_type: str,
        quantity: int,
        old_product: str,
        new_product: str,
    ) -> Any:
        """Change an open position's product (e.g. MIS to CNC)."""
        return self._call(
            "PUT",
            "/portfolio/positions",
            form={
                "exchange": exchange,
                "tradingsymbol": tradingsymbol,
                "transaction_type": transaction_type,
                "position_type": position_type,
                "quantity": quantity,
                "old_product": old_product,
                "new_product": new_product,
            },
        )

    # -- margin calculators -----------------------------------------------------------------
    def order_margins(self, params: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Margins each order would need, given the account's positions and orders."""
        data = self._call("POST", "/margins/orders", json_body=params)
        if not isinstance(data, list):
            raise KiteDataError("POST /margins/orders: expected a list")
        return data

    def basket_order_margins(
        self, params: list[dict[str, Any]], consider_positions: bool = True, mode: str | None = None
    ) -> dict[str, Any]:
        """Margins of a basket, with the benefit of its hedges (``mode="compact"``: totals)."""
        return self._dict(
            "POST",
            "/margins/basket",
            json_body=params,
            query={"consider_positions": consider_positions, "mode": mode},
        )

    # -- GTT --------------------------------------------------------------------------------
    def get_gtts(self) -> list[dict[str, Any]]:
        """The account's GTT triggers."""
        return self._list("/gtt/triggers")

    def get_gtt(self, trigger_id: int | str) -> dict[str, Any]:
        """One GTT trigger."""
        return self._dict("GET", f"/gtt/triggers/{_segment(trigger_id)}")

    def place_gtt(
        self,
        trigger_type: str,
        tradingsymbol: str,
        exchange: str,
        trigger_values: list[float],
        last_price: float,
        orders: list[dict[str, Any]],
    ) -> dict[str, Any]:
        """Create a GTT (``single`` or ``two-leg``); ``{"trigger_id": ...}``."""
        form = _gtt_form(trigger_type, tradingsymbol, exchange, trigger_values, last_price, orders)
        return self._dict("POST", "/gtt/triggers", form=form)

    def modify_gtt(
        self,
        trigger_id: int | str,
        trigger_type: str,
        tradingsymbol: str,
        exchange: str,
        trigger_values: list[float],
        last_price: float,
        orders: list[dict[str, Any]],
    ) -> dict[str, Any]:
        """Replace a GTT's condition and orders; ``{"trigger_id": ...}``."""
        form = _gtt_form(trigger_type, tradingsymbol, exchange, trigger_values, last_price, orders)
        return self._dict("PUT", f"/gtt/triggers/{_segment(trigger_id)}", form=form)

    def delete_gtt(self, trigger_id: int | str) -> dict[str, Any]:
        """Delete a GTT; ``{"trigger_id": ...}``."""
        return self._dict("DELETE", f"/gtt/triggers/{_segment(trigger_id)}")

    # -- market data ------------------------------------------------------------------------
    def quote(self, *instruments: str | list[str]) -> dict[str, Any]:
        """Full quotes by ``EXCHANGE:TRADINGSYMBOL`` (or instrument token)."""
        return self._dict("GET", "/quote", query={"i": _instrument_list(instruments)})

    def ohlc(self, *instruments: str | list[str]) -> dict[str, Any]:
        """OHLC and last price by instrument."""
        return self._dict("GET", "/quote/ohlc", query={"i": _instrument_list(instruments)})

    def ltp(self, *instruments: str | list[str]) -> dict[str, Any]:
        """Last price by instrument."""
        return self._dict("GET", "/quote/ltp", query={"i": _instrument_list(instruments)})

    def historical_data(
        self,
        instrument_token: int | str,
        from_date: datetime | str,
        to_date: datetime | str,
        interval: str,
        continuous: bool = False,
        oi: bool = False,
    ) -> list[dict[str, Any]]:
        """Candles as records: ``date`` (Kite's string), open, high, low, close, volume(, oi)."""
        path = f"/instruments/historical/{_segment(instrument_token)}/{_segment(interval)}"
        data = self._dict(
            "GET",
            path,
            query={
                "from": _historical_time(from_date),
                "to": _historical_time(to_date),
                "interval": interval,
                "continuous": 1 if continuous else 0,
                "oi": 1 if oi else 0,
            },
        )
        candles = data.get("candles")
        if not isinstance(candles, list):
            raise KiteDataError(f"GET {path}: no candles in Kite's answer")
        return [_candle(row, path) for row in candles]

    def instruments(self, exchange: str | None = None) -> bytes:
        """The instruments dump (all exchanges, or one), as the CSV bytes Kite served."""
        path = f"/instruments/{_segment(exchange)}" if exchange else "/instruments"
        data: bytes = self._call("GET", path, csv=True)
        return data


def _instrument_list(instruments: tuple[str | list[str], ...]) -> list[str]:
    """Instruments as ``quote("NSE:INFY", "NSE:TCS")`` or, as Kite's client allows, one list."""
    if len(instruments) == 1 and isinstance(instruments[0], list):
        return [str(i) for i in instruments[0]]
    return [str(i) for i in instruments]


def _historical_time(value: datetime | str) -> str:
    return value.strftime(HISTORICAL_TIME_FORMAT) if isinstance(value, datetime) else value


def _candle(row: object, path: str) -> dict[str, Any]:
    if not isinstance(row, list) or len(row) not in (6, 7):
        raise KiteDataError(f"GET {path}: a candle is not [date, o, h, l, c, volume(, oi)]")
    return dict(zip(CANDLE_FIELDS, row, strict=False))


def _gtt_form(
    trigger_type: str,
    tradingsymbol: str,
    exchange: str,
    trigger_values: list[float],
    last_price: float,
    orders: list[dict[str, Any]],
) -> dict[str, str]:
    """A GTT's form: ``condition`` and ``orders`` as JSON text, and ``type``; checked first."""
    expected = GTT_TRIGGER_COUNTS.get(trigger_type)
    if expected is None:
        raise KiteInputError(f"unknown GTT type {trigger_type!r}: {GTT_SINGLE} or {GTT_TWO_LEG}")
    if not isinstance(trigger_values, list) or len(trigger_values) != expected:
        raise KiteInputError(f"a {trigger_type} GTT takes {expected} trigger value(s)")
    condition = {
        "exchange": exchange,
        "tradingsymbol": tradingsymbol,
        "trigger_values": trigger_values,
        "last_price": last_price,
    }
    legs = []
    for order in orders:
        missing = [name for name in GTT_ORDER_FIELDS if name not in order]
        if missing:
            raise KiteInputError(f"a GTT order lacks {', '.join(missing)}")
        legs.append(
            {
                "exchange": exchange,
                "tradingsymbol": tradingsymbol,
                "transaction_type": order["transaction_type"],
                "quantity": int(order["quantity"]),
                "order_type": order["order_type"],
                "product": order["product"],
                "price": float(order["price"]),
            }
        )
    return {"condition": json.dumps(condition), "orders": json.dumps(legs), "type": trigger_type}
