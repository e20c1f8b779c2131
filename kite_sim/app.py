"""aiohttp routes: Kite's REST API, the WebSocket at ``/`` and the admin API at ``/_sim``.

A thin layer: each handler parses the request, calls the pure core and wraps
the answer in Kite's envelope. One middleware does, in order: admin
authorization, injected REST latency and errors, session authentication
(``Authorization: token api_key:access_token``), rate limiting (HTTP 429),
and turning :class:`KiteError` into Kite's error envelope by type.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from aiohttp import web

from kite_sim.auth import Account, Session
from kite_sim.clock import kite_timestamp
from kite_sim.errors import (
    GeneralError,
    InputError,
    KiteError,
    NotFoundError,
    TokenError,
    error_for_status,
    too_many_requests,
)
from kite_sim.faults import FaultSpecError
from kite_sim.historical import parse_when
from kite_sim.margins import basket_margin, order_margin, segment_funds
from kite_sim.marketview import InstrumentLike
from kite_sim.ratelimit import category_for
from ticker_core.kite_errors import success_envelope

if TYPE_CHECKING:
    from kite_sim.server import Simulator

log = logging.getLogger("kite_sim")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SESSION_KEY: web.RequestKey[Session] = web.RequestKey("kite_session", Session)
PUBLIC = {
    ("GET", "/"),
    ("GET", "/connect/login"),
    ("POST", "/session/token"),
    ("DELETE", "/session/token"),
}
MAX_QUOTE = 500
MAX_LTP = 1000


def _sim(request: web.Request) -> Simulator:
    from kite_sim.server import SIM_KEY

    return request.app[SIM_KEY]


def ok(data: Any, status: int = 200) -> web.Response:
    """Kite's success envelope."""
    return web.json_response(success_envelope(data), status=status)


def fail(error: KiteError) -> web.Response:
    """Kite's error envelope, with the HTTP status of its type."""
    return web.json_response(error.envelope(), status=error.http_status or 500)


def session_of(request: web.Request) -> Session:
    """The authenticated session of a request."""
    session: Session | None = request.get(SESSION_KEY)
    if session is None:
        raise TokenError("Incorrect `api_key` or `access_token`.")
    return session


def account_of(request: web.Request) -> Account:
    """The account of the authenticated session."""
    return session_of(request).account


@web.middleware
async def kite_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Admin auth, faults, authentication, rate limits and error envelopes."""
    sim = _sim(request)
    path = request.path
    counts = sim.rest_counts
    if path.startswith("/_sim"):
        token = sim.config.admin_token
        supplied = request.headers.get("X-Sim-Admin-Token", "")
        if token and not hmac.compare_digest(token, supplied):
            return web.json_response({"status": "error", "message": "admin token"}, status=401)
        try:
            return await handler(request)
        except FaultSpecError as exc:
            return web.json_response({"status": "error", "message": str(exc)}, status=400)
        except (KeyError, ValueError, TypeError) as exc:
            return web.json_response({"status": "error", "message": repr(exc)}, status=400)
    if path == "/" and request.headers.get("Upgrade", "").lower() == "websocket":
        return await handler(request)
    counts["requests"] = counts.get("requests", 0) + 1
    try:
        if sim.faults.rest_latency:
            await asyncio.sleep(sim.faults.rest_latency)
        api_key = _api_key_hint(request)
        injected = sim.faults.take_rest_error(request.method, path, api_key)
        if injected is not None:
            raise error_for_status(injected, "Injected failure (fault injection).")
        public = (request.method, path) in PUBLIC or (
            path.startswith("/instruments") and not path.startswith("/instruments/historical")
        )
        if not public:
            session = sim.sessions.authenticate_header(request.headers.get("Authorization"))
            request[SESSION_KEY] = session
            api_key = session.account.api_key
        if api_key is not None and not sim.limiter.allow(
            api_key, category_for(request.method, path)
        ):
            raise too_many_requests()
        response = await handler(request)
    except KiteError as exc:
        counts[str(exc.http_status)] = counts.get(str(exc.http_status), 0) + 1
        return fail(exc)
    except web.HTTPNotFound:
        counts["404"] = counts.get("404", 0) + 1
        return fail(NotFoundError("Route not found."))
    except web.HTTPMethodNotAllowed:
        counts["405"] = counts.get("405", 0) + 1
        return fail(GeneralError("Method not allowed.", http_status=405))
    except (web.HTTPFound, web.HTTPSeeOther):
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, path)
        counts["500"] = counts.get("500", 0) + 1
        return fail(GeneralError("Something unexpected went wrong."))
    key = str(response.status)
    counts[key] = counts.get(key, 0) + 1
    return response


def _api_key_hint(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.startswith("token ") and ":" in header:
        return header[len("token ") :].split(":", 1)[0].strip() or None
    return request.query.get("api_key")


async def _params(request: web.Request) -> dict[str, str]:
    """Form fields (POST/PUT) merged over query parameters."""
    params = dict(request.query)
    if request.method in ("POST", "PUT") and request.can_read_body:
        form = await request.post()
        params.update({k: str(v) for k, v in form.items()})
    return params


async def _json_list(request: web.Request) -> list[dict[str, Any]]:
    try:
        data = await request.json()
    except ValueError:
        raise InputError("Expected a JSON array of orders.") from None
    if not isinstance(data, list) or not all(isinstance(x, dict) for x in data):
        raise InputError("Expected a JSON array of orders.")
    return data


# -- root, login, session -------------------------------------------------------------
async def root(request: web.Request) -> web.StreamResponse:
    """The WebSocket (with ``Upgrade``), or a short description."""
    sim = _sim(request)
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return await sim.handle_ws(request)
    return web.json_response(
        {"service": "kite_sim", "rest_url": sim.rest_url, "ws_url": sim.ws_url}
    )


async def connect_login(request: web.Request) -> web.StreamResponse:
    """``/connect/login``: log the app's user in and redirect with a request token."""
    sim = _sim(request)
    api_key = request.query.get("api_key", "")
    account = sim.sessions.account(api_key)
    request_token = sim.sessions.begin_login(api_key)
    parts = urlsplit(account.redirect_url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    extra = request.query.get("redirect_params")
    if extra:
        query += parse_qsl(extra, keep_blank_values=True)
    query += [
        ("action", "login"),
        ("type", "login"),
        ("status", "success"),
        ("request_token", request_token),
    ]
    location = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))
    raise web.HTTPFound(location)


