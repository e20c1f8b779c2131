"""Orders and trades: place, modify, cancel (and exit a cover order), the book, history."""

from __future__ import annotations

from aiohttp import web

from kite_sim.auth import Account
from kite_sim.routes.common import SimContext, account_of, form_params, ok, sim_of

routes = web.RouteTableDef()


def _order_call(request: web.Request) -> tuple[SimContext, Account]:
    """The simulator and the account, once the order IP check passed."""
    sim = sim_of(request)
    account = account_of(request)
    account.require_ip(request.remote)
    return sim, account


@routes.get("/orders")
async def list_orders(request: web.Request) -> web.StreamResponse:
    """``GET /orders``."""
    return ok(sim_of(request).engine.orders(account_of(request)))


@routes.get("/trades")
async def trades(request: web.Request) -> web.StreamResponse:
    """``GET /trades``."""
    return ok(sim_of(request).engine.trades(account_of(request)))


@routes.post("/orders/{variety}")
async def place_order(request: web.Request) -> web.StreamResponse:
    """``POST /orders/:variety``."""
    sim, account = _order_call(request)
    params = await form_params(request)
    try:
        order = sim.engine.place(account, request.match_info["variety"], params)
    finally:
        sim.dispatch_order_events()
    return ok({"order_id": order.order_id})


@routes.get("/orders/{order_id}")
async def order_history(request: web.Request) -> web.StreamResponse:
    """``GET /orders/:order_id``."""
    sim = sim_of(request)
    return ok(sim.engine.order_history(account_of(request), request.match_info["order_id"]))


@routes.put("/orders/{variety}/{order_id}")
async def modify_order(request: web.Request) -> web.StreamResponse:
    """``PUT /orders/:variety/:order_id``."""
    sim, account = _order_call(request)
    params = await form_params(request)
    try:
        order = sim.engine.modify(
            account, request.match_info["variety"], request.match_info["order_id"], params
        )
    finally:
        sim.dispatch_order_events()
    return ok({"order_id": order.order_id})


@routes.delete("/orders/{variety}/{order_id}")
async def cancel_order(request: web.Request) -> web.StreamResponse:
    """``DELETE /orders/:variety/:order_id`` (with ``parent_order_id``: exit a cover order)."""
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


@routes.get("/orders/{order_id}/trades")
async def order_trades(request: web.Request) -> web.StreamResponse:
    """``GET /orders/:order_id/trades``."""
    sim = sim_of(request)
    return ok(sim.engine.trades(account_of(request), request.match_info["order_id"]))
