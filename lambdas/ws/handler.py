"""WebSocket routes entry point: ``$connect``, ``$disconnect`` and the client actions.

One function serves every route (API Gateway passes the route in
``requestContext.routeKey``); the message routes have a route response, so
the reply returned here is what the client receives. Nothing is built at
import: :func:`build` assembles the stores on the first invocation (tests
call it with their own clients). Events are never logged: a ``$connect``
event carries the client's token in its headers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import boto3

from lambdas.common.observability import Observability
from lambdas.ws.dal.connections import DynamoConnectionStore
from lambdas.ws.dal.subscribers import DynamoSubscriberIndex
from lambdas.ws.logic import InstrumentLookup, Routes, identity_from_authorizer
from lambdas.ws.protocol import (
    PROTOCOL_HEADER,
    ErrorCode,
    ProtocolError,
    encode,
    error_reply,
    header,
    offered_protocols,
)
from lambdas.ws.settings import WsSettings
from ticker_adapters.instrument_snapshots import InstrumentSnapshotReader, SnapshotError
from ticker_adapters.settings import SnapshotSettings
from ticker_adapters.subscription_store import SubscriptionStore

SERVICE = "ws"


@dataclass
class WsFunction:
    """One execution environment's state."""

    routes: Routes
    obs: Observability


def build(
    *,
    settings: WsSettings,
    snapshot_settings: SnapshotSettings,
    dynamodb: Any,
    s3: Any,
    sleep: Callable[[float], None] | None = None,
) -> WsFunction:
    """Every dependency of the routes, wired."""
    import time

    obs = Observability(SERVICE)
    snapshots = InstrumentSnapshotReader(
        s3,
        snapshot_settings.bucket,
        prefix=snapshot_settings.prefix,
        recheck_seconds=snapshot_settings.recheck_seconds,
    )

    def instruments() -> InstrumentLookup:
        try:
            return snapshots.current().registry
        except SnapshotError as exc:
            obs.logger.error(
                "instruments snapshot unavailable", extra={"error": type(exc).__name__}
            )
            raise ProtocolError(
                ErrorCode.SERVICE_UNAVAILABLE,
                "Today's instruments are not available yet; try again shortly.",
            ) from exc

    routes = Routes(
        DynamoConnectionStore(dynamodb, settings.connections_table),
        DynamoSubscriberIndex(
            dynamodb,
            settings.subscribers_table,
            SubscriptionStore(dynamodb, settings.feed_subscriptions_table),
            mode=settings.feed_mode,
            workers=settings.index_workers,
        ),
        instruments,
        settings.limits(),
        sleep=sleep or time.sleep,
    )
    return WsFunction(routes, obs)


class _Environment:
    """The execution environment's one :class:`WsFunction`, built on first use."""

    function: WsFunction | None = None

    @classmethod
    def get(cls) -> WsFunction:
        if cls.function is None:
            from botocore.config import Config

            settings = WsSettings()  # type: ignore[call-arg]  # from the environment
            pool = Config(max_pool_connections=max(10, settings.index_workers + 2))
            cls.function = build(
                settings=settings,
                snapshot_settings=SnapshotSettings(),  # type: ignore[call-arg]
                dynamodb=boto3.client("dynamodb", config=pool),
                s3=boto3.client("s3"),
            )
        return cls.function


def route(function: WsFunction, event: dict[str, Any]) -> dict[str, Any]:
    """One WebSocket event -> the integration's answer."""
    context = event.get("requestContext") or {}
    connection_id = str(context.get("connectionId", ""))
    event_type = context.get("eventType")
    obs = function.obs
    if event_type == "CONNECT":
        answer = function.routes.connect(
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
        removed = function.routes.disconnect(connection_id)
        obs.count("Disconnected" if removed else "DisconnectUnknown")
        return {"statusCode": 200}
    try:
        reply = function.routes.message(connection_id, event.get("body"))
    except Exception as exc:  # answered, counted and logged by type (never the message text)
        obs.count("UnexpectedErrors")
        obs.logger.error("message failed", extra={"error": type(exc).__name__})
        reply = error_reply(ErrorCode.INTERNAL_ERROR, "The message could not be applied.")
    obs.count(f"Error_{reply['code']}" if reply["type"] == "error" else f"Reply_{reply['type']}")
    return {"statusCode": 200, "body": encode(reply)}


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """API Gateway (WebSocket, Lambda proxy integration) -> the route."""
    function = _Environment.get()
    try:
        return route(function, event)
    finally:
        function.obs.metrics.flush_metrics()