def _user_payload(account: Account) -> dict[str, Any]:
    return {
        "user_id": account.user_id,
        "user_type": "individual",
        "email": account.email,
        "user_name": account.user_name,
        "user_shortname": account.user_name.split()[0],
        "broker": "ZERODHA",
        "exchanges": ["NSE", "NFO", "BSE", "BFO", "CDS", "BCD", "MCX"],
        "products": ["CNC", "NRML", "MIS", "MTF"],
        "order_types": ["MARKET", "LIMIT", "SL", "SL-M"],
        "avatar_url": None,
        "meta": {"demat_consent": "physical"},
    }


async def session_token(request: web.Request) -> web.StreamResponse:
    """``POST /session/token``: exchange a request token for an access token."""
    sim = _sim(request)
    params = await _params(request)
    for name in ("api_key", "request_token", "checksum"):
        if not params.get(name):
            raise InputError(f"Missing `{name}`.")
    session = sim.sessions.create_session(
        params["api_key"], params["request_token"], params["checksum"]
    )
    data = _user_payload(session.account)
    data.update(
        api_key=session.account.api_key,
        access_token=session.access_token,
        public_token=session.public_token,
        refresh_token="",  # nosec B106 - Kite gives individual apps no refresh token
        enctoken=session.public_token,
        login_time=kite_timestamp(session.login_time),
    )
    return ok(data)


async def session_delete(request: web.Request) -> web.StreamResponse:
    """``DELETE /session/token``: log out."""
    sim = _sim(request)
    api_key = request.query.get("api_key", "")
    token = request.query.get("access_token", "")
    return ok(sim.sessions.invalidate(api_key, token))


async def profile(request: web.Request) -> web.StreamResponse:
    """``GET /user/profile``."""
    return ok(_user_payload(account_of(request)))


async def margins(request: web.Request) -> web.StreamResponse:
    """``GET /user/margins`` and ``/user/margins/:segment``."""
    sim = _sim(request)
    account = account_of(request)
    realised, unrealised = sim.engine.realised_unrealised(account)
    equity = segment_funds(
        sim.engine.opening_funds, sim.engine.utilised(account), realised, unrealised
    )
    commodity = segment_funds(0.0, 0.0, 0.0, 0.0)
    segment = request.match_info.get("segment")
    if segment is None:
        return ok({"equity": equity, "commodity": commodity})
    if segment == "equity":
        return ok(equity)
    if segment == "commodity":
        return ok(commodity)
    raise InputError("Invalid segment: equity or commodity.")


