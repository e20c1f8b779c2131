"""Fixtures for driving the simulator with the official ``kiteconnect`` clients.

KiteTicker runs on Twisted's reactor, which cannot be restarted within a
process. One reactor runs for the whole session in a daemon thread (without
signal handlers); every KiteTicker connects through ``reactor.callFromThread``
(its ``connect`` sees the reactor running and only opens the connection), and
every test closes its tickers. The simulator runs on its own asyncio loop in
another thread (:class:`ThreadedSimulator`); each fixture stops what it starts.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from kite_sim.config import AccountConfig, SimConfig
from kite_sim.ratelimit import scaled_limits
from kite_sim.server import ThreadedSimulator
from tests.integration.kite_sim.clients import PostbackReceiver
from tests.waiting import wait_until


@pytest.fixture(scope="session")
def postback_receiver() -> Iterator[PostbackReceiver]:
    with PostbackReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="session")
def sim(postback_receiver: PostbackReceiver) -> Iterator[ThreadedSimulator]:
    """One simulator for the session, REST limits relaxed (the 429 tests use their own)."""
    config = SimConfig(
        seed=11,
        accounts=[AccountConfig(postback_url=postback_receiver.url), AccountConfig()],
        tick_interval=0.05,
        default_tick_rate=10.0,
        rate_limits=scaled_limits(1000),
    )
    with ThreadedSimulator(config) as threaded:
        yield threaded


@pytest.fixture(scope="session")
def reactor() -> Iterator[Any]:
    """Twisted's reactor, running in a daemon thread for the whole session."""
    from twisted.internet import reactor as twisted_reactor

    thread = None
    if not twisted_reactor.running:
        thread = threading.Thread(
            target=twisted_reactor.run, kwargs={"installSignalHandlers": False}, daemon=True
        )
        thread.start()
        wait_until(lambda: twisted_reactor.running, what="reactor start")
    yield twisted_reactor
    if thread is not None:
        twisted_reactor.callFromThread(twisted_reactor.stop)
        thread.join(10)
