"""The WebSocket routes over in-memory stores: connect, subscribe, unsubscribe, ping, limits."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from lambdas.ws.logic import Limits, Routes, identity_from_authorizer
from lambdas.ws.protocol import SUBPROTOCOL, Channel
from lambdas.ws.state import Identity
from tests.unit.lambdas.ws.fakes import EXPIRY, FakeConnections, FakeIndex, registry
from ticker_core.instruments import InstrumentRegistry

ALICE = Identity("sub-alice", "alice")
BOB = Identity("sub-bob", "bob")
CHAIN = {"underlying": "NIFTY", "expiry": EXPIRY.isoformat()}


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def instruments() -> InstrumentRegistry:
    return registry()


def make_routes(
    instruments: InstrumentRegistry, limits: Limits | None = None
) -> tuple[Routes, FakeConnections, FakeIndex, Clock]:
    connections, index, clock = FakeConnections(), FakeIndex(), Clock()
    routes = Routes(
        connections,
        index,
        lambda: instruments,
        limits or Limits(),
        clock=clock,
        sleep=clock.sleep,
    )
    return routes, connections, index, clock


def send(routes: Routes, connection_id: str, **payload: Any) -> dict[str, Any]:
    return routes.message(connection_id, json.dumps(payload))


def connected(routes: Routes, connection_id: str, identity: Identity = ALICE) -> None:
    answer = routes.connect(connection_id, identity, [SUBPROTOCOL, "token"])
    assert (answer.status, answer.protocol) == (200, SUBPROTOCOL)


def token_of(instruments: InstrumentRegistry, exchange: str, symbol: str) -> int:
    found = instruments.by_symbol(exchange, symbol)
    assert found is not None
    return found.instrument_token


def test_connect_needs_the_protocol_and_an_identity(instruments: InstrumentRegistry) -> None:
    routes, connections, _, _ = make_routes(instruments)
    # Given a client that offered only its token, and an event without the authorizer's user
    refused = routes.connect("c1", ALICE, ["token"])
    anonymous = routes.connect("c2", None, [SUBPROTOCOL, "token"])
    # Then both are refused and nothing is registered
    assert refused.status == 400
    assert refused.reply is not None
    assert refused.reply["code"] == "protocol_required"
    assert anonymous.status == 401
    assert connections.items == {}


def test_the_authorizer_context_names_the_user() -> None:
    assert identity_from_authorizer({"principalId": "s", "sub": "s", "username": "u"}) == Identity(
        "s", "u"
    )
    assert identity_from_authorizer({"sub": "s"}) == Identity("s", "s")
    assert identity_from_authorizer({}) is None
    assert identity_from_authorizer({"sub": ""}) is None


def test_connections_per_user_are_limited(instruments: InstrumentRegistry) -> None:
    routes, _connections, _, _clock = make_routes(instruments, Limits(max_connections_per_user=2))
    connected(routes, "a1")
    connected(routes, "a2")
    # When alice opens a third connection
    third = routes.connect("a3", ALICE, [SUBPROTOCOL, "token"])
    # Then it is refused with its own code, while bob is unaffected
    assert third.status == 429
    assert third.reply is not None
    assert third.reply["code"] == "too_many_connections"
    connected(routes, "b1", BOB)
    # And once one of hers closes, she may connect again
    routes.disconnect("a1")
    connected(routes, "a3")


def test_subscribe_by_token_symbol_and_chain(instruments: InstrumentRegistry) -> None:
    routes, connections, index, _ = make_routes(instruments)
    connected(routes, "c1")
    infy = token_of(instruments, "NSE", "INFY")
    nifty_index = token_of(instruments, "NSE", "NIFTY 50")
    # When the client subscribes to INFY by symbol, the index by token and the chain
    reply = send(
        routes,
        "c1",
        action="subscribe",
        id="r1",
        instruments=["NSE:INFY", nifty_index],
        chains=[CHAIN],
    )
    # Then it is told what it subscribed, Greeks on the options only
    assert reply["type"] == "subscribed"
    assert reply["id"] == "r1"
    described = {i["instrument_token"]: i for i in reply["instruments"]}
    assert len(described) == 2 + 10  # two instruments, five strikes of calls and puts
    assert described[infy]["channels"] == ["ticks"]
    options = [i for i in described.values() if i["tradingsymbol"].endswith(("CE", "PE"))]
    assert len(options) == 10
    assert all(i["channels"] == ["greeks", "ticks"] for i in options)
    # And the connection and the index agree
    assert reply["total"] == 12
    assert index.subscribed("c1") == connections.items["c1"].subscriptions
    assert index.held == set(described)


def test_channels_narrow_what_is_subscribed(instruments: InstrumentRegistry) -> None:
    routes, _, index, _ = make_routes(instruments)
    connected(routes, "c1")
    reply = send(routes, "c1", action="subscribe", chains=[CHAIN], channels=["greeks"])
    assert {tuple(i["channels"]) for i in reply["instruments"]} == {("greeks",)}
    assert index.lookup(index.members, Channel.TICKS) == {}


def test_greeks_alone_on_a_non_option_is_refused(instruments: InstrumentRegistry) -> None:
    routes, _, index, _ = make_routes(instruments)
    connected(routes, "c1")
    reply = send(routes, "c1", action="subscribe", instruments=["NSE:INFY"], channels=["greeks"])
    assert reply["code"] == "greeks_options_only"
    assert "NSE:INFY" in reply["message"]
    assert index.members == {}


def test_unknown_instruments_and_chains_are_named(instruments: InstrumentRegistry) -> None:
    routes, _, index, _ = make_routes(instruments)
    connected(routes, "c1")
    reply = send(routes, "c1", action="subscribe", instruments=["NSE:NOSUCH", 99, "NSE:INFY"])
    assert reply["code"] == "unknown_instrument"
    assert reply["details"]["instruments"] == ["NSE:NOSUCH", 99]
    chain = send(
        routes, "c1", action="subscribe", chains=[{"underlying": "NIFTY", "expiry": "2027-01-01"}]
    )
    assert chain["code"] == "unknown_chain"
    # And nothing was subscribed by either
    assert index.members == {}


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"action": "subscribe"}, "bad_request"),
        ({"action": "subscribe", "instruments": ["INFY"]}, "bad_request"),
        ({"action": "subscribe", "instruments": [1], "colour": "red"}, "bad_request"),
        ({"action": "unsubscribe", "all": True, "instruments": [1]}, "bad_request"),
        ({"action": "sell", "instruments": [1]}, "unknown_action"),
        ({"instruments": [1]}, "unknown_action"),
    ],
)
def test_bad_messages_get_clear_errors(
    instruments: InstrumentRegistry, payload: dict[str, Any], code: str
) -> None:
    routes, _, _, _ = make_routes(instruments)
    connected(routes, "c1")
    reply = send(routes, "c1", id="x", **payload)
    assert (reply["type"], reply["code"], reply["id"]) == ("error", code, "x")
    assert reply["message"]


def test_not_json_is_a_bad_request(instruments: InstrumentRegistry) -> None:
    routes, _, _, _ = make_routes(instruments)
    connected(routes, "c1")
    assert routes.message("c1", "{not json")["code"] == "bad_request"
    assert routes.message("c1", "[1, 2]")["code"] == "bad_request"


def test_instruments_per_connection_are_limited(instruments: InstrumentRegistry) -> None:
    routes, connections, index, _ = make_routes(instruments, Limits(max_instruments=11))
    connected(routes, "c1")
    assert send(routes, "c1", action="subscribe", chains=[CHAIN])["total"] == 10
    # When one more would fit but two would not
    over = send(routes, "c1", action="subscribe", instruments=["NSE:INFY", "NSE:TCS"])
    # Then the whole request is refused, with the numbers
    assert over["code"] == "too_many_instruments"
    assert over["details"] == {"limit": 11, "subscribed": 10, "requested": 2}
    assert len(connections.items["c1"].subscriptions) == 10
    assert len(index.subscribed("c1")) == 10
    # And re-subscribing what it has costs nothing
    assert send(routes, "c1", action="subscribe", chains=[CHAIN])["total"] == 10
    assert send(routes, "c1", action="subscribe", instruments=["NSE:INFY"])["total"] == 11


def test_messages_per_second_are_limited(instruments: InstrumentRegistry) -> None:
    routes, _, _, clock = make_routes(instruments, Limits(messages_per_second=3))
    connected(routes, "c1")
    replies = [send(routes, "c1", action="ping", id=str(i))["type"] for i in range(4)]
    assert replies == ["pong", "pong", "pong", "error"]
    limited = send(routes, "c1", action="subscribe", instruments=["NSE:INFY"], id="s")
    assert (limited["code"], limited["id"]) == ("rate_limited", "s")
    # Malformed messages count against the rate too
    assert routes.message("c1", "{not json")["code"] == "rate_limited"
    # And the next second is a fresh allowance
    clock.now += 1
    assert send(routes, "c1", action="ping")["type"] == "pong"


def test_the_feed_budget_refuses_and_keeps_nothing(instruments: InstrumentRegistry) -> None:
    routes, connections, index, _ = make_routes(instruments, Limits(feed_budget=11))
    connected(routes, "c1")
    connected(routes, "c2", BOB)
    send(routes, "c1", action="subscribe", chains=[CHAIN])
    # When another client wants two more instruments than the budget has room for
    reply = send(routes, "c2", action="subscribe", instruments=["NSE:INFY", "NSE:TCS"])
    # Then it is refused with the numbers, and nothing of it is kept
    assert reply["code"] == "feed_budget_exhausted"
    assert reply["details"] == {"needed": 2, "available": 1}
    assert index.subscribed("c2") == {}
    assert connections.items["c2"].subscriptions == {}
    # But instruments already held cost no budget
    assert send(routes, "c2", action="subscribe", chains=[CHAIN])["type"] == "subscribed"


def test_a_failed_join_leaves_no_subscriber_behind(instruments: InstrumentRegistry) -> None:
    routes, connections, index, _ = make_routes(instruments)
    connected(routes, "c1")
    # Given the index failing after three instruments joined
    index.fail_join_after = 3
    # When the client subscribes to the chain, the failure propagates (the handler answers it)
    with pytest.raises(RuntimeError):
        send(routes, "c1", action="subscribe", chains=[CHAIN])
    # Then the three are left again, the connection unchanged and its lease ended
    assert index.subscribed("c1") == {}
    assert connections.items["c1"].subscriptions == {}
    assert connections.leases == {}


def test_unsubscribe_by_instrument_channel_and_all(instruments: InstrumentRegistry) -> None:
    routes, connections, index, _ = make_routes(instruments)
    connected(routes, "c1")
    send(routes, "c1", action="subscribe", instruments=["NSE:INFY"], chains=[CHAIN])
    infy = token_of(instruments, "NSE", "INFY")
    # When it drops the chain's Greeks only
    reply = send(routes, "c1", action="unsubscribe", chains=[CHAIN], channels=["greeks"])
    # Then the options stay on ticks, none is gone entirely
    assert (reply["type"], reply["instruments"], reply["total"]) == ("unsubscribed", [], 11)
    assert index.lookup(index.members, Channel.GREEKS) == {}
    # When it drops INFY, then everything
    assert send(routes, "c1", action="unsubscribe", instruments=[infy])["instruments"] == [infy]
    everything = send(routes, "c1", action="unsubscribe", all=True)
    assert everything["total"] == 0
    assert len(everything["instruments"]) == 10
    assert index.members == {}
    assert index.held == set()
    assert connections.items["c1"].subscriptions == {}


def test_disconnect_leaves_everything_and_frees_the_budget(instruments: InstrumentRegistry) -> None:
    routes, connections, index, _ = make_routes(instruments)
    connected(routes, "c1")
    connected(routes, "c2", BOB)
    send(routes, "c1", action="subscribe", chains=[CHAIN])
    send(routes, "c2", action="subscribe", instruments=["NSE:INFY"], chains=[CHAIN])
    # When the first leaves, the chain stays held for the second
    routes.disconnect("c1")
    assert "c1" not in connections.items
    assert len(index.held) == 11
    # When the last leaves, nothing is held
    routes.disconnect("c2")
    assert index.held == set()
    assert index.members == {}


def test_two_users_never_share_a_connection(instruments: InstrumentRegistry) -> None:
    routes, _connections, index, _ = make_routes(instruments)
    connected(routes, "c1")
    connected(routes, "c2", BOB)
    send(routes, "c1", action="subscribe", instruments=["NSE:INFY"])
    send(routes, "c2", action="subscribe", instruments=["NSE:TCS"])
    infy = token_of(instruments, "NSE", "INFY")
    tcs = token_of(instruments, "NSE", "TCS")
    assert index.lookup([infy, tcs], Channel.TICKS) == {
        infy: frozenset({"c1"}),
        tcs: frozenset({"c2"}),
    }
    # And bob's unsubscribe of INFY touches nothing of alice's
    send(routes, "c2", action="unsubscribe", instruments=[infy])
    assert index.lookup([infy], Channel.TICKS) == {infy: frozenset({"c1"})}


def test_a_busy_connection_waits_then_answers_busy(instruments: InstrumentRegistry) -> None:
    routes, connections, _, clock = make_routes(instruments)
    connected(routes, "c1")
    # Given another invocation holding the connection's lease for longer than the wait
    connections.leases["c1"] = clock.now + 60
    reply = send(routes, "c1", action="subscribe", instruments=["NSE:INFY"])
    assert reply["code"] == "busy"
    # When the lease ends in time, the request goes through
    connections.leases["c1"] = clock.now + 0.2
    assert send(routes, "c1", action="subscribe", instruments=["NSE:INFY"])["total"] == 1


def test_a_message_on_a_closed_connection_says_so(instruments: InstrumentRegistry) -> None:
    routes, _, _, _ = make_routes(instruments)
    assert send(routes, "gone", action="ping", id="p")["code"] == "connection_closed"


def test_a_lease_lost_before_the_commit_keeps_nothing_and_says_busy(
    instruments: InstrumentRegistry,
) -> None:
    routes, connections, index, _ = make_routes(instruments)
    connected(routes, "c1")
    original = connections.commit

    def lease_lost(connection: Any) -> None:
        connections.items["c1"] = replace(connections.items["c1"], version=99)
        original(connection)

    connections.commit = lease_lost  # type: ignore[method-assign]
    reply = send(routes, "c1", action="subscribe", instruments=["NSE:INFY"])
    assert reply["code"] == "busy"
    assert index.subscribed("c1") == {}