# -- orders ---------------------------------------------------------------------------------
def _order_call(request: web.Request) -> tuple[Simulator, Account]:
    sim = _sim(request)
    account = account_of(request)
    account.require_ip(request.remote)
    return sim, account


async def place_order(request: web.Request) -> web.StreamResponse:
    """``POST /orders/:variety``."""
    sim, account = _order_call(request)
    params = await _params(request)
    try:
        order = sim.engine.place(account, request.match_info["variety"], params)
    finally:
        sim.dispatch_order_events()
    return ok({"order_id": order.order_id})


async def modify_order(request: web.Request) -> web.StreamResponse:
    """``PUT /orders/:variety/:order_id``."""
    sim, account = _order_call(request)
    params = await _params(request)
    try:
        order = sim.engine.modify(
            account, request.match_info["variety"], request.match_info["order_id"], params
        )
    finally:
        sim.dispatch_order_events()
    return ok({"order_id": order.order_id})


async def cancel_order(request: web.Request) -> web.StreamResponse:
    """``DELETE /orders/:variety/:order_id``."""
    sim, account = _order_call(request)
    try:
        order = sim.engine.cancel(
            account,
            request.match_info["variety"],
            request.match_info["order_id"],
            request.query.get("parent_order_id") or None,
        )
    finally:
        sim.dispatch_order_events()
    return ok({"order_id": order.order_id})


async def list_orders(request: web.Request) -> web.StreamResponse:
    """``GET /orders``."""
    return ok(_sim(request).engine.orders(account_of(request)))


async def order_history(request: web.Request) -> web.StreamResponse:
    """``GET /orders/:order_id``."""
    sim = _sim(request)
    return ok(sim.engine.order_history(account_of(request), request.match_info["order_id"]))


async def order_trades(request: web.Request) -> web.StreamResponse:
    """``GET /orders/:order_id/trades``."""
    sim = _sim(request)
    return ok(sim.engine.trades(account_of(request), request.match_info["order_id"]))


async def trades(request: web.Request) -> web.StreamResponse:
    """``GET /trades``."""
    return ok(_sim(request).engine.trades(account_of(request)))


# -- portfolio ------------------------------------------------------------------------------
async def positions(request: web.Request) -> web.StreamResponse:
    """``GET /portfolio/positions``."""
    return ok(_sim(request).engine.positions(account_of(request)))


async def convert_position(request: web.Request) -> web.StreamResponse:
    """``PUT /portfolio/positions``: accepted (the simulator keeps products as traded)."""
    params = await _params(request)
    for name in ("exchange", "tradingsymbol", "transaction_type", "quantity", "old_product"):
        if not params.get(name):
            raise InputError(f"Missing `{name}`.")
    return ok(True)


async def holdings(request: web.Request) -> web.StreamResponse:
    """``GET /portfolio/holdings``."""
    sim = _sim(request)
    account = account_of(request)
    rows = []
    for k, qty, avg in sim.holdings.get(account.api_key, []):
        inst = sim.universe.instruments[k]
        snap = sim.market.snapshot(inst.instrument_token)
        rows.append(
            {
                "tradingsymbol": inst.tradingsymbol,
                "exchange": inst.exchange,
                "instrument_token": inst.instrument_token,
                "isin": f"INE{inst.exchange_token:06d}01",
                "product": "CNC",
                "price": 0,
                "quantity": qty,
                "used_quantity": 0,
                "t1_quantity": 0,
                "realised_quantity": qty,
                "authorised_quantity": 0,
                "authorised_date": None,
                "opening_quantity": qty,
                "collateral_quantity": 0,
                "collateral_type": "",
                "discrepancy": False,
                "average_price": avg,
                "last_price": snap.last_price,
                "close_price": snap.close,
                "pnl": round((snap.last_price - avg) * qty, 2),
                "day_change": round(snap.last_price - snap.close, 2),
                "day_change_percentage": (
                    round((snap.last_price - snap.close) * 100 / snap.close, 4)
                    if snap.close
                    else 0.0
                ),
            }
        )
    return ok(rows)


async def empty_list(request: web.Request) -> web.StreamResponse:
    """Endpoints the simulator serves empty (mutual funds, auctions)."""
    account_of(request)
    return ok([])


