"""The feed's status record and its writer (no sockets: the sink is in memory)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from feed_container.connection import KiteConnection
from feed_container.metrics import Metrics
from feed_container.planner import AssignmentPlanner, SlotDiff, SlotId
from feed_container.pool import FeedPool
from feed_container.status import StatusWriter, feed_status
from tests.waiting import wait_until_async
from ticker_adapters.feed_status import FeedStatus

NOW = datetime(2026, 11, 30, 4, 0, tzinfo=UTC)


def test_the_record_says_per_account_what_streams_and_what_does_not_fit() -> None:
    # Given a's two slots (one open) and b's slot (closed), 3 instruments not fitted
    slots = [
        (SlotId("a", 0), True, 10), (SlotId("a", 1), False, 4), (SlotId("b", 0), True, 7),
    ]  # fmt: skip
    # When the record is made
    status = feed_status(
        instance="task-1", written_at=NOW, started_at=NOW - timedelta(minutes=1),
        interval_seconds=5, generation=12, desired=24, slots=slots,
        unassigned=(7, 8, 9), accounts_waiting=("c",),
    )  # fmt: skip
    # Then it counts streaming instruments on open connections only, per account too
    assert (status.desired, status.streaming, status.not_fitted) == (24, 17, 3)
    a = status.account("a")
    assert a is not None
    assert (a.connections_open, len(a.connections), a.instruments, a.streaming) == (1, 2, 14, 10)
    assert status.not_fitted_sample == (7, 8, 9)
    # And it survives its stored form unchanged
    assert FeedStatus.from_json(status.to_json()) == status


class FlakySink:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.records: list[FeedStatus] = []

    def put(self, status: FeedStatus) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("throttled")
        self.records.append(status)


async def test_a_failed_write_is_counted_and_the_next_one_goes_out() -> None:
    # Given a sink that fails once
    metrics = Metrics()
    sink = FlakySink(failures=1)
    status = feed_status(
        instance="t", written_at=NOW, started_at=NOW, interval_seconds=0.01, generation=None,
        desired=0, slots=[], unassigned=(), accounts_waiting=(),
    )  # fmt: skip
    writer = StatusWriter(sink, lambda: status, interval=0.01, metrics=metrics)
    # When the writer runs until two records are out
    task = asyncio.get_running_loop().create_task(writer.run())
    try:
        await wait_until_async(lambda: len(sink.records), lambda n: n >= 2, what="two records")
    finally:
        task.cancel()
    # Then the failure was counted and the loop went on
    assert metrics.total("feed_status_write_errors_total") == 1
    assert len(sink.records) >= 2


class FakeConnection:
    """A connection as the pool sees it; records the order of updates and stops."""

    def __init__(self, slot: SlotId, events: list[str]) -> None:
        self.slot = slot
        self.account = slot.account
        self.connected = True
        self.desired: dict[int, str] = {}
        self.events = events
        self.held_open = False

    def start(self) -> None:
        self.events.append(f"start {self.slot}")

    def hold_open(self) -> None:
        self.held_open = True

    def update(self, diff: SlotDiff) -> None:
        self.desired.update(diff.subscribe)
        for token in diff.unsubscribe:
            self.desired.pop(token, None)
        if diff.subscribe:
            self.events.append(f"subscribe {self.slot} {len(diff.subscribe)}")

    async def stop(self) -> None:
        self.connected = False
        self.events.append(f"stop {self.slot}")


async def test_retiring_subscribes_elsewhere_before_closing_the_old_connections() -> None:
    # Given a pool over two accounts, one connection each, carrying 6 instruments
    events: list[str] = []
    made: dict[SlotId, FakeConnection] = {}

    def make(slot: SlotId) -> KiteConnection:
        made[slot] = FakeConnection(slot, events)
        return made[slot]  # type: ignore[return-value]

    planner = AssignmentPlanner(("a", "b"), connections_per_account=1, capacity=10)
    pool = FeedPool(planner, make, Metrics())
    pool.apply(dict.fromkeys(range(6), "ltp"))
    events.clear()
    # When b is retired
    moved = await pool.remove_accounts(["b"])
    # Then b's instruments are subscribed on a's connection first, and b's connection closed
    assert events == [f"subscribe a#0 {len(moved)}", "stop b#0"]
    assert set(made[SlotId("a", 0)].desired) == set(range(6))
    assert SlotId("b", 0) not in pool.connections
    assert [s.account for s, _, _ in pool.slot_states()] == ["a"]
    assert pool.desired_count == 6


def test_with_order_updates_every_account_keeps_a_connection_even_without_instruments() -> None:
    # Given a pool that forwards order updates, over two accounts of two slots each
    events: list[str] = []

    def make(slot: SlotId) -> KiteConnection:
        return FakeConnection(slot, events)  # type: ignore[return-value]

    planner = AssignmentPlanner(("a", "b"), connections_per_account=2, capacity=10)
    pool = FeedPool(planner, make, Metrics(), every_account=True)
    # When nothing is subscribed, Then each account has its first slot's connection, held open
    pool.apply({})
    assert sorted(str(s) for s in pool.connections) == ["a#0", "b#0"]
    assert all(c.held_open for c in pool.connections.values())  # type: ignore[attr-defined]
    # And instruments go where the planner puts them, without a second connection for that
    pool.apply(dict.fromkeys(range(3), "ltp"))
    assert len(pool.connections) == 3
    # And an account added later gets one at once
    pool.add_accounts(["c"])
    assert "c#0" in {str(s) for s in pool.connections}


def test_without_order_updates_an_account_without_instruments_has_no_connection() -> None:
    planner = AssignmentPlanner(("a", "b"), connections_per_account=2, capacity=10)
    pool = FeedPool(planner, lambda slot: FakeConnection(slot, []), Metrics())  # type: ignore[arg-type, return-value]
    pool.apply({})
    assert pool.connections == {}
