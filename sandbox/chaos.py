"""``--chaos``: adversity injected on a schedule while the sandbox runs.

Each event fires at a fraction of the run's duration and records what it did:

- connection drop: the simulator resets every live WebSocket connection;
- silent connection: one account's connections stay open but carry nothing,
  not even heartbeats, longer than the feed's watchdog;
- token expiry with rotation: one account's access token is expired at Kite
  and its connections dropped, so reconnects are refused (HTTP 403); a few
  seconds later a fresh login is written to the vault, as the login callback
  does, and the feed must pick it up without a restart;
- Kinesis throttling: the producers' Kinesis endpoint refuses writes for a
  while (whole calls and single entries);
- Lambda crash mid-batch: the persist function's execution environment is
  killed in the middle of an invocation;
- PostgreSQL restart: the database crashes and comes back.

The verdict must still be complete: that is what the run proves.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ChaosEvent:
    """One scheduled fault: ``action`` returns a one-line account of what it did."""

    name: str
    at_fraction: float
    action: Callable[[], str]


@dataclass
class ChaosRecord:
    """What happened when an event fired."""

    name: str
    at_s: float
    outcome: str
    ok: bool


@dataclass
class ChaosSchedule:
    """Fires events at their times in a background thread; stoppable at any point."""

    events: list[ChaosEvent]
    duration_s: float
    records: list[ChaosRecord] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _started: float = 0.0

    def start(self) -> None:
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="chaos", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for event in sorted(self.events, key=lambda e: e.at_fraction):
            delay = self._started + event.at_fraction * self.duration_s - time.monotonic()
            if self._stop.wait(max(0.0, delay)):
                return
            at = time.monotonic() - self._started
            try:
                outcome, ok = event.action(), True
            except Exception as exc:  # a fault that could not be injected is reported, not fatal
                outcome, ok = f"not injected: {exc!r}", False
                traceback.print_exc()
            self.records.append(ChaosRecord(event.name, round(at, 1), outcome, ok))

    def stop(self, timeout: float = 60.0) -> None:
        """Stop firing; waits for an event in progress."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def lines(self) -> list[str]:
        """What fired so far, for the dashboard."""
        return [
            f"{r.at_s:5.1f}s {r.name}: {r.outcome}" + ("" if r.ok else " (FAILED)")
            for r in list(self.records)
        ]
