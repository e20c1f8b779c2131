"""Order updates from the feed's queue: one the store refuses costs only its own delivery."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lambdas.api.ingest import UpdateIngest, ingest_isolating
from lambdas.api.updates import OrderUpdate, order_update
from tests.unit.lambdas.api.fakes import MemoryLifecycle, MemoryPublisher

POISON = "2611309999"


class RefusingLifecycle(MemoryLifecycle):
    """Refuses, as one transaction, any batch holding the poisoned order (stores nothing)."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    def store_updates(self, updates: Sequence[OrderUpdate], source: str) -> list[bool]:
        self.attempts += 1
        if any(u.order_id == POISON for u in updates):
            raise ValueError("the database refused a value")
        return super().store_updates(updates, source)


def update(order_id: str, at: str) -> OrderUpdate:
    return order_update(
        "AB1", {"order_id": order_id, "status": "OPEN", "order_timestamp": at, "quantity": 1}
    )


def test_a_clean_batch_is_stored_in_one_go() -> None:
    # Given three good updates
    lifecycle = RefusingLifecycle()
    ingest = UpdateIngest(lifecycle, MemoryPublisher())
    batch = [(f"m{i}", update(f"26113000{i}", f"2026-11-30 10:00:0{i}")) for i in range(3)]
    # When ingested, Then one store call holds them all and nothing failed
    outcome = ingest_isolating(ingest, batch, "websocket")
    assert (outcome.new, outcome.duplicates, outcome.failed) == (3, 0, [])
    assert lifecycle.attempts == 1


def test_a_refused_update_fails_only_its_delivery() -> None:
    # Given a batch with a poisoned update between two good ones
    lifecycle = RefusingLifecycle()
    publisher = MemoryPublisher()
    ingest = UpdateIngest(lifecycle, publisher)
    batch: list[tuple[str, OrderUpdate]] = [
        ("m1", update("2611300001", "2026-11-30 10:00:01")),
        ("m2", update(POISON, "2026-11-30 10:00:02")),
        ("m3", update("2611300003", "2026-11-30 10:00:03")),
    ]
    # When ingested
    outcome = ingest_isolating(ingest, batch, "websocket")
    # Then the good ones are stored and published once, and only m2 is reported failed
    assert outcome.failed == ["m2"]
    assert (outcome.new, outcome.duplicates) == (2, 0)
    assert sorted(e["order_id"] for e in publisher.events) == ["2611300001", "2611300003"]


def test_nothing_to_store_calls_no_store() -> None:
    lifecycle = RefusingLifecycle()
    outcome = ingest_isolating(UpdateIngest(lifecycle, MemoryPublisher()), [], "websocket")
    assert (outcome.new, outcome.failed, lifecycle.attempts) == (0, [], 0)


def test_a_store_that_is_down_fails_every_delivery_for_redelivery() -> None:
    # Given a store that refuses everything (the database is down)
    class Down(MemoryLifecycle):
        def store_updates(self, updates: Sequence[OrderUpdate], source: str) -> Any:
            raise ConnectionError("database down")

    batch = [
        ("m1", update("2611300001", "2026-11-30 10:00:01")),
        ("m2", update("2611300002", "2026-11-30 10:00:02")),
    ]
    # When ingested, Then every delivery is reported failed (SQS redelivers them all)
    outcome = ingest_isolating(UpdateIngest(Down(), MemoryPublisher()), batch, "websocket")
    assert outcome.failed == ["m1", "m2"]
    assert outcome.new == 0
