"""One Kite WebSocket connection, kept alive all day.

An asyncio task over a ``websockets`` asyncio client connection; frames go
to the pipeline undecoded (Kite's binary codec is ``ticker_core.kite_wire``).
Per connection:

* **watchdog**: no frame at all (Kite sends a 1-byte heartbeat every second)
  for ``watchdog`` seconds means the connection is dead even if TCP says
  otherwise; it is closed and reopened;
* **reconnect** with delays from an injected ``Delays`` factory
  (``ticker_adapters.retry``: random first delay, exponential with a cap); a
  connection that stayed up for ``reset_after`` seconds starts the next
  sequence from scratch;
* **resubscribe** after every reconnect, from the desired state, with modes;
* **403** at the handshake (expired or revoked token): the account's token is
  re-read from the credential vault (``force_refresh``); while the vault still
  holds the refused token the connection waits and polls, it never hammers Kite;
* **429** (too many connections for the API key): back off at least
  ``rate_limited_delay``. The connection never causes one itself: it holds
  its API key's :class:`KeyLimiter` slot from before the handshake until the
  socket is closed, so at most 3 connections per key exist, reconnects included;
* **incremental changes**: :meth:`update` turns a planner diff into
  unsubscribe / subscribe / mode messages on the live socket; nothing is
  reloaded;
* **anything else that goes wrong** (a proxy variable the WebSocket client
  refuses, a bad URL, a bug) is logged with its traceback (at most every 10 s
  per connection), counted in ``feed_connection_errors_total{error=<type>}``
  and retried with backoff: no exception ends a slot. The task runs under the
  service's supervisor besides, and :meth:`stop` never raises;
* **frame size cap**: a message larger than the largest frame Kite can send
  for the connection's instruments (:func:`max_frame_bytes`) closes the
  connection (1009) rather than filling memory; it reconnects.

Access tokens travel only in the handshake URL, which is never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from feed_container.logs import LogLimiter
from feed_container.metrics import Metrics
from feed_container.planner import SlotDiff, SlotId
from feed_container.supervision import Supervisor
from ticker_adapters.retry import Delays
from ticker_core.kite_wire import PacketKind

log = logging.getLogger("feed_container.connection")

#: A frame handler: (account, frame bytes) for binary, (account, text) for text.
FrameHandler = Callable[[str, bytes], object]
TextHandler = Callable[[str, str], object]
Connect = Callable[..., Awaitable[ClientConnection]]
#: Text messages (order updates, errors) are small; this floor keeps them under the cap.
_MIN_FRAME_CAP = 64 * 1024


def max_frame_bytes(instruments: int) -> int:
    """The largest message Kite can send a connection carrying ``instruments``: one binary
    frame with a full-size packet for each (uint16 count, uint16 length per packet)."""
    largest_packet = max(kind.layout.length for kind in PacketKind)
    return max(_MIN_FRAME_CAP, 2 + instruments * (2 + largest_packet))


class TokenProvider(Protocol):
    """Where a connection gets its account's API key and current access token."""

    async def session(self, account: str, *, force_refresh: bool) -> tuple[str, str]:
        """(api_key, access_token) of ``account``; re-read from the source when forced."""
        ...


class VaultTokens:
    """:class:`TokenProvider` over the shared credential vault (sync boto3, so in a thread)."""

    def __init__(self, vault: Any, metrics: Metrics | None = None) -> None:
        self._vault = vault
        self._metrics = metrics

    async def session(self, account: str, *, force_refresh: bool) -> tuple[str, str]:
        """The account's session from Secrets Manager (decrypted by the vault)."""
        if force_refresh and self._metrics is not None:
            self._metrics.inc("feed_token_refreshes_total", account=account)
        session = await asyncio.to_thread(self._vault.session, account, force_refresh=force_refresh)
        return session.api_key, session.access_token


class KeyLimiter:
    """At most ``limit`` connections per API key, handshakes in progress included."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._slots: dict[str, asyncio.Semaphore] = {}

    def slot(self, api_key: str) -> asyncio.Semaphore:
        """The semaphore a connection holds for as long as its socket exists."""
        sem = self._slots.get(api_key)
        if sem is None:
            sem = self._slots[api_key] = asyncio.Semaphore(self._limit)
        return sem

    def in_use(self, api_key: str) -> int:
        """Slots held now for ``api_key``."""
        sem = self._slots.get(api_key)
        return 0 if sem is None else self._limit - sem._value


@dataclass(frozen=True)
class ConnectionSettings:
    """Timing of one connection (all seconds)."""

    watchdog: float = 10.0
    connect_timeout: float = 10.0
    close_timeout: float = 5.0
    reset_after: float = 60.0
    rate_limited_delay: float = 5.0
    #: Messages above this size close the connection (see :func:`max_frame_bytes`).
    max_frame_bytes: int = max_frame_bytes(3000)


def subscription_messages(
    unsubscribe: list[int], subscribe: dict[int, str], modes: dict[int, str]
) -> list[str]:
    """Kite's control messages for a change, in the order to send them."""
    messages = []
    if unsubscribe:
        messages.append(json.dumps({"a": "unsubscribe", "v": sorted(unsubscribe)}))
    if subscribe:
        messages.append(json.dumps({"a": "subscribe", "v": sorted(subscribe)}))
    by_mode: dict[str, list[int]] = {}
    for token, mode in {**subscribe, **modes}.items():
        by_mode.setdefault(mode, []).append(token)
    for mode in sorted(by_mode):
        messages.append(json.dumps({"a": "mode", "v": [mode, sorted(by_mode[mode])]}))
    return messages


