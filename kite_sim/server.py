"""The simulator: one aiohttp server for Kite's REST API, its WebSocket and an admin API.

The pure parts (market, order engine, sessions, rate limiter, faults, feed
hub) are assembled here and driven by one feed loop on the event loop:
every ``tick_interval`` it runs scheduled faults, advances the market,
matches orders and GTTs, sends order updates and postbacks, and sends each
connection one binary frame of its due instruments (or a heartbeat when it
has been idle for ``heartbeat_interval``).

Embedding::

    async with Simulator(SimConfig(seed=7)) as sim:   # ephemeral port on 127.0.0.1
        sim.rest_url, sim.ws_url, sim.accounts[0].api_key, sim.issue_access_token()

    with ThreadedSimulator(SimConfig()) as sim:        # for synchronous clients
        KiteConnect(sim.accounts[0].api_key, root=sim.rest_url)
        sim.call(lambda: sim.sim.faults.drop_connections())  # state: on its loop
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any, TypeVar

import numpy as np
from aiohttp import WSMsgType, web

from kite_sim.app import build_app
from kite_sim.auth import Account, SessionStore, generate_account
from kite_sim.clock import MarketClock, MonotonicClock, WallClock
from kite_sim.config import SimConfig
from kite_sim.errors import TokenError
from kite_sim.faults import MALFORMED_KINDS, FaultController
from kite_sim.feed import Connection, ConnectionLimitError, FeedHub
from kite_sim.gtt import GttBook
from kite_sim.historical import CandleGenerator
from kite_sim.market import Market
from kite_sim.order_rate import OrderRateMeter
from kite_sim.orders import OrderEngine
from kite_sim.portfolio import AuctionLot
from kite_sim.postbacks import PostbackSender, order_message, wants_postback
from kite_sim.ratelimit import RateLimiter
from kite_sim.universe import build_universe, resolve_rates
from kite_sim.wire import HEARTBEAT, encode_text, encode_ticks, malformed_frame, one_packet
from ticker_core.calendar import NseCalendar
from ticker_core.tz import IST

log = logging.getLogger("kite_sim")
FIRST_AUCTION_NUMBER = 20  # auction numbers are small integers, as Kite's
T = TypeVar("T")


def default_market_start(calendar: NseCalendar, today: date | None = None) -> datetime:
    """09:15 IST on ``today`` (IST) if it is a trading day, else the next one."""
    day = today or datetime.now(IST).date()
    while not calendar.is_trading_day(day):
        day += timedelta(days=1)
    return datetime.combine(day, time(9, 15), IST)


@dataclass
class Client:
    """A live WebSocket connection: its feed state, socket and send queue."""

    conn: Connection
    ws: web.WebSocketResponse
    transport: asyncio.Transport | None
    queue: asyncio.Queue[tuple[str, Any, Any]] = field(default_factory=asyncio.Queue)
    backlog: int = 0  # tick frames queued and not yet written
    writer: asyncio.Task[None] | None = None


class Simulator:
    """The whole simulator, embeddable in tests (``async with``) and run by the CLI."""

    def __init__(
        self,
        config: SimConfig | None = None,
        *,
        clock: MonotonicClock | None = None,
        calendar: NseCalendar | None = None,
    ) -> None:
        self.config = cfg = config or SimConfig()
        self.base_clock = clock or WallClock()
        self.calendar = calendar or NseCalendar.load()
        start = cfg.market_start or default_market_start(self.calendar)
        self.clock = MarketClock(self.base_clock, start, cfg.market_speed)
        self.accounts = [self._make_account(i, a) for i, a in enumerate(cfg.accounts)]
        self.sessions = SessionStore(self.accounts, self.clock)
        self.universe = build_universe(cfg.seed, start.date(), self.calendar, cfg.universe)
        self.market = Market(
            self.universe, self.clock, seed=cfg.seed, step_seconds=cfg.step_seconds
        )
        self.engine = OrderEngine(
            self.market,
            self.clock,
            session_open=self._session_open,
            opening_funds=cfg.opening_funds,
            check_funds=cfg.check_funds,
        )
        self.holdings = self._seed_holdings()
        self.auctions = self._seed_auctions()
        self.engine.holdings_provider = self._held
        self.engine.auction_lots = lambda account: self.auctions.get(account.api_key, [])
        self.gtt = GttBook(self.market, self.engine, self.clock)
        self.limiter = RateLimiter(
            self.base_clock, cfg.rate_limits, enabled=cfg.rate_limits_enabled
        )
        self.order_rate = OrderRateMeter(self.base_clock)
        self.faults = FaultController(
            self.base_clock, expire_tokens=lambda key: self.sessions.expire(api_key=key)
        )
        self.hub = FeedHub(
            self.market.tokens,
            resolve_rates(self.universe, cfg.default_tick_rate, cfg.tick_rates),
            seed=cfg.seed,
            max_ticks_per_second=cfg.max_ticks_per_second,
            max_connections_per_key=cfg.max_connections_per_key,
            max_instruments_per_connection=cfg.max_instruments_per_connection,
        )
        self.candles = CandleGenerator(cfg.seed, self.calendar)
        self.postbacks = PostbackSender(cfg.postback_timeout)
        self.session_loop = cfg.session_loop
        self.clients: dict[int, Client] = {}
        self.rest_counts: dict[str, int] = {}
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._feed_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._stopped = asyncio.Event()
        self.feed_rounds = 0
        self.feed_lag = 0.0
        for spec in cfg.faults:
            self.faults.apply(spec)
        self.app = build_app(self)

    # -- construction helpers ------------------------------------------------------
    @staticmethod
    def _make_account(index: int, spec: Any) -> Account:
        overrides: dict[str, object] = {}
        for name in ("user_id", "api_key", "api_secret", "redirect_url", "postback_url"):
            value = getattr(spec, name)
            if value is not None:
                overrides[name] = value
        if spec.registered_ips is not None:
            overrides["registered_ips"] = set(spec.registered_ips)
        overrides["enforce_ip"] = spec.enforce_ip
        return generate_account(index, **overrides)

    def _seed_holdings(self) -> dict[str, list[tuple[int, int, float]]]:
        """A few delivery holdings per account: (instrument index, quantity, average)."""
        out: dict[str, list[tuple[int, int, float]]] = {}
        spots = [k for k in self.universe.spot_index.values() if not self.market.is_index[k]]
        for n, account in enumerate(self.accounts):
            rng = np.random.default_rng([self.config.seed, 9, n])
            picks = rng.choice(len(spots), size=min(5, len(spots)), replace=False)
            rows = []
            for p in picks:
                k = spots[int(p)]
                qty = int(rng.integers(1, 20)) * 5
                avg = round(float(self.market.close[k]) * float(rng.uniform(0.7, 1.1)), 2)
                rows.append((k, qty, avg))
            out[account.api_key] = rows
        return out

    def _seed_auctions(self) -> dict[str, list[AuctionLot]]:
        """Each account's first holding is wanted in an auction (its whole quantity)."""
        out: dict[str, list[AuctionLot]] = {}
        for api_key, rows in self.holdings.items():
            k, qty, _ = rows[0]
            token = int(self.universe.instruments[k].instrument_token)
            out[api_key] = [AuctionLot(str(FIRST_AUCTION_NUMBER + k), token, qty)]
        return out

    def _held(self, account: Account, inst: Any) -> int:
        k = self.market.token_index.get(int(inst.instrument_token))
        return sum(q for i, q, _ in self.holdings.get(account.api_key, []) if i == k)

    def _session_open(self, exchange: str, when: datetime) -> bool:
        return self.calendar.is_open(when)

    # -- public embedding API --------------------------------------------------------
    @property
    def rest_url(self) -> str:
        """``http://127.0.0.1:PORT``: KiteConnect's ``root``."""
        return f"http://{self._url_host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """``ws://127.0.0.1:PORT``: KiteTicker's ``root``."""
        return f"ws://{self._url_host}:{self.port}"

    @property
    def _url_host(self) -> str:
        host = self.config.host
        return "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104  # nosec B104

    def issue_access_token(self, account_index: int = 0) -> str:
        """A session for an account without the login redirect (tests, admin)."""
        return self.sessions.issue_session(self.accounts[account_index].api_key).access_token

    def account(self, api_key: str) -> Account:
        """The account of ``api_key``."""
        return self.sessions.account(api_key)

    async def start(self) -> None:
        """Listen on ``config.host``/``config.port`` and start the feed loop."""
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port, reuse_address=True)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1]) if sockets else self.config.port
        self._feed_task = asyncio.get_running_loop().create_task(self._feed_loop())

    async def stop(self) -> None:
        """Close every connection, stop the feed and the server."""
        self._stopping = True
        self._stopped.set()
        if self._feed_task is not None:
            self._feed_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._feed_task
        for client in list(self.clients.values()):
            with contextlib.suppress(Exception):
                await client.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.postbacks.close()

    async def hold(self, seconds: float) -> None:
        """Wait ``seconds``, or less if the simulator stops meanwhile (held answers)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), seconds)

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- order events -------------------------------------------------------------------
    def dispatch_order_events(self) -> None:
        """Send queued order updates to sockets and postback URLs."""
        for event in self.engine.drain_events():
            text = encode_text("order", order_message(event))
            for client in self.clients.values():
                if client.conn.api_key == event.account.api_key:
                    self._enqueue(client, "text", text)
            if self.config.postbacks and wants_postback(event):
                self.postbacks.submit(event)

    # -- WebSocket ------------------------------------------------------------------------
    async def handle_ws(self, request: web.Request) -> web.StreamResponse:
        """Kite's WebSocket: ``/?api_key=...&access_token=...``."""
        api_key = request.query.get("api_key")
        access_token = request.query.get("access_token")
        refused = self.faults.take_handshake_refusal(api_key)
        if refused is not None:
            return web.Response(status=refused, text="Handshake refused (fault injection).")
        try:
            session = self.sessions.authenticate(api_key, access_token)
        except TokenError as exc:
            return web.Response(status=403, text=exc.message)
        try:
            conn = self.hub.open(session.account.api_key, session.account.user_id)
        except ConnectionLimitError as exc:
            return web.Response(status=429, text=str(exc))
        ws = web.WebSocketResponse(autoping=True, compress=False, max_msg_size=16 * 1024 * 1024)
        try:
            await ws.prepare(request)
        except Exception:
            self.hub.close(conn)
            raise
        transport = request.transport
        client = Client(conn, ws, transport if isinstance(transport, asyncio.Transport) else None)
        client.writer = asyncio.get_running_loop().create_task(self._writer(client))
        self.clients[conn.conn_id] = client
        try:
            async for msg in ws:
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    now = self.base_clock.monotonic()
                    for error in self.hub.handle_text(conn, msg.data, now):
                        self._enqueue(client, "text", encode_text("error", error))
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            self.clients.pop(conn.conn_id, None)
            self.hub.close(conn)
            if client.writer is not None:
                client.writer.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await client.writer
        return ws

    def _enqueue(self, client: Client, kind: str, payload: Any, idx: Any = None) -> None:
        if kind == "ticks":
            client.backlog += 1
        client.queue.put_nowait((kind, payload, idx))

    async def _writer(self, client: Client) -> None:
        conn, ws = client.conn, client.ws
        while True:
            kind, payload, idx = await client.queue.get()
            if kind == "ticks":
                client.backlog -= 1
            if ws.closed:
                continue
            if self.faults.ws_latency:
                await asyncio.sleep(self.faults.ws_latency)
            try:
                if kind == "text":
                    await ws.send_str(payload)
                    conn.text_sent += 1
                else:
                    await ws.send_bytes(payload)
            except (ConnectionError, RuntimeError):
                continue
            now = self.base_clock.monotonic()
            if kind == "ticks":
                self.hub.record_sent(conn, idx, now)
            elif kind == "heartbeat":
                conn.heartbeats_sent += 1
            conn.last_sent = now

    def _apply_connection_actions(self) -> None:
        for action in self.faults.take_connection_actions():
            targets = [
                c
                for c in self.clients.values()
                if action.api_key is None or c.conn.api_key == action.api_key
            ]
            if action.count is not None:
                targets = targets[: action.count]
            for client in targets:
                if action.kind == "drop":
                    if client.transport is not None:
                        client.transport.abort()
                else:
                    kind = action.malformed if action.malformed in MALFORMED_KINDS else "truncated"
                    frame = malformed_frame(kind, one_packet(self.market, 0))
                    self._enqueue(client, "raw", frame)

    # -- the feed loop ------------------------------------------------------------------------
    def _check_session_loop(self) -> None:
        if not self.session_loop:
            return
        now = self.clock.now()
        if not self.calendar.is_open(now):
            self.clock.set(self.calendar.next_open(now))

    def feed_round(self) -> int:
        """One round of the feed (synchronous part); packets queued."""
        self.faults.run_due()
        self._apply_connection_actions()
        self._check_session_loop()
        self.market.advance()
        self.engine.step()
        self.gtt.step()
        self.dispatch_order_events()
        now = self.base_clock.monotonic()
        open_now = self.calendar.is_open(self.clock.now())
        due = self.hub.due(now) if open_now else np.empty(0, dtype=np.int64)
        self.market.tick(due)
        fresh = self.hub.fresh_indices()
        if len(fresh):
            self.market.refresh(np.setdiff1d(fresh, due))
        queued = 0
        limit = self.config.send_queue_frames
        for client in self.clients.values():
            conn = client.conn
            if self.faults.is_silent(conn.api_key):
                continue
            idx, modes = self.hub.plan(conn, due)
            if len(idx):
                if client.backlog >= limit:
                    conn.frames_dropped += 1
                else:
                    self._enqueue(client, "ticks", encode_ticks(self.market, idx, modes), idx)
                    queued += len(idx)
                    continue
            if client.queue.empty() and now - conn.last_sent >= self.config.heartbeat_interval:
                self._enqueue(client, "heartbeat", HEARTBEAT)
                conn.last_sent = now
        self.feed_rounds += 1
        return queued

    async def _feed_loop(self) -> None:
        interval = self.config.tick_interval
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while not self._stopping:
            try:
                self.feed_round()
            except Exception:  # keep the feed alive; the error is logged
                log.exception("feed round failed")
            next_at += interval
            delay = next_at - loop.time()
            if delay < 0:
                self.feed_lag = -delay
                next_at = loop.time()
                delay = 0
            await asyncio.sleep(delay)


