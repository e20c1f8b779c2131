"""Acceptance: an order's updates reach the lifecycle store both ways, each stored once.

The trading API on loopback (``sandbox.api_stack``: kite_sim, moto, PostgreSQL,
the functions as execution environments), the feed container in this process
over real sockets, forwarding Kite's WebSocket order messages to the SQS queue,
and the SQS event source mapping emulator invoking ``api-order-updates`` on it.
kite_sim sends each update of an order on every connection of the account and,
for the final states, posts it back to the API: the store keeps it once.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from feed_container.service import Dependencies, FeedService
from sandbox.api_stack import Stack, api_stack
from sandbox.esm import InvokeResult
from sandbox.moto_server import MotoServer
from sandbox.postgres import ConnectionInfo
from sandbox.provision import client, queue_depth
from sandbox.sqs_esm import SqsEventSourceMapping, SqsMappingConfig, SqsMappingTarget
from tests.integration.api.conftest import feed_environment
from tests.waiting import wait_until_async
from ticker_core.kite_checksums import postback_checksum
from ticker_core.kite_wire import OrderUpdate

pytestmark = pytest.mark.integration

MARKET = {
    "exchange": "NSE", "tradingsymbol": "INFY", "transaction_type": "BUY", "quantity": 1,
    "product": "MIS", "order_type": "MARKET", "market_protection": -1,
}  # fmt: skip


@pytest.fixture(scope="module")
def stack(moto_server: MotoServer, postgres: ConnectionInfo) -> Iterator[Stack]:
    with api_stack(moto_server, postgres, environments=1, market_environments=1) as running:
        yield running


class RecordingInvoker:
    """The order-updates function, remembering each SQS message it was given and its answer."""

    def __init__(self, stack: Stack) -> None:
        self._invoke = stack.updates_function.invoke
        self._lock = threading.Lock()
        self.orders: list[dict[str, Any]] = []
        self.results: list[InvokeResult] = []

    def __call__(self, event: dict[str, Any]) -> InvokeResult:
        result = self._invoke(event)
        with self._lock:
            self.orders += [json.loads(r["body"])["order"] for r in event["Records"]]
            self.results.append(result)
        return result

    def seen(self, order_id: str) -> set[str]:
        with self._lock:
            return {o["status"] for o in self.orders if o.get("order_id") == order_id}


def subscribe_equities(stack: Stack, count: int) -> None:
    """Enough instruments that every connection slot of both accounts carries some."""
    status, body, _ = stack.trader_call(
        "GET", f"/market/instruments?exchange=NSE&instrument_type=EQ&limit={count}"
    )
    assert status == 200, body
    wanted = [
        {"instrument": f"NSE:{i['tradingsymbol']}", "mode": "ltp"}
        for i in body["data"]["instruments"]
    ]
    status, body, _ = stack.trader_call("POST", "/subscriptions", body={"subscribe": wanted})
    assert status == 200, body


def postbacks_delivered(stack: Stack, order_id: str) -> set[str]:
    """The statuses kite_sim posted back for ``order_id`` and the API answered 200."""
    sim = stack.simulator
    deliveries = stack.sim.call(lambda: list(sim.postbacks.deliveries))
    return {d.status for d in deliveries if d.order_id == order_id and d.http_status == 200}


async def test_an_update_from_the_websocket_and_its_postback_is_stored_once(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in stack.aws.env().items():  # the feed's AWS SDK, on moto's server
        monkeypatch.setenv(name, value)
    account = stack.account  # the account kite_sim posts back for
    r = stack.resources
    # Given the order-updates queue mapped to its function, as Lambda's SQS poller runs it
    invoker = RecordingInvoker(stack)
    mapping = SqsEventSourceMapping(
        "order-updates",
        SqsMappingConfig(batch_size=10, report_batch_item_failures=True),
        SqsMappingTarget(r.order_updates.url, r.order_updates.arn, stack.aws.region),
        invoker,
        lambda service: client(stack.aws, service),
    )
    mapping.start()
    # And the feed streaming on the account's connections, forwarding order messages to it
    subscribe_equities(stack, 12)
    service = FeedService(
        feed_environment(stack, tmp_path / "spill"),
        Dependencies(kinesis_endpoint_url=stack.aws.url),
    )
    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(service.run(stop))
    try:
        await wait_until_async(
            lambda: service.metrics.value("feed_connections_open", account=account),
            lambda n: n >= 1,
            what="a connection of the account streaming",
            within=60,
        )
        # When an order is placed through the API and fills at kite_sim
        status, body, _ = await asyncio.to_thread(
            stack.trader_call,
            "POST",
            f"/accounts/{account}/orders",
            body=MARKET,
            headers={"Idempotency-Key": f"t-{uuid.uuid4()}"},
        )
        assert status == 200, body
        order_id = body["data"]["order_id"]
        # Then the fill arrives both ways: posted back, and over SQS from the WebSocket
        await wait_until_async(
            lambda: postbacks_delivered(stack, order_id),
            lambda statuses: "COMPLETE" in statuses,
            what="the fill's postback delivered",
            within=30,
        )
        await wait_until_async(
            lambda: invoker.seen(order_id),
            lambda statuses: "COMPLETE" in statuses,
            what="the fill's WebSocket message consumed from SQS",
            within=30,
        )
        await wait_until_async(
            lambda: (mapping.stats().in_flight, queue_depth(stack.aws, r.order_updates.url)),
            lambda left: left == (0, 0),
            what="the queue consumed",
            within=30,
        )
    finally:
        stop.set()
        delivered = await asyncio.wait_for(task, 60)
        mapping.stop()
    assert delivered
    # And the fill is stored exactly once
    rows = await asyncio.to_thread(
        stack.sql, "select status, source from trading.order_updates where order_id = $1", order_id
    )
    assert [r["status"] for r in rows].count("COMPLETE") == 1
    # And the states only the WebSocket tells (the order opening) were stored from it
    assert "websocket" in {r["source"] for r in rows if r["status"] != "COMPLETE"}
    # And every invocation succeeded; the account's other connections' copies were not sent
    assert all(not result.failed for result in invoker.results)
    assert service.metrics.total("feed_order_updates_dropped_total") == 0
    forwarded = service.metrics.total("feed_order_updates_forwarded_total")
    assert forwarded == mapping.stats().messages_deleted
    assert forwarded == len({OrderUpdate(o).update_key for o in invoker.orders})
    assert queue_depth(stack.aws, r.order_updates.dlq_url) == 0
    # And a postback for it with a bad checksum is refused and stores nothing
    (complete,) = [o for o in invoker.orders if o.get("order_id") == order_id and
                   o["status"] == "COMPLETE"]  # fmt: skip
    forged = {**complete, "status": "CANCELLED", "checksum": "0" * 64}
    assert stack.call("POST", "/postbacks", body=forged)[0] == 403
    # While the same update with a good checksum, posted again, is still stored once
    again = {**complete}
    again["checksum"] = postback_checksum(
        again["order_id"], again["order_timestamp"], stack.accounts[0].api_secret
    )
    assert stack.call("POST", "/postbacks", body=again)[1] == {"stored": False}
    statuses = [
        r["status"]
        for r in await asyncio.to_thread(
            stack.sql, "select status from trading.order_updates where order_id = $1", order_id
        )
    ]
    assert statuses.count("COMPLETE") == 1
    assert "CANCELLED" not in statuses
