"""The API function's stores against moto's server and a real PostgreSQL."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

from lambdas.api.dal.events import EventBridgePublisher
from lambdas.api.dal.grants import DynamoGrantStore
from lambdas.api.dal.lifecycle import Intent, PostgresLifecycle
from lambdas.api.dal.limiter import DynamoOrderLimiter
from lambdas.api.errors import OrderRateLimitedError, RequestInProgressError
from lambdas.api.idempotency import IdempotentWrites
from lambdas.api.ingest import UpdateIngest, ingest_isolating
from lambdas.api.updates import order_update
from lambdas.common.db import create_pool
from lambdas.common.runtime import Lazy, LoopRunner
from sandbox.moto_server import AwsEndpoint
from sandbox.postgres import ConnectionInfo
from sandbox.provision import create_api_tables
from tests.conftest import settings_for

pytestmark = pytest.mark.integration


@pytest.fixture
def dynamodb(aws: AwsEndpoint) -> Any:
    client = boto3.client("dynamodb", **aws.client_kwargs())
    create_api_tables(client, grants="grants", idempotency="idempotency", limiter="limiter")
    return client


def test_grants_round_trip(dynamodb: Any) -> None:
    store = DynamoGrantStore(dynamodb, "grants")
    assert store.role("u1", "AB1") is None
    store.put("u1", "AB1", "trade", "admin")
    store.put("u1", "CD2", "view", "admin")
    store.put("u2", "AB1", "view", "admin")
    assert store.role("u1", "AB1") == "trade"
    assert [g.account_id for g in store.for_user("u1")] == ["AB1", "CD2"]
    assert store.delete("u1", "CD2") is True
    assert store.delete("u1", "CD2") is False
    assert [(g.user_id, g.account_id) for g in store.all()] == [("u1", "AB1"), ("u2", "AB1")]


class RecordingLimiter(DynamoOrderLimiter):
    """Records, in a list shared by several, the instant of every slot taken (the time its
    conditional write stored)."""

    def __init__(self, taken: list[float], lock: threading.Lock, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.taken = taken
        self._record_lock = lock

    def _claim(self, account_id: str, slot: int, now_us: int) -> tuple[bool, list[int]]:
        claimed, times = super()._claim(account_id, slot, now_us)
        if claimed:
            with self._record_lock:
                self.taken.append(now_us / 1_000_000)
        return claimed, times


def test_limiter_holds_the_rate_across_concurrent_takers(dynamodb: Any) -> None:
    # Given 25 takers at once for one account in 5 execution environments (each its own
    # limiter and memory of the slots), 10 per sliding window of 0.5 s
    taken: list[float] = []
    lock = threading.Lock()
    limiters = [
        RecordingLimiter(
            taken, lock, dynamodb, "limiter", limit=10, window_seconds=0.5, max_wait_seconds=5
        )
        for _ in range(5)
    ]
    threads = [threading.Thread(target=limiters[n % 5].acquire, args=("AB1",)) for n in range(25)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    # Then all got a slot, and no window of 0.5 s anywhere holds more than 10 of them
    taken.sort()
    assert len(taken) == 25
    assert max(sum(1 for s in taken if a <= s < a + 0.5) for a in taken) <= 10
    # And 25 takers needed at least three windows
    assert taken[-1] - taken[0] >= 1.0


def test_an_uncontended_slot_is_one_conditional_write(dynamodb: Any) -> None:
    # Given a limiter that has seen the account's slots once
    limiter = DynamoOrderLimiter(dynamodb, "limiter", limit=10, window_seconds=1.1)
    limiter.acquire("AB1")
    writes = limiter.writes
    # When orders come within the rate, Then each takes its slot in one write (no read)
    for _ in range(5):
        limiter.acquire("AB1")
    assert limiter.writes - writes == 5
    assert limiter.conflicts == 0


def test_a_limiter_that_lost_a_race_learns_the_slots_from_the_refusal(dynamodb: Any) -> None:
    # Given two environments; the first takes every slot
    first = DynamoOrderLimiter(dynamodb, "limiter", limit=3, window_seconds=5, max_wait_seconds=0)
    second = DynamoOrderLimiter(dynamodb, "limiter", limit=3, window_seconds=5, max_wait_seconds=0)
    for _ in range(3):
        first.acquire("AB1")
    # When the second, which has seen nothing, tries: its write is refused and answers with
    # the slots, so it knows at once that none is free
    with pytest.raises(OrderRateLimitedError):
        second.acquire("AB1")
    assert second.writes == 1
    assert second.conflicts == 1
    # And from then on it refuses without a write, until a slot frees
    with pytest.raises(OrderRateLimitedError):
        second.acquire("AB1")
    assert second.writes == 1


def test_limiter_gives_up_after_the_bounded_wait(dynamodb: Any) -> None:
    limiter = DynamoOrderLimiter(
        dynamodb, "limiter", limit=2, window_seconds=5, max_wait_seconds=0.2
    )
    limiter.acquire("AB1")
    limiter.acquire("AB1")
    with pytest.raises(OrderRateLimitedError) as caught:
        limiter.acquire("AB1")
    assert int(caught.value.headers["Retry-After"]) >= 4
    limiter.acquire("OTHER")  # another account is not held up


def test_idempotency_on_dynamodb_runs_once_and_refuses_concurrent_twins(dynamodb: Any) -> None:
    writes = IdempotentWrites(
        DynamoDBPersistenceLayer(table_name="idempotency", boto3_client=dynamodb)
    )
    inside, release = threading.Event(), threading.Event()
    runs: list[int] = []

    def slow() -> dict[str, Any]:
        runs.append(1)
        inside.set()
        release.wait(10)
        return {"status_code": 200, "body": {"status": "success", "data": {"order_id": "1"}}}

    def write() -> dict[str, Any]:
        return writes.run(
            user_id="u1", operation="place", account_id="AB1", key="k", request={"q": 1},
            execute=slow,
        )  # fmt: skip

    results: list[Any] = []
    first = threading.Thread(target=lambda: results.append(write()))
    first.start()
    assert inside.wait(10)
    with pytest.raises(RequestInProgressError):
        write()
    release.set()
    first.join(10)
    replay = write()
    assert runs == [1]
    assert replay["replayed"] is True
    assert replay["body"] == results[0]["body"]


@pytest.fixture
def lifecycle(migrated: ConnectionInfo) -> Any:
    runner = LoopRunner()
    pool: Lazy[Any] = Lazy(lambda: create_pool(settings_for(migrated)))
    yield PostgresLifecycle(pool, runner)
    opened = pool.reset()
    if opened is not None:
        runner.run(opened.close())
    runner.close()


def _update(status: str, filled: int, at: str, tag: str = "Ttag") -> Any:
    return order_update(
        "AB1",
        {"order_id": "2611300001", "status": status, "filled_quantity": filled, "tag": tag,
         "order_timestamp": "2026-11-30 10:00:00", "exchange_update_timestamp": at,
         "tradingsymbol": "INFY", "exchange": "NSE", "quantity": 1},
    )  # fmt: skip


def test_intent_is_recorded_once_and_settled(lifecycle: PostgresLifecycle) -> None:
    intent = Intent("u1", "AB1", "k", "place", {"quantity": 1}, kite_tag="Ttag")
    record, new = lifecycle.record_intent(intent)
    again, second = lifecycle.record_intent(intent)
    assert (new, second) == (True, False)
    assert again.intent_id == record.intent_id
    assert again.status == "sent"
    lifecycle.settle_intent(record.intent_id, "unknown")
    # When an update with the intent's tag arrives, Then the intent is settled as accepted
    assert lifecycle.store_updates([_update("OPEN", 0, "2026-11-30 10:00:00")], "websocket")
    settled, _ = lifecycle.record_intent(intent)
    assert (settled.status, settled.order_id) == ("accepted", "2611300001")


def test_the_same_update_twice_is_stored_once_and_the_latest_state_wins(
    lifecycle: PostgresLifecycle, aws: AwsEndpoint
) -> None:
    events = boto3.client("events", **aws.client_kwargs())
    events.create_event_bus(Name="trading")
    ingest = UpdateIngest(lifecycle, EventBridgePublisher(events, "trading"))
    complete = _update("COMPLETE", 1, "2026-11-30 10:00:02")
    opened = _update("OPEN", 0, "2026-11-30 10:00:01")
    # Given the postback and the WebSocket deliver the same update, and an older one late
    assert ingest.ingest([complete], "postback") == [True]
    assert ingest.ingest([complete], "websocket") == [False]
    assert ingest.ingest([opened], "websocket") == [True]
    # Then each update is stored and published once, and the order shows COMPLETE
    assert ingest.published == 2
    assert lifecycle.unpublished() == []

    async def latest() -> Any:
        pool = await lifecycle._pool.get()
        return await pool.fetchrow(
            "select status, filled_quantity from trading.orders where order_id = '2611300001'"
        )

    row = lifecycle._run(latest())
    assert (row["status"], float(row["filled_quantity"])) == ("COMPLETE", 1.0)


def test_unpublished_updates_wait_in_the_outbox(lifecycle: PostgresLifecycle) -> None:
    class DownBus:
        def publish(self, updates: Any) -> Any:
            raise ConnectionError("bus down")

    ingest = UpdateIngest(lifecycle, DownBus())
    assert ingest.ingest([_update("OPEN", 0, "2026-11-30 11:00:00")], "postback") == [True]
    assert ingest.publish_failures == 1
    pending = lifecycle.unpublished()
    assert [u.status for u, _ in pending] == ["OPEN"]
    assert json.loads(json.dumps(pending[0][0].event_detail("postback"), default=str))
    assert datetime.now(UTC) > pending[0][0].update_time


def test_an_update_the_database_refuses_costs_only_its_own_delivery(
    lifecycle: PostgresLifecycle,
) -> None:
    # Given a batch of three forwarded updates, the middle one carrying a NUL character
    # (PostgreSQL's jsonb refuses \u0000, so the whole-batch transaction fails)
    good_before = _update("OPEN", 0, "2026-11-30 12:00:01")
    poisoned = order_update(
        "AB1",
        {"order_id": "2611300002", "status": "OPEN", "order_timestamp": "2026-11-30 12:00:00",
         "tradingsymbol": "INFY\x00", "exchange": "NSE", "quantity": 1},
    )  # fmt: skip
    good_after = _update("COMPLETE", 1, "2026-11-30 12:00:02")
    ingest = UpdateIngest(lifecycle, MemoryBus())
    deliveries = [("m1", good_before), ("m2", poisoned), ("m3", good_after)]
    # When they are ingested isolating failures
    outcome = ingest_isolating(ingest, deliveries, "websocket")
    # Then the two good ones are stored, and only the poisoned delivery is failed
    assert outcome.failed == ["m2"]
    assert (outcome.new, outcome.duplicates) == (2, 0)

    async def stored() -> list[str]:
        pool = await lifecycle._pool.get()
        rows = await pool.fetch(
            "select order_id, status from trading.order_updates "
            "where update_time >= '2026-11-30 12:00:00+05:30' order by update_time"
        )
        return [f"{r['order_id']}:{r['status']}" for r in rows]

    assert lifecycle._run(stored()) == ["2611300001:OPEN", "2611300001:COMPLETE"]
    # And a redelivery of the whole batch stores nothing twice
    again = ingest_isolating(ingest, deliveries, "websocket")
    assert (again.new, again.duplicates, again.failed) == (0, 2, ["m2"])


class MemoryBus:
    """An event bus that accepts everything."""

    def publish(self, updates: Any) -> Any:
        return [update for update, _ in updates]
