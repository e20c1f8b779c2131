"""The AWS resources the service expects, created on moto's server the way CDK creates them.

Streams ``ticks`` and ``greeks`` (a few shards each, so partitioning by
underlying is exercised), the subscriptions table (its layout from
:class:`ticker_adapters.subscription_store.SubscriptionStore`), a KMS key for the
credential vault's envelope encryption, one SQS on-failure queue per function
and an S3 bucket for the instruments snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import boto3

from sandbox.moto_server import AwsEndpoint
from ticker_adapters.subscription_store import SubscriptionStore

ACCOUNT_ID = "123456789012"  # moto's default account


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
    s3 = client(endpoint, "s3")
    s3.create_bucket(
        Bucket=names.instruments_bucket,
        CreateBucketConfiguration={"LocationConstraint": endpoint.region},
    )
    return Resources(
        names=names,
        shards=shards,
        ticks_stream_arn=ticks_arn,
        greeks_stream_arn=greeks_arn,
        kms_key_arn=key_arn,
        persist_failures_url=str(persist_dlq),
        greeks_failures_url=str(greeks_dlq),
    )


def queue_depth(endpoint: AwsEndpoint, queue_url: str) -> int:
    """Messages waiting in a queue (visible plus in flight)."""
    attributes = client(endpoint, "sqs").get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )
