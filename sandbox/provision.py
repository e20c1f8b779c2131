"""The AWS resources the service expects, created on moto's server the way CDK creates them.

Streams ``ticks`` and ``greeks`` (a few shards each, so partitioning by
underlying is exercised), the subscriptions table (its layout from
:class:`ticker_adapters.subscription_store.SubscriptionStore`), a KMS key for the
credential vault's envelope encryption, one SQS on-failure queue per function
and an S3 bucket for the instruments snapshot; for the trading API, its three
tables (grants, idempotency records, the order limiter), the EventBridge bus
for order updates, and a Cognito user pool with an app client and the
``admin`` group; for the accounts routes, the account registry table and the
login-state signing key (a generated secret); for the WebSocket API, its
connections and subscribers tables; for the order updates the feed forwards,
an SQS queue with a dead-letter queue after a few receives.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import boto3

from sandbox.moto_server import AwsEndpoint
from ticker_adapters.subscription_store import SubscriptionStore

ACCOUNT_ID = "123456789012"  # moto's default account
# The order-updates queue: a batch is hidden this long while the function runs (above its
# timeout, so a slow invocation is not delivered twice meanwhile), and a message received
# this many times without being deleted moves to the dead-letter queue.
ORDER_UPDATES_VISIBILITY_S = 30
ORDER_UPDATES_MAX_RECEIVES = 5


@dataclass(frozen=True)
class ResourceNames:
    """Names, as a deployment stage would set them."""

    ticks_stream: str = "ticks"
    greeks_stream: str = "greeks"
    subscriptions_table: str = "ticker-subscriptions"
    secrets_prefix: str = "ticker/kite"
    kms_alias: str = "alias/ticker-credentials"
    instruments_bucket: str = "ticker-instruments"
    persist_failures_queue: str = "persist-on-failure"
    greeks_failures_queue: str = "greeks-on-failure"
    grants_table: str = "ticker-api-grants"
    idempotency_table: str = "ticker-api-idempotency"
    limiter_table: str = "ticker-api-order-limiter"
    event_bus: str = "ticker-trading"
    user_pool: str = "ticker-users"
    accounts_table: str = "ticker-api-accounts"
    login_state_key_name: str = "ticker/api/login-state-key"
    ws_connections_table: str = "ticker-ws-connections"
    ws_subscribers_table: str = "ticker-ws-subscribers"
    order_updates_queue: str = "ticker-order-updates"
    order_updates_dlq: str = "ticker-order-updates-dlq"


@dataclass(frozen=True)
class OrderUpdatesQueue:
    """The SQS queue the feed forwards Kite's order messages to, and its dead-letter queue."""

    url: str
    arn: str
    dlq_url: str