# -- market data ----------------------------------------------------------------------------
async def instruments(request: web.Request) -> web.StreamResponse:
    """``GET /instruments`` and ``/instruments/:exchange``: the CSV dump."""
    sim = _sim(request)
    exchange = request.match_info.get("exchange")
    text = sim.market.instruments_csv(exchange)
    return web.Response(text=text, content_type="text/csv")


def _resolve(sim: Simulator, key: str) -> InstrumentLike | None:
    if key.isdigit():
        return sim.market.by_token(int(key))
    exchange, sep, symbol = key.partition(":")
    if not sep:
        return None
    return sim.market.instrument(exchange, symbol)


def _instruments_query(request: web.Request, limit: int) -> list[tuple[str, InstrumentLike]]:
    keys = request.query.getall("i", [])
    if not keys:
        raise InputError("No instruments given: pass `i=EXCHANGE:TRADINGSYMBOL`.")
    if len(keys) > limit:
        raise InputError(f"Too many instruments: at most {limit}.")
    sim = _sim(request)
    found = []
    for key in keys:
        inst = _resolve(sim, key)
        if inst is not None:
            found.append((key, inst))
    return found


def _ts(value: datetime | None) -> str | None:
    return kite_timestamp(value) if value else None


async def quote(request: web.Request) -> web.StreamResponse:
    """``GET /quote``: full quotes with depth."""
    sim = _sim(request)
    out: dict[str, Any] = {}
    for key, inst in _instruments_query(request, MAX_QUOTE):
        s = sim.market.snapshot(inst.instrument_token)
        out[key] = {
            "instrument_token": inst.instrument_token,
            "timestamp": _ts(s.timestamp),
            "last_trade_time": _ts(s.last_trade_time),
            "last_price": s.last_price,
            "last_quantity": s.last_quantity,
            "buy_quantity": s.buy_quantity,
            "sell_quantity": s.sell_quantity,
            "volume": s.volume,
            "average_price": s.average_price,
            "oi": s.oi,
            "oi_day_high": s.oi_day_high,
            "oi_day_low": s.oi_day_low,
            "net_change": round(s.last_price - s.close, 4),
            "lower_circuit_limit": s.lower_circuit,
            "upper_circuit_limit": s.upper_circuit,
            "ohlc": {"open": s.open, "high": s.high, "low": s.low, "close": s.close},
            "depth": {
                "buy": [
                    {"price": v.price, "quantity": v.quantity, "orders": v.orders} for v in s.bids
                ],
                "sell": [
                    {"price": v.price, "quantity": v.quantity, "orders": v.orders} for v in s.asks
                ],
            },
        }
    return ok(out)


async def quote_ltp(request: web.Request) -> web.StreamResponse:
    """``GET /quote/ltp``."""
    sim = _sim(request)
    out = {}
    for key, inst in _instruments_query(request, MAX_LTP):
        s = sim.market.snapshot(inst.instrument_token)
        out[key] = {"instrument_token": inst.instrument_token, "last_price": s.last_price}
    return ok(out)


async def quote_ohlc(request: web.Request) -> web.StreamResponse:
    """``GET /quote/ohlc``."""
    sim = _sim(request)
    out = {}
    for key, inst in _instruments_query(request, MAX_LTP):
        s = sim.market.snapshot(inst.instrument_token)
        out[key] = {
            "instrument_token": inst.instrument_token,
            "last_price": s.last_price,
            "ohlc": {"open": s.open, "high": s.high, "low": s.low, "close": s.close},
        }
    return ok(out)


async def historical(request: web.Request) -> web.StreamResponse:
    """``GET /instruments/historical/:token/:interval``."""
    sim = _sim(request)
    token_text = request.match_info["instrument_token"]
    if not token_text.isdigit():
        raise InputError("Invalid `instrument_token`.")
    k = sim.market.token_index.get(int(token_text))
    if k is None:
        raise InputError("Invalid `instrument_token`.")
    start = parse_when(request.query.get("from", ""))
    end = parse_when(request.query.get("to", ""))
    inst = sim.universe.instruments[k]
    u = int(sim.market.und[k])
    vol = float(sim.market.spec_vol[u]) * (2.5 if inst.instrument_type in ("CE", "PE") else 1.0)
    candles = sim.candles.candles(
        int(token_text),
        request.match_info["interval"],
        start,
        end,
        anchor=float(sim.market.close[k]),
        today=sim.clock.now().date(),
        tick=float(sim.market.tick_size[k]),
        vol=vol,
        lot=int(sim.market.lot[k]),
        oi=request.query.get("oi") in ("1", "true"),
    )
    return ok({"candles": candles})


