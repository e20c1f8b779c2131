"""Good-till-triggered orders: ``/gtt/triggers``."""

from __future__ import annotations

from aiohttp import web

from kite_sim.errors import InputError
from kite_sim.routes.common import account_of, form_params, ok, sim_of

routes = web.RouteTableDef()


def _trigger_id(request: web.Request) -> int:
    text = request.match_info["trigger_id"]
    if not text.isdigit():
        raise InputError("Invalid `trigger_id`.")
    return int(text)


@routes.get("/gtt/triggers")
async def gtt_list(request: web.Request) -> web.StreamResponse:
    """``GET /gtt/triggers``."""
    return ok(sim_of(request).gtt.list(account_of(request)))


@routes.post("/gtt/triggers")
async def gtt_place(request: web.Request) -> web.StreamResponse:
    """``POST /gtt/triggers``."""
    sim = sim_of(request)
    account = account_of(request)
    return ok({"trigger_id": sim.gtt.place(account, await form_params(request))})


@routes.get("/gtt/triggers/{trigger_id}")
async def gtt_get(request: web.Request) -> web.StreamResponse:
    """``GET /gtt/triggers/:id``."""
    sim = sim_of(request)
    return ok(sim.gtt.get(account_of(request), _trigger_id(request)).to_kite())


@routes.put("/gtt/triggers/{trigger_id}")
async def gtt_modify(request: web.Request) -> web.StreamResponse:
    """``PUT /gtt/triggers/:id``."""
    sim = sim_of(request)
    account = account_of(request)
    trigger_id = sim.gtt.modify(account, _trigger_id(request), await form_params(request))
    return ok({"trigger_id": trigger_id})


@routes.delete("/gtt/triggers/{trigger_id}")
async def gtt_delete(request: web.Request) -> web.StreamResponse:
    """``DELETE /gtt/triggers/:id``."""
    sim = sim_of(request)
    return ok({"trigger_id": sim.gtt.delete(account_of(request), _trigger_id(request))})
