"""Market data: the instruments dump, quotes (full, LTP, OHLC) and historical candles."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web

from kite_sim.clock import kite_timestamp
from kite_sim.errors import InputError
from kite_sim.historical import parse_when
from kite_sim.marketview import InstrumentLike
from kite_sim.routes.common import SimContext, ok, sim_of

routes = web.RouteTableDef()
MAX_QUOTE = 500
MAX_LTP = 1000


@routes.get("/instruments")
@routes.get("/instruments/{exchange}")
async def instruments(request: web.Request) -> web.StreamResponse:
    """``GET /instruments`` and ``/instruments/:exchange``: the CSV dump."""
    sim = sim_of(request)
    exchange = request.match_info.get("exchange")
    text = sim.market.instruments_csv(exchange)
    return web.Response(text=text, content_type="text/csv")


def _resolve(sim: SimContext, key: str) -> InstrumentLike | None:
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
    sim = sim_of(request)
    found = []
    for key in keys:
        inst = _resolve(sim, key)
        if inst is not None:
            found.append((key, inst))
    return found


def _ts(value: datetime | None) -> str | None:
    return kite_timestamp(value) if value else None


@routes.get("/quote")
async def quote(request: web.Request) -> web.StreamResponse:
    """``GET /quote``: full quotes with depth."""
    sim = sim_of(request)
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


@routes.get("/quote/ltp")
async def quote_ltp(request: web.Request) -> web.StreamResponse:
    """``GET /quote/ltp``."""
    sim = sim_of(request)
    out = {}
    for key, inst in _instruments_query(request, MAX_LTP):
        s = sim.market.snapshot(inst.instrument_token)
        out[key] = {"instrument_token": inst.instrument_token, "last_price": s.last_price}
    return ok(out)


@routes.get("/quote/ohlc")
async def quote_ohlc(request: web.Request) -> web.StreamResponse:
    """``GET /quote/ohlc``."""
    sim = sim_of(request)
    out = {}
    for key, inst in _instruments_query(request, MAX_LTP):
        s = sim.market.snapshot(inst.instrument_token)
        out[key] = {
            "instrument_token": inst.instrument_token,
            "last_price": s.last_price,
            "ohlc": {"open": s.open, "high": s.high, "low": s.low, "close": s.close},
        }
    return ok(out)


@routes.get("/instruments/historical/{instrument_token}/{interval}")
async def historical(request: web.Request) -> web.StreamResponse:
    """``GET /instruments/historical/:token/:interval``."""
    sim = sim_of(request)
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
