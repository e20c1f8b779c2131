"""The WebSocket state on moto's DynamoDB: connections, limits, leases, subscribers and budget."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from lambdas.ws.dal.connections import DynamoConnectionStore
from lambdas.ws.dal.subscribers import WEBSOCKET_OWNER, DynamoSubscriberIndex
from lambdas.ws.protocol import ALL_CHANNELS, Channel
from lambdas.ws.state import BusyError, Connection, ConnectionGoneError, FeedBudgetExhaustedError
from lambdas.ws.state import Identity as User
from sandbox.moto_server import AwsEndpoint
from sandbox.provision import client, create_websocket_tables
from ticker_adapters.retry import no_delays
from ticker_adapters.subscription_store import SubscriptionStore

pytestmark = pytest.mark.integration

NOW = 1_800_000_000.0
ALICE = User("sub-alice", "alice")
TICKS = frozenset({Channel.TICKS})


@pytest.fixture
def dynamodb(aws: AwsEndpoint) -> Any:
    db = client(aws, "dynamodb")
    SubscriptionStore(db, "store").create_table()
    create_websocket_tables(db, connections="conns", subscribers="subs", store="store")
    return db


@pytest.fixture
def connections(dynamodb: Any) -> DynamoConnectionStore:
    return DynamoConnectionStore(dynamodb, "conns")


@pytest.fixture
def store(dynamodb: Any) -> SubscriptionStore:
    return SubscriptionStore(dynamodb, "store")


@pytest.fixture
def index(dynamodb: Any, store: SubscriptionStore) -> DynamoSubscriberIndex:
    return DynamoSubscriberIndex(dynamodb, "subs", store, mode="quote", delays=no_delays)


def conn(connection_id: str, user: User = ALICE, *, expires: float = NOW + 7200) -> Connection:
    return Connection(connection_id, user, connected_at=NOW, expires_at=expires)


def websocket_entries(store: SubscriptionStore) -> dict[int, str]:
    """What the feed sees the WebSocket owner ask for (token -> mode)."""
    snapshot = store.snapshot()
    return dict(snapshot.instruments)


def test_the_connection_table_has_its_ttl(dynamodb: Any) -> None:
    ttl = dynamodb.describe_time_to_live(TableName="conns")["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "expires_at")


def test_connections_per_user_stale_ones_pruned(connections: DynamoConnectionStore) -> None:
    # Given a user at her limit of two, one of them expired and one vanished
    assert connections.open(conn("c1", expires=NOW - 1), max_per_user=2, now=NOW - 100)
    assert connections.open(conn("c2"), max_per_user=2, now=NOW)
    # When she connects again, the expired one makes room
    assert connections.open(conn("c3"), max_per_user=2, now=NOW)
    assert connections.user_connections(ALICE.user_id) == {"c2", "c3"}
    assert connections.pruned == 1
    # When she is at the limit with live connections, a fourth is refused and not kept
    assert not connections.open(conn("c4"), max_per_user=2, now=NOW)
    assert connections.get("c4") is None
    # And a connection gone without $disconnect (its item deleted) stops counting
    connections._db.delete_item(TableName="conns", Key={"pk": {"S": "CONN#c2"}})
    assert connections.open(conn("c5"), max_per_user=2, now=NOW)


def test_concurrent_connects_never_pass_the_limit(connections: DynamoConnectionStore) -> None:
    results: list[bool] = []
    start = threading.Barrier(8)

    def one(i: int) -> None:
        start.wait()
        results.append(connections.open(conn(f"c{i}"), max_per_user=3, now=NOW))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 5 + [True] * 3
    assert len(connections.user_connections(ALICE.user_id)) == 3


def test_close_returns_what_was_removed(connections: DynamoConnectionStore) -> None:
    connections.open(conn("c1"), max_per_user=5, now=NOW)
    leased = connections.lease("c1", now=NOW, seconds=10)
    connections.commit(Connection(**{**leased.__dict__, "subscriptions": {5: ALL_CHANNELS}}))
    removed = connections.close("c1")
    assert removed is not None
    assert removed.subscriptions == {5: ALL_CHANNELS}
    assert connections.close("c1") is None
    assert connections.user_connections(ALICE.user_id) == set()


def test_messages_per_second(connections: DynamoConnectionStore) -> None:
    connections.open(conn("c1"), max_per_user=5, now=NOW)
    taken = [connections.take_message_slot("c1", per_second=3, now=NOW + 0.1) for _ in range(4)]
    assert taken == [True, True, True, False]
    assert connections.take_message_slot("c1", per_second=3, now=NOW + 1.2)
    with pytest.raises(ConnectionGoneError):
        connections.take_message_slot("nobody", per_second=3, now=NOW)


def test_a_lease_serialises_writers_and_a_gone_connection_says_so(
    connections: DynamoConnectionStore,
) -> None:
    connections.open(conn("c1"), max_per_user=5, now=NOW)
    leased = connections.lease("c1", now=NOW, seconds=10)
    # While it is leased, another invocation is told it is busy
    with pytest.raises(BusyError):
        connections.lease("c1", now=NOW + 1, seconds=10)
    # A commit ends the lease and writes the subscriptions
    connections.commit(Connection(**{**leased.__dict__, "subscriptions": {7: TICKS}}))
    again = connections.lease("c1", now=NOW + 2, seconds=10)
    assert again.subscriptions == {7: TICKS}
    # An abandoned lease expires
    assert connections.lease("c1", now=NOW + 20, seconds=10).version == again.version + 1
    # A commit after the connection was removed says it is gone
    connections.close("c1")
    with pytest.raises(ConnectionGoneError):
        connections.commit(again)
    connections.release(again)  # harmless


def test_join_holds_new_instruments_in_the_feed_and_leave_releases_them(
    index: DynamoSubscriberIndex, store: SubscriptionStore
) -> None:
    generation = store.generation()
    index.join("c1", {1: ALL_CHANNELS, 2: TICKS}, budget=10)
    index.join("c2", {2: ALL_CHANNELS}, budget=10)
    assert websocket_entries(store) == {1: "quote", 2: "quote"}
    assert index.used() == 2
    assert store.generation() > generation
    assert index.lookup([1, 2, 3], Channel.TICKS) == {
        1: frozenset({"c1"}),
        2: frozenset({"c1", "c2"}),
    }
    assert index.lookup([1, 2], Channel.GREEKS) == {1: frozenset({"c1"}), 2: frozenset({"c2"})}
    # When c1 leaves both, 1 has no subscriber left and leaves the feed; 2 stays for c2
    index.leave("c1", {1: ALL_CHANNELS, 2: ALL_CHANNELS})
    assert websocket_entries(store) == {2: "quote"}
    assert index.used() == 1
    index.leave("c2", {2: ALL_CHANNELS})
    assert websocket_entries(store) == {}
    assert index.used() == 0
    # Leaving again (a retry, or a 410 after $disconnect) changes nothing, creates nothing
    index.leave("c2", {2: ALL_CHANNELS, 3: ALL_CHANNELS})
    assert index.used() == 0
    items = index._db.scan(TableName="subs")["Items"]
    assert [i["pk"]["S"] for i in items if i["pk"]["S"].startswith("I#")] == []


def test_other_owners_entries_are_not_touched(
    index: DynamoSubscriberIndex, store: SubscriptionStore
) -> None:
    store.subscribe(1, "full", "sandbox")
    index.join("c1", {1: TICKS}, budget=10)
    index.leave("c1", {1: TICKS})
    assert websocket_entries(store) == {1: "full"}
    owners = {
        item["owner"]["S"]
        for item in store._db.scan(TableName="store")["Items"]
        if item["pk"]["S"] == "SUB"
    }
    assert owners == {"sandbox"}
    assert WEBSOCKET_OWNER not in owners


def test_the_budget_refuses_and_keeps_nothing_of_the_request(
    index: DynamoSubscriberIndex, store: SubscriptionStore
) -> None:
    index.join("c1", dict.fromkeys(range(1, 9), TICKS), budget=10)
    with pytest.raises(FeedBudgetExhaustedError) as refused:
        index.join("c2", dict.fromkeys(range(5, 13), TICKS), budget=10)
    assert (refused.value.needed, refused.value.available) == (4, 2)
    assert index.used() == 8
    assert set(websocket_entries(store)) == set(range(1, 9))
    assert index.lookup(range(1, 13), Channel.TICKS) == {t: frozenset({"c1"}) for t in range(1, 9)}


def test_more_instruments_than_one_transaction_holds(
    index: DynamoSubscriberIndex, store: SubscriptionStore
) -> None:
    tokens = range(1, 251)
    index.join("c1", dict.fromkeys(tokens, ALL_CHANNELS), budget=1000)
    assert index.used() == 250
    assert len(index.lookup(tokens, Channel.GREEKS)) == 250
    assert len(websocket_entries(store)) == 250
    index.leave("c1", dict.fromkeys(tokens, ALL_CHANNELS))
    assert (index.used(), websocket_entries(store)) == (0, {})


def test_joiners_and_leavers_racing_leave_the_feed_exactly_in_step(
    dynamodb: Any, store: SubscriptionStore
) -> None:
    # Given many clients joining and leaving the same few instruments at once
    tokens = [1, 2, 3]
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def churn(client_id: str) -> None:
        own = DynamoSubscriberIndex(dynamodb, "subs", store, mode="quote")
        try:
            start.wait()
            for _ in range(6):
                own.join(client_id, dict.fromkeys(tokens, TICKS), budget=100)
                own.leave(client_id, dict.fromkeys(tokens, TICKS))
            if client_id == "c0":  # one client stays subscribed to one instrument
                own.join(client_id, {2: TICKS}, budget=100)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=churn, args=(f"c{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    # Then exactly the instrument with a subscriber is held, in the feed and in the budget
    index = DynamoSubscriberIndex(dynamodb, "subs", store)
    assert index.lookup(tokens, Channel.TICKS) == {2: frozenset({"c0"})}
    assert websocket_entries(store) == {2: "quote"}
    assert index.used() == 1
