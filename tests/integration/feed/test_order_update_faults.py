"""Kite's order messages to SQS under faults: SQS unreachable for a while, the memory bound.

The feed runs against the simulator and moto's server, its SQS calls through
the fault proxy (Kinesis goes to moto directly). Orders are placed with the
official kiteconnect client and fill at the simulator, which tells every
connection of the account. The witness is the simulator's own list of the
order events it sent; the queue is read back at the end.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import replace
from typing import Any

import pytest
from kiteconnect import KiteConnect

from feed_container.order_updates import UPDATE_KEY_ATTRIBUTE
from feed_container.settings import OrderUpdatesQueueSettings
from kite_sim.order_model import OrderEvent
from kite_sim.postbacks import order_message
from kite_sim.server import Simulator
from tests.integration.feed.rig import Rig, RunningFeed, subscribe_sample, wait_until
from ticker_core.instruments import InstrumentType
from ticker_core.kite_wire import OrderUpdate

pytestmark = pytest.mark.integration

TERMINAL = {"COMPLETE", "REJECTED", "CANCELLED"}


class SentOrderEvents:
    """The order events the simulator dispatches to sockets, recorded as it drains them."""

    def __init__(self, sim: Simulator) -> None:
        self.events: list[OrderEvent] = []
        drain = sim.engine.drain_events

        def recording() -> list[OrderEvent]:
            events = drain()
            self.events += events
            return events

        sim.engine.drain_events = recording  # type: ignore[method-assign]

    def keys(self, api_key: str) -> set[str]:
        """The identities of the updates sent to the account of ``api_key``."""
        return {
            OrderUpdate(order_message(e)).update_key
            for e in self.events
            if e.account.api_key == api_key
        }

    def finished(self, order_ids: list[str]) -> bool:
        done = {str(e.order["order_id"]) for e in self.events if e.status in TERMINAL}
        return set(order_ids) <= done


def queued_messages(rig: Rig, queue_url: str) -> list[dict[str, Any]]:
    """Every message on the queue (each received once: they stay hidden while this reads)."""
    sqs = rig.client("sqs")
    messages: list[dict[str, Any]] = []
    while True:
        page = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        ).get("Messages", [])
        if not page:
            return messages
        messages += page


async def place_market_orders(rig: Rig, account_index: int, count: int) -> list[str]:
    """``count`` market buys through the official client; their order ids."""
    account = rig.sim.accounts[account_index]
    kite = KiteConnect(
        account.api_key,
        access_token=rig.sim.issue_access_token(account_index),
        root=rig.sim.rest_url,
    )
    symbol = next(
        i.tradingsymbol
        for i in rig.sim.universe.instruments
        if i.segment == "NSE" and i.instrument_type is InstrumentType.EQ  # not an index
    )
    ids = []
    for _ in range(count):
        ids.append(
            await asyncio.to_thread(
                kite.place_order,
                variety=kite.VARIETY_REGULAR,
                exchange=kite.EXCHANGE_NSE,
                tradingsymbol=symbol,
                transaction_type=kite.TRANSACTION_TYPE_BUY,
                quantity=1,
                product=kite.PRODUCT_MIS,
                order_type=kite.ORDER_TYPE_MARKET,
                market_protection=kite.MARKET_PROTECTION_AUTO,
            )
        )
    return ids


async def start_forwarding(
    rig: Rig, *, instruments: int = 24, connections: int = 3, **settings: Any
) -> tuple[RunningFeed, str]:
    """The feed on every account, its order messages to a fresh queue via the proxy.

    24 instruments put every account on all three of its connections (Kite's limit).
    """
    queue_url = rig.client("sqs").create_queue(QueueName="order-updates")["QueueUrl"]
    if instruments:
        subscribe_sample(rig, instruments)
    environment = replace(
        rig.environment(**settings), order_updates=OrderUpdatesQueueSettings(url=queue_url)
    )
    feed = rig.start(environment, via_proxy=False, sqs_endpoint_url=rig.proxy.url)
    for account in rig.accounts:
        await wait_until(
            lambda a=account: feed.connected(a),
            lambda n: n == connections,
            what=f"{account} on {connections} connection(s)",
        )
    return feed, queue_url


async def test_sqs_unreachable_for_a_while_loses_no_order_update(rig: Rig) -> None:
    # Given the feed forwarding order messages to SQS, which it cannot reach
    sent = SentOrderEvents(rig.sim)
    feed, queue_url = await start_forwarding(rig)
    rig.proxy.down()
    try:
        # When orders fill on both accounts meanwhile
        ids = await place_market_orders(rig, 0, 3) + await place_market_orders(rig, 1, 1)
        await wait_until(lambda: sent.finished(ids), what="every order filled or rejected")
        accounts = zip(rig.accounts, rig.sim.accounts, strict=True)
        expected = {name: sent.keys(account.api_key) for name, account in accounts}
        total = sum(len(keys) for keys in expected.values())
        # Then the feed holds every update and keeps retrying
        await feed.reaches("feed_order_updates_pending", total)
        await feed.grows("feed_order_updates_failed_total", 2 * total)
    finally:
        # And once SQS is back
        rig.proxy.up()
    await feed.reaches("feed_order_updates_forwarded_total", total)
    assert await feed.stop()
    # Then every update is on the queue exactly once, for its account, and none was lost
    messages = queued_messages(rig, queue_url)
    keys = Counter(m["MessageAttributes"][UPDATE_KEY_ATTRIBUTE]["StringValue"] for m in messages)
    assert set(keys) == set().union(*expected.values())
    assert max(keys.values()) == 1
    assert feed.total("feed_order_updates_dropped_total") == 0
    assert feed.value("feed_order_updates_requests_total", outcome="error") >= 1
    # And the copies from each account's other connections were recognised, not sent
    assert feed.total("feed_order_updates_duplicates_total") > 0


async def test_a_full_order_update_queue_counts_what_it_drops(rig: Rig) -> None:
    # Given room for two order messages in memory, and SQS unreachable
    sent = SentOrderEvents(rig.sim)
    feed, queue_url = await start_forwarding(rig, order_updates_buffer=2)
    rig.proxy.down()
    try:
        # When three orders fill (two updates each, or one if rejected)
        ids = await place_market_orders(rig, 0, 3)
        await wait_until(lambda: sent.finished(ids), what="every order filled or rejected")
        expected = sent.keys(rig.sim.accounts[0].api_key)
        assert len(expected) > 2
        # Then two are held and every other update is counted as dropped, once
        await feed.reaches("feed_order_updates_dropped_total", len(expected) - 2)
        assert feed.value("feed_order_updates_pending") == 2
    finally:
        rig.proxy.up()
    # And the two held reach SQS once it is back
    await feed.reaches("feed_order_updates_forwarded_total", 2)
    assert await feed.stop()
    messages = queued_messages(rig, queue_url)
    assert len(messages) == 2
    assert feed.value("feed_order_updates_dropped_total", reason="queue_full") == len(expected) - 2
    assert len(messages) + feed.total("feed_order_updates_dropped_total") == len(expected)


async def test_an_account_without_instruments_still_forwards_its_order_updates(rig: Rig) -> None:
    # Given no subscriptions at all: no account carries an instrument
    sent = SentOrderEvents(rig.sim)
    feed, queue_url = await start_forwarding(rig, instruments=0, connections=1)
    # When an order fills
    ids = await place_market_orders(rig, 1, 1)
    await wait_until(lambda: sent.finished(ids), what="the order filled or rejected")
    expected = sent.keys(rig.sim.accounts[1].api_key)
    # Then its updates reach SQS all the same, on the account's one idle connection
    await feed.reaches("feed_order_updates_forwarded_total", len(expected))
    assert await feed.stop()
    messages = queued_messages(rig, queue_url)
    assert {m["MessageAttributes"][UPDATE_KEY_ATTRIBUTE]["StringValue"] for m in messages} == (
        expected
    )
    assert feed.total("feed_ticks_received_total") == 0