# -- margins calculators -------------------------------------------------------------------
def _margin_items(
    sim: Simulator, orders: list[dict[str, Any]]
) -> list[tuple[InstrumentLike, str, dict[str, Any]]]:
    items: list[tuple[InstrumentLike, str, dict[str, Any]]] = []
    for spec in orders:
        inst = sim.market.instrument(str(spec.get("exchange")), str(spec.get("tradingsymbol")))
        if inst is None:
            raise InputError("Invalid `tradingsymbol` or `exchange`.")
        side = str(spec.get("transaction_type", "BUY"))
        qty = int(float(spec.get("quantity", 0)))
        price = (
            float(spec.get("price") or 0.0) or sim.market.snapshot(inst.instrument_token).last_price
        )
        product = str(spec.get("product", "NRML"))
        items.append((inst, side, order_margin(inst, side, qty, price, product)))
    return items


async def order_margins(request: web.Request) -> web.StreamResponse:
    """``POST /margins/orders``."""
    sim = _sim(request)
    account_of(request)
    return ok([m for _, _, m in _margin_items(sim, await _json_list(request))])


async def basket_margins(request: web.Request) -> web.StreamResponse:
    """``POST /margins/basket``."""
    sim = _sim(request)
    account_of(request)
    result = basket_margin(_margin_items(sim, await _json_list(request)))
    if request.query.get("mode") == "compact":
        result["orders"] = [
            {k: o[k] for k in ("type", "tradingsymbol", "exchange", "total")}
            for o in result["orders"]
        ]
    return ok(result)


async def contract_note(request: web.Request) -> web.StreamResponse:
    """``POST /charges/orders``: zero charges per order (not modelled)."""
    account_of(request)
    orders = await _json_list(request)
    return ok([dict(o, charges={"total": 0.0}) for o in orders])


# -- GTT --------------------------------------------------------------------------------------
def _trigger_id(request: web.Request) -> int:
    text = request.match_info["trigger_id"]
    if not text.isdigit():
        raise InputError("Invalid `trigger_id`.")
    return int(text)


async def gtt_list(request: web.Request) -> web.StreamResponse:
    """``GET /gtt/triggers``."""
    return ok(_sim(request).gtt.list(account_of(request)))


async def gtt_place(request: web.Request) -> web.StreamResponse:
    """``POST /gtt/triggers``."""
    sim = _sim(request)
    account = account_of(request)
    return ok({"trigger_id": sim.gtt.place(account, await _params(request))})


async def gtt_get(request: web.Request) -> web.StreamResponse:
    """``GET /gtt/triggers/:id``."""
    sim = _sim(request)
    return ok(sim.gtt.get(account_of(request), _trigger_id(request)).to_kite())


async def gtt_modify(request: web.Request) -> web.StreamResponse:
    """``PUT /gtt/triggers/:id``."""
    sim = _sim(request)
    account = account_of(request)
    trigger_id = sim.gtt.modify(account, _trigger_id(request), await _params(request))
    return ok({"trigger_id": trigger_id})


async def gtt_delete(request: web.Request) -> web.StreamResponse:
    """``DELETE /gtt/triggers/:id``."""
    sim = _sim(request)
    return ok({"trigger_id": sim.gtt.delete(account_of(request), _trigger_id(request))})


# -- admin ------------------------------------------------------------------------------------
async def admin_info(request: web.Request) -> web.StreamResponse:
    """``GET /_sim/info``: URLs and the accounts' credentials."""
    sim = _sim(request)
    return web.json_response(
        {
            "rest_url": sim.rest_url,
            "ws_url": sim.ws_url,
            "seed": sim.config.seed,
            "market_time": sim.clock.now().isoformat(),
            "instruments": len(sim.universe),
            "accounts": [
                {
                    "user_id": a.user_id,
                    "api_key": a.api_key,
                    "api_secret": a.api_secret,
                    "redirect_url": a.redirect_url,
                    "postback_url": a.postback_url,
                    "registered_ips": sorted(a.registered_ips),
                    "enforce_ip": a.enforce_ip,
                }
                for a in sim.accounts
            ],
        }
    )


