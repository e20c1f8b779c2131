"""The chaos faults, against a simulator that applies them a little later, as the real one does."""

from __future__ import annotations

import secrets
import threading
from types import SimpleNamespace
from typing import Any

from sandbox.chaos_driver import ChaosDriver
from sandbox.kite import SimAccount


class LaggingSim:
    """Applies a drop a few counter reads after it was asked for; the feed reconnects after."""

    def __init__(self, live: int, lag: int = 3) -> None:
        self.live = live
        self.closed = 0
        self.lag = lag
        self._countdown: int | None = None
        self._reconnect_in: int | None = None

    def fault(self, spec: dict[str, Any]) -> dict[str, Any]:
        assert spec == {"kind": "drop"}
        self._countdown = self.lag
        return {}

    def counters(self, *, per_instrument: bool = True) -> dict[str, Any]:
        if self._countdown is not None:
            self._countdown -= 1
            if self._countdown == 0:
                self._countdown = None
                self.closed += self.live
                self.live, self._reconnect_in = 0, self.lag
        elif self._reconnect_in is not None:
            self._reconnect_in -= 1
            if self._reconnect_in == 0:
                self.live, self._reconnect_in = 3, None
        connections = {str(n): {"api_key": "k"} for n in range(self.live)}
        return {"feed": {"connections": connections, "closed_connections": self.closed}}


def driver(sim: LaggingSim) -> ChaosDriver:
    account = SimAccount("SM1000", "k", secrets.token_hex(8))
    stack = SimpleNamespace(sim=sim, accounts=[account], feed_metrics=lambda: None)
    return ChaosDriver(stack, threading.Event())  # type: ignore[arg-type]


def test_a_drop_waits_for_the_simulator_to_apply_it_before_counting_reconnections() -> None:
    # Given three live connections, and a simulator that applies a drop on a later round
    sim = LaggingSim(live=3)
    # When the drop fault is injected
    outcome = driver(sim).drop()
    # Then the reconnections counted are those after the drop, not the connections before it
    assert sim.closed == 3
    assert outcome.startswith("dropped 3 live connections; all 3 back in")


def test_the_schedule_has_every_fault_in_order() -> None:
    events = driver(LaggingSim(live=3)).events()
    assert [e.name for e in events] == [
        "connection drop", "silent connection", "token expiry + rotation",
        "Kinesis throttling", "Lambda crash mid-batch", "PostgreSQL restart",
    ]  # fmt: skip
    assert [e.at_fraction for e in events] == sorted(e.at_fraction for e in events)
