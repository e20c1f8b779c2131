"""The trading API on loopback for the acceptance tests (``sandbox.api_stack``): one per module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from feed_container.settings import FeedEnvironment, FeedSettings, OrderUpdatesQueueSettings
from sandbox.api_stack import Stack, api_stack
from sandbox.moto_server import MotoServer
from sandbox.postgres import ConnectionInfo
from ticker_adapters.settings import (
    KiteSettings,
    SnapshotSettings,
    SubscriptionsTableSettings,
    TicksStreamSettings,
    VaultSettings,
)

__all__ = ["Stack", "feed_environment"]


def feed_environment(stack: Stack, spill: Path, **overrides: Any) -> FeedEnvironment:
    """The feed container's environment against ``stack`` (its vault, tables, stream, snapshot
    and order-updates queue), with quick reconnects; ``overrides`` are ``FeedSettings``."""
    r = stack.resources
    settings: dict[str, Any] = {
        "accounts": tuple(a.user_id for a in stack.accounts),
        "instruments_source": "snapshot",
        "status_interval_seconds": 0,
        "subscription_poll_seconds": 0.2,
        "atm_recentre_seconds": 0.2,
        "watchdog_seconds": 3.0,
        "backoff_initial_seconds": 0.05,
        "backoff_max_seconds": 0.5,
        "linger_ms": 50.0,
        "retry_initial_seconds": 0.05,
        "retry_max_seconds": 0.5,
        "close_timeout_seconds": 2.0,
        "put_timeout_seconds": 5.0,
        "spill_dir": spill,
        "health_host": "127.0.0.1",
        "health_port": 0,
        "stop_timeout_seconds": 15.0,
        "emf_interval_seconds": 0,
        **overrides,
    }
    return FeedEnvironment(
        feed=FeedSettings(**settings),
        kite=KiteSettings(rest_url=stack.simulator.rest_url, ws_url=stack.simulator.ws_url),
        vault=VaultSettings(
            kms_key_arn=r.kms_key_arn, prefix=r.names.secrets_prefix, cache_seconds=0
        ),
        ticks=TicksStreamSettings(name=r.names.ticks_stream),
        subscriptions=SubscriptionsTableSettings(name=r.names.subscriptions_table),
        snapshot=SnapshotSettings(bucket=r.names.instruments_bucket),
        order_updates=OrderUpdatesQueueSettings(url=r.order_updates.url),
    )


@pytest.fixture(scope="module")
def stack(moto_server: MotoServer, postgres: ConnectionInfo) -> Iterator[Stack]:
    with api_stack(moto_server, postgres) as running:
        yield running