async def admin_counters(request: web.Request) -> web.StreamResponse:
    """``GET /_sim/counters``: ticks sent per connection and instrument, REST, orders."""
    sim = _sim(request)
    per_instrument = request.query.get("per_instrument", "1") not in ("0", "false")
    feed = sim.hub.counters(per_instrument=per_instrument)
    feed["rounds"] = sim.feed_rounds
    feed["lag_seconds"] = round(sim.feed_lag, 4)
    return web.json_response(
        {
            "feed": feed,
            "rest": dict(sim.rest_counts),
            "rate_limited": sim.limiter.refused,
            "orders": sim.engine.counts(),
            "postbacks": {"sent": sim.postbacks.sent, "failed": sim.postbacks.failed},
            "faults": sim.faults.describe()["fired"],
        }
    )


async def admin_faults_get(request: web.Request) -> web.StreamResponse:
    """``GET /_sim/faults``."""
    return web.json_response(_sim(request).faults.describe())


async def admin_faults_post(request: web.Request) -> web.StreamResponse:
    """``POST /_sim/faults``: one spec or a list of specs."""
    sim = _sim(request)
    body = await request.json()
    specs = body if isinstance(body, list) else [body]
    for spec in specs:
        if not isinstance(spec, dict):
            raise FaultSpecError("a fault spec must be a JSON object")
        sim.faults.apply(spec)
    return web.json_response(sim.faults.describe())


async def admin_faults_delete(request: web.Request) -> web.StreamResponse:
    """``DELETE /_sim/faults``."""
    sim = _sim(request)
    sim.faults.clear()
    return web.json_response(sim.faults.describe())


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    data = await request.json()
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    return data


async def admin_expire(request: web.Request) -> web.StreamResponse:
    """``POST /_sim/tokens/expire`` ``{api_key?, access_token?}``."""
    sim = _sim(request)
    body = await _body(request)
    count = sim.sessions.expire(api_key=body.get("api_key"), access_token=body.get("access_token"))
    return web.json_response({"expired": count})


async def admin_session(request: web.Request) -> web.StreamResponse:
    """``POST /_sim/sessions`` ``{api_key?}``: an access token without the login dance."""
    sim = _sim(request)
    body = await _body(request)
    api_key = body.get("api_key") or sim.accounts[0].api_key
    session = sim.sessions.issue_session(api_key)
    return web.json_response({"api_key": api_key, "access_token": session.access_token})


async def admin_clock(request: web.Request) -> web.StreamResponse:
    """``GET/POST /_sim/clock`` ``{set?, advance?, speed?, session_loop?}``."""
    sim = _sim(request)
    if request.method == "POST":
        body = await _body(request)
        if "session_loop" in body:
            sim.session_loop = bool(body["session_loop"])
        if "set" in body:
            when = datetime.fromisoformat(str(body["set"]))
            if when.tzinfo is None:
                raise ValueError("`set` needs a timezone offset")
            sim.clock.set(when)
        if "advance" in body:
            sim.clock.advance(float(body["advance"]))
        if "speed" in body:
            sim.clock.set_speed(float(body["speed"]))
    now = sim.clock.now()
    return web.json_response(
        {
            "market_time": now.isoformat(),
            "speed": sim.clock.speed,
            "session_loop": sim.session_loop,
            "market_open": sim.calendar.is_open(now),
        }
    )


async def admin_market(request: web.Request) -> web.StreamResponse:
    """``GET /_sim/market``: underlyings' spot, volatility and basis."""
    return web.json_response(_sim(request).market.describe())


async def admin_shock(request: web.Request) -> web.StreamResponse:
    """``POST /_sim/market/shock`` ``{underlying, pct}``: move a spot at once."""
    sim = _sim(request)
    body = await _body(request)
    sim.market.shock(str(body["underlying"]), float(body["pct"]))
    return web.json_response(sim.market.describe())


async def admin_ips(request: web.Request) -> web.StreamResponse:
    """``POST /_sim/accounts/:api_key/ips`` ``{registered_ips?, enforce?}``."""
    sim = _sim(request)
    account = sim.account(request.match_info["api_key"])
    body = await _body(request)
    if "registered_ips" in body:
        account.registered_ips = {str(ip) for ip in body["registered_ips"]}
    if "enforce" in body:
        account.enforce_ip = bool(body["enforce"])
    return web.json_response(
        {"registered_ips": sorted(account.registered_ips), "enforce": account.enforce_ip}
    )


