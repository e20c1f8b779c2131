"""WebSocket routes entry point: ``$connect``, ``$disconnect`` and the client actions.

One function serves every route (API Gateway passes the route in
``requestContext.routeKey``); the message routes have a route response, so
the reply returned here is what the client receives. Nothing is built at
import: :class:`Dependencies` (the stores, the instruments) is built on the
first invocation by a cached ``from_env`` (tests call ``build`` with their
own clients). Events are never logged: a ``$connect`` event carries the
client's token in its headers.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import boto3

from lambdas.common.observability import Observability
from lambdas.common.runtime import LambdaHandler, entry_point
from lambdas.common.snapshots import current_registry
from lambdas.ws.logic import Routes, identity_from_authorizer
from lambdas.ws.protocol import (
    PROTOCOL_HEADER,
    ErrorCode,
    ProtocolError,
    encode,
    error_reply,
    header,
    offered_protocols,
)
from lambdas.ws.settings import WsEnvironment
from lambdas.ws.stores import dynamodb_client, state_stores
from ticker_adapters.instrument_snapshots import InstrumentSnapshotReader

obs = Observability("ws")


def _unavailable() -> ProtocolError:
    return ProtocolError(
        ErrorCode.SERVICE_UNAVAILABLE,
        "Today's instruments are not available yet; try again shortly.",
    )


@dataclass(frozen=True)
class Dependencies:
    """What one execution environment of the routes function builds once and reuses."""

    routes: Routes

    @classmethod
    def build(
        cls,
        environment: WsEnvironment,
        *,
        dynamodb: Any,
        s3: Any,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Dependencies:
        """Every dependency of the routes, wired."""
        connections, subscribers = state_stores(dynamodb, environment)
        return cls(
            Routes(
                connections,
                subscribers,
                current_registry(
                    InstrumentSnapshotReader.from_settings(s3, environment.snapshot),
                    obs,
                    _unavailable,
                ),
                environment.ws.limits(),
                sleep=sleep,
            )
        )

    @classmethod
    def from_env(cls) -> Dependencies:
        """The environment's settings and the SDK's default clients (Lambda's init)."""
        environment = WsEnvironment.from_env()
        return cls.build(
            environment, dynamodb=dynamodb_client(environment.ws), s3=boto3.client("s3")
        )


def route(event: dict[str, Any], deps: Dependencies) -> dict[str, Any]:
    """One WebSocket event -> the integration's answer."""
    context = event.get("requestContext") or {}
    connection_id = str(context.get("connectionId", ""))
    event_type = context.get("eventType")
    if event_type == "CONNECT":
        answer = deps.routes.connect(
            connection_id,
            identity_from_authorizer(context.get("authorizer")),
            offered_protocols(header(event.get("headers"), PROTOCOL_HEADER)),
        )
        obs.count(f"Connect{answer.status}")
        result: dict[str, Any] = {"statusCode": answer.status}
        if answer.protocol:
            result["headers"] = {PROTOCOL_HEADER: answer.protocol}
        if answer.reply:
            result["body"] = encode(answer.reply)
        return result
    if event_type == "DISCONNECT":
        removed = deps.routes.disconnect(connection_id)
        obs.count("Disconnected" if removed else "DisconnectUnknown")
        return {"statusCode": 200}
    try:
        reply = deps.routes.message(connection_id, event.get("body"))
    except Exception as exc:  # answered, counted and logged by type (never the message text)
        obs.count("UnexpectedErrors")
        obs.logger.error("message failed", extra={"error": type(exc).__name__})
        reply = error_reply(ErrorCode.INTERNAL_ERROR, "The message could not be applied.")
    obs.count(f"Error_{reply['code']}" if reply["type"] == "error" else f"Reply_{reply['type']}")
    return {"statusCode": 200, "body": encode(reply)}


def make_handler(dependencies: Callable[[], Dependencies]) -> LambdaHandler:
    """The routes' entry point over ``dependencies`` (called every time: cache it)."""
    return entry_point(obs, route, dependencies)


#: Built on the first invocation and kept for the execution environment's life.
environment = functools.cache(Dependencies.from_env)
handler = make_handler(environment)
