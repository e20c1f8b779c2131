"""Portfolio and funds: positions (and their conversion), holdings, auctions, margins."""

from __future__ import annotations

from aiohttp import web

from kite_sim.errors import InputError
from kite_sim.margins import segment_funds
from kite_sim.portfolio import auction_row, holding_row
from kite_sim.routes.common import account_of, form_params, ok, sim_of

routes = web.RouteTableDef()


@routes.get("/user/margins")
@routes.get("/user/margins/{segment}")
async def margins(request: web.Request) -> web.StreamResponse:
    """``GET /user/margins`` and ``/user/margins/:segment``."""
    sim = sim_of(request)
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


@routes.get("/portfolio/positions")
async def positions(request: web.Request) -> web.StreamResponse:
    """``GET /portfolio/positions``."""
    return ok(sim_of(request).engine.positions(account_of(request)))


@routes.put("/portfolio/positions")
async def convert_position(request: web.Request) -> web.StreamResponse:
    """``PUT /portfolio/positions``: accepted (the simulator keeps products as traded)."""
    params = await form_params(request)
    for name in ("exchange", "tradingsymbol", "transaction_type", "quantity", "old_product"):
        if not params.get(name):
            raise InputError(f"Missing `{name}`.")
    return ok(True)


@routes.get("/portfolio/holdings")
async def holdings(request: web.Request) -> web.StreamResponse:
    """``GET /portfolio/holdings``."""
    sim = sim_of(request)
    account = account_of(request)
    today = sim.clock.now().date()
    rows = []
    for k, qty, avg in sim.holdings.get(account.api_key, []):
        inst = sim.universe.instruments[k]
        snap = sim.market.snapshot(inst.instrument_token)
        rows.append(holding_row(inst, qty, avg, snap, today))
    return ok(rows)


@routes.get("/portfolio/holdings/auctions")
async def auctions(request: web.Request) -> web.StreamResponse:
    """``GET /portfolio/holdings/auctions``: holdings the day's auctions want."""
    sim = sim_of(request)
    account = account_of(request)
    today = sim.clock.now().date()
    average = {
        int(sim.universe.instruments[k].instrument_token): avg
        for k, _, avg in sim.holdings.get(account.api_key, [])
    }
    rows = []
    for lot in sim.auctions.get(account.api_key, []):
        inst = sim.market.by_token(lot.instrument_token)
        if inst is None:
            continue
        snap = sim.market.snapshot(lot.instrument_token)
        rows.append(auction_row(lot, inst, average.get(lot.instrument_token, 0.0), snap, today))
    return ok(rows)


@routes.get("/mf/orders")
@routes.get("/mf/sips")
@routes.get("/mf/holdings")
async def empty_list(request: web.Request) -> web.StreamResponse:
    """Mutual fund lists: served empty (mutual funds are not modelled)."""
    account_of(request)
    return ok([])