class ThreadedSimulator:
    """A :class:`Simulator` on its own event loop in a background thread.

    For synchronous clients (``KiteConnect``, ``KiteTicker``) in tests and
    benchmarks. Touch the simulator's state only through :meth:`call`, which
    runs a function on the simulator's loop and returns its result.
    """

    def __init__(self, config: SimConfig | None = None, **kwargs: Any) -> None:
        self._config = config
        self._kwargs = kwargs
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.sim: Simulator | None = None

    def start(self, timeout: float = 60.0) -> Simulator:
        """Build and start the simulator; returns it once it listens."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                self.sim = Simulator(self._config, **self._kwargs)
                loop.run_until_complete(self.sim.start())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.sim.stop())
            loop.close()

        self._thread = threading.Thread(target=run, name="kite-sim", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError("simulator did not start")
        if failure:
            raise failure[0]
        return self._running()

    def _running(self) -> Simulator:
        if self.sim is None:
            raise RuntimeError("the simulator is not running")
        return self.sim

    def call(self, fn: Callable[[], T], timeout: float = 30.0) -> T:
        """Run ``fn()`` on the simulator's loop and return what it returns."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the simulator is not running")

        async def wrapper() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(wrapper(), loop).result(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the simulator and its thread."""
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)

    @property
    def rest_url(self) -> str:
        """The running simulator's REST root."""
        return self._running().rest_url

    @property
    def ws_url(self) -> str:
        """The running simulator's WebSocket root."""
        return self._running().ws_url

    @property
    def accounts(self) -> list[Account]:
        """The simulated accounts (credentials are fixed once started)."""
        return self._running().accounts

    def issue_access_token(self, account_index: int = 0) -> str:
        """An access token without the login redirect."""
        sim = self._running()
        return self.call(lambda: sim.issue_access_token(account_index))

    def __enter__(self) -> ThreadedSimulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