def create_order_updates_queue(sqs: Any, names: ResourceNames) -> OrderUpdatesQueue:
    """The order-updates queue and its dead-letter queue (kept 14 days), with redrive."""
    dlq_url = sqs.create_queue(
        QueueName=names.order_updates_dlq, Attributes={"MessageRetentionPeriod": "1209600"}
    )["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": ORDER_UPDATES_MAX_RECEIVES}
    url = sqs.create_queue(
        QueueName=names.order_updates_queue,
        Attributes={
            "VisibilityTimeout": str(ORDER_UPDATES_VISIBILITY_S),
            "RedrivePolicy": json.dumps(redrive),
        },
    )["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    return OrderUpdatesQueue(str(url), str(arn), str(dlq_url))


@dataclass(frozen=True)
class Resources:
    """What :func:`provision` created (names, ARNs, URLs)."""

    names: ResourceNames
    shards: int
    ticks_stream_arn: str
    greeks_stream_arn: str
    kms_key_arn: str
    persist_failures_url: str
    greeks_failures_url: str
    login_state_secret_arn: str
    order_updates: OrderUpdatesQueue

    def role_arn(self, function: str) -> str:
        """The execution role ARN a function's events name as ``invokeIdentityArn``."""
        return f"arn:aws:iam::{ACCOUNT_ID}:role/{function}"


def client(endpoint: AwsEndpoint, service: str) -> Any:
    """A boto3 client for ``service`` on ``endpoint`` (a fresh session: thread-safe use)."""
    return boto3.session.Session().client(service, **endpoint.client_kwargs())


def _stream(kinesis: Any, name: str, shards: int) -> str:
    kinesis.create_stream(
        StreamName=name, ShardCount=shards, StreamModeDetails={"StreamMode": "PROVISIONED"}
    )
    kinesis.get_waiter("stream_exists").wait(StreamName=name)
    return str(
        kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamARN"]
    )


def create_api_tables(dynamodb: Any, *, grants: str, idempotency: str, limiter: str) -> None:
    """The trading API's DynamoDB tables, as the CDK stack creates them."""
    from lambdas.api.dal.grants import DynamoGrantStore
    from lambdas.api.dal.limiter import DynamoOrderLimiter
    from lambdas.api.idempotency import create_idempotency_table

    DynamoGrantStore(dynamodb, grants).create_table()
    DynamoOrderLimiter(dynamodb, limiter).create_table()
    create_idempotency_table(dynamodb, idempotency)


def create_websocket_tables(
    dynamodb: Any, *, connections: str, subscribers: str, store: str
) -> None:
    """The WebSocket API's DynamoDB tables, as the CDK stack creates them."""
    from lambdas.ws.dal.connections import DynamoConnectionStore
    from lambdas.ws.dal.subscribers import DynamoSubscriberIndex

    DynamoConnectionStore(dynamodb, connections).create_table()
    DynamoSubscriberIndex(dynamodb, subscribers, SubscriptionStore(dynamodb, store)).create_table()


@dataclass(frozen=True)
class UserPool:
    """A Cognito user pool as the API's authorizer sees it."""

    pool_id: str
    client_id: str
    region: str
    jwks_url: str
    """Where the signing keys are served (moto, on loopback)."""

    @property
    def issuer(self) -> str:
        """The tokens' ``iss``, in AWS's form (what the authorizer checks)."""
        return f"https://cognito-idp.{self.region}.amazonaws.com/{self.pool_id}"


def create_user_pool(endpoint: AwsEndpoint, name: str) -> UserPool:
    """A user pool with an app client (password auth) and the ``admin`` group."""
    from lambdas.api.auth import ADMIN_GROUP

    cognito = client(endpoint, "cognito-idp")
    pool_id = cognito.create_user_pool(PoolName=name)["UserPool"]["Id"]
    client_id = cognito.create_user_pool_client(
        UserPoolId=pool_id,
        ClientName=f"{name}-app",
        ExplicitAuthFlows=["ALLOW_ADMIN_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
    )["UserPoolClient"]["ClientId"]
    cognito.create_group(GroupName=ADMIN_GROUP, UserPoolId=pool_id)
    return UserPool(
        pool_id=pool_id,
        client_id=client_id,
        region=endpoint.region,
        jwks_url=f"{endpoint.url}/{pool_id}/.well-known/jwks.json",
    )


@dataclass(frozen=True)
class PoolUser:
    """A user of the pool and a fresh ID token."""

    username: str
    sub: str
    id_token: str = field(repr=False)
    groups: tuple[str, ...] = ()


def create_user(
    endpoint: AwsEndpoint, pool: UserPool, username: str, *, groups: tuple[str, ...] = ()
) -> PoolUser:
    """A confirmed user (a generated password), in ``groups``, signed in: its ID token."""
    import secrets
    import string

    cognito = client(endpoint, "cognito-idp")
    # Generated: one of each class Cognito's default policy asks for, then random text.
    classes = (string.ascii_uppercase, string.ascii_lowercase, string.digits, "!#%+")
    password = "".join(secrets.choice(c) for c in classes) + secrets.token_urlsafe(18)
    cognito.admin_create_user(UserPoolId=pool.pool_id, Username=username, MessageAction="SUPPRESS")
    cognito.admin_set_user_password(
        UserPoolId=pool.pool_id, Username=username, Password=password, Permanent=True
    )
    for group in groups:
        cognito.admin_add_user_to_group(UserPoolId=pool.pool_id, Username=username, GroupName=group)
    tokens = cognito.admin_initiate_auth(
        UserPoolId=pool.pool_id,
        ClientId=pool.client_id,
        AuthFlow="ADMIN_USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": username, "PASSWORD": password},
    )["AuthenticationResult"]
    attributes = cognito.admin_get_user(UserPoolId=pool.pool_id, Username=username)
    sub = next(a["Value"] for a in attributes["UserAttributes"] if a["Name"] == "sub")
    return PoolUser(username, sub, tokens["IdToken"], groups)


def provision(
    endpoint: AwsEndpoint, *, shards: int = 4, names: ResourceNames | None = None
) -> Resources:
    """Create every resource; returns their identifiers."""
    names = names or ResourceNames()
    kinesis = client(endpoint, "kinesis")
    ticks_arn = _stream(kinesis, names.ticks_stream, shards)
    greeks_arn = _stream(kinesis, names.greeks_stream, shards)
    SubscriptionStore(client(endpoint, "dynamodb"), names.subscriptions_table).create_table()
    kms = client(endpoint, "kms")
    key = kms.create_key(Description="ticker-service Kite credentials (sandbox)")
    key_arn = str(key["KeyMetadata"]["Arn"])
    kms.create_alias(AliasName=names.kms_alias, TargetKeyId=key_arn)
    sqs = client(endpoint, "sqs")
    persist_dlq = sqs.create_queue(QueueName=names.persist_failures_queue)["QueueUrl"]
    greeks_dlq = sqs.create_queue(QueueName=names.greeks_failures_queue)["QueueUrl"]
    order_updates = create_order_updates_queue(sqs, names)
    s3 = client(endpoint, "s3")
    s3.create_bucket(
        Bucket=names.instruments_bucket,
        CreateBucketConfiguration={"LocationConstraint": endpoint.region},
    )
    create_api_tables(
        client(endpoint, "dynamodb"),
        grants=names.grants_table,
        idempotency=names.idempotency_table,
        limiter=names.limiter_table,
    )
    client(endpoint, "events").create_event_bus(Name=names.event_bus)
    from lambdas.api.dal.accounts import DynamoAccountRegistry

    DynamoAccountRegistry(client(endpoint, "dynamodb"), names.accounts_table).create_table()
    login_state = create_login_state_secret(endpoint, names.login_state_key_name)
    create_websocket_tables(
        client(endpoint, "dynamodb"),
        connections=names.ws_connections_table,
        subscribers=names.ws_subscribers_table,
        store=names.subscriptions_table,
    )
    return Resources(
        names=names,
        shards=shards,
        ticks_stream_arn=ticks_arn,
        greeks_stream_arn=greeks_arn,
        kms_key_arn=key_arn,
        persist_failures_url=str(persist_dlq),
        greeks_failures_url=str(greeks_dlq),
        login_state_secret_arn=login_state,
        order_updates=order_updates,
    )


def create_login_state_secret(endpoint: AwsEndpoint, name: str) -> str:
    """The login-state signing key, generated as the CDK stack generates it; its ARN."""
    import secrets

    created = client(endpoint, "secretsmanager").create_secret(
        Name=name, SecretString=secrets.token_urlsafe(48)
    )
    return str(created["ARN"])


def queue_depth(endpoint: AwsEndpoint, queue_url: str) -> int:
    """Messages waiting in a queue (visible plus in flight)."""
    attributes = client(endpoint, "sqs").get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )
