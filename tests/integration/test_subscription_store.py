"""The desired-subscriptions store against DynamoDB on moto's server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import boto3
import pytest

from sandbox.moto_server import AwsEndpoint
from ticker_adapters.feed_status import FeedStatus, FeedStatusStore
from ticker_adapters.subscription_store import SubscriptionChange, SubscriptionStore
from ticker_core.subscriptions import AtmWindowRule, SubscriptionError

pytestmark = pytest.mark.integration


@pytest.fixture
def store(aws: AwsEndpoint) -> SubscriptionStore:
    s = SubscriptionStore(boto3.client("dynamodb", **aws.client_kwargs()), "subscriptions")
    s.create_table()
    return s


def test_modes_merge_per_instrument_and_owners_are_independent(store: SubscriptionStore) -> None:
    # Given two clients interested in the same instrument at different modes
    store.subscribe(256265, "ltp", owner="strategy-a")
    store.subscribe(256265, "full", owner="dashboard")
    store.subscribe(738561, "quote", owner="strategy-a")
    # When the container reads the desired set, Then the widest mode wins
    desired = store.snapshot()
    assert desired.instruments == {256265: "full", 738561: "quote"}
    # When the dashboard leaves, Then strategy-a still gets its ltp stream
    store.unsubscribe(256265, owner="dashboard")
    assert store.snapshot().instruments == {256265: "ltp", 738561: "quote"}


def test_every_write_bumps_the_generation(store: SubscriptionStore) -> None:
    # Given an empty table
    assert store.generation() == 0
    # When entries are written and removed
    store.subscribe(1, "ltp", owner="a")
    store.put_atm_window(AtmWindowRule("NIFTY", 10, 2, "full", owner="a"))
    store.remove_atm_window("NIFTY", owner="a")
    # Then each write moved the counter, and a snapshot carries it
    assert store.generation() == 3
    snapshot = store.snapshot()
    assert snapshot.generation == 3
    assert snapshot.atm_windows == ()


def test_atm_rules_round_trip(store: SubscriptionStore) -> None:
    rule = AtmWindowRule("BANKNIFTY", 15, 2, "full", owner="greeks")
    store.put_atm_window(rule)
    assert store.snapshot().atm_windows == (rule,)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda s: s.subscribe(0, "full", owner="a"), "instrument_token"),
        (lambda s: s.subscribe(2**32, "full", owner="a"), "instrument_token"),
        (lambda s: s.subscribe(True, "full", owner="a"), "instrument_token"),
        (lambda s: s.subscribe(5, "depth", owner="a"), "mode"),
        (lambda s: s.subscribe(5, "ltp", owner="a b"), "owner"),
        (lambda s: s.put_atm_window(AtmWindowRule("nifty", 5, 1, "ltp", "a")), "underlying"),
        (lambda s: s.put_atm_window(AtmWindowRule("NIFTY", 0, 1, "ltp", "a")), "strikes_each_side"),
        (lambda s: s.put_atm_window(AtmWindowRule("NIFTY", 5, 9, "ltp", "a")), "expiries"),
    ],
)
def test_invalid_requests_name_the_field_and_write_nothing(
    store: SubscriptionStore, call: object, field: str
) -> None:
    # Given an invalid request, When it is made, Then the error names the field
    with pytest.raises(SubscriptionError, match=field):
        call(store)  # type: ignore[operator]
    # And nothing was written
    assert store.generation() == 0


def test_a_change_of_many_entries_goes_in_as_few_transactions_as_allowed(
    store: SubscriptionStore,
) -> None:
    # Given an owner with one instrument and a window
    store.subscribe(1, "ltp", owner="alice")
    store.put_atm_window(AtmWindowRule("NIFTY", 5, 1, "quote", "alice"))
    generation = store.generation()
    # When it adds 150 instruments, drops one, moves its window and another owner looks on
    store.subscribe(2, "full", owner="bob")
    change = SubscriptionChange(
        owner="alice",
        subscribe=tuple((token, "quote") for token in range(100, 250)),
        unsubscribe=(1,),
        atm_windows=(AtmWindowRule("BANKNIFTY", 3, 2, "full", "alice"),),
        remove_atm_windows=("NIFTY",),
    )
    transactions = store.change(change)
    # Then it took two transactions (99 entries each at most) and each bumped the generation
    assert transactions == 2
    assert store.generation() == generation + 1 + 2
    stored = store.entries()
    assert {(e.token, e.owner) for e in stored.instruments} == {(2, "bob")} | {
        (t, "alice") for t in range(100, 250)
    }
    assert [(r.underlying, r.owner) for r in stored.atm_windows] == [("BANKNIFTY", "alice")]
    assert store.snapshot().instruments[2] == "full"


def test_a_change_is_checked_before_anything_is_written(store: SubscriptionStore) -> None:
    generation = store.generation()
    bad = SubscriptionChange(owner="alice", subscribe=((1, "ltp"), (0, "ltp")))
    with pytest.raises(SubscriptionError):
        store.change(bad)
    foreign = SubscriptionChange(
        owner="alice", atm_windows=(AtmWindowRule("NIFTY", 5, 1, "quote", "bob"),)
    )
    with pytest.raises(SubscriptionError):
        store.change(foreign)
    assert store.generation() == generation
    assert store.entries().instruments == ()


def test_the_feeds_status_records_live_beside_the_subscriptions_without_touching_them(
    store: SubscriptionStore, aws: AwsEndpoint
) -> None:
    # Given two feed instances writing their records into the subscriptions table
    dynamodb = boto3.client("dynamodb", **aws.client_kwargs())
    status = FeedStatusStore(dynamodb, "subscriptions")
    now = datetime.now(UTC)
    older = FeedStatus("task-a", now - timedelta(seconds=30), now, 5, 3, 10, 10, 0)
    newer = FeedStatus("task-b", now, now, 5, 3, 12, 11, 1, (99,))
    status.put(older)
    status.put(newer)
    store.subscribe(5, "ltp", owner="alice")
    # Then they read back newest first, and the subscriptions see none of them
    assert status.read_all() == [newer, older]
    assert status.latest() == newer
    assert store.snapshot().instruments == {5: "ltp"}
    assert older.is_stale(now)
    assert not newer.is_stale(now)
