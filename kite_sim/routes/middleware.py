"""The one middleware in front of every route.

In order: admin authorization (``/_sim``), injected REST latency and errors,
session authentication (``Authorization: token api_key:access_token``), order
call accounting and rate limiting (HTTP 429), turning :class:`KiteError` into
Kite's error envelope by type, and, for a call that was served, losing its
answer when a fault says so (held past the client's timeout, or the
connection reset).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import socket
import struct
from collections.abc import Awaitable, Callable

from aiohttp import web

from kite_sim.errors import (
    GeneralError,
    KiteError,
    NotFoundError,
    error_for_status,
    too_many_requests,
)
from kite_sim.faults import HANG_AFTER_ACCEPT, AfterAcceptFault, FaultSpecError
from kite_sim.ratelimit import Category, category_for
from kite_sim.routes.common import SESSION_KEY, SimContext, fail, sim_of

log = logging.getLogger("kite_sim")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PUBLIC = {
    ("GET", "/"),
    ("GET", "/connect/login"),
    ("POST", "/session/token"),
    ("DELETE", "/session/token"),
}


@web.middleware
async def kite_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Admin auth, faults, authentication, rate limits and error envelopes."""
    sim = sim_of(request)
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
        if api_key is not None:
            category = category_for(request.method, path)
            allowed = sim.limiter.allow(api_key, category)
            if category is Category.ORDERS:
                sim.order_rate.record(api_key, accepted=allowed)
            if not allowed:
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
    if response.status < 400:
        lost = sim.faults.take_after_accept(request.method, path, api_key)
        if lost is not None:
            await _lose_answer(sim, request, lost)
    return response


async def _lose_answer(sim: SimContext, request: web.Request, fault: AfterAcceptFault) -> None:
    """The call took effect; make its answer late (hang) or never arrive (reset)."""
    if fault.kind == HANG_AFTER_ACCEPT:
        await sim.hold(fault.seconds)
        return
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # Linger 0: closing sends a TCP RST, as a dropped middlebox or crashed peer would.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _api_key_hint(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.startswith("token ") and ":" in header:
        return header[len("token ") :].split(":", 1)[0].strip() or None
    return request.query.get("api_key")
