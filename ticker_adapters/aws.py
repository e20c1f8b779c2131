"""AWS SDK helpers every adapter shares: error codes, and DynamoDB tables as CDK creates them.

Errors are told apart by their AWS error code (never their message text).
Tables are created here only for tests and the sandbox; in AWS the CDK stack
owns them, with the same keys, on-demand billing and TTL attribute.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

CONDITION_FAILED = "ConditionalCheckFailedException"
"""A conditional write whose condition did not hold."""


def error_code(exc: ClientError) -> str:
    """The AWS error code of a failed call (``""`` when the answer carried none)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def create_table(
    dynamodb: Any,
    name: str,
    *,
    partition_key: str = "pk",
    sort_key: str | None = None,
    ttl_attribute: str | None = None,
) -> None:
    """Create an on-demand table keyed by string attributes (``partition_key``, and
    ``sort_key`` if given) and wait until it exists; TTL on ``ttl_attribute`` if given."""
    keys = [(partition_key, "HASH")] + ([(sort_key, "RANGE")] if sort_key else [])
    dynamodb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": key, "KeyType": kind} for key, kind in keys],
        AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"} for key, _ in keys],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.get_waiter("table_exists").wait(TableName=name)
    if ttl_attribute is not None:
        dynamodb.update_time_to_live(
            TableName=name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl_attribute},
        )
