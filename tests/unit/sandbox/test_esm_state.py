"""The event source mapping state machine decides what is delivered, retried and discarded.

This is the part of the sandbox that decides "nothing lost, nothing
duplicated", so every Lambda rule it emulates is pinned here, without sockets.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.esm import (
    CONDITION_RECORD_AGE,
    CONDITION_RETRIES_EXHAUSTED,
    Batch,
    DiscardedBatch,
    InvokeResult,
    MappingConfig,
    MappingConfigError,
    PartialResponseError,
    ShardState,
    StreamRecord,
    event_record,
    first_failed_index,
    on_failure_record,
)
from ticker_core.records import Aggregator, deaggregate_event_record

T0 = 1_800_000_000.0
OK = InvokeResult(payload=None)
CRASH = InvokeResult.error("Runtime.ExitError", "signal: killed")


def records(n: int, *, start: int = 1, arrival: float = T0, size: int = 10) -> list[StreamRecord]:
    return [
        StreamRecord(str(start + i), "NIFTY", bytes([i % 256]) * size, arrival + i * 0.001)
        for i in range(n)
    ]


def seqs(batch: Batch | None) -> list[int]:
    assert batch is not None
    return [int(r.sequence_number) for r in batch.records]


def failures(*sequence_numbers: str) -> InvokeResult:
    return InvokeResult({"batchItemFailures": [{"itemIdentifier": s} for s in sequence_numbers]})


def take(state: ShardState, now: float = T0) -> Batch | None:
    batch, discarded = state.next_batch(now)
    assert discarded == []
    return batch


# -- configuration ------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"batch_size": 0},
        {"batch_size": 10_001},
        {"maximum_batching_window_s": 301},
        {"maximum_retry_attempts": -2},
        {"maximum_record_age_s": 0},
        {"retry_base_delay_s": 2.0, "retry_max_delay_s": 1.0},
    ],
)
def test_settings_outside_lambdas_ranges_are_refused(kwargs: dict) -> None:
    with pytest.raises(MappingConfigError):
        MappingConfig(**kwargs)


# -- batching -------------------------------------------------------------------------


def test_batches_are_consecutive_up_to_batch_size_and_the_checkpoint_follows() -> None:
    # Given 250 records and a batch size of 100
    state = ShardState(MappingConfig(batch_size=100))
    state.offer(records(250), T0)
    delivered = []
    # When every invocation succeeds
    while (batch := take(state)) is not None:
        delivered.append(seqs(batch))
        assert state.complete(batch, OK, T0) == []
    # Then three batches cover the records once, in order, and the checkpoint is the last
    assert [len(b) for b in delivered] == [100, 100, 50]
    assert [n for b in delivered for n in b] == list(range(1, 251))
    assert state.checkpoint == "250"
    assert state.idle
    assert state.stats.records_succeeded == 250
    assert state.stats.invocations == 3


def test_one_batch_in_flight_at_a_time() -> None:
    state = ShardState(MappingConfig(batch_size=2))
    state.offer(records(4), T0)
    first = take(state)
    # While the first batch is out, nothing else is handed out, however much is waiting
    assert take(state) is None
    assert state.wake_at(T0) is None
    state.complete(first, OK, T0)
    assert seqs(take(state)) == [3, 4]


def test_a_short_batch_waits_for_the_batching_window() -> None:
    # Given a 2 s window and fewer records than a batch
    state = ShardState(MappingConfig(batch_size=100, maximum_batching_window_s=2.0))
    state.offer(records(5), T0)
    # Then nothing is invoked before the window closes, and the state says when it will be
    assert take(state, T0 + 1.0) is None
    assert state.wake_at(T0 + 1.0) == pytest.approx(T0 + 2.0)
    # When the window closes, Then the short batch goes
    assert seqs(take(state, T0 + 2.0)) == [1, 2, 3, 4, 5]


def test_a_full_batch_does_not_wait_for_the_window() -> None:
    state = ShardState(MappingConfig(batch_size=3, maximum_batching_window_s=60.0))
    state.offer(records(4), T0)
    assert seqs(take(state, T0)) == [1, 2, 3]


def test_without_a_window_records_go_at_once() -> None:
    state = ShardState(MappingConfig(batch_size=100))
    state.offer(records(1), T0)
    assert seqs(take(state, T0)) == [1]


def test_a_batch_stays_under_the_payload_limit_and_an_oversize_record_goes_alone() -> None:
    # Given records of ~400 KB base64 each and a 1 MB payload cap
    cap = 1_000_000
    state = ShardState(MappingConfig(batch_size=100, max_event_bytes=cap))
    big = records(5, size=300_000)
    state.offer(big, T0)
    sizes = []
    while (batch := take(state)) is not None:
        sizes.append(len(batch))
        assert len(batch) == 1 or sum(r.event_bytes for r in batch.records) <= cap
        state.complete(batch, OK, T0)
    # Then no batch passes the cap and every record was delivered once
    assert sizes == [2, 2, 1]
    # And a single record larger than the cap still goes, alone
    state.offer(records(1, start=6, size=2_000_000), T0)
    assert seqs(take(state)) == [6]


def test_room_bounds_how_far_the_poller_reads_ahead() -> None:
    state = ShardState(MappingConfig(batch_size=10), max_buffered=25)
    state.offer(records(20), T0)
    assert state.room == 5


# -- partial batch responses ---------------------------------------------------------------


def test_partial_failure_checkpoints_before_the_lowest_failure_and_resumes_there() -> None:
    # Given a 10-record batch with ReportBatchItemFailures
    config = MappingConfig(batch_size=10, report_batch_item_failures=True, retry_base_delay_s=0)
    state = ShardState(config)
    state.offer(records(10), T0)
    batch = take(state)
    # When the function reports records 7 and 4 as failed (in any order)
    assert state.complete(batch, failures("7", "4"), T0) == []
    # Then 1-3 are done and the next delivery starts at 4 and runs to the batch's end
    assert state.checkpoint == "3"
    assert seqs(take(state)) == [4, 5, 6, 7, 8, 9, 10]
    assert state.stats.partial_failures == 1
    assert state.stats.records_succeeded == 3
    assert state.stats.retries == 1


def test_partial_failure_of_the_first_record_moves_no_checkpoint() -> None:
    state = ShardState(MappingConfig(batch_size=5, report_batch_item_failures=True))
    state.offer(records(5), T0)
    batch = take(state)
    state.complete(batch, failures("1"), T0)
    assert state.checkpoint is None
    assert seqs(take(state, T0 + 10)) == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    "payload",
    [
        {"batchItemFailures": [{"itemIdentifier": ""}]},
        {"batchItemFailures": [{"itemIdentifier": None}]},
        {"batchItemFailures": [{"sequenceNumber": "3"}]},
        {"batchItemFailures": [{"itemIdentifier": "999"}]},
        {"batchItemFailures": [{"itemIdentifier": 3}]},
        {"batchItemFailures": ["3"]},
        {"batchItemFailures": "3"},
    ],
)
def test_an_unreadable_partial_response_fails_the_whole_batch(payload: dict) -> None:
    # Given a batch whose function answers with a malformed failure list
    state = ShardState(MappingConfig(batch_size=5, report_batch_item_failures=True))
    state.offer(records(5), T0)
    batch = take(state)
    state.complete(batch, InvokeResult(payload), T0)
    # Then nothing is checkpointed: the whole batch comes again
    assert state.checkpoint is None
    assert state.stats.function_errors == 1
    assert seqs(take(state, T0 + 10)) == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    "payload",
    [None, {}, {"batchItemFailures": []}, {"batchItemFailures": None}, "done", [1, 2]],
)
def test_these_responses_mean_complete_success(payload: object) -> None:
    state = ShardState(MappingConfig(batch_size=5, report_batch_item_failures=True))
    state.offer(records(5), T0)
    batch = take(state)
    state.complete(batch, InvokeResult(payload), T0)
    assert state.checkpoint == "5"
    assert state.idle


def test_reported_failures_are_ignored_unless_the_mapping_enables_them() -> None:
    state = ShardState(MappingConfig(batch_size=5, report_batch_item_failures=False))
    state.offer(records(5), T0)
    batch = take(state)
    state.complete(batch, failures("2"), T0)
    assert state.checkpoint == "5"


def test_first_failed_index_picks_the_lowest_position() -> None:
    batch = Batch(tuple(records(5)))
    assert first_failed_index(failures("5", "2", "4").payload, batch) == 1
    with pytest.raises(PartialResponseError):
        first_failed_index({"batchItemFailures": [{}]}, batch)


# -- function errors, retries, bisection ---------------------------------------------------------


def test_a_failed_batch_is_retried_whole_after_a_growing_delay() -> None:
    # Given retries allowed and no bisection
    config = MappingConfig(batch_size=3, retry_base_delay_s=0.5, retry_max_delay_s=1.5)
    state = ShardState(config)
    state.offer(records(3), T0)
    # When the function crashes, Then the same records come back after 0.5 s, then 1 s, 1.5 s
    now = T0
    for delay in (0.5, 1.0, 1.5, 1.5):
        batch = take(state, now)
        assert seqs(batch) == [1, 2, 3]
        state.complete(batch, CRASH, now)
        assert take(state, now + delay - 0.01) is None
        assert state.wake_at(now) == pytest.approx(now + delay)
        now += delay
    assert state.stats.retries == 4
    assert state.checkpoint is None


def test_after_the_last_retry_the_batch_is_discarded_and_the_shard_moves_on() -> None:
    # Given two retries
    state = ShardState(MappingConfig(batch_size=2, maximum_retry_attempts=2, retry_base_delay_s=0))
    state.offer(records(4), T0)
    discarded: list[DiscardedBatch] = []
    # When the first batch fails on the first try and both retries
    for _ in range(3):
        batch = take(state)
        assert seqs(batch) == [1, 2]
        discarded += state.complete(batch, CRASH, T0)
    # Then it is discarded once, naming how often it was invoked and why
    assert [(seqs(Batch(d.records)), d.condition, d.invoke_count) for d in discarded] == [
        ([1, 2], CONDITION_RETRIES_EXHAUSTED, 3)
    ]
    assert discarded[0].function_error == "Runtime.ExitError"
    # And the checkpoint passes it, and the next records are delivered
    assert state.checkpoint == "2"
    assert seqs(take(state)) == [3, 4]
    assert state.stats.records_discarded == 2


def test_zero_retries_discards_at_the_first_failure() -> None:
    state = ShardState(MappingConfig(batch_size=2, maximum_retry_attempts=0))
    state.offer(records(2), T0)
    batch = take(state)
    [discarded] = state.complete(batch, CRASH, T0)
    assert discarded.invoke_count == 1
    assert state.idle


def test_infinite_retries_never_discard() -> None:
    state = ShardState(MappingConfig(batch_size=1, retry_base_delay_s=0))
    state.offer(records(1), T0)
    for _ in range(200):
        batch = take(state)
        assert state.complete(batch, CRASH, T0) == []
    assert state.pending == 1


def test_partial_failure_spends_the_retry_quota_too() -> None:
    config = MappingConfig(
        batch_size=4,
        report_batch_item_failures=True,
        maximum_retry_attempts=1,
        retry_base_delay_s=0,
    )
    state = ShardState(config)
    state.offer(records(4), T0)
    assert state.complete(take(state), failures("3"), T0) == []
    [discarded] = state.complete(take(state), failures("3"), T0)
    assert seqs(Batch(discarded.records)) == [3, 4]
    assert discarded.function_error == "PartialBatchFailure"
    assert state.checkpoint == "4"


def test_bisection_splits_a_failed_batch_in_halves_left_first_without_spending_retries() -> None:
    # Given bisection and no retries at all
    config = MappingConfig(
        batch_size=8, bisect_batch_on_function_error=True, maximum_retry_attempts=0
    )
    state = ShardState(config)
    state.offer(records(8), T0)
    # When the whole batch fails
    assert state.complete(take(state), CRASH, T0) == []
    # Then the halves come next, the left one first, and nothing was discarded
    left = take(state)
    assert seqs(left) == [1, 2, 3, 4]
    state.complete(left, OK, T0)
    assert state.checkpoint == "4"
    assert seqs(take(state)) == [5, 6, 7, 8]
    assert state.stats.bisections == 1
    assert state.stats.records_discarded == 0


def poison_function(poison: set[str]) -> Callable[[Batch], InvokeResult]:
    def run(batch: Batch) -> InvokeResult:
        if any(r.sequence_number in poison for r in batch.records):
            return CRASH
        return OK

    return run


def test_bisection_isolates_a_poison_record_and_everything_else_succeeds_once() -> None:
    # Given a batch of 16 with one record that always crashes the function
    config = MappingConfig(
        batch_size=16,
        bisect_batch_on_function_error=True,
        maximum_retry_attempts=1,
        retry_base_delay_s=0,
    )
    state = ShardState(config)
    state.offer(records(16), T0)
    run = poison_function({"11"})
    succeeded: list[int] = []
    discarded: list[DiscardedBatch] = []
    while (batch := take(state)) is not None:
        result = run(batch)
        if not result.failed:
            succeeded += seqs(batch)
        discarded += state.complete(batch, result, T0)
    # Then only the poison record is discarded (after its retry), every other succeeds once
    assert [seqs(Batch(d.records)) for d in discarded] == [[11]]
    assert discarded[0].invoke_count == 2
    assert sorted(succeeded) == [n for n in range(1, 17) if n != 11]
    assert len(succeeded) == len(set(succeeded))
    assert state.checkpoint == "16"


# -- record age and iterator age ----------------------------------------------------------------


def test_records_older_than_the_maximum_age_are_discarded_unread() -> None:
    # Given records that arrived 100 s apart and a 60 s maximum age
    state = ShardState(MappingConfig(batch_size=10, maximum_record_age_s=60))
    old = records(2, arrival=T0)
    young = records(2, start=3, arrival=T0 + 100)
    state.offer(old + young, T0 + 100)
    # When the batch is formed at T0 + 100
    batch, discarded = state.next_batch(T0 + 100)
    # Then the old records go to the destination as too old, the young ones to the function
    assert [(seqs(Batch(d.records)), d.condition) for d in discarded] == [
        ([1, 2], CONDITION_RECORD_AGE)
    ]
    assert seqs(batch) == [3, 4]
    assert state.checkpoint == "2"


def test_iterator_age_is_the_age_of_the_last_record_invoked_and_zero_once_caught_up() -> None:
    state = ShardState(MappingConfig(batch_size=3))
    state.offer(records(3, arrival=T0), T0)
    batch = take(state, T0 + 4.0)
    assert state.stats.iterator_age_ms == pytest.approx(4000 - 2, abs=1)
    state.caught_up()  # in flight: still behind
    assert state.stats.iterator_age_ms > 0
    state.complete(batch, OK, T0 + 4.0)
    state.caught_up()
    assert state.stats.iterator_age_ms == 0
    assert state.stats.max_iterator_age_ms > 3990


def test_complete_refuses_a_batch_it_did_not_hand_out() -> None:
    state = ShardState(MappingConfig())
    state.offer(records(1), T0)
    take(state)
    with pytest.raises(ValueError, match="next_batch"):
        state.complete(Batch(tuple(records(1))), OK, T0)


# -- the invariant, over arbitrary outcomes -----------------------------------------------

outcome = st.one_of(
    st.just("ok"),
    st.just("crash"),
    st.integers(min_value=0, max_value=20).map(lambda n: f"partial:{n}"),
    st.just("garbage"),
)


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=60),
    batch_size=st.integers(min_value=1, max_value=16),
    bisect=st.booleans(),
    report=st.booleans(),
    retries=st.integers(min_value=-1, max_value=3),
    outcomes=st.lists(outcome, min_size=1, max_size=40),
)
def test_every_record_is_acknowledged_or_discarded_exactly_once_in_order(
    n: int, batch_size: int, bisect: bool, report: bool, retries: int, outcomes: list[str]
) -> None:
    # Given any mapping settings and any sequence of function outcomes (then success forever)
    config = MappingConfig(
        batch_size=batch_size,
        bisect_batch_on_function_error=bisect,
        report_batch_item_failures=report,
        maximum_retry_attempts=retries,
        retry_base_delay_s=0,
    )
    state = ShardState(config)
    state.offer(records(n), T0)
    done: list[int] = []  # acknowledged as processed or discarded, in order
    script = iter(outcomes)
    steps = 0
    while (batch := take(state)) is not None:
        steps += 1
        assert steps < 10_000
        # Every delivery starts right after the checkpoint: nothing skipped, nothing reordered
        expected_first = 1 if state.checkpoint is None else int(state.checkpoint) + 1
        assert seqs(batch)[0] == expected_first
        kind = next(script, "ok")
        if kind == "ok":
            result = OK
        elif kind == "crash":
            result = CRASH
        elif kind == "garbage":
            result = InvokeResult({"batchItemFailures": [{"itemIdentifier": "nope"}]})
        else:
            k = int(kind.split(":")[1]) % len(batch)
            result = failures(batch.records[k].sequence_number)
        before = state.checkpoint
        discarded = state.complete(batch, result, T0)
        after = state.checkpoint
        lo = 1 if before is None else int(before) + 1
        hi = 0 if after is None else int(after)
        newly = list(range(lo, hi + 1))
        for d in discarded:
            assert set(seqs(Batch(d.records))) <= set(newly)
        done += newly
    # Then every record was acknowledged exactly once, in order, and the counters agree
    assert done == list(range(1, n + 1))
    assert state.stats.records_succeeded + state.stats.records_discarded == n
    assert state.checkpoint == str(n)


# -- Lambda's wire shapes ----------------------------------------------------------------


def test_event_records_have_lambdas_shape_and_de_aggregate_with_their_identity() -> None:
    # Given a KPL aggregate on shard 3
    aggregator = Aggregator()
    for i in range(3):
        assert aggregator.try_add("BANKNIFTY", json.dumps({"n": i}).encode())
    record = StreamRecord(
        "49650000000000000000000000000000042", "BANKNIFTY", aggregator.build(), T0
    )
    # When it is put in an event the way Lambda does
    entry = event_record(
        record,
        shard_id="shardId-000000000003",
        stream_arn="arn:aws:kinesis:ap-south-1:000000000000:stream/ticks",
        role_arn="arn:aws:iam::000000000000:role/persist",
    )
    # Then it has exactly Lambda's keys
    assert set(entry) == {
        "kinesis", "eventSource", "eventVersion", "eventID", "eventName",
        "invokeIdentityArn", "awsRegion", "eventSourceARN",
    }  # fmt: skip
    assert set(entry["kinesis"]) == {
        "kinesisSchemaVersion", "partitionKey", "sequenceNumber", "data",
        "approximateArrivalTimestamp",
    }  # fmt: skip
    assert entry["eventID"] == "shardId-000000000003:49650000000000000000000000000000042"
    assert entry["eventSource"] == "aws:kinesis"
    assert entry["awsRegion"] == "ap-south-1"
    assert entry["invokeIdentityArn"] == "arn:aws:iam::000000000000:role/persist"
    assert base64.b64decode(entry["kinesis"]["data"]) == record.data
    # And the consumers' de-aggregation reads the user records with their identity
    users = deaggregate_event_record(entry)
    assert [u.record_id for u in users] == [
        ("shardId-000000000003", "49650000000000000000000000000000042", i) for i in range(3)
    ]


def test_on_failure_records_have_lambdas_shape() -> None:
    discarded = DiscardedBatch(
        tuple(records(3, start=7)), CONDITION_RETRIES_EXHAUSTED, 4, "Unhandled"
    )
    document = on_failure_record(
        discarded,
        shard_id="shardId-000000000001",
        stream_arn="arn:aws:kinesis:ap-south-1:000000000000:stream/ticks",
        function_arn="arn:aws:lambda:ap-south-1:000000000000:function:persist",
        now=T0,
    )
    assert document["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert document["requestContext"]["approximateInvokeCount"] == 4
    assert document["responseContext"]["functionError"] == "Unhandled"
    assert document["version"] == "1.0"
    info = document["KinesisBatchInfo"]
    assert (info["shardId"], info["startSequenceNumber"], info["endSequenceNumber"]) == (
        "shardId-000000000001", "7", "9",
    )  # fmt: skip
    assert info["batchSize"] == 3
    assert info["streamArn"].endswith(":stream/ticks")
    assert document["timestamp"].endswith("Z")
    age = on_failure_record(
        DiscardedBatch(tuple(records(1)), CONDITION_RECORD_AGE, 0, None),
        shard_id="s", stream_arn="a", function_arn="f", now=T0,
    )  # fmt: skip
    assert "responseContext" not in age
