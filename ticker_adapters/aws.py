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
    key_schema: list[dict[str, str]],
    attributes: list[dict[str, str]],
    ttl_attribute: str | None = None,
) -> None:
    """Create an on-demand table and wait until it exists; TTL on ``ttl_attribute`` if given."""
    dynamodb.create_table(
        TableName=name,
        KeySchema=key_schema,
        AttributeDefinitions=attributes,
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.get_waiter("table_exists").wait(TableName=name)
    if ttl_attribute is not None:
        dynamodb.update_time_to_live(
            TableName=name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl_attribute},
        )