async def admin_tick_rates(request: web.Request) -> web.StreamResponse:
    """``POST /_sim/tick_rates`` ``{rates?: {key: ticks_per_s}, max_ticks_per_second?}``."""
    from kite_sim.server import resolve_rates

    sim = _sim(request)
    body = await _body(request)
    if "rates" in body:
        rates = {str(k): float(v) for k, v in dict(body["rates"]).items()}
        merged = {**sim.config.tick_rates, **rates}
        sim.config.tick_rates = merged
        sim.hub.rate[:] = resolve_rates(sim.universe, sim.config.default_tick_rate, merged)
    if "max_ticks_per_second" in body:
        cap = body["max_ticks_per_second"]
        sim.hub.max_ticks_per_second = None if cap is None else float(cap)
    return web.json_response(
        {"tick_rates": sim.config.tick_rates, "max_ticks_per_second": sim.hub.max_ticks_per_second}
    )


async def admin_postbacks(request: web.Request) -> web.StreamResponse:
    """``GET /_sim/postbacks``: the last postback deliveries."""
    sim = _sim(request)
    return web.json_response(
        [
            {
                "url": d.url,
                "order_id": d.order_id,
                "status": d.status,
                "http_status": d.http_status,
                "error": d.error,
            }
            for d in sim.postbacks.deliveries
        ]
    )


def build_app(sim: Simulator) -> web.Application:
    """The aiohttp application of ``sim``."""
    from kite_sim.server import SIM_KEY

    app = web.Application(middlewares=[kite_middleware], client_max_size=8 * 1024 * 1024)
    app[SIM_KEY] = sim
    r = app.router
    r.add_get("/", root)
    r.add_get("/connect/login", connect_login)
    r.add_post("/session/token", session_token)
    r.add_delete("/session/token", session_delete)
    r.add_get("/user/profile", profile)
    r.add_get("/user/margins", margins)
    r.add_get("/user/margins/{segment}", margins)
    r.add_get("/orders", list_orders)
    r.add_get("/trades", trades)
    r.add_post("/orders/{variety}", place_order)
    r.add_get("/orders/{order_id}", order_history)
    r.add_put("/orders/{variety}/{order_id}", modify_order)
    r.add_delete("/orders/{variety}/{order_id}", cancel_order)
    r.add_get("/orders/{order_id}/trades", order_trades)
    r.add_get("/portfolio/positions", positions)
    r.add_put("/portfolio/positions", convert_position)
    r.add_get("/portfolio/holdings", holdings)
    r.add_get("/portfolio/holdings/auctions", empty_list)
    for path in ("/mf/orders", "/mf/sips", "/mf/holdings"):
        r.add_get(path, empty_list)
    r.add_get("/instruments", instruments)
    r.add_get("/instruments/historical/{instrument_token}/{interval}", historical)
    r.add_get("/instruments/{exchange}", instruments)
    r.add_get("/quote", quote)
    r.add_get("/quote/ltp", quote_ltp)
    r.add_get("/quote/ohlc", quote_ohlc)
    r.add_post("/margins/orders", order_margins)
    r.add_post("/margins/basket", basket_margins)
    r.add_post("/charges/orders", contract_note)
    r.add_get("/gtt/triggers", gtt_list)
    r.add_post("/gtt/triggers", gtt_place)
    r.add_get("/gtt/triggers/{trigger_id}", gtt_get)
    r.add_put("/gtt/triggers/{trigger_id}", gtt_modify)
    r.add_delete("/gtt/triggers/{trigger_id}", gtt_delete)
    r.add_get("/_sim/info", admin_info)
    r.add_get("/_sim/counters", admin_counters)
    r.add_get("/_sim/faults", admin_faults_get)
    r.add_post("/_sim/faults", admin_faults_post)
    r.add_delete("/_sim/faults", admin_faults_delete)
    r.add_post("/_sim/tokens/expire", admin_expire)
    r.add_post("/_sim/sessions", admin_session)
    r.add_get("/_sim/clock", admin_clock)
    r.add_post("/_sim/clock", admin_clock)
    r.add_get("/_sim/market", admin_market)
    r.add_post("/_sim/market/shock", admin_shock)
    r.add_post("/_sim/accounts/{api_key}/ips", admin_ips)
    r.add_post("/_sim/tick_rates", admin_tick_rates)
    r.add_get("/_sim/postbacks", admin_postbacks)
    return app


__all__ = ["build_app"]
