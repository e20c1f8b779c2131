"""Margin and charge calculators: ``/margins/orders``, ``/margins/basket``, ``/charges/orders``."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from kite_sim.errors import InputError
from kite_sim.margins import basket_margin, order_margin, zero_charges
from kite_sim.marketview import InstrumentLike
from kite_sim.routes.common import SimContext, account_of, json_list, ok, sim_of

routes = web.RouteTableDef()


def _margin_items(
    sim: SimContext, orders: list[dict[str, Any]]
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


@routes.post("/margins/orders")
async def order_margins(request: web.Request) -> web.StreamResponse:
    """``POST /margins/orders``."""
    sim = sim_of(request)
    account_of(request)
    return ok([m for _, _, m in _margin_items(sim, await json_list(request))])


@routes.post("/margins/basket")
async def basket_margins(request: web.Request) -> web.StreamResponse:
    """``POST /margins/basket``."""
    sim = sim_of(request)
    account_of(request)
    result = basket_margin(_margin_items(sim, await json_list(request)))
    if request.query.get("mode") == "compact":
        result["orders"] = [
            {k: o[k] for k in ("type", "tradingsymbol", "exchange", "total")}
            for o in result["orders"]
        ]
    return ok(result)


CONTRACT_NOTE_FIELDS = (
    "exchange",
    "tradingsymbol",
    "transaction_type",
    "variety",
    "product",
    "order_type",
    "quantity",
)


@routes.post("/charges/orders")
async def contract_note(request: web.Request) -> web.StreamResponse:
    """``POST /charges/orders``: each order with zero charges (charges are not modelled)."""
    account_of(request)
    notes = []
    for spec in await json_list(request):
        note = {name: spec.get(name) for name in CONTRACT_NOTE_FIELDS}
        note["price"] = spec.get("average_price", spec.get("price"))
        note["charges"] = zero_charges()
        notes.append(note)
    return ok(notes)
