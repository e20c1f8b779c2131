"""The WebSocket feed's state (sans-I/O): connections, subscriptions, schedule, counts.

A :class:`FeedHub` holds every live connection's subscriptions (a mode per
instrument: ltp, quote or full), Kite's limits (3 connections per API key,
3000 instruments per connection), each instrument's tick schedule (a rate in
ticks per second, overridable per instrument, tradingsymbol, underlying or
segment, and an optional cap on total packets per second), and exact counts
of the packets sent per connection and per instrument.

Each feed interval the server asks :meth:`FeedHub.due` which instruments
tick now, lets the market trade them, asks :meth:`FeedHub.plan` which
packets each connection gets (its subscribed due instruments plus the ones it
just subscribed to, which Kite answers with a first tick at once), sends one
frame per connection and reports back with :meth:`FeedHub.record_sent`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ticker_core.kite import MAX_CONNECTIONS_PER_API_KEY, MAX_INSTRUMENTS_PER_CONNECTION, MODES

#: The simulator's code for each mode in its per-connection arrays (0: not subscribed).
MODE_CODES = {mode: code for code, mode in enumerate(MODES, start=1)}
MODE_LTP, MODE_QUOTE, MODE_FULL = (MODE_CODES[mode] for mode in MODES)

I64 = NDArray[np.int64]


class ConnectionLimitError(Exception):
    """A fourth connection for an API key (Kite answers HTTP 429 at the handshake)."""


@dataclass
class Connection:
    """One WebSocket connection's subscriptions and counters."""

    conn_id: int
    api_key: str
    user_id: str
    modes: NDArray[np.int8]
    sent_per_instrument: I64
    fresh: set[int] = field(default_factory=set)
    subscribed: int = 0
    packets_sent: int = 0
    frames_sent: int = 0
    frames_dropped: int = 0
    heartbeats_sent: int = 0
    text_sent: int = 0
    last_sent: float = 0.0
    errors: int = 0

    def tokens(self, tokens: NDArray[np.int64]) -> dict[str, Any]:
        """Per-instrument sent counts of this connection (nonzero only), by token."""
        nz = np.flatnonzero(self.sent_per_instrument)
        return {str(int(tokens[k])): int(self.sent_per_instrument[k]) for k in nz}


def _token_list(value: Any) -> list[int] | None:
    if not isinstance(value, list):
        return None
    out = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int | float):
            return None
        out.append(int(item))
    return out


