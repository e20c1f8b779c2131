"""The aiohttp application: Kite's REST API, the WebSocket at ``/`` and the admin API.

A small factory: one middleware (:mod:`kite_sim.routes.middleware`) and one
route table per area (:mod:`kite_sim.routes`). Handlers are thin: each
parses the request, calls the pure core and wraps the answer in Kite's
envelope.
"""

from __future__ import annotations

from aiohttp import web

from kite_sim.routes import admin, gtt, margins, market, orders, portfolio, session
from kite_sim.routes.common import SIM_KEY, SimContext
from kite_sim.routes.middleware import kite_middleware

MAX_BODY_BYTES = 8 * 1024 * 1024
ROUTE_TABLES = (
    session.routes,
    portfolio.routes,
    orders.routes,
    market.routes,
    margins.routes,
    gtt.routes,
    admin.routes,
)


def build_app(sim: SimContext) -> web.Application:
    """The aiohttp application serving ``sim``."""
    app = web.Application(middlewares=[kite_middleware], client_max_size=MAX_BODY_BYTES)
    app[SIM_KEY] = sim
    for table in ROUTE_TABLES:
        app.add_routes(table)
    return app


__all__ = ["build_app"]
