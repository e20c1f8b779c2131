"""Sender lanes against a scripted Kinesis: retries, order, breaker, spill, shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from itertools import repeat
from pathlib import Path

import pytest

from feed_container.kinesis import (
    KinesisAmbiguousError,
    KinesisError,
    KinesisThrottledError,
    KinesisUnavailableError,
    PutResult,
)
from feed_container.metrics import Metrics
from feed_container.sender import CircuitBreaker, SendLane, lane_of
from feed_container.spill import SpillStore
from tests.waiting import wait_until_async
from ticker_core.records import KinesisRecord, PutRecordsBatch, RecordBatcher, deaggregate


class ScriptedKinesis:
    """Answers PutRecords from a script: a set of failed indexes, or an error to raise."""

    def __init__(self) -> None:
        self.script: list[set[int] | KinesisError] = []
        self.down = False
        self.calls: list[list[bytes]] = []
        self.written: list[bytes] = []

    async def put(self, batch: PutRecordsBatch) -> PutResult:
        await asyncio.sleep(0)
        self.calls.append([r.data for r in batch.records])
        if self.down:
            raise KinesisUnavailableError("down")
        step = self.script.pop(0) if self.script else set()
        if isinstance(step, KinesisError):
            raise step
        failed = tuple(sorted(step))
        self.written += [r.data for i, r in enumerate(batch.records) if i not in step]
        return PutResult(failed, tuple("ProvisionedThroughputExceededException" for _ in failed))


def delays() -> Iterator[float]:
    return repeat(0.001)


def make_lane(
    tmp_path: Path, kinesis: ScriptedKinesis, *, high: int = 10**6, low: int = 0, disk: int = 10**7
) -> tuple[SendLane, Metrics, CircuitBreaker]:
    metrics = Metrics()
    breaker = CircuitBreaker(3, 0.05, 0.2, metrics=metrics)
    lane = SendLane(
        0,
        writer=kinesis,  # type: ignore[arg-type]
        breaker=breaker,
        spill=SpillStore(tmp_path / "spill", max_bytes=disk, segment_bytes=4096),
        metrics=metrics,
        batcher=RecordBatcher(linger=0.0, aggregate_bytes=200),
        high_bytes=high,
        low_bytes=low,
        retry_delays=delays,
    )
    return lane, metrics, breaker


def batch(*names: str) -> PutRecordsBatch:
    return PutRecordsBatch(tuple(KinesisRecord("NIFTY", n.encode(), 1, len(n)) for n in names))


async def settle(lane: SendLane, within: float = 5.0) -> None:
    await wait_until_async(
        lambda: lane.is_drained() and not lane.queued_batches,
        within=within,
        every=0.005,
        what="the lane to drain",
    )


async def test_only_failed_entries_are_resent_before_anything_newer(tmp_path: Path) -> None:
    # Given Kinesis refuses entries 1 and 3 of the first call, then entry 0 of the resend
    kinesis = ScriptedKinesis()
    kinesis.script = [{1, 3}, {0}]
    lane, metrics, _ = make_lane(tmp_path, kinesis)
    lane.start()
    # When two batches are offered
    lane.offer([batch("a", "b", "c", "d"), batch("e")])
    await settle(lane)
    # Then the resends hold only what failed, and the second batch waited for them
    assert kinesis.calls == [[b"a", b"b", b"c", b"d"], [b"b", b"d"], [b"b"], [b"e"]]
    assert sorted(kinesis.written) == [b"a", b"b", b"c", b"d", b"e"]
    assert metrics.total("feed_kinesis_records_acked_total") == 5
    assert metrics.total("feed_kinesis_throttled_records_total") == 3
    # And an entry acknowledged while an earlier one of its key failed counts as reordered
    assert metrics.total("feed_kinesis_reordered_records_total") == 2
    await lane.close(0, 1)


async def test_memory_accounting_returns_to_zero_after_partial_failures(tmp_path: Path) -> None:
    # Given a lane whose memory budget would be eaten by any leak: refill only when empty
    kinesis = ScriptedKinesis()
    kinesis.script = [{1, 3}, {0}, set(), {2}]  # abcd: b,d fail; b fails again; efg: g fails
    lane, _, _ = make_lane(tmp_path, kinesis, high=64, low=0)
    lane.start()
    # When batches are delivered through partial failures (some spill: the budget is small)
    lane.offer([batch("a", "b", "c", "d"), batch("e", "f", "g"), batch("h")])
    await settle(lane)
    # Then memory reads empty again, so the next batches queue and the spill replays
    assert lane.memory_bytes == 0
    lane.offer([batch("i")])
    await settle(lane)
    assert sorted(kinesis.written) == [x.encode() for x in "abcdefghi"]
    assert lane.memory_bytes == 0
    await lane.close(0, 1)


async def test_whole_call_failures_open_the_breaker_then_one_trial_closes_it(
    tmp_path: Path,
) -> None:
    # Given Kinesis throttles, then loses, then times out three calls
    kinesis = ScriptedKinesis()
    kinesis.script = [
        KinesisThrottledError("t"),
        KinesisUnavailableError("u"),
        KinesisAmbiguousError("a"),
    ]
    lane, metrics, breaker = make_lane(tmp_path, kinesis)
    lane.start()
    lane.offer([batch("x", "y")])
    # When the third consecutive failure happens
    await wait_until_async(lambda: breaker.is_open, every=0.001, what="the breaker to open")
    # Then the breaker is open and nothing is called until it allows a trial
    assert len(kinesis.calls) == 3
    await settle(lane)
    assert not breaker.is_open
    assert len(kinesis.calls) == 4
    # And the unknown outcome was resent whole and counted as a possible duplicate
    assert metrics.total("feed_kinesis_ambiguous_total") == 2
    assert metrics.value("feed_kinesis_requests_total", outcome="throttled") == 1
    assert metrics.value("feed_kinesis_requests_total", outcome="unavailable") == 1
    await lane.close(0, 1)


async def test_over_the_memory_budget_batches_spill_and_replay_in_order(tmp_path: Path) -> None:
    # Given Kinesis is down and memory holds about two batches
    kinesis = ScriptedKinesis()
    kinesis.down = True
    size = batch("000").size
    lane, metrics, _ = make_lane(tmp_path, kinesis, high=2 * size, low=size)
    lane.start()
    # When 30 batches arrive
    names = [f"{n:03d}" for n in range(30)]
    for name in names:
        lane.offer([batch(name)])
    # Then the ones past the budget are on disk
    assert metrics.total("feed_spilled_records_total") == 28
    assert lane.memory_bytes <= 2 * size
    # And when Kinesis is back, everything is written in the order it arrived
    kinesis.down = False
    await settle(lane)
    assert kinesis.written == [n.encode() for n in names]
    assert metrics.total("feed_replayed_records_total") == 28
    assert lane.spill.bytes_on_disk == 0
    await lane.close(0, 1)


async def test_with_memory_and_disk_full_batches_are_dropped_and_counted(tmp_path: Path) -> None:
    kinesis = ScriptedKinesis()
    kinesis.down = True
    size = batch("000").size
    lane, metrics, _ = make_lane(tmp_path, kinesis, high=size, disk=100)
    for n in range(6):
        lane.offer([batch(f"{n:03d}")])
    dropped = metrics.total("feed_dropped_records_total")
    assert dropped >= 1
    assert metrics.total("feed_spilled_records_total") + dropped + 1 == 6


async def test_shutdown_with_kinesis_down_persists_everything_in_order(tmp_path: Path) -> None:
    # Given a lane whose Kinesis is down, holding records in its batcher and memory
    kinesis = ScriptedKinesis()
    kinesis.down = True
    lane, _, _ = make_lane(tmp_path, kinesis)
    lane.start()
    lane.offer([batch("old-1"), batch("old-2")])
    lane.add("BANKNIFTY", b"pending", 0.0)
    # When it is closed with a short deadline
    loop = asyncio.get_running_loop()
    delivered = await lane.close(loop.time() + 0.05, loop.time() + 0.2)
    # Then it reports the failure, and the next run reads everything back in order
    assert not delivered
    again = SpillStore(tmp_path / "spill", max_bytes=10**7, segment_bytes=4096)
    found = []
    while (item := again.read_next()) is not None:
        for record in item.batch.records:
            found += [u.data for u in deaggregate(record.data, record.partition_key)]
    assert found == [b"old-1", b"old-2", b"pending"]


async def test_shutdown_delivers_what_the_batcher_holds(tmp_path: Path) -> None:
    kinesis = ScriptedKinesis()
    lane, metrics, _ = make_lane(tmp_path, kinesis)
    lane.start()
    for n in range(5):
        lane.add("NIFTY", f"t{n}".encode(), 0.0)
    loop = asyncio.get_running_loop()
    assert await lane.close(loop.time() + 2, loop.time() + 3)
    written = [u.data for d in kinesis.written for u in deaggregate(d, "NIFTY")]
    assert written == [f"t{n}".encode() for n in range(5)]
    assert metrics.total("feed_kinesis_records_acked_total") == 5


@pytest.mark.parametrize("lanes", [1, 4, 7])
def test_a_key_always_maps_to_the_same_lane(lanes: int) -> None:
    assert {lane_of("NIFTY", lanes) for _ in range(3)} == {lane_of("NIFTY", lanes)}
    assert all(0 <= lane_of(k, lanes) < lanes for k in ("NIFTY", "BANKNIFTY", "M&M", "भारत"))
