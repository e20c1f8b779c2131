"""The WebSocket entry points' event handling, over in-memory stores."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lambdas.common.observability import Observability
from lambdas.ws.dal.management import PostOutcome
from lambdas.ws.fanout import FanoutOutcome
from lambdas.ws.fanout_handler import record_metrics
from lambdas.ws.handler import Dependencies, make_handler, route
from lambdas.ws.logic import Limits, Routes
from lambdas.ws.protocol import SUBPROTOCOL
from testkit.factories import LambdaContext
from tests.unit.lambdas.ws.fakes import FakeConnections, FakeIndex, registry


def function() -> tuple[Dependencies, FakeConnections]:
    connections = FakeConnections()
    instruments = registry()
    routes = Routes(connections, FakeIndex(), lambda: instruments, Limits())
    return Dependencies(routes), connections


def event(event_type: str, connection_id: str = "c1", **extra: Any) -> dict[str, Any]:
    context = {"routeKey": "$default", "eventType": event_type, "connectionId": connection_id}
    return {"requestContext": {**context, **extra.pop("context", {})}, **extra}


CONNECT = {
    "headers": {"Sec-WebSocket-Protocol": f"{SUBPROTOCOL}, eyJ.token.x"},
    "context": {"authorizer": {"principalId": "sub-1", "sub": "sub-1", "username": "alice"}},
}


def test_connect_selects_the_protocol_and_registers_the_user() -> None:
    ws, connections = function()
    answer = route(event("CONNECT", **CONNECT), ws)
    assert answer == {"statusCode": 200, "headers": {"Sec-WebSocket-Protocol": SUBPROTOCOL}}
    assert connections.items["c1"].identity.username == "alice"


def test_connect_without_the_authorizers_user_is_refused() -> None:
    ws, connections = function()
    answer = route(event("CONNECT", headers=CONNECT["headers"]), ws)
    assert answer["statusCode"] == 401
    assert "eyJ" not in answer["body"]
    assert connections.items == {}


def test_messages_are_answered_in_the_route_response() -> None:
    ws, _ = function()
    route(event("CONNECT", **CONNECT), ws)
    answer = route(event("MESSAGE", body=json.dumps({"action": "ping", "id": "p"})), ws)
    assert answer["statusCode"] == 200
    assert json.loads(answer["body"])["type"] == "pong"


def test_an_unexpected_failure_is_an_internal_error_reply(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ws, _ = function()
    route(event("CONNECT", **CONNECT), ws)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(ws.routes, "_subscribe", broken)
    answer = route(event("MESSAGE", body=json.dumps({"action": "subscribe", "chains": [
        {"underlying": "NIFTY", "expiry": "2026-12-31"}]})), ws)  # fmt: skip
    reply = json.loads(answer["body"])
    assert reply["code"] == "internal_error"
    assert "secret" not in answer["body"]


def test_the_entry_point_builds_its_dependencies_once_and_passes_each_event() -> None:
    # Given an entry point over a builder that counts its builds
    ws, connections = function()
    builds: list[Dependencies] = []

    def dependencies() -> Dependencies:
        if not builds:
            builds.append(ws)
        return builds[0]

    handler = make_handler(dependencies)
    # When it serves a connection and a message
    context = LambdaContext("ws")
    handler(event("CONNECT", **CONNECT), context)
    answer = handler(event("MESSAGE", body=json.dumps({"action": "ping", "id": "p"})), context)
    # Then both reached the same routes
    assert json.loads(answer["body"])["type"] == "pong"
    assert list(connections.items) == ["c1"]
    assert builds == [ws]


def test_disconnect_removes_the_connection() -> None:
    ws, connections = function()
    route(event("CONNECT", **CONNECT), ws)
    assert route(event("DISCONNECT"), ws) == {"statusCode": 200}
    assert connections.items == {}
    assert route(event("DISCONNECT"), ws) == {"statusCode": 200}  # a second time: harmless


def test_fanout_metrics_name_every_outcome() -> None:
    obs = Observability("fanout-test")
    outcome = FanoutOutcome(records=10, instruments=4, connections=2, messages=2)
    outcome.outcomes[PostOutcome.GONE] += 1
    outcome.poison["bad_json"] += 2
    outcome.gone.append("c9")
    record_metrics(obs, outcome)
    metrics = obs.metrics.serialize_metric_set()
    names = {m["Name"] for m in metrics["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert {"RecordsReceived", "MessagesPosted", "Posts_gone", "Poison_bad_json"} <= names
    assert metrics["ConnectionsRemoved"] == [1.0]
