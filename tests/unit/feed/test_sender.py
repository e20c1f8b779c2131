"""Sender lanes against a scripted Kinesis: retries, order, breaker, spill, shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from itertools import repeat
from pathlib import Path

import pytest

from feed_container.kinesis import (
    KinesisAmbiguousError,
    KinesisCredentialsError,
    KinesisThrottledError,
    KinesisUnavailableError,
    PutResult,
)
from feed_container.metrics import Metrics
from feed_container.sender import CircuitBreaker, SendLane, lane_of
from feed_container.spill import FileSystem, SpillStore
from tests.faults import FullDisk
from tests.waiting import wait_until_async
from ticker_core.records import KinesisRecord, PutRecordsBatch, RecordBatcher, deaggregate


class ScriptedKinesis:
    """Answers PutRecords from a script: a set of failed indexes, or an error to raise."""

    def __init__(self) -> None:
        self.script: list[set[int] | Exception] = []
        self.down = False
        self.calls: list[list[bytes]] = []
        self.written: list[bytes] = []

    async def put(self, batch: PutRecordsBatch) -> PutResult:
        await asyncio.sleep(0)
        self.calls.append([r.data for r in batch.records])
        if self.down:
            raise KinesisUnavailableError("down")
        step = self.script.pop(0) if self.script else set()
        if isinstance(step, Exception):
            raise step
        failed = tuple(sorted(step))
        self.written += [r.data for i, r in enumerate(batch.records) if i not in step]
        return PutResult(failed, tuple("ProvisionedThroughputExceededException" for _ in failed))


def delays() -> Iterator[float]:
    return repeat(0.001)


def make_lane(
    tmp_path: Path,
    kinesis: ScriptedKinesis,
    *,
    high: int = 10**6,
    low: int = 0,
    disk: int = 10**7,
    max_bytes: int | None = None,
    fs: FileSystem | None = None,
    linger: float = 0.0,
) -> tuple[SendLane, Metrics, CircuitBreaker]:
    metrics = Metrics()
    breaker = CircuitBreaker(3, 0.05, 0.2, metrics=metrics)
    lane = SendLane(
        0,
        writer=kinesis,  # type: ignore[arg-type]
        breaker=breaker,
        spill=SpillStore(tmp_path / "spill", max_bytes=disk, segment_bytes=4096, fs=fs),
        metrics=metrics,
        batcher=RecordBatcher(linger=linger, aggregate_bytes=200),
        high_bytes=high,
        low_bytes=low,
        retry_delays=delays,
        max_bytes=max_bytes,
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


async def close_in_time(lane: SendLane, drain: float = 1.0) -> bool:
    """``lane.close`` with a drain deadline ``drain`` seconds away and a second more to finish."""
    loop = asyncio.get_running_loop()
    return await lane.close(loop.time() + drain, loop.time() + drain + 1)


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
    lane, metrics, _ = make_lane(tmp_path, kinesis, high=size, disk=100, max_bytes=2 * size)
    for n in range(6):
        lane.offer([batch(f"{n:03d}")])
    dropped = metrics.total("feed_dropped_records_total")
    assert dropped >= 1
    # one batch queued, one held in memory behind the spill, the rest spilled or dropped
    assert metrics.total("feed_spilled_records_total") + dropped + 2 == 6


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


async def test_a_credential_refresh_that_fails_is_retried_never_the_end_of_the_lane(
    tmp_path: Path,
) -> None:
    # Given Kinesis calls fail three times because the task role's credentials cannot be
    # refreshed (the ECS credentials endpoint blinking)
    kinesis = ScriptedKinesis()
    kinesis.script = [KinesisCredentialsError("CredentialRetrievalError")] * 3
    lane, metrics, breaker = make_lane(tmp_path, kinesis)
    lane.start()
    # When batches arrive meanwhile
    lane.offer([batch("a"), batch("b")])
    await settle(lane)
    # Then the lane kept going: everything written once, in order, the failures counted by kind
    assert kinesis.written == [b"a", b"b"]
    assert metrics.value("feed_kinesis_requests_total", outcome="credentials") == 3
    assert metrics.total("feed_kinesis_ambiguous_total") == 0
    assert not breaker.is_open
    assert await close_in_time(lane)


async def test_an_untyped_error_from_the_writer_is_resent_counted_and_closing_works(
    tmp_path: Path,
) -> None:
    # Given a writer that raises something it never promised (a bug), once
    kinesis = ScriptedKinesis()
    kinesis.script = [RuntimeError("bug")]
    lane, metrics, _ = make_lane(tmp_path, kinesis)
    lane.start()
    # When a batch is delivered
    lane.offer([batch("a")])
    await settle(lane)
    # Then it was resent (an unknown outcome: counted as a possible duplicate), not lost
    assert kinesis.written == [b"a"]
    assert metrics.value("feed_kinesis_requests_total", outcome="error") == 1
    assert metrics.total("feed_kinesis_ambiguous_total") == 1
    assert await close_in_time(lane)


async def test_a_lane_task_that_fails_is_restarted_and_shutdown_still_delivers(
    tmp_path: Path,
) -> None:
    # Given a lane whose sender hits a fault in its own code once
    kinesis = ScriptedKinesis()
    lane, metrics, _ = make_lane(tmp_path, kinesis)
    original = lane._acknowledge
    calls = [0]

    def acknowledge(batch: PutRecordsBatch, result: PutResult) -> None:
        calls[0] += 1
        if calls[0] == 1:
            raise KeyError("bug")
        original(batch, result)

    lane._acknowledge = acknowledge  # type: ignore[method-assign]
    lane.start()
    # When batches flow and the lane is then closed
    lane.offer([batch("a")])
    lane.add("NIFTY", b"b", 0.0)
    loop = asyncio.get_running_loop()
    delivered = await lane.close(loop.time() + 2, loop.time() + 3)
    # Then the failure was counted, the sender restarted, and close() finished delivering
    assert metrics.value("feed_task_failures_total", task="lane-send") == 1
    assert delivered
    assert b"b" in [u.data for d in kinesis.written for u in deaggregate(d, "NIFTY")]


async def test_a_full_disk_holds_batches_in_memory_behind_the_spill_in_order(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given Kinesis is down, memory holds one batch, and batches are spilling
    kinesis = ScriptedKinesis()
    kinesis.down = True
    disk = FullDisk(clock=lambda: 0.0)
    size = batch("000").size
    lane, metrics, _ = make_lane(tmp_path, kinesis, high=size, low=0, max_bytes=50 * size, fs=disk)
    lane.start()
    names = [f"{n:03d}" for n in range(30)]
    for name in names[:10]:
        lane.offer([batch(name)])
    # When the disk is full while ten more arrive
    disk.start(1.0)
    with caplog.at_level(logging.WARNING, logger="feed_container.sender"):
        for name in names[10:20]:
            lane.offer([batch(name)])
    # Then they wait in memory (nothing dropped), the refusals counted and logged with the reason
    assert metrics.total("feed_dropped_records_total") == 0
    assert lane.spill.write_errors["ENOSPC"] >= 1
    assert [getattr(r, "reason", None) for r in caplog.records] == ["ENOSPC"]
    # And once the disk has room and Kinesis is back, everything arrives once, in order
    disk.stop()
    for name in names[20:]:
        lane.offer([batch(name)])
    kinesis.down = False
    await settle(lane)
    assert kinesis.written == [n.encode() for n in names]
    assert lane.memory_bytes == 0
    assert lane.spill.bytes_on_disk == 0
    assert await close_in_time(lane)


async def test_the_overflow_goes_straight_to_memory_when_the_spill_is_read_out(
    tmp_path: Path,
) -> None:
    # Given batches held in memory while the disk stays full
    kinesis = ScriptedKinesis()
    kinesis.down = True
    disk = FullDisk(clock=lambda: 0.0)
    size = batch("000").size
    lane, metrics, _ = make_lane(tmp_path, kinesis, high=size, low=0, max_bytes=50 * size, fs=disk)
    lane.start()
    disk.start(1.0)
    names = [f"{n:03d}" for n in range(8)]
    for name in names:
        lane.offer([batch(name)])
    # When Kinesis comes back before the disk does
    kinesis.down = False
    await settle(lane)
    # Then they are delivered from memory in order, and nothing was spilled or dropped
    assert kinesis.written == [n.encode() for n in names]
    assert metrics.total("feed_spilled_records_total") == 0
    assert metrics.total("feed_dropped_records_total") == 0
    assert await close_in_time(lane)


async def test_a_batch_reports_where_its_time_went(tmp_path: Path) -> None:
    # Given a lane on a clock the test moves, and a slow first call that fails
    kinesis = ScriptedKinesis()
    kinesis.script = [KinesisUnavailableError("down")]
    now = [100.0]
    metrics = Metrics()
    lane = SendLane(
        0,
        writer=kinesis,  # type: ignore[arg-type]
        breaker=CircuitBreaker(3, 0.05, 0.2, metrics=metrics),
        spill=SpillStore(tmp_path / "spill", max_bytes=10**6, segment_bytes=4096),
        metrics=metrics,
        batcher=RecordBatcher(linger=1.0),
        high_bytes=10**6,
        low_bytes=0,
        retry_delays=delays,
        clock=lambda: now[0],
    )
    # When a record added at t=100 is sealed at t=100.25 and delivered on the second call
    lane.add("NIFTY", b"t", 100.0)
    now[0] = 100.25
    lane.offer(lane.batcher.flush())
    lane.start()
    await settle(lane)
    # Then the batcher, queue, retry and round-trip stages are each observed once
    text = metrics.render_prometheus()
    for stage in ("batching", "queue", "retries", "in_flight"):
        assert f'feed_batch_stage_seconds_count{{stage="{stage}"}} 1.0' in text
    assert 'feed_batch_stage_seconds_sum{stage="batching"} 0.25' in text
    assert await close_in_time(lane)


class HeldKinesis(ScriptedKinesis):
    """Holds its first call in flight until the test releases it."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def put(self, batch: PutRecordsBatch) -> PutResult:
        if not self.calls:
            self.calls.append([r.data for r in batch.records])
            await self.release.wait()
            self.written += [r.data for r in batch.records]
            return PutResult((), ())
        return await super().put(batch)


