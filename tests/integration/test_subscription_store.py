"""The desired-subscriptions store against DynamoDB on moto's server."""

from __future__ import annotations

import boto3
import pytest

from sandbox.moto_server import AwsEndpoint
from ticker_adapters.subscription_store import SubscriptionStore
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
