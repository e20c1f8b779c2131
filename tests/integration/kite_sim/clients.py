"""Helpers that drive the official kiteconnect clients against the simulator."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import requests

from kite_sim.server import ThreadedSimulator
from tests.waiting import wait_until


class PostbackReceiver:
    """A loopback HTTP server that records the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/postback"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> PostbackReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def login(sim: ThreadedSimulator, account_index: int = 0) -> Any:
    """The official login flow: redirect with request_token, then generate_session."""
    from kiteconnect import KiteConnect

    account = sim.accounts[account_index]
    response = requests.get(
        f"{sim.rest_url}/connect/login",
        params={"api_key": account.api_key, "v": "3"},
        allow_redirects=False,
        timeout=10,
    )
    assert response.status_code == 302
    query = parse_qs(urlparse(response.headers["Location"]).query)
    assert query["status"] == ["success"]
    kite = KiteConnect(account.api_key, root=sim.rest_url)
    kite.generate_session(query["request_token"][0], account.api_secret)
    return kite


class TickerProbe:
    """A KiteTicker on the shared reactor, recording what its callbacks see."""

    def __init__(
        self,
        reactor: Any,
        api_key: str,
        access_token: str,
        root: str,
        *,
        on_connect: Callable[[Any], None] | None = None,
        reconnect: bool = False,
    ) -> None:
        from kiteconnect import KiteTicker

        self.reactor = reactor
        self.ticks: list[dict[str, Any]] = []
        self.orders: list[dict[str, Any]] = []
        self.errors: list[tuple[Any, Any]] = []
        self.closes: list[tuple[Any, Any]] = []
        self.connects = 0
        self.reconnects: list[int] = []
        self.kws = KiteTicker(
            api_key,
            access_token,
            root=root,
            reconnect=reconnect,
            reconnect_max_delay=5,
            reconnect_max_tries=3,
            connect_timeout=10,
        )
        self.kws.on_ticks = lambda ws, ticks: self.ticks.extend(ticks)
        self.kws.on_order_update = lambda ws, data: self.orders.append(data)
        self.kws.on_error = lambda ws, code, reason: self.errors.append((code, reason))
        self.kws.on_close = lambda ws, code, reason: self.closes.append((code, reason))
        self.kws.on_reconnect = lambda ws, n: self.reconnects.append(n)
        user_on_connect = on_connect

        def connected(ws: Any, response: Any) -> None:
            self.connects += 1
            if user_on_connect is not None:
                user_on_connect(ws)

        self.kws.on_connect = connected

    def connect(self) -> TickerProbe:
        self.reactor.callFromThread(self.kws.connect)
        return self

    def run(self, fn: Callable[[Any], None]) -> None:
        """Call ``fn(kws)`` on the reactor thread (subscribe, set_mode...)."""
        self.reactor.callFromThread(fn, self.kws)

    def close(self) -> None:
        self.reactor.callFromThread(self.kws.close)
        wait_until(lambda: not self.kws.is_connected(), what="ticker close")

    def failed_with(self, status: int) -> bool:
        """Whether the handshake failed with HTTP ``status`` (as autobahn reports it)."""
        return any(str(status) in str(reason) for _, reason in self.errors + self.closes)
