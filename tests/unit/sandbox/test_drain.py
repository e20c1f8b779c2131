"""The drain's decisions: when the feed is done, and when a wait gives up."""

from __future__ import annotations

from collections.abc import Callable, Hashable

import pytest

from sandbox.dashboard import parse_prometheus
from sandbox.drain import (
    DRAIN_POLL_S,
    DrainSkippedError,
    FeedCounts,
    FeedStep,
    Stall,
    feed_step,
    wait_while_moving,
)

METRICS = """\
feed_ticks_received_total{account="SM1000"} 600
feed_ticks_received_total{account="SM1001"} 400
feed_ticks_accepted_total 990
feed_kinesis_records_acked_total 990
feed_buffer_bytes 100
feed_spill_bytes 20
"""


def counts(
    sent: int = 1000, received: float = 1000, accepted: float = 990, acked: float = 990
) -> FeedCounts:
    return FeedCounts(sent, received, accepted, acked, buffered=0)


class FakeClock:
    """Time that moves only when the code under test pauses."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def pause(self, seconds: float) -> None:
        self.now += seconds


def test_feed_counts_are_read_from_the_simulator_and_the_feeds_metrics() -> None:
    # Given the feed's /metrics and the simulator's sent count
    read = FeedCounts.read(1000, parse_prometheus(METRICS))
    # Then received sums the accounts, and buffered counts memory and disk
    assert read == FeedCounts(sent=1000, received=1000, accepted=990, acked=990, buffered=120)
    assert read.delivered
    assert "simulator sent 1,000, feed received 1,000" in read.describe()


@pytest.mark.parametrize(
    ("current", "delivered"),
    [
        (counts(), True),  # all received, all accepted acknowledged
        (counts(received=1200), True),  # more received than sent (duplicates: the report says)
        (counts(received=999), False),  # one tick still on the wire
        (counts(acked=989), False),  # one record not yet acknowledged by Kinesis
    ],
)
def test_the_feed_has_delivered_when_received_meets_sent_and_acked_meets_accepted(
    current: FeedCounts, delivered: bool
) -> None:
    assert current.delivered is delivered


def test_a_stall_is_a_state_unchanged_for_the_whole_limit() -> None:
    stall = Stall(limit_s=15)
    # Given a state first seen at t=0
    assert not stall.stalled("a", 0.0)
    # When it is unchanged short of the limit, Then it is not stalled
    assert not stall.stalled("a", 14.9)
    # When it changes, the clock restarts
    assert not stall.stalled("b", 20.0)
    assert not stall.stalled("b", 34.9)
    # And unchanged for the limit, it is stalled
    assert stall.stalled("b", 35.0)


def test_the_feed_step_waits_while_counts_move_and_settles_when_they_stop() -> None:
    stall = Stall(limit_s=15)
    short = counts(received=900)
    # Given a feed that does not answer: keep waiting (the drain's timeout bounds it)
    assert feed_step(None, stall, 0.0) is FeedStep.WAITING
    # Given a feed short of the sent count, still moving
    assert feed_step(short, stall, 1.0) is FeedStep.WAITING
    assert feed_step(counts(received=950), stall, 10.0) is FeedStep.WAITING
    # When nothing moves for 15 s, Then it has settled short (the report says what is missing)
    assert feed_step(counts(received=950), stall, 24.9) is FeedStep.WAITING
    assert feed_step(counts(received=950), stall, 25.0) is FeedStep.SETTLED
    # And a feed that delivered everything is done at once
    assert feed_step(counts(), Stall(limit_s=15), 0.0) is FeedStep.DELIVERED


def run_wait(
    done: Callable[[], bool], progress: Callable[[], Hashable], *, skipped: bool = False
) -> tuple[bool, float, int]:
    clock = FakeClock()
    looks: list[float] = []
    arrived = wait_while_moving(
        done,
        progress,
        timeout_s=120,
        skipped=lambda: skipped,
        between=lambda: looks.append(clock.now),
        clock=clock,
        pause=clock.pause,
    )
    return arrived, clock.now, len(looks)


def test_a_wait_ends_as_soon_as_the_condition_holds() -> None:
    # Given a condition that holds at the third look
    looks = iter([False, False, True])
    # When waited for, Then it arrives after two pauses
    arrived, elapsed, refreshed = run_wait(lambda: next(looks), lambda: 0)
    assert arrived
    assert elapsed == 2 * DRAIN_POLL_S
    assert refreshed == 2


def test_a_slow_but_moving_backlog_is_waited_for_past_the_timeout() -> None:
    # Given a backlog whose counters move at every look, done after 1,000 s
    clock_ticks = iter(range(10**6))
    looks = 0

    def done() -> bool:
        nonlocal looks
        looks += 1
        return looks > 2000

    # When waited for with a 120 s timeout, Then the wait goes on while it moves
    arrived, elapsed, _ = run_wait(done, lambda: next(clock_ticks))
    assert arrived
    assert elapsed > 120


def test_a_wait_gives_up_when_nothing_moves_for_the_timeout() -> None:
    # Given a condition that never holds and counters that never move
    arrived, elapsed, _ = run_wait(lambda: False, lambda: (5, 5))
    # Then the wait gives up once they stood still for the timeout, not before
    assert not arrived
    assert 120 <= elapsed < 120 + 2 * DRAIN_POLL_S


def test_a_second_ctrl_c_skips_the_wait() -> None:
    with pytest.raises(DrainSkippedError):
        run_wait(lambda: False, lambda: 0, skipped=True)
