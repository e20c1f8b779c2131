"""The desired-subscriptions store in DynamoDB.

The API writes what clients want streamed; the feed container reconciles its
connections against it continuously. The requests, their validation and the
merge are :mod:`ticker_core.subscriptions`; this module only keeps them.

Every write also bumps a generation counter in the same transaction, so a
reader polls one small item and re-reads the whole set only when it changed.
Shared by the feed container and the Lambdas; imports only the AWS SDK.

Table layout (partition key ``pk``, sort key ``sk``, both strings):
``SUB / {token:010d}#{owner}``, ``ATM / {underlying}#{owner}``, ``META / generation``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from ticker_core.subscriptions import (
    AtmWindowRule,
    DesiredSubscriptions,
    merge_instruments,
    validate_mode,
    validate_owner,
    validate_token,
)

KEY_SCHEMA = [
    {"AttributeName": "pk", "KeyType": "HASH"},
    {"AttributeName": "sk", "KeyType": "RANGE"},
]
ATTRIBUTE_DEFINITIONS = [
    {"AttributeName": "pk", "AttributeType": "S"},
    {"AttributeName": "sk", "AttributeType": "S"},
]


class SubscriptionStore:
    """Read and write desired subscriptions in one DynamoDB table."""

    def __init__(self, dynamodb_client: Any, table_name: str) -> None:
        self._db = dynamodb_client
        self._table = table_name

    # -- table (tests and the sandbox; CDK owns it in AWS) ----------------------------

    def create_table(self) -> None:
        """Create the table with the layout this store expects (on-demand billing)."""
        self._db.create_table(
            TableName=self._table,
            KeySchema=KEY_SCHEMA,
            AttributeDefinitions=ATTRIBUTE_DEFINITIONS,
            BillingMode="PAY_PER_REQUEST",
        )
        self._db.get_waiter("table_exists").wait(TableName=self._table)

    # -- writes ------------------------------------------------------------------

    def _write(self, operation: dict[str, Any]) -> None:
        bump = {
            "Update": {
                "TableName": self._table,
                "Key": {"pk": {"S": "META"}, "sk": {"S": "generation"}},
                "UpdateExpression": "ADD generation :one",
                "ExpressionAttributeValues": {":one": {"N": "1"}},
            }
        }
        self._db.transact_write_items(TransactItems=[operation, bump])

    def subscribe(self, token: int, mode: str, owner: str) -> None:
        """Ask for ``token`` in ``mode`` on behalf of ``owner`` (replaces that owner's mode)."""
        validate_token(token)
        validate_mode(mode)
        validate_owner(owner)
        item = {
            "pk": {"S": "SUB"},
            "sk": {"S": f"{token:010d}#{owner}"},
            "token": {"N": str(token)},
            "mode": {"S": mode},
            "owner": {"S": owner},
            "updated_at": {"S": datetime.now(UTC).isoformat()},
        }
        self._write({"Put": {"TableName": self._table, "Item": item}})

    def unsubscribe(self, token: int, owner: str) -> None:
        """Withdraw ``owner``'s interest in ``token`` (others' interest stays)."""
        validate_token(token)
        validate_owner(owner)
        key = {"pk": {"S": "SUB"}, "sk": {"S": f"{token:010d}#{owner}"}}
        self._write({"Delete": {"TableName": self._table, "Key": key}})

    def put_atm_window(self, rule: AtmWindowRule) -> None:
        """Create or replace ``rule.owner``'s ATM window on ``rule.underlying``."""
        rule.validate()
        item = {
            "pk": {"S": "ATM"},
            "sk": {"S": f"{rule.underlying}#{rule.owner}"},
            "underlying": {"S": rule.underlying},
            "strikes_each_side": {"N": str(rule.strikes_each_side)},
            "expiries": {"N": str(rule.expiries)},
            "mode": {"S": rule.mode},
            "owner": {"S": rule.owner},
        }
        self._write({"Put": {"TableName": self._table, "Item": item}})

    def remove_atm_window(self, underlying: str, owner: str) -> None:
        """Withdraw ``owner``'s ATM window on ``underlying``."""
        validate_owner(owner)
        key = {"pk": {"S": "ATM"}, "sk": {"S": f"{underlying}#{owner}"}}
        self._write({"Delete": {"TableName": self._table, "Key": key}})

    # -- reads -------------------------------------------------------------------

    def generation(self) -> int:
        """The change counter: any write makes it larger."""
        response = self._db.get_item(
            TableName=self._table,
            Key={"pk": {"S": "META"}, "sk": {"S": "generation"}},
            ConsistentRead=True,
        )
        item = response.get("Item")
        return int(item["generation"]["N"]) if item else 0

    def _query(self, pk: str) -> Iterator[dict[str, Any]]:
        paginator = self._db.get_paginator("query")
        pages = paginator.paginate(
            TableName=self._table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": pk}},
            ConsistentRead=True,
        )
        for page in pages:
            yield from page["Items"]

    def snapshot(self) -> DesiredSubscriptions:
        """The merged desired set, stamped with the generation read before it.

        Reading the generation first means a write racing this read bumps the
        counter past the stamp, so the next poll re-reads: nothing is missed.
        """
        generation = self.generation()
        instruments = merge_instruments(
            (int(item["token"]["N"]), item["mode"]["S"]) for item in self._query("SUB")
        )
        rules = tuple(
            AtmWindowRule(
                underlying=item["underlying"]["S"],
                strikes_each_side=int(item["strikes_each_side"]["N"]),
                expiries=int(item["expiries"]["N"]),
                mode=item["mode"]["S"],
                owner=item["owner"]["S"],
            )
            for item in self._query("ATM")
        )
        return DesiredSubscriptions(generation, instruments, rules)