class KiteConnection:
    """One slot's connection: runs until :meth:`stop`, reconnecting as needed."""

    def __init__(
        self,
        slot: SlotId,
        *,
        url: str,
        tokens: TokenProvider,
        limiter: KeyLimiter,
        on_frame: FrameHandler,
        on_text: TextHandler,
        metrics: Metrics,
        backoff: Delays,
        settings: ConnectionSettings | None = None,
        connect_fn: Connect = connect,
        clock: Callable[[], float] = time.monotonic,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.slot = slot
        self.account = slot.account
        self._url = url
        self._tokens = tokens
        self._limiter = limiter
        self._on_frame = on_frame
        self._on_text = on_text
        self._metrics = metrics
        self._backoff = backoff
        self._settings = settings or ConnectionSettings()
        self._connect = connect_fn
        self._clock = clock
        #: What this connection should carry: token -> mode.
        self.desired: dict[int, str] = {}
        #: Stay connected while carrying nothing (:meth:`hold_open`).
        self.held_open = False
        self._outbox: list[str] = []
        self._outbox_ready = asyncio.Event()
        self._wanted = asyncio.Event()
        self._stopping = False
        self._stop_event = asyncio.Event()
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self.connected = False
        self.connects = 0
        self.last_frame_at: float | None = None
        self._supervisor = supervisor or Supervisor(metrics)
        self._error_log = LogLimiter(10.0, clock=clock)

    # -- control ---------------------------------------------------------------------

    def start(self) -> None:
        """Run the connection on the current loop, supervised."""
        self._task = self._supervisor.spawn(f"kite-{self.slot}", self.run, kind="kite-connection")

    def update(self, diff: SlotDiff) -> None:
        """Apply a planner diff: to the desired state, and to the live socket if any."""
        for token in diff.unsubscribe:
            self.desired.pop(token, None)
        self.desired.update(diff.subscribe)
        self.desired.update(diff.mode)
        if self.connected:
            self._outbox += subscription_messages(diff.unsubscribe, diff.subscribe, diff.mode)
            self._outbox_ready.set()
        if self.desired:
            self._wanted.set()

    def hold_open(self) -> None:
        """Stay connected even while carrying no instrument: Kite sends an account's order
        updates to each of its connections, and only to them."""
        self.held_open = True
        self._wanted.set()

    async def stop(self) -> None:
        """Stop reading: close the socket cleanly (frames already on the way are processed)."""
        self._stopping = True
        self._stop_event.set()
        self._wanted.set()
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
            if ws.protocol.close_rcvd is None:
                # The exchange's close frame never came back: frames it sent after
                # ours may still have been on the wire when the socket was aborted.
                self._metrics.inc("feed_unclean_closes_total", account=self.account)
                log.warning(
                    "close handshake did not complete; frames on the wire may be lost",
                    extra={"account": self.account, "slot": str(self.slot)},
                )
        if self._task is not None:
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            except Exception:  # supervised tasks do not raise; never let one abort a stop
                log.exception("connection task ended with an error", extra={"slot": str(self.slot)})

    # -- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, stream, and reconnect until stopped; no exception ends it."""
        self._delays = self._backoff()
        self._refused_token: str | None = None
        while not self._stopping:
            if not self.desired and not self.held_open:
                self._wanted.clear()
                await self._wanted.wait()
                continue
            try:
                delay = await self._attempt()
            except Exception as exc:  # see the module docstring: counted, logged, retried
                self._unexpected(exc)
                delay = next(self._delays)
            if delay is None:  # stopping
                break
            await self._pause(delay)

    def _unexpected(self, exc: Exception) -> None:
        error = type(exc).__name__
        self._metrics.inc("feed_connection_errors_total", account=self.account, error=error)
        held_back = self._error_log.allow(error)
        if held_back is not None:
            log.error(
                "connection failed with an unexpected error; retrying",
                exc_info=exc,
                extra={
                    "account": self.account,
                    "slot": str(self.slot),
                    "error": error,
                    "held_back": held_back,
                },
            )

    async def _attempt(self) -> float | None:
        """One session: token, slot, handshake, stream. Returns the delay before the next
        (None when stopping)."""
        delays = self._delays
        refused_token = self._refused_token
        try:
            api_key, token = await self._tokens.session(
                self.account, force_refresh=refused_token is not None
            )
        except Exception as exc:  # vault unreachable or corrupt: keep trying, loudly
            log.error("cannot read session", extra={"account": self.account, "error": repr(exc)})
            return next(delays)
        if refused_token is not None and token == refused_token:
            # Kite refused this token and the vault has nothing newer yet.
            log.warning("waiting for a new access token", extra={"account": self.account})
            return next(delays)
        delay: float | None = None
        async with self._limiter.slot(api_key):
            if self._stopping:
                return None
            try:
                ws = await self._open(api_key, token)
            except InvalidStatus as exc:
                status = exc.response.status_code
                self._metrics.inc(
                    "feed_handshake_refusals_total", account=self.account, status=str(status)
                )
                log.warning(
                    "handshake refused",
                    extra={"account": self.account, "slot": str(self.slot), "status": status},
                )
                if status == 403:
                    self._refused_token = token
                elif status == 429:
                    delay = max(next(delays), self._settings.rate_limited_delay)
            except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
                log.warning(
                    "connect failed",
                    extra={"account": self.account, "slot": str(self.slot), "error": repr(exc)},
                )
            else:
                self._refused_token = None
                if self._stopping:
                    # stop() came during the handshake and found no socket to close:
                    # close it now, before subscribing, or it would stream past the stop
                    # and be cut off with frames on the wire.
                    with contextlib.suppress(Exception):
                        await ws.close()
                    return None
                up_for = await self._stream(ws)
                if up_for >= self._settings.reset_after:
                    self._delays = delays = self._backoff()
        if self._stopping:
            return None
        self._metrics.inc("feed_reconnects_total", account=self.account)
        return delay if delay is not None else next(delays)

    async def _open(self, api_key: str, token: str) -> ClientConnection:
        query = urlencode({"api_key": api_key, "access_token": token})
        return await self._connect(
            f"{self._url}?{query}",
            open_timeout=self._settings.connect_timeout,
            close_timeout=self._settings.close_timeout,
            ping_interval=None,  # Kite's heartbeats and the watchdog cover liveness
            compression=None,
            max_size=self._settings.max_frame_bytes,
            max_queue=256,
        )

    async def _stream(self, ws: ClientConnection) -> float:
        """Subscribe, read until the socket ends or goes silent; seconds it was up."""
        opened = self._clock()
        self._ws = ws
        self.connected = True
        self.connects += 1
        self.last_frame_at = opened
        self._metrics.inc("feed_connects_total", account=self.account)
        self._outbox = subscription_messages([], dict(self.desired), {})
        self._outbox_ready.set()
        writer = asyncio.get_running_loop().create_task(self._write(ws))
        try:
            await self._read(ws)
        finally:
            self.connected = False
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
            with contextlib.suppress(Exception):
                await ws.close()
            self._ws = None
        return self._clock() - opened

    async def _read(self, ws: ClientConnection) -> None:
        watchdog = self._settings.watchdog
        on_frame, on_text, account = self._on_frame, self._on_text, self.account
        while True:
            try:
                async with asyncio.timeout(watchdog):
                    message = await ws.recv()
            except TimeoutError:
                if self._stopping:
                    return
                self._metrics.inc("feed_watchdog_trips_total", account=account)
                log.warning(
                    "watchdog: connection silent, reconnecting",
                    extra={"account": account, "slot": str(self.slot), "seconds": watchdog},
                )
                return
            except ConnectionClosed as exc:
                if not self._stopping:
                    log.warning(
                        "connection closed",
                        extra={
                            "account": account,
                            "slot": str(self.slot),
                            "code": exc.rcvd and exc.rcvd.code,
                        },
                    )
                return
            self.last_frame_at = self._clock()
            if isinstance(message, bytes):
                on_frame(account, message)
            else:
                on_text(account, message)
            # recv() returns without suspending while frames are buffered, so without
            # this a connection that fell behind would process its whole backlog (up to
            # max_queue frames, seconds of work) before the lanes, timers or the other
            # connections ran again: every PutRecords and watchdog would wait on it.
            await asyncio.sleep(0)

    async def _write(self, ws: ClientConnection) -> None:
        """Send queued control messages. A failure other than the socket closing (which
        the reader sees too) ends the connection, so it reconnects and resubscribes from
        :attr:`desired`: a writer that died quietly would leave subscriptions unsent."""
        try:
            while True:
                await self._outbox_ready.wait()
                self._outbox_ready.clear()
                messages, self._outbox = self._outbox, []
                for message in messages:
                    await ws.send(message)
        except ConnectionClosed:
            return
        except Exception as exc:
            self._unexpected(exc)
            ws.transport.abort()

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_event.wait(), seconds)