async def test_records_arriving_during_a_call_go_out_together_when_it_returns(
    tmp_path: Path,
) -> None:
    # Given a lane (linger 0: an idle sender takes every record at once) whose first
    # call stays in flight
    kinesis = HeldKinesis()
    lane, _, _ = make_lane(tmp_path, kinesis)
    lane.start()
    lane.add("NIFTY", b"a", 0.0)
    await wait_until_async(lambda: kinesis.calls, what="the first call")
    # When records of three keys arrive one by one while it is in flight
    for key in ("BANKNIFTY", "FINNIFTY", "SENSEX"):
        lane.add(key, key.encode(), 0.0)
        for _ in range(5):  # the accumulator's turn to run, were it to close a batch
            await asyncio.sleep(0)
    # Then none closed while the call was in flight (the lane holds only the call)
    assert lane.queued_batches == 1
    # And when it returns, one request carries all three, in order
    kinesis.release.set()
    await settle(lane)
    assert kinesis.calls == [[b"a"], [b"BANKNIFTY", b"FINNIFTY", b"SENSEX"]]
    assert await close_in_time(lane)


async def test_a_busy_lane_over_its_memory_budget_sends_what_lingered_to_the_spill(
    tmp_path: Path,
) -> None:
    # Given a lane with a 100-byte memory budget whose first call stays in flight
    kinesis = HeldKinesis()
    lane, metrics, _ = make_lane(tmp_path, kinesis, high=100)
    lane.start()
    lane.add("NIFTY", b"a", 0.0)
    await wait_until_async(lambda: kinesis.calls, what="the first call")
    # When more arrives during the call than the budget holds
    lane.add("BANKNIFTY", b"b" * 150, 0.0)
    # Then it is not held in the batcher: it goes to the disk spill
    await wait_until_async(
        lambda: metrics.total("feed_spilled_records_total") == 1, what="the record spilled"
    )
    assert lane.batcher.pending_user_records == 0
    # And after the call returns it is replayed in order, once
    kinesis.release.set()
    await settle(lane)
    assert kinesis.written == [b"a", b"b" * 150]
    assert await close_in_time(lane)


async def test_an_idle_lane_still_sends_on_the_linger_clock(tmp_path: Path) -> None:
    # Given an idle lane with a 20 ms linger
    kinesis = ScriptedKinesis()
    lane, _, _ = make_lane(tmp_path, kinesis, linger=0.02)
    lane.start()
    # When one record is added and nothing else arrives
    loop = asyncio.get_running_loop()
    lane.add("NIFTY", b"t", loop.time())
    # Then it is sent once its linger has passed, on its own
    await settle(lane)
    assert kinesis.calls == [[b"t"]]
    assert await close_in_time(lane)
