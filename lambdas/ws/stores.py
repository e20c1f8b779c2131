"""The WebSocket state stores, as the routes and fan-out functions' settings describe them."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config

from lambdas.ws.dal.connections import DynamoConnectionStore
from lambdas.ws.dal.subscribers import DynamoSubscriberIndex
from lambdas.ws.settings import FanoutEnvironment, WsEnvironment, WsSettings
from ticker_adapters.subscription_store import SubscriptionStore


def dynamodb_client(settings: WsSettings) -> Any:
    """A DynamoDB client pooling a connection per index worker (and two more)."""
    pool = Config(max_pool_connections=max(10, settings.index_workers + 2))
    return boto3.client("dynamodb", config=pool)


def state_stores(
    dynamodb: Any, environment: WsEnvironment | FanoutEnvironment
) -> tuple[DynamoConnectionStore, DynamoSubscriberIndex]:
    """The connections table, and the subscribers table joined to the feed's desired set."""
    ws = environment.ws
    return (
        DynamoConnectionStore(dynamodb, environment.connections.name),
        DynamoSubscriberIndex(
            dynamodb,
            environment.subscribers.name,
            SubscriptionStore(dynamodb, environment.subscriptions.name),
            mode=ws.feed_mode,
            workers=ws.index_workers,
        ),
    )
