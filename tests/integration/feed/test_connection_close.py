"""Stopping a connection whose peer never answers the close: bounded, counted, logged."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import pytest

from feed_container.service import FeedService
from sandbox.tcp_proxy import TcpProxy
from tests.integration.feed.rig import Rig, subscribe_sample

pytestmark = pytest.mark.integration


async def test_a_close_the_exchange_never_answers_is_counted_and_bounded(rig: Rig) -> None:
    # Given a streaming container whose WebSockets go through a proxy
    url = urlsplit(rig.sim.ws_url)
    proxy = TcpProxy(url.hostname or "127.0.0.1", url.port or 80)
    port = await asyncio.to_thread(proxy.start)
    try:
        subscribe_sample(rig)
        environment = rig.environment(
            ws_url=f"ws://127.0.0.1:{port}{url.path}", close_timeout_seconds=1.0
        )
        feed = rig.start(environment)
        await feed.reaches("feed_ticks_received_total", 50)
        # When the network swallows everything, and the container is stopped
        proxy.blackhole(True)
        started = time.monotonic()
        await feed.stop()
        # Then each connection gave up after its close timeout, not the whole stop budget,
        # and each unanswered close was counted against its account
        assert time.monotonic() - started < environment.feed.stop_timeout_seconds
        service: FeedService = feed.service
        assert service.metrics.total("feed_unclean_closes_total") == feed.total(
            "feed_connects_total"
        )
    finally:
        await asyncio.to_thread(proxy.close)
