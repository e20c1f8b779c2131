"""What every route module shares: the simulator it serves, envelopes, request parsing.

Route modules see the simulator through :class:`SimContext`, the part of
:class:`kite_sim.server.Simulator` they use, so they never import the server
(which builds the application from them).
"""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web

from kite_sim.auth import Account, Session, SessionStore
from kite_sim.clock import MarketClock
from kite_sim.config import SimConfig
from kite_sim.errors import InputError, KiteError, TokenError
from kite_sim.faults import FaultController
from kite_sim.feed import FeedHub
from kite_sim.gtt import GttBook
from kite_sim.historical import CandleGenerator
from kite_sim.market import Market
from kite_sim.order_rate import OrderRateMeter
from kite_sim.orders import OrderEngine
from kite_sim.portfolio import AuctionLot
from kite_sim.postbacks import PostbackSender
from kite_sim.ratelimit import RateLimiter
from kite_sim.universe import Universe
from ticker_core.calendar import NseCalendar
from ticker_core.kite_errors import success_envelope


class SimContext(Protocol):
    """The simulator as its routes see it (implemented by ``kite_sim.server.Simulator``)."""

    config: SimConfig
    calendar: NseCalendar
    clock: MarketClock
    accounts: list[Account]
    sessions: SessionStore
    universe: Universe
    market: Market
    engine: OrderEngine
    holdings: dict[str, list[tuple[int, int, float]]]
    auctions: dict[str, list[AuctionLot]]
    gtt: GttBook
    limiter: RateLimiter
    order_rate: OrderRateMeter
    faults: FaultController
    hub: FeedHub
    candles: CandleGenerator
    postbacks: PostbackSender
    session_loop: bool
    rest_counts: dict[str, int]
    feed_rounds: int
    feed_lag: float

    @property
    def rest_url(self) -> str:
        """KiteConnect's ``root``."""
        ...

    @property
    def ws_url(self) -> str:
        """KiteTicker's ``root``."""
        ...

    def account(self, api_key: str) -> Account:
        """The account of ``api_key``."""
        ...

    def dispatch_order_events(self) -> None:
        """Send queued order updates to sockets and postback URLs."""
        ...

    async def handle_ws(self, request: web.Request) -> web.StreamResponse:
        """Serve Kite's WebSocket on this request."""
        ...

    async def hold(self, seconds: float) -> None:
        """Wait ``seconds``, or less if the simulator stops meanwhile."""
        ...


SIM_KEY: web.AppKey[SimContext] = web.AppKey("kite_sim", SimContext)
SESSION_KEY: web.RequestKey[Session] = web.RequestKey("kite_session", Session)


def sim_of(request: web.Request) -> SimContext:
    """The simulator serving ``request``."""
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


async def form_params(request: web.Request) -> dict[str, str]:
    """Form fields (POST/PUT) merged over query parameters."""
    params = dict(request.query)
    if request.method in ("POST", "PUT") and request.can_read_body:
        form = await request.post()
        params.update({k: str(v) for k, v in form.items()})
    return params


async def json_list(request: web.Request) -> list[dict[str, Any]]:
    """A JSON array of objects (margin and charge calculators)."""
    try:
        data = await request.json()
    except ValueError:
        raise InputError("Expected a JSON array of orders.") from None
    if not isinstance(data, list) or not all(isinstance(x, dict) for x in data):
        raise InputError("Expected a JSON array of orders.")
    return data