class FeedHub:
    """Every connection, the tick schedule and the sent counts."""

    def __init__(
        self,
        tokens: Sequence[int] | NDArray[np.int64],
        rates: Sequence[float] | NDArray[np.float64],
        *,
        seed: int = 0,
        max_ticks_per_second: float | None = None,
        max_connections_per_key: int = MAX_CONNECTIONS_PER_API_KEY,
        max_instruments_per_connection: int = MAX_INSTRUMENTS_PER_CONNECTION,
    ) -> None:
        self.tokens = np.asarray(tokens, dtype=np.int64)
        self.size = len(self.tokens)
        self.index = {int(t): k for k, t in enumerate(self.tokens)}
        self.rate = np.asarray(rates, dtype=np.float64).copy()
        if self.rate.shape != (self.size,):
            raise ValueError("one rate per instrument is needed")
        self.max_ticks_per_second = max_ticks_per_second
        self.max_connections_per_key = max_connections_per_key
        self.max_instruments_per_connection = max_instruments_per_connection
        self.refcount = np.zeros(self.size, dtype=np.int32)
        self.next_due = np.full(self.size, np.inf)
        self.sent_per_instrument = np.zeros(self.size, dtype=np.int64)
        self.connections: dict[int, Connection] = {}
        self._next_id = 1
        self._rng = np.random.default_rng([seed, 5])
        self._last_plan: float | None = None
        self.refused_connections = 0
        self.closed_connections = 0

    # -- connections -------------------------------------------------------------
    def open(self, api_key: str, user_id: str) -> Connection:
        """Register a connection; :class:`ConnectionLimitError` past the per-key limit."""
        live = sum(1 for c in self.connections.values() if c.api_key == api_key)
        if live >= self.max_connections_per_key:
            self.refused_connections += 1
            raise ConnectionLimitError(
                f"Maximum of {self.max_connections_per_key} WebSocket connections per API key."
            )
        conn = Connection(
            conn_id=self._next_id,
            api_key=api_key,
            user_id=user_id,
            modes=np.zeros(self.size, dtype=np.int8),
            sent_per_instrument=np.zeros(self.size, dtype=np.int64),
        )
        self._next_id += 1
        self.connections[conn.conn_id] = conn
        return conn

    def close(self, conn: Connection) -> None:
        """Forget a connection and its subscriptions."""
        if self.connections.pop(conn.conn_id, None) is None:
            return
        subscribed = np.flatnonzero(conn.modes)
        self._release(subscribed)
        conn.modes[:] = 0
        conn.subscribed = 0
        self.closed_connections += 1

    def for_api_key(self, api_key: str) -> list[Connection]:
        """Live connections of ``api_key``."""
        return [c for c in self.connections.values() if c.api_key == api_key]

    # -- subscriptions -----------------------------------------------------------------
    def _indices(self, tokens: list[int]) -> list[int]:
        return [self.index[t] for t in tokens if t in self.index]

    def _acquire(self, idx: list[int], now: float) -> None:
        arr = np.array(idx, dtype=np.int64)
        if len(arr) == 0:
            return
        newly = arr[self.refcount[arr] == 0]
        self.refcount[arr] += 1
        if len(newly):
            period = 1.0 / np.maximum(self.rate[newly], 1e-9)
            self.next_due[newly] = now + self._rng.random(len(newly)) * period

    def _release(self, idx: I64) -> None:
        if len(idx) == 0:
            return
        self.refcount[idx] -= 1
        gone = idx[self.refcount[idx] <= 0]
        self.refcount[gone] = 0
        self.next_due[gone] = np.inf

    def subscribe(self, conn: Connection, tokens: list[int], now: float, mode: int) -> list[str]:
        """Subscribe ``tokens`` (unknown ones are ignored); errors to tell the client."""
        errors: list[str] = []
        new = [k for k in dict.fromkeys(self._indices(tokens)) if conn.modes[k] == 0]
        room = self.max_instruments_per_connection - conn.subscribed
        if len(new) > room:
            errors.append(
                f"Subscription limit exceeded: at most {self.max_instruments_per_connection} "
                f"instruments per connection; {len(new) - max(room, 0)} not subscribed."
            )
            new = new[: max(room, 0)]
        for k in new:
            conn.modes[k] = mode
            conn.fresh.add(k)
        conn.subscribed += len(new)
        self._acquire(new, now)
        return errors

    def unsubscribe(self, conn: Connection, tokens: list[int]) -> None:
        """Unsubscribe ``tokens``."""
        idx = [k for k in dict.fromkeys(self._indices(tokens)) if conn.modes[k] != 0]
        if not idx:
            return
        arr = np.array(idx, dtype=np.int64)
        conn.modes[arr] = 0
        conn.fresh.difference_update(idx)
        conn.subscribed -= len(idx)
        self._release(arr)

    def set_mode(self, conn: Connection, mode: int, tokens: list[int]) -> None:
        """Change the mode of subscribed ``tokens`` (others are ignored, as Kite does)."""
        for k in self._indices(tokens):
            if conn.modes[k] != 0 and conn.modes[k] != mode:
                conn.modes[k] = mode
                conn.fresh.add(k)

    def handle_text(self, conn: Connection, message: str | bytes, now: float) -> list[str]:
        """Apply a client message (``{"a": ..., "v": ...}``); error texts to send back."""
        try:
            data = json.loads(message)
        except (ValueError, UnicodeDecodeError):
            conn.errors += 1
            return ["Invalid message: not JSON."]
        if not isinstance(data, dict):
            conn.errors += 1
            return ["Invalid message: expected an object with `a` and `v`."]
        action, value = data.get("a"), data.get("v")
        if action == "subscribe":
            tokens = _token_list(value)
            if tokens is not None:
                return self.subscribe(conn, tokens, now, MODE_QUOTE)
        elif action == "unsubscribe":
            tokens = _token_list(value)
            if tokens is not None:
                self.unsubscribe(conn, tokens)
                return []
        elif action == "mode":
            if isinstance(value, list) and len(value) == 2 and value[0] in MODE_CODES:
                tokens = _token_list(value[1])
                if tokens is not None:
                    self.set_mode(conn, MODE_CODES[value[0]], tokens)
                    return []
        else:
            conn.errors += 1
            return [f"Invalid action {action!r}."]
        conn.errors += 1
        return [f"Invalid value for {action!r}."]

    # -- scheduling ----------------------------------------------------------------------
    def due(self, now: float) -> I64:
        """Instruments that tick now (subscribed somewhere and due), within the total cap."""
        due = np.flatnonzero(self.next_due <= now)
        if len(due) and self.max_ticks_per_second:
            last = self._last_plan if self._last_plan is not None else now - 0.1
            allowance = self.max_ticks_per_second * min(max(now - last, 0.0), 1.0)
            cost = self.refcount[due].astype(np.int64)
            order = np.argsort(self.next_due[due], kind="stable")
            fits = np.cumsum(cost[order]) <= max(allowance, 1.0)
            due = np.sort(due[order[fits]])
        self._last_plan = now
        if len(due):
            period = 1.0 / np.maximum(self.rate[due], 1e-9)
            nxt = self.next_due[due] + period
            behind = nxt <= now
            self.next_due[due] = np.where(behind, now + period, nxt)
        return due.astype(np.int64)

    def plan(self, conn: Connection, due: I64) -> tuple[I64, NDArray[np.int8]]:
        """The instruments (and their modes) ``conn`` is sent now; clears its fresh set."""
        picked = due[conn.modes[due] > 0] if len(due) else due
        if conn.fresh:
            fresh = np.fromiter(conn.fresh, dtype=np.int64, count=len(conn.fresh))
            fresh = fresh[conn.modes[fresh] > 0]
            picked = np.union1d(picked, fresh).astype(np.int64)
            conn.fresh.clear()
        return picked, conn.modes[picked]

    def fresh_indices(self) -> I64:
        """Instruments some connection awaits a first tick of (to reprice before sending)."""
        pending: set[int] = set()
        for conn in self.connections.values():
            pending |= conn.fresh
        return np.fromiter(pending, dtype=np.int64, count=len(pending))

    def record_sent(self, conn: Connection, idx: I64, now: float) -> None:
        """``conn`` wrote a frame with packets for ``idx``."""
        conn.sent_per_instrument[idx] += 1
        self.sent_per_instrument[idx] += 1
        conn.packets_sent += len(idx)
        conn.frames_sent += 1
        conn.last_sent = now

    # -- configuration and reports ------------------------------------------------------------
    def set_rates(self, rates: Mapping[int, float]) -> None:
        """Change the tick rate of instruments by index."""
        for k, rate in rates.items():
            self.rate[k] = rate

    def counters(self, *, per_instrument: bool = True) -> dict[str, Any]:
        """Sent counts for the admin API (tokens as strings, nonzero only)."""
        out: dict[str, Any] = {
            "connections": {
                str(c.conn_id): {
                    "api_key": c.api_key,
                    "user_id": c.user_id,
                    "subscribed": c.subscribed,
                    "packets_sent": c.packets_sent,
                    "frames_sent": c.frames_sent,
                    "frames_dropped": c.frames_dropped,
                    "heartbeats_sent": c.heartbeats_sent,
                    "text_sent": c.text_sent,
                    "errors": c.errors,
                    **({"per_instrument": c.tokens(self.tokens)} if per_instrument else {}),
                }
                for c in self.connections.values()
            },
            "packets_sent": int(self.sent_per_instrument.sum()),
            "refused_connections": self.refused_connections,
            "closed_connections": self.closed_connections,
        }
        if per_instrument:
            nz = np.flatnonzero(self.sent_per_instrument)
            out["per_instrument"] = {
                str(int(self.tokens[k])): int(self.sent_per_instrument[k]) for k in nz
            }
        return out
