"""Grants in DynamoDB: which user may see or trade which account.

One item per (user, account): ``pk = USER#<sub>``, ``sk = ACCOUNT#<account_id>``,
with the role (``trade`` or ``view``), who granted it and when. A user's
grants are one query; checking one is one read.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from lambdas.api.models import Grant

KEY_SCHEMA = [
    {"AttributeName": "pk", "KeyType": "HASH"},
    {"AttributeName": "sk", "KeyType": "RANGE"},
]
ATTRIBUTES = [
    {"AttributeName": "pk", "AttributeType": "S"},
    {"AttributeName": "sk", "AttributeType": "S"},
]
USER_PREFIX = "USER#"
ACCOUNT_PREFIX = "ACCOUNT#"


def _key(user_id: str, account_id: str) -> dict[str, Any]:
    return {"pk": {"S": USER_PREFIX + user_id}, "sk": {"S": ACCOUNT_PREFIX + account_id}}


def _grant(item: dict[str, Any]) -> Grant:
    return Grant(
        user_id=item["pk"]["S"][len(USER_PREFIX) :],
        account_id=item["sk"]["S"][len(ACCOUNT_PREFIX) :],
        role=item["role"]["S"],
    )


class DynamoGrantStore:
    """Read and write grants."""

    def __init__(self, dynamodb: Any, table_name: str) -> None:
        self._db = dynamodb
        self._table = table_name

    def create_table(self) -> None:
        """Create the table (tests and the sandbox; CDK owns it in AWS)."""
        self._db.create_table(
            TableName=self._table,
            KeySchema=KEY_SCHEMA,
            AttributeDefinitions=ATTRIBUTES,
            BillingMode="PAY_PER_REQUEST",
        )
        self._db.get_waiter("table_exists").wait(TableName=self._table)

    def role(self, user_id: str, account_id: str) -> str | None:
        """The user's role on the account, or None."""
        item = self._db.get_item(TableName=self._table, Key=_key(user_id, account_id)).get("Item")
        return str(item["role"]["S"]) if item else None

    def put(self, user_id: str, account_id: str, role: str, granted_by: str) -> Grant:
        """Grant (or change) a role."""
        item = {
            **_key(user_id, account_id),
            "role": {"S": role},
            "granted_by": {"S": granted_by},
            "granted_at": {"S": datetime.now(UTC).isoformat()},
        }
        self._db.put_item(TableName=self._table, Item=item)
        return _grant(item)

    def delete(self, user_id: str, account_id: str) -> bool:
        """Withdraw a grant; whether there was one."""
        response = self._db.delete_item(
            TableName=self._table, Key=_key(user_id, account_id), ReturnValues="ALL_OLD"
        )
        return "Attributes" in response

    def for_user(self, user_id: str) -> list[Grant]:
        """Every grant of one user."""
        paginator = self._db.get_paginator("query")
        pages = paginator.paginate(
            TableName=self._table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": USER_PREFIX + user_id}},
        )
        return [_grant(item) for page in pages for item in page["Items"]]

    def all(self) -> list[Grant]:
        """Every grant (administrators; the table is small)."""
        paginator = self._db.get_paginator("scan")
        grants = [
            _grant(item)
            for page in paginator.paginate(TableName=self._table)
            for item in page["Items"]
        ]
        return sorted(grants, key=lambda g: (g.user_id, g.account_id))
