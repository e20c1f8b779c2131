"""The admin API at ``/_sim``: credentials, counters, faults, sessions, clock, market, rates."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web

from kite_sim.faults import FaultSpecError
from kite_sim.routes.common import sim_of
from kite_sim.universe import resolve_rates

routes = web.RouteTableDef()


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    data = await request.json()
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    return data


@routes.get("/_sim/info")
async def admin_info(request: web.Request) -> web.StreamResponse:
    """``GET /_sim/info``: URLs and the accounts' credentials."""
    sim = sim_of(request)
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


@routes.get("/_sim/counters")
async def admin_counters(request: web.Request) -> web.StreamResponse:
    """``GET /_sim/counters``: ticks sent per connection and instrument, REST, orders.

    ``order_rate``: per API key, the order calls (place, modify, cancel) that
    reached the simulator and the most of them in any one-second window.
    """
    sim = sim_of(request)
    per_instrument = request.query.get("per_instrument", "1") not in ("0", "false")
    feed = sim.hub.counters(per_instrument=per_instrument)
    feed["rounds"] = sim.feed_rounds
    feed["lag_seconds"] = round(sim.feed_lag, 4)
    return web.json_response(
        {
            "feed": feed,
            "rest": dict(sim.rest_counts),
            "rate_limited": sim.limiter.refused,
            "order_rate": sim.order_rate.describe(),
            "orders": sim.engine.counts(),
            "postbacks": {"sent": sim.postbacks.sent, "failed": sim.postbacks.failed},
            "faults": sim.faults.describe()["fired"],
        }
    )


@routes.get("/_sim/faults")
async def admin_faults_get(request: web.Request) -> web.StreamResponse:
    """``GET /_sim/faults``."""
    return web.json_response(sim_of(request).faults.describe())


@routes.post("/_sim/faults")
async def admin_faults_post(request: web.Request) -> web.StreamResponse:
    """``POST /_sim/faults``: one spec or a list of specs."""
    sim = sim_of(request)
    body = await request.json()
    specs = body if isinstance(body, list) else [body]
    for spec in specs:
        if not isinstance(spec, dict):
            raise FaultSpecError("a fault spec must be a JSON object")
        sim.faults.apply(spec)
    return web.json_response(sim.faults.describe())


@routes.delete("/_sim/faults")
async def admin_faults_delete(request: web.Request) -> web.StreamResponse:
    """``DELETE /_sim/faults``."""
    sim = sim_of(request)
    sim.faults.clear()
    return web.json_response(sim.faults.describe())


@routes.post("/_sim/tokens/expire")
async def admin_expire(request: web.Request) -> web.StreamResponse:
    """``POST /_sim/tokens/expire`` ``{api_key?, access_token?}``."""
    sim = sim_of(request)
    body = await _body(request)
    count = sim.sessions.expire(api_key=body.get("api_key"), access_token=body.get("access_token"))
    return web.json_response({"expired": count})


@routes.post("/_sim/sessions")
async def admin_session(request: web.Request) -> web.StreamResponse:
    """``POST /_sim/sessions`` ``{api_key?}``: an access token without the login dance."""
    sim = sim_of(request)
    body = await _body(request)
    api_key = body.get("api_key") or sim.accounts[0].api_key
    session = sim.sessions.issue_session(api_key)
    return web.json_response({"api_key": api_key, "access_token": session.access_token})


@routes.get("/_sim/clock")
@routes.post("/_sim/clock")
async def admin_clock(request: web.Request) -> web.StreamResponse:
    """``GET/POST /_sim/clock`` ``{set?, advance?, speed?, session_loop?}``."""
    sim = sim_of(request)
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


@routes.get("/_sim/market")
async def admin_market(request: web.Request) -> web.StreamResponse:
    """``GET /_sim/market``: underlyings' spot, volatility and basis."""
    return web.json_response(sim_of(request).market.describe())


@routes.post("/_sim/market/shock")
async def admin_shock(request: web.Request) -> web.StreamResponse:
    """``POST /_sim/market/shock`` ``{underlying, pct}``: move a spot at once."""
    sim = sim_of(request)
    body = await _body(request)
    sim.market.shock(str(body["underlying"]), float(body["pct"]))
    return web.json_response(sim.market.describe())


@routes.post("/_sim/accounts/{api_key}/ips")
async def admin_ips(request: web.Request) -> web.StreamResponse:
    """``POST /_sim/accounts/:api_key/ips`` ``{registered_ips?, enforce?}``."""
    sim = sim_of(request)
    account = sim.account(request.match_info["api_key"])
    body = await _body(request)
    if "registered_ips" in body:
        account.registered_ips = {str(ip) for ip in body["registered_ips"]}
    if "enforce" in body:
        account.enforce_ip = bool(body["enforce"])
    return web.json_response(
        {"registered_ips": sorted(account.registered_ips), "enforce": account.enforce_ip}
    )


@routes.post("/_sim/tick_rates")
async def admin_tick_rates(request: web.Request) -> web.StreamResponse:
    """``POST /_sim/tick_rates`` ``{rates?: {key: ticks_per_s}, max_ticks_per_second?}``."""
    sim = sim_of(request)
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


@routes.get("/_sim/postbacks")
async def admin_postbacks(request: web.Request) -> web.StreamResponse:
    """``GET /_sim/postbacks``: the last postback deliveries."""
    sim = sim_of(request)
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
