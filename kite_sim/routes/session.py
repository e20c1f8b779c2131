"""The root (WebSocket or a description), the login redirect, sessions and the profile."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from aiohttp import web

from kite_sim.auth import Account
from kite_sim.clock import kite_timestamp
from kite_sim.errors import InputError
from kite_sim.routes.common import account_of, form_params, ok, sim_of

routes = web.RouteTableDef()


@routes.get("/")
async def root(request: web.Request) -> web.StreamResponse:
    """The WebSocket (with ``Upgrade``), or a short description."""
    sim = sim_of(request)
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return await sim.handle_ws(request)
    return web.json_response(
        {"service": "kite_sim", "rest_url": sim.rest_url, "ws_url": sim.ws_url}
    )


@routes.get("/connect/login")
async def connect_login(request: web.Request) -> web.StreamResponse:
    """``/connect/login``: log the app's user in and redirect with a request token."""
    sim = sim_of(request)
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


def user_payload(account: Account) -> dict[str, Any]:
    """The user's profile, as ``GET /user/profile`` and the session show it."""
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


@routes.post("/session/token")
async def session_token(request: web.Request) -> web.StreamResponse:
    """``POST /session/token``: exchange a request token for an access token."""
    sim = sim_of(request)
    params = await form_params(request)
    for name in ("api_key", "request_token", "checksum"):
        if not params.get(name):
            raise InputError(f"Missing `{name}`.")
    session = sim.sessions.create_session(
        params["api_key"], params["request_token"], params["checksum"]
    )
    data = user_payload(session.account)
    data.update(
        api_key=session.account.api_key,
        access_token=session.access_token,
        public_token=session.public_token,
        refresh_token="",  # nosec B106 - Kite gives individual apps no refresh token
        enctoken=session.public_token,
        silo="",
        login_time=kite_timestamp(session.login_time),
    )
    return ok(data)


@routes.delete("/session/token")
async def session_delete(request: web.Request) -> web.StreamResponse:
    """``DELETE /session/token``: log out."""
    sim = sim_of(request)
    api_key = request.query.get("api_key", "")
    token = request.query.get("access_token", "")
    return ok(sim.sessions.invalidate(api_key, token))


@routes.get("/user/profile")
async def profile(request: web.Request) -> web.StreamResponse:
    """``GET /user/profile``."""
    return ok(user_payload(account_of(request)))
