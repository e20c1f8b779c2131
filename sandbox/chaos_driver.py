"""The faults ``--chaos`` injects into the running stack (see :mod:`sandbox.chaos` for when).

Each fault acts through the component's own control (the simulator's admin
API, the Kinesis fault proxy, the Lambda runtime, PostgreSQL's restart) and
returns one line saying what it did and what the feed made of it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from sandbox.chaos import ChaosEvent
from sandbox.dashboard import total
from sandbox.environments import FEED_WATCHDOG_S
from sandbox.kite import SimAdmin, rotate_session
from sandbox.stack import Stack, need

RECONNECT_TIMEOUT_S = 20.0
SILENCE_S = FEED_WATCHDOG_S + 4  # longer than the feed's watchdog
LOGIN_DELAY_S = 3.0  # how long after the expiry the new login reaches the vault
THROTTLE_S = 6.0


class ChaosDriver:
    """Injects each fault into ``stack``; ``stop`` cuts any wait short."""

    def __init__(self, stack: Stack, stop: threading.Event) -> None:
        self.stack = stack
        self._stop = stop
        self._sim: SimAdmin = need(stack.sim, "kite_sim")
        self._silent = stack.accounts[0]
        self._rotated = stack.accounts[-1]

    def events(self) -> list[ChaosEvent]:
        """Every fault, at its fraction of the run."""
        return [
            ChaosEvent("connection drop", 0.12, self.drop),
            ChaosEvent("silent connection", 0.22, self.silence),
            ChaosEvent("token expiry + rotation", 0.38, self.expire_and_rotate),
            ChaosEvent("Kinesis throttling", 0.50, self.throttle),
            ChaosEvent("Lambda crash mid-batch", 0.64, self.crash),
            ChaosEvent("PostgreSQL restart", 0.76, self.restart_postgres),
        ]

    # -- what the faults observe ---------------------------------------------------------

    def _feed(self, name: str) -> float:
        return total(self.stack.feed_metrics() or {}, name)

    def _connections(self, api_key: str | None = None) -> int:
        live = self._sim.counters(per_instrument=False)["feed"]["connections"].values()
        return sum(1 for c in live if api_key is None or c["api_key"] == api_key)

    def _closed(self) -> int:
        return int(self._sim.counters(per_instrument=False)["feed"]["closed_connections"])

    def _until(self, condition: Callable[[], bool], timeout: float) -> float | None:
        """Seconds until ``condition`` held, or None if it did not within ``timeout`` (or stop)."""
        began = time.monotonic()
        while time.monotonic() - began < timeout and not self._stop.is_set():
            if condition():
                return time.monotonic() - began
            self._stop.wait(0.1)
        return None

    def _back_up(self, count: int, api_key: str | None = None) -> str:
        took = self._until(lambda: self._connections(api_key) >= count, RECONNECT_TIMEOUT_S)
        if took is not None:
            return f"all {count} back in {took:.1f}s"
        return f"{self._connections(api_key)} of {count} back after {RECONNECT_TIMEOUT_S:g}s"

    # -- the faults ----------------------------------------------------------------------

    def drop(self) -> str:
        """The simulator resets every live WebSocket connection; the feed must reconnect."""
        live, closed = self._connections(), self._closed()
        self._sim.fault({"kind": "drop"})
        # The simulator applies the drop on its next feed round: wait until it has.
        self._until(lambda: self._closed() >= closed + live, RECONNECT_TIMEOUT_S)
        return f"dropped {live} live connections; {self._back_up(live)}"

    def silence(self) -> str:
        """One account's connections carry nothing, not even heartbeats, past the watchdog."""
        trips = self._feed("feed_watchdog_trips_total")
        self._sim.fault({"kind": "silence", "seconds": SILENCE_S, "api_key": self._silent.api_key})
        self._stop.wait(SILENCE_S + 1)  # the fault's length, not a synchronisation
        return (
            f"{self._silent.user_id}'s connections silent for {SILENCE_S:g}s: the watchdog "
            f"({FEED_WATCHDOG_S:g}s) closed {self._feed('feed_watchdog_trips_total') - trips:.0f}"
        )

    def expire_and_rotate(self) -> str:
        """A token expires at Kite; a new login reaches the vault a little later."""
        rotated = self._rotated
        live = self._connections(rotated.api_key)
        refused = self._feed("feed_handshake_refusals_total")
        expired = self._sim.expire_tokens(rotated.api_key)
        self._sim.fault({"kind": "drop", "api_key": rotated.api_key})
        if self._stop.wait(LOGIN_DELAY_S):  # the user's time to log in again
            return "interrupted"
        rotate_session(need(self.stack.vault, "the vault"), self.stack.rest_url, rotated)
        return (
            f"{rotated.user_id}: {expired} token(s) expired and connections dropped; "
            f"{self._feed('feed_handshake_refusals_total') - refused:.0f} handshakes refused "
            f"(403) until a new login reached the vault {LOGIN_DELAY_S:g}s later; "
            f"{self._back_up(live, rotated.api_key)}"
        )

    def throttle(self) -> str:
        """The producers' Kinesis endpoint refuses writes (whole calls and single entries)."""
        proxy = need(self.stack.proxy, "the Kinesis proxy")
        before = (proxy.calls_refused, proxy.entries_refused)
        proxy.throttle(THROTTLE_S)
        self._stop.wait(THROTTLE_S + 0.5)  # the fault's length
        return (
            f"Kinesis writes throttled for {THROTTLE_S:g}s: {proxy.calls_refused - before[0]} "
            f"calls and {proxy.entries_refused - before[1]} entries refused"
        )

    def crash(self) -> str:
        """The persist function's execution environment dies in the middle of an invocation."""
        pid = self.stack.functions["persist"].kill_busy(wait_s=20)
        if not pid:
            return "no invocation to kill"
        return f"persist environment pid {pid} killed mid-invocation"

    def restart_postgres(self) -> str:
        """The database crashes and comes back."""
        pg = self.stack.pg
        if pg is None:
            return "skipped: DATABASE_URL's server is not ours to restart"
        began = time.monotonic()
        pg.restart(mode="immediate")
        self.stack.children.add("postgres", pg.pid)
        return f"PostgreSQL crashed and restarted in {time.monotonic() - began:.1f}s"
